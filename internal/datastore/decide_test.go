package datastore

import (
	"strings"
	"testing"
	"time"
)

// obsOf builds an observation of rec read during [start, end] (in ms).
func obsOf(start, end int, rec Record) observation {
	data, err := encodeLease(rec)
	if err != nil {
		panic(err)
	}
	return observation{start: time.Duration(start) * ms, end: time.Duration(end) * ms, kind: obsRecord, rec: rec, raw: string(data)}
}

func absentAt(start, end int) observation {
	return observation{start: time.Duration(start) * ms, end: time.Duration(end) * ms, kind: obsAbsent}
}

func corruptAt(start, end int, raw string) observation {
	return observation{start: time.Duration(start) * ms, end: time.Duration(end) * ms, kind: obsCorrupt, raw: raw}
}

func TestDecide(t *testing.T) {
	me := holder("me")
	n1 := Record{Resource: "vm1", Holder: holder("n1"), Counter: 41}
	n1b := n1
	n1b.Counter = 42
	released := n1
	released.Released = true
	mine := Record{Resource: "vm1", Holder: me, Counter: 9}
	tentative := mine
	tentative.Tentative = true
	otherBoot := Record{Resource: "vm1", Holder: Holder{Node: "me", Incarnation: "old-boot"}, Counter: 9}
	// The writer's wall clock must not matter: a dead holder whose clock
	// runs a century ahead, or a live one stuck in 1970.
	future := n1
	future.Written = time.Now().AddDate(100, 0, 0)
	past := n1b
	past.Written = time.Unix(0, 0)
	const L = 300 * ms

	cases := []struct {
		name string
		obs  []observation
		want verdict
		why  string
		next uint64
		wait time.Duration
	}{
		{name: "no reads yet", want: verdictWait, wait: L},
		{name: "absent is free", obs: []observation{absentAt(0, 1)}, want: verdictTake, why: "absent", next: 1},
		{name: "released is free", obs: []observation{obsOf(0, 1, released)}, want: verdictTake, why: "released", next: 42},
		{name: "mine is mine", obs: []observation{obsOf(0, 1, mine)}, want: verdictTake, why: "mine", next: 10},
		// A failed acquisition of mine may have left its record, landing
		// over a winner's: it must not pass for a lease I hold.
		{name: "tentative mine is not mine", obs: []observation{obsOf(0, 1, tentative)}, want: verdictWait, wait: L},
		{name: "tentative mine still for L expires", obs: []observation{obsOf(0, 1, tentative), obsOf(301, 302, tentative)}, want: verdictTake, why: "expired", next: 10},
		{name: "same node, other incarnation is not mine", obs: []observation{obsOf(0, 1, otherBoot)}, want: verdictWait, wait: L},
		{name: "held, watched 100ms", obs: []observation{obsOf(0, 10, n1), obsOf(110, 120, n1)}, want: verdictWait, wait: 200 * ms},
		{name: "held, still for L", obs: []observation{obsOf(0, 10, n1), obsOf(310, 320, n1)}, want: verdictTake, why: "expired", next: 42},
		// From the first read's start to the last's end is 320ms, but a
		// write may have landed unseen before 10ms or after 300ms: only
		// 290ms are proven still.
		{name: "stillness counts from first end to last start", obs: []observation{obsOf(0, 10, n1), obsOf(300, 320, n1)}, want: verdictWait, wait: 10 * ms},
		{name: "a change is a live holder", obs: []observation{obsOf(0, 10, n1), obsOf(400, 410, n1b)}, want: verdictHeld},
		{name: "a change to released is free", obs: []observation{obsOf(0, 10, n1), obsOf(50, 60, released)}, want: verdictTake, why: "released", next: 42},
		{name: "a change to absent is free", obs: []observation{obsOf(0, 10, n1), absentAt(50, 60)}, want: verdictTake, why: "absent", next: 1},
		{name: "dead writer with a clock in the future expires", obs: []observation{obsOf(0, 10, future), obsOf(310, 320, future)}, want: verdictTake, why: "expired", next: 42},
		{name: "live writer with a clock in the past is alive", obs: []observation{obsOf(0, 10, future), obsOf(20, 30, past)}, want: verdictHeld},
		{name: "corrupt is not free", obs: []observation{corruptAt(0, 1, "junk")}, want: verdictWait, wait: L},
		{name: "corrupt still for L expires", obs: []observation{corruptAt(0, 10, "junk"), corruptAt(310, 320, "junk")}, want: verdictTake, why: "expired", next: 1},
		{name: "corrupt and changing is held", obs: []observation{corruptAt(0, 10, "junk"), corruptAt(20, 30, "junk2")}, want: verdictHeld},
		{name: "corrupt then valid is held", obs: []observation{corruptAt(0, 10, "junk"), obsOf(20, 30, n1)}, want: verdictHeld},
	}
	for i, c := range cases {
		d := decide("vm1", me, L, c.obs)
		if d.verdict != c.want {
			t.Errorf("%d %s: verdict %d, want %d (%+v)", i, c.name, d.verdict, c.want, d)
			continue
		}
		switch c.want {
		case verdictTake:
			if d.why != c.why || d.next != c.next {
				t.Errorf("%d %s: took as %q with counter %d, want %q %d", i, c.name, d.why, d.next, c.why, c.next)
			}
		case verdictWait:
			if d.wait != c.wait {
				t.Errorf("%d %s: wait %v, want %v", i, c.name, d.wait, c.wait)
			}
		case verdictHeld:
			if d.held == nil || d.held.Resource != "vm1" || d.held.Age < 0 {
				t.Errorf("%d %s: held error %+v", i, c.name, d.held)
			}
		}
	}
}

