package datastore

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	in := Record{Resource: "vm1", Holder: holder("n1"), Counter: 7, Written: time.Unix(1700000000, 0).UTC()}
	data, err := encodeLease(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("vigil lease 1 ")) {
		t.Fatalf("header: %q", data)
	}
	out, err := decodeLease(data, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("got %+v, want %+v", out, in)
	}
}

// A torn or damaged file must decode as ErrCorrupt, never as a record:
// a lease misread as free (or as someone else's) is a split brain.
func TestFrameDamageIsCorrupt(t *testing.T) {
	good, err := encodeLease(Record{Resource: "vm1", Holder: holder("n1"), Counter: 7})
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := encodeHeartbeat(HeartbeatRecord{Node: "n1", Incarnation: "b", Counter: 1, State: StateAlive})
	flipped := bytes.Clone(good)
	flipped[len(flipped)-3] ^= 0x20
	otherRes, _ := encodeLease(Record{Resource: "vm2", Holder: holder("n1"), Counter: 7})
	// Still valid JSON of the same length: only the checksum catches it.
	digit := bytes.Replace(good, []byte(`"counter":7`), []byte(`"counter":6`), 1)
	if bytes.Equal(digit, good) {
		t.Fatal("counter not found in the encoding")
	}
	cases := map[string][]byte{
		"empty":          {},
		"garbage":        []byte("\x00\xff garbage \x13\x37"),
		"truncated":      good[:len(good)-5],
		"header only":    good[:bytes.IndexByte(good, '\n')+1],
		"flipped bit":    flipped,
		"changed digit":  digit,
		"appended":       append(bytes.Clone(good), 'x'),
		"heartbeat kind": hb,
		"other resource": otherRes,
	}
	for name, data := range cases {
		if _, err := decodeLease(data, "vm1"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
}

func TestFrameNewerVersionRefused(t *testing.T) {
	data, err := encodeFrame(leaseKind, leaseVersion+1, Record{Resource: "vm1", Holder: holder("n1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeLease(data, "vm1"); !errors.Is(err, ErrVersion) {
		t.Fatalf("err %v, want ErrVersion", err)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"vm1", "web-01", "a.b", "n_1"} {
		if err := checkName("x", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "a/b", "a\x00", "a\nb", string(make([]byte, 201))} {
		if err := checkName("x", bad); !errors.Is(err, ErrName) {
			t.Errorf("%q accepted", bad)
		}
	}
}
