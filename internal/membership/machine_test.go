package membership

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// Timings of the simulated clusters: a link goes down well before its node
// is lost, so that the tests can tell the two apart.
const (
	tInterval    = 100 * time.Millisecond
	tLinkTimeout = 400 * time.Millisecond
	tNodeTimeout = time.Second
	tStep        = 25 * time.Millisecond // a quarter interval, as the Service ticks
)

var (
	testKey     = []byte("0123456789abcdef0123456789abcdef")
	testCluster = "test-cluster"
)

func addr(node string, link int) string { return fmt.Sprintf("%s:%d", node, 7000+link) }

// sim is a whole cluster of Machines under simulated time. Heartbeats go
// through Encode and Decode and arrive at once, unless cut or dropped.
type sim struct {
	t     *testing.T
	now   time.Duration
	ms    map[string]*Machine
	links map[string]int
	boot  map[string]uint64
	// cut[link][{a,b}] cuts link between a and b both ways.
	cut map[int]map[[2]string]bool
	// drop, if set, drops a heartbeat it returns true for.
	drop    func(o Outgoing) bool
	changes map[string][]Change // per observer
	errs    map[string][]error  // Receive results per receiver
}

// newSim builds machines; links[name] is the node's link count.
func newSim(t *testing.T, links map[string]int) *sim {
	t.Helper()
	s := &sim{t: t, ms: map[string]*Machine{}, links: links, boot: map[string]uint64{},
		cut: map[int]map[[2]string]bool{}, changes: map[string][]Change{}, errs: map[string][]error{}}
	for name := range links {
		s.start(name, 1000)
	}
	return s
}

func (s *sim) config(name string) Config {
	var peers []Peer
	for other, n := range s.links {
		if other == name {
			continue
		}
		p := Peer{Name: other}
		for i := range n {
			p.Links = append(p.Links, addr(other, i))
		}
		peers = append(peers, p)
	}
	return Config{Self: name, SelfLinks: s.links[name], Peers: peers,
		Interval: tInterval, NodeTimeout: tNodeTimeout, LinkTimeout: tLinkTimeout}
}

// start (re)starts a node with a new incarnation.
func (s *sim) start(name string, boot uint64) {
	s.t.Helper()
	m, err := New(s.config(name), boot)
	if err != nil {
		s.t.Fatalf("New(%s): %v", name, err)
	}
	s.ms[name] = m
	s.boot[name] = boot
}

func (s *sim) setCut(link int, a, b string, on bool) {
	if s.cut[link] == nil {
		s.cut[link] = map[[2]string]bool{}
	}
	s.cut[link][[2]string{a, b}] = on
	s.cut[link][[2]string{b, a}] = on
}

