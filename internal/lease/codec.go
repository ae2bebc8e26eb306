package lease

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"
)

// Wire format of a LossReport, version 1 (at most 13 + n/8 + 2n bytes for
// n members: 149 bytes for 64, 285 for MaxMembers):
//
//	byte    version (1)
//	4 bytes MemberSet hash, big endian
//	uvarint member count
//	uvarint AsOf in whole milliseconds, rounded down
//	bitmap  (count+7)/8 bytes; bit i%8 of byte i/8 set: member i is lost
//	uvarint per set bit, in member order: Silence in whole milliseconds,
//	        rounded down and capped at MaxSilence
//
// Rounding AsOf down makes the Judge's Age larger and rounding Silence down
// makes it smaller: both only make the Judge wait longer. A reader with a
// different member list (the hash or count differs) refuses the report
// rather than map bits to the wrong names; a newer version is refused too,
// so a format change must wait until every node reads it.
const (
	// LossVersion is the wire format version written by AppendReport.
	LossVersion = 1
	// MaxMembers is the largest member list a report can describe.
	MaxMembers = 128
	// MaxSilence caps a reported silence (two uvarint bytes). Longer
	// silences are reported as MaxSilence, which only understates them.
	MaxSilence = 16383 * time.Millisecond
)

// Decoding errors.
var (
	ErrVersion = errors.New("lease: unknown loss report version")
	ErrMembers = errors.New("lease: loss report built for another member list")
	ErrCorrupt = errors.New("lease: malformed loss report")
)

// LossReport is what a node piggybacks on its heartbeats: the peers it has
// not heard from.
type LossReport struct {
	// AsOf is when the silences were measured, on the reporter's
	// heartbeat clock (the clock of membership's SendTime).
	AsOf time.Duration
	// Lost lists the silent peers; members not listed count as heard.
	Lost []Loss
}

// MemberSet is a member list in a canonical order, for encoding loss
// reports as a bitmap. Build it from the cluster's node list (voters and
// non-voters, self included); every node must build it from the same list.
type MemberSet struct {
	names []string
	index map[string]int
	hash  uint32
}

// NewMemberSet sorts and checks names (unique, non-empty, at most
// MaxMembers).
func NewMemberSet(names []string) (*MemberSet, error) {
	s := slices.Clone(names)
	slices.Sort(s)
	if len(s) > MaxMembers {
		return nil, fmt.Errorf("lease: %d members, at most %d", len(s), MaxMembers)
	}
	m := &MemberSet{names: s, index: make(map[string]int, len(s))}
	h := fnv.New32a()
	for i, n := range s {
		if n == "" {
			return nil, errors.New("lease: empty member name")
		}
		if i > 0 && s[i-1] == n {
			return nil, fmt.Errorf("lease: member %q listed twice", n)
		}
		m.index[n] = i
		h.Write([]byte(n))
		h.Write([]byte{0})
	}
	m.hash = h.Sum32()
	return m, nil
}

// Names returns the members in canonical order.
func (m *MemberSet) Names() []string { return slices.Clone(m.names) }

// Hash identifies the member list.
func (m *MemberSet) Hash() uint32 { return m.hash }

// AppendReport appends r's encoding to dst. Every lost node must be a
// member; negative durations are errors.
func (m *MemberSet) AppendReport(dst []byte, r LossReport) ([]byte, error) {
	if r.AsOf < 0 {
		return dst, errors.New("lease: negative AsOf")
	}
	n := len(m.names)
	bitmap := make([]byte, (n+7)/8)
	silence := make([]time.Duration, n)
	for _, l := range r.Lost {
		i, ok := m.index[l.Node]
		switch {
		case !ok:
			return dst, fmt.Errorf("lease: lost node %q is not a member", l.Node)
		case l.Silence < 0:
			return dst, fmt.Errorf("lease: negative silence for %q", l.Node)
		}
		bitmap[i/8] |= 1 << (i % 8)
		silence[i] = max(silence[i], min(l.Silence, MaxSilence))
	}
	dst = append(dst, LossVersion)
	dst = binary.BigEndian.AppendUint32(dst, m.hash)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = binary.AppendUvarint(dst, uint64(r.AsOf/time.Millisecond))
	dst = append(dst, bitmap...)
	for i := range n {
		if bitmap[i/8]&(1<<(i%8)) != 0 {
			dst = binary.AppendUvarint(dst, uint64(silence[i]/time.Millisecond))
		}
	}
	return dst, nil
}

// DecodeReport decodes a report from the start of b and returns it with
// the number of bytes it took. Lost comes in member order.
func (m *MemberSet) DecodeReport(b []byte) (LossReport, int, error) {
	var r LossReport
	if len(b) < 5 {
		return r, 0, ErrCorrupt
	}
	if b[0] != LossVersion {
		return r, 0, fmt.Errorf("%w %d", ErrVersion, b[0])
	}
	if binary.BigEndian.Uint32(b[1:5]) != m.hash {
		return r, 0, ErrMembers
	}
	off := 5
	uvarint := func() (uint64, bool) {
		v, k := binary.Uvarint(b[off:])
		if k <= 0 {
			return 0, false
		}
		off += k
		return v, true
	}
	n, ok := uvarint()
	if !ok {
		return r, 0, ErrCorrupt
	}
	if n != uint64(len(m.names)) {
		return r, 0, ErrMembers
	}
	asOf, ok := uvarint()
	if !ok || asOf > uint64(maxMillis) {
		return r, 0, ErrCorrupt
	}
	r.AsOf = time.Duration(asOf) * time.Millisecond
	nb := (int(n) + 7) / 8
	if len(b)-off < nb {
		return r, 0, ErrCorrupt
	}
	bitmap := b[off : off+nb]
	off += nb
	if pad := int(n) % 8; pad != 0 && bitmap[nb-1]>>pad != 0 {
		return r, 0, ErrCorrupt
	}
	for i := range int(n) {
		if bitmap[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		s, ok := uvarint()
		if !ok || s > uint64(MaxSilence/time.Millisecond) {
			return r, 0, ErrCorrupt
		}
		r.Lost = append(r.Lost, Loss{Node: m.names[i], Silence: time.Duration(s) * time.Millisecond})
	}
	return r, off, nil
}

const maxMillis = int64(Forever / time.Millisecond)
