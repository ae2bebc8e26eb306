package lease

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func names(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("node-%02d", i)
	}
	return s
}

func TestReportRoundTrip(t *testing.T) {
	m, err := NewMemberSet([]string{"c", "a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	r := LossReport{AsOf: 1234567 * time.Microsecond, Lost: []Loss{
		{"c", 1500*ms + 700*time.Microsecond}, {"a", time.Hour},
	}}
	b, err := m.AppendReport([]byte{0xAA}, r)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, 0xBB)
	got, n, err := m.DecodeReport(b[1:])
	if err != nil {
		t.Fatal(err)
	}
	if b[1+n] != 0xBB {
		t.Fatalf("decoder took %d bytes of %x", n, b)
	}
	// Rounded toward waiting longer: AsOf and silences down, capped.
	want := LossReport{AsOf: 1234 * ms, Lost: []Loss{{"a", MaxSilence}, {"c", 1500 * ms}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestReportSize(t *testing.T) {
	for _, n := range []int{3, 64, MaxMembers} {
		m, err := NewMemberSet(names(n))
		if err != nil {
			t.Fatal(err)
		}
		r := LossReport{AsOf: 365 * 24 * time.Hour}
		for _, name := range names(n) {
			r.Lost = append(r.Lost, Loss{name, time.Hour})
		}
		b, err := m.AppendReport(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d members all lost: %d bytes", n, len(b))
		if n == 64 && len(b) > 400 {
			t.Errorf("64 members: %d bytes", len(b))
		}
		if len(b) > 512 {
			t.Errorf("%d members: %d bytes, more than membership.MaxInfo", n, len(b))
		}
		if _, _, err := m.DecodeReport(b); err != nil {
			t.Error(err)
		}
	}
	if _, err := NewMemberSet(names(MaxMembers + 1)); err == nil {
		t.Error("too many members accepted")
	}
}

func TestReportErrors(t *testing.T) {
	m, _ := NewMemberSet([]string{"a", "b", "c"})
	other, _ := NewMemberSet([]string{"a", "b", "d"})
	good, err := m.AppendReport(nil, LossReport{AsOf: time.Second, Lost: []Loss{{"b", 2 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.DecodeReport(good); !errors.Is(err, ErrMembers) {
		t.Errorf("other member list: %v", err)
	}
	v2 := bytes.Clone(good)
	v2[0] = 2
	if _, _, err := m.DecodeReport(v2); !errors.Is(err, ErrVersion) {
		t.Errorf("version 2: %v", err)
	}
	for i := range len(good) {
		if _, _, err := m.DecodeReport(good[:i]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated at %d: %v", i, err)
		}
	}
	pad := bytes.Clone(good)
	pad[8] |= 0x80 // bitmap (after version, hash, count, 2-byte AsOf): a bit past the last member
	if _, _, err := m.DecodeReport(pad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("padding bit: %v", err)
	}
	if _, err := m.AppendReport(nil, LossReport{Lost: []Loss{{"x", time.Second}}}); err == nil {
		t.Error("non-member accepted")
	}
	if _, err := NewMemberSet([]string{"a", "a"}); err == nil {
		t.Error("duplicate accepted")
	}
}

func FuzzDecodeReport(f *testing.F) {
	m, _ := NewMemberSet(names(10))
	b, _ := m.AppendReport(nil, LossReport{AsOf: time.Minute, Lost: []Loss{{"node-03", time.Second}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := m.DecodeReport(b)
		if err != nil {
			return
		}
		again, err := m.AppendReport(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		r2, _, err := m.DecodeReport(again)
		if err != nil || !reflect.DeepEqual(r, r2) || n > len(b) {
			t.Fatalf("%+v -> %x -> %+v, %v", r, again, r2, err)
		}
	})
}