func (s *sim) names() []string {
	var ns []string
	for n := range s.ms {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// run steps the cluster until now reaches end.
func (s *sim) run(end time.Duration) {
	for s.now < end {
		s.step()
		s.now += tStep
	}
}

func (s *sim) step() {
	s.t.Helper()
	var out []Outgoing
	for _, n := range s.names() {
		if s.ms[n] == nil {
			continue
		}
		out = append(out, s.ms[n].Tick(s.now)...)
		s.changes[n] = append(s.changes[n], s.ms[n].Changes()...)
	}
	for _, o := range out {
		if s.cut[o.Link][[2]string{o.Msg.From, o.Msg.To}] || (s.drop != nil && s.drop(o)) {
			continue
		}
		s.deliver(o)
	}
}

func (s *sim) deliver(o Outgoing) {
	s.t.Helper()
	pkt, err := Encode(testKey, testCluster, o.Msg)
	if err != nil {
		s.t.Fatalf("Encode: %v", err)
	}
	msg, err := Decode(testKey, testCluster, pkt)
	if err != nil {
		s.t.Fatalf("Decode: %v", err)
	}
	to := s.ms[o.Msg.To]
	if to == nil {
		return
	}
	s.errs[o.Msg.To] = append(s.errs[o.Msg.To], to.Receive(s.now, o.Link, msg))
	s.changes[o.Msg.To] = append(s.changes[o.Msg.To], to.Changes()...)
}

func (s *sim) node(observer, peer string) NodeState {
	s.t.Helper()
	ns, ok := s.ms[observer].Node(peer)
	if !ok {
		s.t.Fatalf("%s does not know %s", observer, peer)
	}
	return ns
}

// nodeChanges returns the node-status changes observer saw about peer.
func (s *sim) nodeChanges(observer, peer string) []Change {
	var out []Change
	for _, c := range s.changes[observer] {
		if c.Node == peer && c.Kind == ChangeNode {
			out = append(out, c)
		}
	}
	return out
}

func linkStatuses(ns NodeState) []LinkStatus {
	var out []LinkStatus
	for _, l := range ns.Links {
		out = append(out, l.Status)
	}
	return out
}

// TestNodeLostOnlyWhenSilentOnAllLinks ties to DESIGN "a node is lost after
// 1 s of silence on all links": cutting some links downs those links only;
// the node is lost exactly NodeTimeout after the last heartbeat on its last
// link, and passes through suspect on the way.
func TestNodeLostOnlyWhenSilentOnAllLinks(t *testing.T) {
	tests := []struct {
		name      string
		cuts      map[int]time.Duration // link -> when it is cut
		wantNode  NodeStatus
		wantLinks []LinkStatus
		// lastLink: the cut time of the last link cut, for lost cases.
		lastCut time.Duration
	}{
		{"no cut", nil, StatusMember, []LinkStatus{LinkUp, LinkUp}, 0},
		{"link 1 cut", map[int]time.Duration{1: time.Second}, StatusMember, []LinkStatus{LinkUp, LinkDown}, 0},
		{"link 1 never works", map[int]time.Duration{1: 0}, StatusMember, []LinkStatus{LinkUp, LinkDown}, 0},
		{"link 0 cut", map[int]time.Duration{0: time.Second}, StatusMember, []LinkStatus{LinkDown, LinkUp}, 0},
		{"both cut at once", map[int]time.Duration{0: time.Second, 1: time.Second}, StatusLost, []LinkStatus{LinkDown, LinkDown}, time.Second},
		{"both cut apart", map[int]time.Duration{0: time.Second, 1: 2500 * time.Millisecond}, StatusLost, []LinkStatus{LinkDown, LinkDown}, 2500 * time.Millisecond},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, map[string]int{"a": 2, "b": 2})
			for s.now < 6*time.Second {
				for l, at := range tt.cuts {
					if s.now == at {
						s.setCut(l, "a", "b", true)
					}
				}
				s.step()
				// Never lost while some link still carries heartbeats.
				if st := s.node("a", "b").Status; st == StatusLost && (tt.lastCut == 0 || s.now < tt.lastCut+tNodeTimeout-tInterval) {
					t.Fatalf("case %d: b lost at %s", i, s.now)
				}
				s.now += tStep
			}
			ns := s.node("a", "b")
			if ns.Status != tt.wantNode || !slices.Equal(linkStatuses(ns), tt.wantLinks) {
				t.Fatalf("case %d: got %s, want %s %v", i, ns, tt.wantNode, tt.wantLinks)
			}
			var got []string
			for _, c := range s.nodeChanges("a", "b") {
				got = append(got, c.From.String()+">"+c.To.String())
			}
			want := []string{"unknown>member"}
			if tt.wantNode == StatusLost {
				want = append(want, "member>suspect", "suspect>lost")
				lost := s.nodeChanges("a", "b")[2]
				// Exactly: lost at the first tick at or after last heard +
				// NodeTimeout, and the last heard is just before the cut.
				if silent := lost.At - lost.LastHeard; silent < tNodeTimeout || silent >= tNodeTimeout+tStep {
					t.Errorf("case %d: lost after %s of silence, want [%s, %s)", i, silent, tNodeTimeout, tNodeTimeout+tStep)
				}
				if lost.LastHeard < tt.lastCut-tInterval || lost.LastHeard >= tt.lastCut {
					t.Errorf("case %d: last heard %s, want just before %s", i, lost.LastHeard, tt.lastCut)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("case %d: node changes %v, want %v", i, got, want)
			}
		})
	}
}