func TestHeldErrorMessage(t *testing.T) {
	for _, c := range []struct {
		err  HeldError
		want string
	}{
		{HeldError{Resource: "vm1", Holder: holder("n1"), Age: 400 * ms}, "disk lease of vm1 is held by n1 (renewed 0.4 s ago)"},
		{HeldError{Resource: "vm1", Age: 1500 * ms}, "disk lease of vm1 is held by an unreadable record (changed 1.5 s ago)"},
		{HeldError{Resource: "vm1", Holder: holder("n2"), Age: -1, Race: true}, "disk lease of vm1 is held by n2 (it won a concurrent acquire)"},
		{HeldError{Resource: "vm1", Holder: holder("n2"), Age: -1}, "disk lease of vm1 is held by n2"},
	} {
		if got := c.err.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestExtend(t *testing.T) {
	const H = 225 * ms
	for i, c := range []struct {
		valid, start, end time.Duration
		want              time.Duration
		ok                bool
	}{
		{valid: 225 * ms, start: 50 * ms, end: 60 * ms, want: 275 * ms, ok: true},
		// A renewal that completes after the lease lapsed must not revive
		// it: an acquirer may have taken the lease meanwhile.
		{valid: 225 * ms, start: 200 * ms, end: 230 * ms, want: 225 * ms, ok: false},
		{valid: 225 * ms, start: 225 * ms, end: 226 * ms, want: 225 * ms, ok: false},
		// Validity never shrinks (an earlier-started renewal finishing).
		{valid: 300 * ms, start: 50 * ms, end: 60 * ms, want: 300 * ms, ok: true},
	} {
		got, ok := extend(c.valid, c.start, c.end, H)
		if got != c.want || ok != c.ok {
			t.Errorf("%d: extend = %v, %v; want %v, %v", i, got, ok, c.want, c.ok)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.LeaseTime != DefaultLeaseTime || 3*o.Renew >= o.LeaseTime || o.hold() < 2*o.Renew {
		t.Fatalf("defaults %+v", o)
	}
	if _, err := testOpts().withDefaults(); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		o    Options
		want string
	}{
		{Options{LeaseTime: 300 * ms, Renew: 100 * ms}, "third"},
		{Options{LeaseTime: 300 * ms, Renew: 90 * ms, Margin: 150 * ms}, "two renew periods"},
		{Options{LeaseTime: 300 * ms, Settle: 100 * ms}, "settle"},
		{Options{LeaseTime: -1}, "negative"},
	} {
		if _, err := c.o.withDefaults(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d: err %v, want %q", i, err, c.want)
		}
	}
}
