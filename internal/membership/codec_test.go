package membership

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleHeartbeats() []Heartbeat {
	return []Heartbeat{
		{From: "a", To: "b", Link: 0, BootID: 1, Seq: 1},
		{From: "node-1", To: "node-2", Link: 7, BootID: 1 << 63, Seq: 1<<64 - 1, ToBoot: 42,
			SendTime: time.Hour, HasEcho: true, EchoTime: time.Minute, EchoHold: 3 * time.Millisecond,
			Info: []byte("term=7 quorum=yes")},
		{From: strings.Repeat("x", MaxNameLen), To: strings.Repeat("y", MaxNameLen), Link: 3, BootID: 9, Seq: 9,
			HasEcho: true, Info: bytes.Repeat([]byte{0xff}, MaxInfo)},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for i, hb := range sampleHeartbeats() {
		pkt, err := Encode(testKey, testCluster, hb)
		if err != nil {
			t.Fatalf("case %d: Encode: %v", i, err)
		}
		if len(pkt) < MinPacket || len(pkt) > MaxPacket {
			t.Fatalf("case %d: %d bytes outside [%d, %d]", i, len(pkt), MinPacket, MaxPacket)
		}
		got, err := Decode(testKey, testCluster, pkt)
		if err != nil {
			t.Fatalf("case %d: Decode: %v", i, err)
		}
		if !reflect.DeepEqual(got, hb) {
			t.Fatalf("case %d: got %+v, want %+v", i, got, hb)
		}
	}
}

// TestDecodeRejects: each check of Decode, with its sentinel error.
func TestDecodeRejects(t *testing.T) {
	good, err := Encode(testKey, testCluster, sampleHeartbeats()[1])
	if err != nil {
		t.Fatal(err)
	}
	otherKey := bytes.Repeat([]byte{7}, 32)
	// resign recomputes the MAC after a change, to reach the field checks.
	resign := func(b []byte) []byte {
		return hmacSum(testKey, b[:len(b)-macLen])
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		key     []byte
		cluster string
		pkt     []byte
		want    error
	}{
		{testKey, testCluster, nil, ErrShort},
		{testKey, testCluster, []byte("VGHB"), ErrShort},
		{testKey, testCluster, good[:MinPacket-1], ErrShort},
		{testKey, testCluster, mod(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		{testKey, testCluster, mod(func(b []byte) []byte { b[4] = 2; return b }), ErrVersion},
		{testKey, "other-cluster", good, ErrWrongCluster},
		{otherKey, testCluster, good, ErrBadMAC},
		{nil, testCluster, good, ErrNoKey},
		{testKey, testCluster, mod(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrBadMAC},
		{testKey, testCluster, mod(func(b []byte) []byte { b[20] ^= 1; return b }), ErrBadMAC},
		{testKey, testCluster, good[:len(good)-1], ErrBadMAC},
		{testKey, testCluster, append(bytes.Clone(good), 0), ErrBadMAC},
		{testKey, testCluster, make([]byte, MaxPacket+1), ErrMagic},
		{testKey, testCluster, mod(func(b []byte) []byte { b[5] = 0x80; return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { b[14] = MaxLinks; return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { clear(b[15:23]); return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { clear(b[23:31]); return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { b[39] = 0x80; return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { b[5] = 0; return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { b[fixedLen] = 0; return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { b[fixedLen] = 200; return resign(b) }), ErrMalformed},
		{testKey, testCluster, mod(func(b []byte) []byte { return hmacSum(testKey, append(b[:len(b)-macLen], 1)) }), ErrMalformed},
	}
	for i, tt := range tests {
		_, err := Decode(tt.key, tt.cluster, tt.pkt)
		if !errors.Is(err, tt.want) {
			t.Errorf("case %d: got %v, want %v", i, err, tt.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "membership: ") {
			t.Errorf("case %d: error %q lacks the package prefix", i, err)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	ok := Heartbeat{From: "a", To: "b", BootID: 1, Seq: 1}
	tests := []func(*Heartbeat){
		func(h *Heartbeat) { h.From = "" },
		func(h *Heartbeat) { h.To = strings.Repeat("z", MaxNameLen+1) },
		func(h *Heartbeat) { h.Link = MaxLinks },
		func(h *Heartbeat) { h.Link = -1 },
		func(h *Heartbeat) { h.BootID = 0 },
		func(h *Heartbeat) { h.Seq = 0 },
		func(h *Heartbeat) { h.SendTime = -1 },
		func(h *Heartbeat) { h.EchoTime = time.Second },
		func(h *Heartbeat) { h.Info = make([]byte, MaxInfo+1) },
	}
	for i, mod := range tests {
		hb := ok
		mod(&hb)
		if _, err := Encode(testKey, testCluster, hb); !errors.Is(err, ErrMalformed) {
			t.Errorf("case %d: got %v, want ErrMalformed", i, err)
		}
	}
	if _, err := Encode(nil, testCluster, ok); !errors.Is(err, ErrNoKey) {
		t.Errorf("nil key: %v", err)
	}
}

// TestDecodeGarbage feeds random packets, every truncation and every
// single-bit flip of valid packets: Decode must fail cleanly, never panic,
// and never accept a changed packet.
func TestDecodeGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		b := make([]byte, r.IntN(MaxPacket+64))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%2 == 0 && len(b) >= 6 {
			copy(b, magic) // get past the magic and version checks
			b[4] = Version
		}
		if _, err := Decode(testKey, testCluster, b); err == nil {
			t.Fatalf("case %d: random packet accepted", i)
		}
	}
	for i, hb := range sampleHeartbeats() {
		pkt, _ := Encode(testKey, testCluster, hb)
		for n := range len(pkt) {
			if _, err := Decode(testKey, testCluster, pkt[:n]); err == nil {
				t.Fatalf("case %d: truncated to %d accepted", i, n)
			}
		}
		for bit := range len(pkt) * 8 {
			b := bytes.Clone(pkt)
			b[bit/8] ^= 1 << (bit % 8)
			if _, err := Decode(testKey, testCluster, b); err == nil {
				t.Fatalf("case %d: bit %d flipped accepted", i, bit)
			}
		}
	}
}

// FuzzDecode: no input panics, and whatever decodes re-encodes to the same
// bytes (the format is canonical, so there is one packet per message).
// Run: go test -fuzz FuzzDecode ./internal/membership/
func FuzzDecode(f *testing.F) {
	for _, hb := range sampleHeartbeats() {
		pkt, err := Encode(testKey, testCluster, hb)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pkt)
		f.Add(pkt[:len(pkt)/2])
	}
	f.Add([]byte{})
	f.Add([]byte("VGHB"))
	f.Add([]byte("VGHB\x02"))
	f.Add(make([]byte, MinPacket))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		hb, err := Decode(testKey, testCluster, pkt)
		if err != nil {
			return
		}
		again, err := Encode(testKey, testCluster, hb)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", hb, err)
		}
		if !bytes.Equal(again, pkt) {
			t.Fatalf("re-encoding differs:\n%x\n%x", pkt, again)
		}
	})
}

// FuzzDecodeForged fuzzes the field parser behind the MAC: the fuzzer's
// bytes are signed first, as a buggy or hostile peer holding the key would.
func FuzzDecodeForged(f *testing.F) {
	for _, hb := range sampleHeartbeats() {
		pkt, _ := Encode(testKey, testCluster, hb)
		f.Add(pkt[:len(pkt)-macLen])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		pkt := hmacSum(testKey, bytes.Clone(body))
		hb, err := Decode(testKey, testCluster, pkt)
		if err != nil {
			return
		}
		again, err := Encode(testKey, testCluster, hb)
		if err != nil || !bytes.Equal(again, pkt) {
			t.Fatalf("round trip of %+v: %v\n%x\n%x", hb, err, pkt, again)
		}
	})
}