// TestLostNodeComesBack: a partition heals; the same incarnation is a member
// again, and no restart is reported.
func TestLostNodeComesBack(t *testing.T) {
	s := newSim(t, map[string]int{"a": 1, "b": 1})
	s.run(time.Second)
	s.setCut(0, "a", "b", true)
	s.run(3 * time.Second)
	if st := s.node("a", "b").Status; st != StatusLost {
		t.Fatalf("b is %s, want lost", st)
	}
	s.setCut(0, "a", "b", false)
	s.run(4 * time.Second)
	ns := s.node("a", "b")
	if ns.Status != StatusMember || ns.Restarts != 0 {
		t.Fatalf("got %s restarts=%d, want member, 0 restarts", ns, ns.Restarts)
	}
	last := s.nodeChanges("a", "b")
	if c := last[len(last)-1]; c.From != StatusLost || c.To != StatusMember {
		t.Fatalf("last change %s, want lost -> member", c)
	}
}

// TestUnknownNeverHeard: a configured node that never speaks stays unknown
// (not a member, not lost) and causes no Change.
func TestUnknownNeverHeard(t *testing.T) {
	s := newSim(t, map[string]int{"a": 1, "b": 1, "c": 1})
	delete(s.ms, "c") // c never runs
	s.run(5 * time.Second)
	ns := s.node("a", "c")
	if ns.Status != StatusUnknown || ns.Status.IsMember() || ns.BootID != 0 {
		t.Fatalf("got %s, want unknown", ns)
	}
	for _, c := range s.changes["a"] {
		if c.Node == "c" {
			t.Fatalf("change about c: %s", c)
		}
	}
}

// TestPeerWithFewerLinks: heartbeats flow only on the links both ends have.
func TestPeerWithFewerLinks(t *testing.T) {
	s := newSim(t, map[string]int{"a": 3, "b": 1})
	s.run(time.Second)
	for i, tc := range []struct{ obs, peer string }{{"a", "b"}, {"b", "a"}} {
		ns := s.node(tc.obs, tc.peer)
		if ns.Status != StatusMember || !slices.Equal(linkStatuses(ns), []LinkStatus{LinkUp}) {
			t.Errorf("case %d: %s sees %s", i, tc.obs, ns)
		}
	}
	for i, e := range s.errs["a"] {
		if e != nil {
			t.Fatalf("receive %d at a: %v", i, e)
		}
	}
}

// TestRTT: the round trip is measured on the sender's clock only, minus
// the time the peer held the echo; the two clocks need not agree.
func TestRTT(t *testing.T) {
	tests := []struct {
		send, recv, reply, back time.Duration // a sends, b receives, b replies, a receives
		bClock                  time.Duration // offset of b's clock
		wrongBoot               bool          // b echoes for another incarnation of a
		want                    time.Duration
	}{
		{0, 3 * time.Millisecond, 5 * time.Millisecond, 8 * time.Millisecond, 0, false, 6 * time.Millisecond},
		{0, 10 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, time.Hour, false, 20 * time.Millisecond},
		{time.Second, time.Second + time.Millisecond, time.Second + 90*time.Millisecond, time.Second + 92*time.Millisecond, 5 * time.Second, false, 3 * time.Millisecond},
		{0, 3 * time.Millisecond, 5 * time.Millisecond, 8 * time.Millisecond, 0, true, 0},
	}
	for i, tt := range tests {
		s := newSim(t, map[string]int{"a": 1, "b": 1})
		a, b := s.ms["a"], s.ms["b"]
		out := a.Tick(tt.send) // the first tick sends at once

		if len(out) != 1 {
			t.Fatalf("case %d: %d heartbeats from a, want 1", i, len(out))
		}
		if err := b.Receive(tt.bClock+tt.recv, 0, out[0].Msg); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		back := b.Tick(tt.bClock + tt.reply)
		if len(back) != 1 || !back[0].Msg.HasEcho || back[0].Msg.EchoHold != tt.reply-tt.recv {
			t.Fatalf("case %d: reply %+v", i, back)
		}
		if tt.wrongBoot {
			back[0].Msg.ToBoot = 999
		}
		if err := a.Receive(tt.back, 0, back[0].Msg); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		l := s.node("a", "b").Links[0]
		if l.RTT != tt.want || l.LastRTT != tt.want {
			t.Errorf("case %d: rtt %s last %s, want %s", i, l.RTT, l.LastRTT, tt.want)
		}
		if l.HearsUs == tt.wrongBoot {
			t.Errorf("case %d: HearsUs %v", i, l.HearsUs)
		}
	}
}

