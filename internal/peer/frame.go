package peer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Wire format of a stream (the body of a POST to StreamPath): a sequence of
// frames, each
//
//	version  1 byte     FrameVersion
//	length   4 bytes    big endian, <= MaxFrameSize
//	message  length bytes, a protobuf-encoded raftpb.Message
//
// The version is per frame so that a later release can send a new frame kind
// on the same stream once every node understands it. A receiver closes the
// stream on any frame it cannot read.
const (
	// FrameVersion is the only frame version this release sends and accepts.
	FrameVersion = 1
	// MaxFrameSize caps one encoded message (snapshots included).
	MaxFrameSize = 64 << 20

	frameHeaderLen = 5
	// keepReadBuf caps the read buffer kept between frames, so that one
	// snapshot does not pin its size for the life of the stream.
	keepReadBuf = 1 << 20
)

var (
	// ErrFrameVersion is returned for a frame of an unknown version.
	ErrFrameVersion = errors.New("peer: unknown frame version")
	// ErrFrameSize is returned for a frame longer than MaxFrameSize.
	ErrFrameSize = errors.New("peer: frame too large")
	// ErrFrameMessage is returned for a frame whose message does not parse.
	ErrFrameMessage = errors.New("peer: bad raft message in frame")
)

// appendFrame appends the frame of m to b. On error b is returned unchanged.
func appendFrame(b []byte, m *raftpb.Message) ([]byte, error) {
	start := len(b)
	b = append(b, FrameVersion, 0, 0, 0, 0)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	if err != nil {
		return b[:start], fmt.Errorf("peer: encode raft message: %w", err)
	}
	n := len(b) - start - frameHeaderLen
	if n > MaxFrameSize {
		return b[:start], fmt.Errorf("%w: %s message of %d bytes, limit %d", ErrFrameSize, m.GetType(), n, MaxFrameSize)
	}
	binary.BigEndian.PutUint32(b[start+1:], uint32(n))
	return b, nil
}

// frameReader reads frames from a stream.
type frameReader struct {
	r   *bufio.Reader
	buf bytes.Buffer
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next message. It returns io.EOF at a clean end of stream
// (between frames), io.ErrUnexpectedEOF inside a frame, an ErrFrame* error
// for a frame it refuses, or the reader's error.
func (fr *frameReader) next() (*raftpb.Message, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != FrameVersion {
		return nil, fmt.Errorf("%w %d (this node speaks %d)", ErrFrameVersion, hdr[0], FrameVersion)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameSize, n, MaxFrameSize)
	}
	// Grow with the data actually received, not with the claimed length.
	if fr.buf.Cap() > keepReadBuf {
		fr.buf = bytes.Buffer{}
	}
	fr.buf.Reset()
	if _, err := io.CopyN(&fr.buf, fr.r, int64(n)); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	m := new(raftpb.Message)
	// NB: proto.Unmarshal copies bytes fields, so the buffer can be reused.
	if err := proto.Unmarshal(fr.buf.Bytes(), m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFrameMessage, err)
	}
	return m, nil
}
