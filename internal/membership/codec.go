package membership

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Wire format, version 1. All integers big-endian.
//
//	offset  size  field
//	0       4     magic "VGHB"
//	4       1     format version (1)
//	5       1     flags: bit 0 = echo present; other bits must be 0
//	6       8     cluster ID hash: first 8 bytes of SHA-256(cluster ID)
//	14      1     link index (< MaxLinks)
//	15      8     sender boot ID (non-zero)
//	23      8     sequence number (non-zero)
//	31      8     addressee boot ID as the sender knows it (0 = unknown)
//	39      8     send time, ns (>= 0)
//	47      8     echo time, ns (>= 0; 0 without echo)
//	55      8     echo hold, ns (>= 0; 0 without echo)
//	63      1+n   from: length, name
//	        1+n   to: length, name
//	        2+n   info: length (<= MaxInfo), bytes
//	        32    HMAC-SHA256 over all the bytes before it
//
// The version byte comes right after the magic so that a future decoder
// can tell formats apart before parsing anything; a node sends version 1
// until every node understands a newer one (DESIGN: built to be upgraded
// in place). The encoding is canonical: Decode accepts exactly what Encode
// produces, so re-encoding a decoded packet gives the same bytes.
const (
	// Version is the wire format version this package writes.
	Version = 1

	magic      = "VGHB"
	fixedLen   = 63
	macLen     = sha256.Size
	flagEcho   = 1 << 0
	flagsKnown = flagEcho

	// MinPacket and MaxPacket bound the size of a valid packet.
	MinPacket = fixedLen + 1 + 1 + 1 + 1 + 2 + macLen
	MaxPacket = fixedLen + 2*(1+MaxNameLen) + 2 + MaxInfo + macLen
)

// Decode errors. Every error Decode returns is one of these, possibly
// wrapped with detail; test with errors.Is.
var (
	ErrShort        = errors.New("membership: packet too short")
	ErrMagic        = errors.New("membership: not a heartbeat packet")
	ErrVersion      = errors.New("membership: unsupported heartbeat format version")
	ErrWrongCluster = errors.New("membership: heartbeat from another cluster")
	ErrBadMAC       = errors.New("membership: heartbeat authentication failed")
	ErrMalformed    = errors.New("membership: malformed heartbeat")
	ErrNoKey        = errors.New("membership: empty heartbeat key")
)

// ClusterHash returns the 8-byte hash of a cluster ID carried in every
// packet.
func ClusterHash(clusterID string) [8]byte {
	sum := sha256.Sum256([]byte(clusterID))
	return [8]byte(sum[:8])
}

// Encode serializes msg for the cluster clusterID and authenticates it with
// key (derived by the caller from the cluster key, for this purpose only).
// It fails only on a message that the wire format cannot carry.
func Encode(key []byte, clusterID string, msg Heartbeat) ([]byte, error) {
	if len(key) == 0 {
		return nil, ErrNoKey
	}
	switch {
	case validName(msg.From) != nil || validName(msg.To) != nil:
		return nil, fmt.Errorf("%w: node names must be 1 to %d bytes", ErrMalformed, MaxNameLen)
	case msg.Link < 0 || msg.Link >= MaxLinks:
		return nil, fmt.Errorf("%w: link %d out of range", ErrMalformed, msg.Link)
	case msg.BootID == 0 || msg.Seq == 0:
		return nil, fmt.Errorf("%w: boot ID and sequence must be non-zero", ErrMalformed)
	case msg.SendTime < 0 || msg.EchoTime < 0 || msg.EchoHold < 0:
		return nil, fmt.Errorf("%w: negative time", ErrMalformed)
	case !msg.HasEcho && (msg.EchoTime != 0 || msg.EchoHold != 0):
		return nil, fmt.Errorf("%w: echo times without echo flag", ErrMalformed)
	case len(msg.Info) > MaxInfo:
		return nil, fmt.Errorf("%w: info of %d bytes exceeds %d", ErrMalformed, len(msg.Info), MaxInfo)
	}
	b := make([]byte, 0, fixedLen+2+len(msg.From)+len(msg.To)+2+len(msg.Info)+macLen)
	b = append(b, magic...)
	b = append(b, Version)
	var flags byte
	if msg.HasEcho {
		flags |= flagEcho
	}
	b = append(b, flags)
	h := ClusterHash(clusterID)
	b = append(b, h[:]...)
	b = append(b, byte(msg.Link))
	b = binary.BigEndian.AppendUint64(b, msg.BootID)
	b = binary.BigEndian.AppendUint64(b, msg.Seq)
	b = binary.BigEndian.AppendUint64(b, msg.ToBoot)
	b = binary.BigEndian.AppendUint64(b, uint64(msg.SendTime))
	b = binary.BigEndian.AppendUint64(b, uint64(msg.EchoTime))
	b = binary.BigEndian.AppendUint64(b, uint64(msg.EchoHold))
	b = append(b, byte(len(msg.From)))
	b = append(b, msg.From...)
	b = append(b, byte(len(msg.To)))
	b = append(b, msg.To...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg.Info)))
	b = append(b, msg.Info...)
	return hmacSum(key, b), nil
}