// TestRTTInCluster: with a 10ms one-way delay the smoothed RTT settles
// at 20ms on both sides.
func TestRTTInCluster(t *testing.T) {
	const delay = 10 * time.Millisecond
	s := newSim(t, map[string]int{"a": 1, "b": 1})
	var pending []Outgoing
	var due []time.Duration
	s.drop = func(o Outgoing) bool {
		pending = append(pending, o)
		due = append(due, s.now+delay)
		return true
	}
	for s.now = 0; s.now < 3*time.Second; s.now += 5 * time.Millisecond {
		for len(pending) > 0 && due[0] <= s.now {
			s.deliver(pending[0])
			pending, due = pending[1:], due[1:]
		}
		if s.now%tStep == 0 {
			s.step()
		}
	}
	for i, obs := range []string{"a", "b"} {
		peer := map[string]string{"a": "b", "b": "a"}[obs]
		l := s.node(obs, peer).Links[0]
		if l.RTT != 2*delay {
			t.Errorf("case %d: %s->%s rtt %s, want %s", i, obs, peer, l.RTT, 2*delay)
		}
	}
}

// TestLoss: dropping every k-th heartbeat shows as a loss of 1/k.
func TestLoss(t *testing.T) {
	tests := []struct {
		every int // drop seq%every == 0; 0 = none
		want  float64
	}{
		{0, 0}, {2, 0.5}, {3, 1.0 / 3}, {4, 0.25}, {10, 0.1},
	}
	for i, tt := range tests {
		s := newSim(t, map[string]int{"a": 2, "b": 2})
		s.drop = func(o Outgoing) bool {
			return o.Msg.From == "b" && o.Link == 0 && tt.every > 0 && o.Msg.Seq%uint64(tt.every) == 0
		}
		s.run(15 * time.Second)
		ns := s.node("a", "b")
		if got := ns.Links[0].Loss; math.Abs(got-tt.want) > 0.02 {
			t.Errorf("case %d: loss %.3f, want %.3f", i, got, tt.want)
		}
		if got := ns.Links[1].Loss; got != 0 {
			t.Errorf("case %d: loss on link 1 %.3f, want 0", i, got)
		}
		if ns.Status != StatusMember {
			t.Errorf("case %d: %s", i, ns)
		}
	}
}

// TestRestart: a new incarnation is reported once, starts its sequence over,
// and heartbeats of the old one are ignored afterwards.
func TestRestart(t *testing.T) {
	s := newSim(t, map[string]int{"a": 2, "b": 2})
	var old []Outgoing
	s.drop = func(o Outgoing) bool {
		if o.Msg.From == "b" {
			old = append(old, o)
		}
		return false
	}
	s.run(time.Second)
	s.drop = nil
	s.start("b", 2000)
	s.run(2 * time.Second)
	ns := s.node("a", "b")
	if ns.Status != StatusMember || ns.BootID != 2000 || ns.Restarts != 1 {
		t.Fatalf("got %s restarts=%d", ns, ns.Restarts)
	}
	var restarts []Change
	for _, c := range s.changes["a"] {
		if c.Kind == ChangeRestart {
			restarts = append(restarts, c)
		}
	}
	if len(restarts) != 1 || restarts[0].Node != "b" || restarts[0].PrevBootID != 1000 || restarts[0].BootID != 2000 {
		t.Fatalf("restart changes %v", restarts)
	}
	// The old incarnation's packets (a delayed or replayed one) are ignored.
	for i, o := range old {
		before := s.node("a", "b")
		if err := s.ms["a"].Receive(s.now, o.Link, o.Msg); !errors.Is(err, ErrStaleBoot) {
			t.Fatalf("case %d: old heartbeat: %v, want ErrStaleBoot", i, err)
		}
		if after := s.node("a", "b"); after.String() != before.String() {
			t.Fatalf("case %d: state moved: %s -> %s", i, before, after)
		}
	}
}

