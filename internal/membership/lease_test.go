package membership

import (
	"bytes"
	"testing"
	"time"
)

// TestInfoNewestSendWins: a heartbeat delayed on one link never replaces
// the Info of a heartbeat sent later and received on another link.
func TestInfoNewestSendWins(t *testing.T) {
	s := newSim(t, map[string]int{"a": 2, "b": 2})
	a, b := s.ms["a"], s.ms["b"]
	if err := b.SetInfo([]byte("old")); err != nil {
		t.Fatal(err)
	}
	out := b.Tick(0) // one heartbeat per link, both sent at 0
	if len(out) != 2 {
		t.Fatalf("%d heartbeats, want 2", len(out))
	}
	var delayed Outgoing
	for _, o := range out {
		if o.Link == 1 {
			delayed = o
		} else if err := a.Receive(time.Millisecond, o.Link, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetInfo([]byte("new")); err != nil {
		t.Fatal(err)
	}
	out = b.Tick(tInterval)
	for _, o := range out {
		if o.Link == 0 {
			if err := a.Receive(tInterval+time.Millisecond, 0, o.Msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	ns := s.node("a", "b")
	if !bytes.Equal(ns.Info, []byte("new")) || ns.InfoSend != tInterval {
		t.Fatalf("info %q sent %s, want new at %s", ns.Info, ns.InfoSend, tInterval)
	}
	// The link-1 heartbeat of time 0 arrives late: accepted (liveness),
	// but its Info is older.
	if err := a.Receive(tInterval+2*time.Millisecond, 1, delayed.Msg); err != nil {
		t.Fatal(err)
	}
	ns = s.node("a", "b")
	if !bytes.Equal(ns.Info, []byte("new")) || ns.InfoSend != tInterval {
		t.Fatalf("delayed heartbeat replaced info: %q sent %s", ns.Info, ns.InfoSend)
	}
	if ns.Links[1].Status != LinkUp {
		t.Fatalf("link 1 %s: the late heartbeat still proves the link", ns.Links[1].Status)
	}
}

// TestEcho: Echo is the newest echo of our send times addressed to this
// incarnation, InfoEcho that of the heartbeat whose Info is kept; both
// reset when the peer restarts, and an echo for another incarnation of
// ours does not count.
func TestEcho(t *testing.T) {
	s := newSim(t, map[string]int{"a": 2, "b": 2})
	a, b := s.ms["a"], s.ms["b"]
	if ns := s.node("a", "b"); ns.HasEcho || ns.InfoHasEcho {
		t.Fatalf("echo before any contact: %+v", ns)
	}
	// a's heartbeats of 0 (both links) reach b; b's heartbeats of 0 were
	// sent before that (no echo yet).
	aOut := a.Tick(0)
	bOut := b.Tick(0)
	for _, o := range aOut {
		if err := b.Receive(time.Millisecond, o.Link, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range bOut {
		if err := a.Receive(time.Millisecond, o.Link, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	if ns := s.node("a", "b"); ns.HasEcho || ns.InfoHasEcho || ns.InfoSend != 0 {
		t.Fatalf("echo from heartbeats sent before hearing us: %+v", ns)
	}
	// a sends at 100 on link 0 only; b replies at 150 on both links: link 0
	// echoes 100, link 1 still echoes 0.
	aOut = a.Tick(tInterval)
	if err := b.Receive(tInterval+time.Millisecond, 0, aOut[0].Msg); err != nil {
		t.Fatal(err)
	}
	bOut = b.Tick(tInterval + tInterval/2)
	for _, o := range bOut {
		want := time.Duration(0)
		if o.Link == 0 {
			want = tInterval
		}
		if !o.Msg.HasEcho || o.Msg.EchoTime != want {
			t.Fatalf("link %d echo %v %s, want %s", o.Link, o.Msg.HasEcho, o.Msg.EchoTime, want)
		}
	}
	// Link 0 arrives first, then link 1 (same SendTime: the Info is kept
	// from the first; Echo stays the newest).
	recv := tInterval + tInterval/2 + time.Millisecond
	for _, link := range []int{0, 1} {
		for _, o := range bOut {
			if o.Link == link {
				if err := a.Receive(recv, link, o.Msg); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	ns := s.node("a", "b")
	if !ns.HasEcho || ns.Echo != tInterval {
		t.Fatalf("echo %v %s, want %s", ns.HasEcho, ns.Echo, tInterval)
	}
	if !ns.InfoHasEcho || ns.InfoEcho != tInterval || ns.InfoSend != tInterval+tInterval/2 {
		t.Fatalf("info echo %v %s sent %s", ns.InfoHasEcho, ns.InfoEcho, ns.InfoSend)
	}

	// A heartbeat echoing for another incarnation of a: not counted.
	bOut = b.Tick(3 * tInterval)
	for _, o := range bOut {
		o.Msg.ToBoot = 999
		if err := a.Receive(3*tInterval+time.Millisecond, o.Link, o.Msg); err != nil {
			t.Fatal(err)
		}
	}
	ns = s.node("a", "b")
	if ns.Echo != tInterval || ns.InfoHasEcho || ns.InfoSend != 3*tInterval {
		t.Fatalf("foreign echo counted: echo %s info echo %v sent %s", ns.Echo, ns.InfoHasEcho, ns.InfoSend)
	}

	// b restarts: everything about its previous incarnation is forgotten,
	// and its first heartbeat (sent at its own time 0) sets the Info.
	s.start("b", 2000)
	bOut = s.ms["b"].Tick(0)
	if err := a.Receive(4*tInterval, bOut[0].Link, bOut[0].Msg); err != nil {
		t.Fatal(err)
	}
	ns = s.node("a", "b")
	if ns.HasEcho || ns.InfoHasEcho || ns.InfoSend != 0 || ns.BootID != 2000 {
		t.Fatalf("after restart: %+v", ns)
	}
}

// TestEchoInCluster: in a running cluster the echoes follow our sends.
func TestEchoInCluster(t *testing.T) {
	s := newSim(t, map[string]int{"a": 1, "b": 1, "c": 1})
	s.run(2 * time.Second)
	for _, peer := range []string{"b", "c"} {
		ns := s.node("a", peer)
		if !ns.HasEcho || ns.Echo < s.now-2*tInterval || ns.Echo > s.now {
			t.Fatalf("%s: echo %v %s at %s", peer, ns.HasEcho, ns.Echo, s.now)
		}
		if !ns.InfoHasEcho || ns.InfoEcho > ns.Echo || ns.InfoSend < s.now-2*tInterval {
			t.Fatalf("%s: info echo %v %s sent %s", peer, ns.InfoHasEcho, ns.InfoEcho, ns.InfoSend)
		}
	}
	if got := s.ms["a"].Now(); got != s.now-tStep {
		t.Fatalf("Now %s, want %s", got, s.now-tStep)
	}
}

// TestServiceEcho: over real sockets, the echoes a node gets are its own
// recent send times on the clock Service.Now reads.
func TestServiceEcho(t *testing.T) {
	svcs, _ := startServices(t, []testNode{{"a", 2, testKey}, {"b", 2, testKey}})
	a := svcs["a"]
	eventually(t, "a gets echoes from b", func() bool {
		ns, ok := a.Node("b")
		return ok && ns.HasEcho && ns.InfoHasEcho
	}, dumpAll(svcs))
	before := a.Now()
	time.Sleep(5 * uInterval)
	ns, _ := a.Node("b")
	now := a.Now()
	if now < before || ns.Echo > now || ns.Echo < before-uNodeTimeout || ns.InfoEcho > ns.Echo {
		t.Fatalf("echo %s info echo %s, now %s (before %s)", ns.Echo, ns.InfoEcho, now, before)
	}
}