// hmacSum appends HMAC-SHA256(key, b) to b.
func hmacSum(key, b []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b)
}

// Decode checks and parses one packet. The checks run cheapest and most
// telling first: size, magic, version, cluster (so that a node of another
// cluster sharing the network is reported as such, not as a bad key), then
// the MAC, and only then the fields. It never panics; the returned error
// wraps one of the sentinel errors above. Decode does not check the
// addressee or sender: Machine.Receive does.
func Decode(key []byte, clusterID string, pkt []byte) (Heartbeat, error) {
	if len(key) == 0 {
		return Heartbeat{}, ErrNoKey
	}
	if len(pkt) < len(magic)+1 {
		return Heartbeat{}, ErrShort
	}
	if string(pkt[:4]) != magic {
		return Heartbeat{}, ErrMagic
	}
	if pkt[4] != Version {
		return Heartbeat{}, fmt.Errorf("%w: %d (this node speaks %d)", ErrVersion, pkt[4], Version)
	}
	if len(pkt) < MinPacket {
		return Heartbeat{}, ErrShort
	}
	if len(pkt) > MaxPacket {
		return Heartbeat{}, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, len(pkt), MaxPacket)
	}
	if h := ClusterHash(clusterID); string(pkt[6:14]) != string(h[:]) {
		return Heartbeat{}, ErrWrongCluster
	}
	body, sum := pkt[:len(pkt)-macLen], pkt[len(pkt)-macLen:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return Heartbeat{}, ErrBadMAC
	}
	return parse(body)
}

// parse reads an authenticated body. Even authenticated input is checked
// strictly: a bug in a peer must not become a panic here.
func parse(b []byte) (Heartbeat, error) {
	var msg Heartbeat
	flags := b[5]
	if flags&^flagsKnown != 0 {
		return msg, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, flags)
	}
	msg.HasEcho = flags&flagEcho != 0
	msg.Link = int(b[14])
	if msg.Link >= MaxLinks {
		return msg, fmt.Errorf("%w: link %d out of range", ErrMalformed, msg.Link)
	}
	u := func(off int) uint64 { return binary.BigEndian.Uint64(b[off:]) }
	msg.BootID, msg.Seq, msg.ToBoot = u(15), u(23), u(31)
	if msg.BootID == 0 || msg.Seq == 0 {
		return msg, fmt.Errorf("%w: zero boot ID or sequence", ErrMalformed)
	}
	st, et, eh := u(39), u(47), u(55)
	const maxT = 1<<63 - 1
	if st > maxT || et > maxT || eh > maxT {
		return msg, fmt.Errorf("%w: negative time", ErrMalformed)
	}
	msg.SendTime, msg.EchoTime, msg.EchoHold = time.Duration(st), time.Duration(et), time.Duration(eh)
	if !msg.HasEcho && (et != 0 || eh != 0) {
		return msg, fmt.Errorf("%w: echo times without echo flag", ErrMalformed)
	}
	rest := b[fixedLen:]
	var ok bool
	if msg.From, rest, ok = readName(rest); !ok {
		return msg, fmt.Errorf("%w: bad sender name", ErrMalformed)
	}
	if msg.To, rest, ok = readName(rest); !ok {
		return msg, fmt.Errorf("%w: bad addressee name", ErrMalformed)
	}
	if len(rest) < 2 {
		return msg, fmt.Errorf("%w: truncated info", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if n > MaxInfo || n != len(rest) {
		return msg, fmt.Errorf("%w: info length %d, %d bytes left", ErrMalformed, n, len(rest))
	}
	if n > 0 {
		msg.Info = append([]byte(nil), rest...)
	}
	return msg, nil
}

func readName(b []byte) (string, []byte, bool) {
	if len(b) < 1 {
		return "", b, false
	}
	n := int(b[0])
	if n == 0 || len(b) < 1+n {
		return "", b, false
	}
	return string(b[1 : 1+n]), b[1+n:], true
}