// TestReplayIgnored: a heartbeat seen before, or older than the window,
// never refreshes liveness, so replaying captured packets cannot keep a
// dead node alive.
func TestReplayIgnored(t *testing.T) {
	s := newSim(t, map[string]int{"a": 1, "b": 1})
	var captured []Outgoing
	s.drop = func(o Outgoing) bool {
		if o.Msg.From == "b" {
			captured = append(captured, o)
		}
		return false
	}
	s.run(10 * time.Second) // > LossWindow heartbeats
	s.drop = nil
	delete(s.ms, "b") // b dies
	// An attacker replays every captured packet, again and again.
	for s.now < 13*time.Second {
		s.step()
		for _, o := range captured {
			if err := s.ms["a"].Receive(s.now, o.Link, o.Msg); !errors.Is(err, ErrReplay) {
				t.Fatalf("replay of seq %d: %v, want ErrReplay", o.Msg.Seq, err)
			}
		}
		s.now += tStep
	}
	if ns := s.node("a", "b"); ns.Status != StatusLost {
		t.Fatalf("b is %s after replays, want lost", ns)
	}
}

// TestReorderedHeartbeat: a late heartbeat inside the window is accepted
// for the loss count but does not refresh liveness.
func TestReorderedHeartbeat(t *testing.T) {
	s := newSim(t, map[string]int{"a": 1, "b": 1})
	var held *Outgoing
	s.drop = func(o Outgoing) bool {
		if o.Msg.From == "b" && o.Msg.Seq == 5 {
			held = &o
			return true
		}
		return false
	}
	s.run(time.Second)
	if held == nil {
		t.Fatal("seq 5 never sent")
	}
	before := s.node("a", "b")
	if before.Links[0].Loss == 0 {
		t.Fatalf("no loss seen with seq 5 held: %s", before)
	}
	if err := s.ms["a"].Receive(s.now+time.Millisecond, 0, held.Msg); err != nil {
		t.Fatalf("late heartbeat: %v", err)
	}
	after := s.node("a", "b")
	if after.LastHeard != before.LastHeard || after.Links[0].Loss != 0 {
		t.Fatalf("late heartbeat: before %s, after %s", before, after)
	}
	if err := s.ms["a"].Receive(s.now+time.Millisecond, 0, held.Msg); !errors.Is(err, ErrReplay) {
		t.Fatalf("second delivery: %v, want ErrReplay", err)
	}
}

