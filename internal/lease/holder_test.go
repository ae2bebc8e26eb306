package lease

import (
	"testing"
	"time"
)

const ms = time.Millisecond

func newHolder(t *testing.T, voters []string, self string) *Holder {
	t.Helper()
	h, err := NewHolder(Config{LeaseDuration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h.SetVoters(voters, self)
	return h
}

type echo struct {
	at, echoed time.Duration
	from       string
}

func TestHolderUntil(t *testing.T) {
	for i, tc := range []struct {
		voters []string
		self   string
		echoes []echo
		until  time.Duration
	}{
		// Three voters: one peer's echo plus self is a majority.
		0: {[]string{"a", "b", "c"}, "a", nil, 0},
		1: {[]string{"a", "b", "c"}, "a", []echo{{100 * ms, 50 * ms, "b"}}, 1050 * ms},
		2: {[]string{"a", "b", "c"}, "a", []echo{{100 * ms, 50 * ms, "b"}, {120 * ms, 80 * ms, "c"}}, 1080 * ms},
		// An older echo never moves the lease back.
		3: {[]string{"a", "b", "c"}, "a", []echo{{100 * ms, 80 * ms, "b"}, {120 * ms, 50 * ms, "b"}}, 1080 * ms},
		// Five voters: the second newest of four peers counts.
		4: {[]string{"a", "b", "c", "d", "e"}, "a", []echo{{100 * ms, 90 * ms, "b"}}, 0},
		5: {[]string{"a", "b", "c", "d", "e"}, "a", []echo{{100 * ms, 90 * ms, "b"}, {100 * ms, 10 * ms, "c"}, {100 * ms, 40 * ms, "d"}}, 1040 * ms},
		// Four voters: a majority is 3, so two peers.
		6: {[]string{"a", "b", "c", "d"}, "a", []echo{{100 * ms, 90 * ms, "b"}, {100 * ms, 10 * ms, "c"}}, 1010 * ms},
		// A non-voter needs a majority of the voters by itself.
		7: {[]string{"b", "c", "d"}, "a", []echo{{100 * ms, 90 * ms, "b"}}, 0},
		8: {[]string{"b", "c", "d"}, "a", []echo{{100 * ms, 90 * ms, "b"}, {100 * ms, 30 * ms, "d"}}, 1030 * ms},
		// Echoes from non-voters, from self and from the future do not count.
		9:  {[]string{"a", "b", "c"}, "a", []echo{{100 * ms, 90 * ms, "x"}, {100 * ms, 90 * ms, "a"}, {100 * ms, 200 * ms, "b"}}, 0},
		10: {[]string{"a"}, "a", nil, Forever},
		11: {nil, "a", nil, 0},
	} {
		h := newHolder(t, tc.voters, tc.self)
		for _, e := range tc.echoes {
			h.Observe(e.at, e.from, e.echoed)
		}
		if got := h.Until(); got != tc.until {
			t.Errorf("%d: until %s, want %s (%s)", i, got, tc.until, h)
		}
		if tc.until > 0 && tc.until != Forever {
			if !h.Valid(tc.until-1) || h.Valid(tc.until) {
				t.Errorf("%d: Valid is not [.., until)", i)
			}
			if got := h.Remaining(tc.until - 300*ms); got != 300*ms {
				t.Errorf("%d: remaining %s, want 300ms", i, got)
			}
		}
	}
}

// Echoes from a peer later removed from the voters stop counting, and
// count again when it is back.
func TestHolderSetVoters(t *testing.T) {
	h := newHolder(t, []string{"a", "b", "c"}, "a")
	h.Observe(100*ms, "b", 90*ms)
	h.Observe(100*ms, "c", 10*ms)
	if got := h.Until(); got != 1090*ms {
		t.Fatalf("until %s", got)
	}
	h.SetVoters([]string{"a", "c"}, "a")
	if got := h.Until(); got != 1010*ms {
		t.Fatalf("until %s after b left", got)
	}
	h.SetVoters([]string{"a", "b", "c", "d", "e"}, "a")
	if got := h.Until(); got != 1010*ms {
		t.Fatalf("until %s with five voters", got)
	}
	if got, want := h.String(), "until=1.01s need=2 b=90ms c=10ms d=- e=-"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func TestConfig(t *testing.T) {
	c, err := Config{}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.LeaseDuration != DefaultLeaseDuration || c.WatchdogTimeout != DefaultWatchdogTimeout || c.Drift != DefaultDrift {
		t.Fatalf("defaults: %+v", c)
	}
	// 2 * 2s * 1.01/0.99 + 250ms
	if got := c.ResetBound(); got < 4330*ms || got > 4332*ms {
		t.Fatalf("reset bound %s", got)
	}
	for i, bad := range []Config{{Drift: 0.2}, {LeaseDuration: -1}, {Margin: -1}} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%d: %+v accepted", i, bad)
		}
	}
}