// TestReceiveDrops: every way Receive refuses a heartbeat, and that a
// refused heartbeat changes nothing.
func TestReceiveDrops(t *testing.T) {
	base := Heartbeat{From: "b", To: "a", Link: 0, BootID: 1000, Seq: 100, SendTime: time.Second}
	tests := []struct {
		link int
		mod  func(*Heartbeat)
		want error
	}{
		{0, func(h *Heartbeat) {}, nil},
		{0, func(h *Heartbeat) { h.To = "c" }, ErrNotForMe},
		{0, func(h *Heartbeat) { h.From = "x" }, ErrUnknownPeer},
		{0, func(h *Heartbeat) { h.From = "c"; h.Link = 1 }, ErrBadLink}, // c has one link
		{1, func(h *Heartbeat) { h.From = "c"; h.Link = 1 }, ErrBadLink},
		{1, func(h *Heartbeat) {}, ErrBadLink}, // sent on 0, arrived on 1
		{2, func(h *Heartbeat) { h.Link = 2 }, ErrBadLink},
		{-1, func(h *Heartbeat) { h.Link = -1 }, ErrBadLink},
		{0, func(h *Heartbeat) { h.BootID = 999 }, ErrStaleBoot},
		{0, func(h *Heartbeat) { h.BootID = 0 }, ErrStaleBoot},
		{0, func(h *Heartbeat) { h.Seq = 0 }, ErrReplay},
		{0, func(h *Heartbeat) { h.Seq = 100 }, ErrReplay},
		{0, func(h *Heartbeat) { h.Seq = 100 - LossWindow }, ErrReplay},
	}
	for i, tt := range tests {
		m, err := New(Config{Self: "a", SelfLinks: 2, Peers: []Peer{
			{Name: "b", Links: []string{"b:1", "b:2"}}, {Name: "c", Links: []string{"c:1"}}}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Receive(0, 0, base); err != nil {
			t.Fatalf("case %d: setup: %v", i, err)
		}
		m.Changes()
		before := fmt.Sprint(m.Nodes())
		hb := base
		tt.mod(&hb)
		err = m.Receive(time.Second, tt.link, hb)
		if i == 0 {
			hb.Seq = 101 // first case: a fresh one is accepted
			err = m.Receive(time.Second, tt.link, hb)
		}
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Fatalf("case %d: got %v, want %v", i, err, tt.want)
		}
		if tt.want != nil {
			if after := fmt.Sprint(m.Nodes()); after != before || len(m.Changes()) != 0 {
				t.Fatalf("case %d: dropped heartbeat changed state:\n%s\n%s", i, before, after)
			}
		}
	}
}

// TestSetPeersKeepsState: a membership change keeps what is known about
// the peers that stay, forgets removed ones, and starts new ones unknown.
func TestSetPeersKeepsState(t *testing.T) {
	s := newSim(t, map[string]int{"a": 2, "b": 2, "c": 1})
	s.run(2 * time.Second)
	a := s.ms["a"]
	before := s.node("a", "b")
	peers := []Peer{
		{Name: "b", Links: []string{addr("b", 0), "b-new:7001"}}, // link 1 moved
		{Name: "d", Links: []string{addr("d", 0)}},
	}
	if err := a.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	after := s.node("a", "b")
	if after.Status != StatusMember || after.LastHeard != before.LastHeard || after.BootID != before.BootID ||
		after.Links[0].RTT != before.Links[0].RTT || after.Links[1].Received != before.Links[1].Received {
		t.Fatalf("b's state changed:\n%s\n%s", before, after)
	}
	if after.Links[1].Addr != "b-new:7001" {
		t.Fatalf("b link 1 address %q", after.Links[1].Addr)
	}
	if _, ok := a.Node("c"); ok {
		t.Fatal("c still known")
	}
	if d, ok := a.Node("d"); !ok || d.Status != StatusUnknown {
		t.Fatalf("d: %v %s", ok, d)
	}
	var names []string
	for _, n := range a.Nodes() {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"b", "d"}) {
		t.Fatalf("nodes %v", names)
	}
	// Sequence numbers to b continue: b must not see a replay.
	out := a.Tick(s.now + tInterval)
	var toD bool
	for _, o := range out {
		toD = toD || o.Msg.To == "d"
		if o.Msg.To == "b" {
			if err := s.ms["b"].Receive(s.now+tInterval, o.Link, o.Msg); err != nil {
				t.Fatalf("b after SetPeers: %v", err)
			}
		}
	}
	if !toD {
		t.Fatal("no heartbeat to d")
	}
	bad := []struct {
		peers []Peer
		want  string
	}{
		{[]Peer{{Name: "a", Links: []string{"x:1"}}}, "is self"},
		{[]Peer{{Name: "b", Links: []string{"x:1"}}, {Name: "b", Links: []string{"x:1"}}}, "twice"},
		{[]Peer{{Name: "b"}}, "need 1 to 8 links"},
		{[]Peer{{Name: "b", Links: []string{"", "", "x:3"}}}, "shares no link"},
		{[]Peer{{Name: "b", Links: []string{"nope"}}}, "missing port"},
		{[]Peer{{Name: "", Links: []string{"x:1"}}}, "empty"},
	}
	for i, tt := range bad {
		if err := a.SetPeers(tt.peers); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("case %d: got %v, want %q", i, err, tt.want)
		}
	}
	if _, ok := a.Node("d"); !ok {
		t.Fatal("a failed SetPeers changed the peers")
	}
}

// TestInfo: the payload reaches the peer, is exposed per node, and a
// change of it is reported once.
func TestInfo(t *testing.T) {
	s := newSim(t, map[string]int{"a": 2, "b": 2})
	if err := s.ms["b"].SetInfo([]byte("term=3")); err != nil {
		t.Fatal(err)
	}
	s.run(time.Second)
	if got := s.node("a", "b").Info; !bytes.Equal(got, []byte("term=3")) {
		t.Fatalf("info %q", got)
	}
	n := 0
	for _, c := range s.changes["a"] {
		if c.Kind == ChangeInfo {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d info changes, want 1", n)
	}
	if err := s.ms["b"].SetInfo(make([]byte, MaxInfo+1)); err == nil {
		t.Fatal("oversized info accepted")
	}
}

// TestOneWayLink: a peer that does not hear us says so (HearsUs false).
func TestOneWayLink(t *testing.T) {
	s := newSim(t, map[string]int{"a": 2, "b": 2})
	s.drop = func(o Outgoing) bool { return o.Msg.From == "a" && o.Link == 1 }
	s.run(time.Second)
	ls := s.node("a", "b").Links
	if !ls[0].HearsUs || ls[1].HearsUs || ls[1].Status != LinkUp {
		t.Fatalf("links %+v", ls)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Self: "a", SelfLinks: 1, Peers: []Peer{{Name: "b", Links: []string{"b:1"}}}}
	tests := []struct {
		mod  func(*Config)
		boot uint64
		want string // "" = valid
	}{
		{func(c *Config) {}, 1, ""},
		{func(c *Config) {}, 0, "boot ID"},
		{func(c *Config) { c.Self = "" }, 1, "self"},
		{func(c *Config) { c.SelfLinks = 0 }, 1, "self links"},
		{func(c *Config) { c.SelfLinks = 9 }, 1, "self links"},
		{func(c *Config) { c.Interval = -1 }, 1, "negative"},
		{func(c *Config) { c.Interval = 500 * time.Millisecond }, 1, "three intervals"},
		{func(c *Config) { c.LinkTimeout = 2 * time.Second }, 1, "link timeout"},
		{func(c *Config) { c.LinkTimeout = 300 * time.Millisecond }, 1, "link timeout"},
		{func(c *Config) { c.SuspectTimeout = 2 * time.Second }, 1, "suspect"},
		{func(c *Config) { c.Interval, c.NodeTimeout = 20*time.Millisecond, 100*time.Millisecond }, 1, ""},
		{func(c *Config) { c.Peers = append(c.Peers, Peer{Name: "a", Links: []string{"a:1"}}) }, 1, "is self"},
	}
	for i, tt := range tests {
		cfg := ok
		tt.mod(&cfg)
		m, err := New(cfg, tt.boot)
		if tt.want == "" {
			if err != nil {
				t.Errorf("case %d: %v", i, err)
				continue
			}
			c := m.Config()
			if c.Interval == 0 || c.LinkTimeout != c.NodeTimeout || c.SuspectTimeout != c.NodeTimeout/2 {
				t.Errorf("case %d: defaults %+v", i, c)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "membership: ") {
			t.Errorf("case %d: got %v, want %q", i, err, tt.want)
		}
	}
}

// TestTickSchedule: one heartbeat per peer per link per interval, and no
// burst after a stall.
func TestTickSchedule(t *testing.T) {
	m, err := New(Config{Self: "a", SelfLinks: 2, Interval: tInterval, Peers: []Peer{
		{Name: "b", Links: []string{"b:1", "b:2"}}, {Name: "c", Links: []string{"c:1"}}}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		now  time.Duration
		want int
	}{
		{0, 3}, {tStep, 0}, {tInterval - 1, 0}, {tInterval, 3}, {10 * tInterval, 3}, {10*tInterval + tStep, 0}, {11 * tInterval, 3},
	}
	for i, tt := range tests {
		if got := len(m.Tick(tt.now)); got != tt.want {
			t.Errorf("case %d: at %s %d heartbeats, want %d", i, tt.now, got, tt.want)
		}
	}
}
