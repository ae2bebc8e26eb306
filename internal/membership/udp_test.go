package membership

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Real-time timings: a short interval keeps the tests fast, while the node
// timeout is long (100 intervals) so that a loaded 2-core CI machine that
// stalls a goroutine for a while does not lose a node by accident. The
// tests wait for states with a long deadline and never assert durations.
const (
	uInterval    = 20 * time.Millisecond
	uLinkTimeout = 150 * time.Millisecond
	uNodeTimeout = 2 * time.Second
	uDeadline    = 30 * time.Second
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testNode struct {
	name  string
	links int
	key   []byte
}

// startServices binds every node on 127.0.0.1 with ephemeral ports, tells
// each the others' bound addresses, and starts them.
func startServices(t *testing.T, nodes []testNode) (map[string]*Service, map[string]*syncBuffer) {
	t.Helper()
	svcs := map[string]*Service{}
	logs := map[string]*syncBuffer{}
	for i, n := range nodes {
		listen := slices.Repeat([]string{"127.0.0.1:0"}, n.links)
		logs[n.name] = &syncBuffer{}
		s, err := NewService(ServiceConfig{
			Machine: Config{Self: n.name, SelfLinks: n.links, Interval: uInterval,
				LinkTimeout: uLinkTimeout, NodeTimeout: uNodeTimeout},
			BootID:    uint64(100 + i),
			ClusterID: testCluster,
			Key:       n.key,
			Listen:    listen,
			Logger:    slog.New(slog.NewTextHandler(logs[n.name], nil)),
		})
		if err != nil {
			t.Fatalf("NewService(%s): %v", n.name, err)
		}
		t.Cleanup(func() { s.Close() })
		svcs[n.name] = s
	}
	for _, n := range nodes {
		var peers []Peer
		for _, o := range nodes {
			if o.name != n.name {
				peers = append(peers, Peer{Name: o.name, Links: svcs[o.name].LocalAddrs()})
			}
		}
		if err := svcs[n.name].SetPeers(peers); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if err := svcs[n.name].Start(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return svcs, logs
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool, dump func() string) {
	t.Helper()
	deadline := time.Now().Add(uDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, dump())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dumpAll(svcs map[string]*Service) func() string {
	return func() string {
		var b strings.Builder
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for n := range svcs {
				if !yield(n) {
					return
				}
			}
		}) {
			fmt.Fprintf(&b, "%s: %+v\n", name, svcs[name].Counters())
			for _, ns := range svcs[name].Snapshot() {
				fmt.Fprintf(&b, "  %s\n", ns)
			}
		}
		return b.String()
	}
}

// sees reports whether obs sees peer with the given status and link states.
func sees(obs *Service, peer string, st NodeStatus, links ...LinkStatus) bool {
	ns, ok := obs.Node(peer)
	return ok && ns.Status == st && slices.Equal(linkStatuses(ns), links)
}

// TestServiceLinkCutAndLoss: three nodes with two links each over real UDP
// sockets; cutting link 1 of one node downs that link only, closing the
// node entirely loses it.
func TestServiceLinkCutAndLoss(t *testing.T) {
	nodes := []testNode{{"a", 2, testKey}, {"b", 2, testKey}, {"c", 2, testKey}}
	svcs, _ := startServices(t, nodes)
	dump := dumpAll(svcs)
	eventually(t, "all members on both links", func() bool {
		for _, o := range nodes {
			for _, p := range nodes {
				if o.name != p.name && !sees(svcs[o.name], p.name, StatusMember, LinkUp, LinkUp) {
					return false
				}
			}
		}
		return true
	}, dump)

	subB, _ := svcs["b"].Subscribe()
	// Cut a's link 1: its socket is gone, so a neither sends nor hears on it.
	svcs["a"].conns[1].Close()
	for i, tc := range []struct{ obs, peer string }{{"b", "a"}, {"c", "a"}, {"a", "b"}, {"a", "c"}} {
		eventually(t, fmt.Sprintf("case %d: %s sees %s link 1 down", i, tc.obs, tc.peer), func() bool {
			ns, _ := svcs[tc.obs].Node(tc.peer)
			return slices.Equal(linkStatuses(ns), []LinkStatus{LinkUp, LinkDown})
		}, dump)
		if ns, _ := svcs[tc.obs].Node(tc.peer); !ns.Status.IsMember() {
			t.Fatalf("case %d: %s sees %s with one link left", i, tc.obs, ns)
		}
	}
	// Eventually, not at once: a stalled test machine may blip a link.
	eventually(t, "b-c unaffected by a's link cut", func() bool {
		return sees(svcs["b"], "c", StatusMember, LinkUp, LinkUp)
	}, dump)

	// Now a goes away entirely.
	svcs["a"].Close()
	for i, obs := range []string{"b", "c"} {
		eventually(t, fmt.Sprintf("case %d: %s sees a lost", i, obs), func() bool {
			ns, _ := svcs[obs].Node("a")
			return ns.Status == StatusLost
		}, dump)
	}
	// Eventually, not at once: a stalled test machine may blip a link.
	eventually(t, "b-c unaffected by a's loss", func() bool {
		return sees(svcs["b"], "c", StatusMember, LinkUp, LinkUp)
	}, dump)

	// The subscriber saw link 1 go down, and a lost once, at the end. (Not
	// an exact list: a stall of the test machine may blip link 0.)
	var got []string
	for len(subB) > 0 {
		c := <-subB
		if c.Node != "a" {
			continue
		}
		switch c.Kind {
		case ChangeLink:
			got = append(got, fmt.Sprintf("link%d:%s", c.Link, c.LinkTo))
		case ChangeNode:
			got = append(got, c.To.String())
		}
	}
	if !slices.Contains(got, "link1:down") || got[len(got)-1] != "lost" || slices.Index(got, "lost") != len(got)-1 {
		t.Errorf("b's changes about a: %v", got)
	}
}

// TestServiceWrongKey: a node with another key is never a member, the
// others count its packets as bad MAC and log from where they come.
func TestServiceWrongKey(t *testing.T) {
	wrong := bytes.Repeat([]byte{0x42}, 32)
	nodes := []testNode{{"a", 2, testKey}, {"b", 2, testKey}, {"d", 2, wrong}}
	svcs, logs := startServices(t, nodes)
	subA, _ := svcs["a"].Subscribe()
	dump := dumpAll(svcs)
	eventually(t, "a and b members, bad MACs counted", func() bool {
		return sees(svcs["a"], "b", StatusMember, LinkUp, LinkUp) &&
			sees(svcs["b"], "a", StatusMember, LinkUp, LinkUp) &&
			svcs["a"].Counters().BadMAC >= 10 && svcs["b"].Counters().BadMAC >= 10 &&
			svcs["d"].Counters().BadMAC >= 10
	}, dump)
	for i, tc := range []struct{ obs, peer string }{{"a", "d"}, {"b", "d"}, {"d", "a"}, {"d", "b"}} {
		if ns, _ := svcs[tc.obs].Node(tc.peer); ns.Status != StatusUnknown {
			t.Errorf("case %d: %s sees %s", i, tc.obs, ns)
		}
	}
	for len(subA) > 0 {
		if c := <-subA; c.Node == "d" {
			t.Errorf("change about d: %s", c)
		}
	}
	dAddrs := svcs["d"].LocalAddrs()
	log := logs["a"].String()
	if !strings.Contains(log, "failed authentication") || !strings.Contains(log, dAddrs[0]) {
		t.Errorf("a's log does not say why d is not a member:\n%s", log)
	}
	// Rate limited: far fewer warning lines than bad packets.
	if n, bad := strings.Count(log, "failed authentication"), svcs["a"].Counters().BadMAC; uint64(n) >= bad {
		t.Errorf("%d warnings for %d bad packets", n, bad)
	}
}

// TestServiceLifecycle: start, stop and misuse.
func TestServiceLifecycle(t *testing.T) {
	cfg := func() ServiceConfig {
		return ServiceConfig{
			Machine: Config{Self: "a", SelfLinks: 1, Interval: uInterval, NodeTimeout: uNodeTimeout,
				Peers: []Peer{{Name: "b", Links: []string{"127.0.0.1:9"}}}},
			BootID: 1, ClusterID: testCluster, Key: testKey, Listen: []string{"127.0.0.1:0"},
		}
	}
	bad := []struct {
		mod  func(*ServiceConfig)
		want string
	}{
		{func(c *ServiceConfig) { c.Key = c.Key[:8] }, "16 bytes"},
		{func(c *ServiceConfig) { c.Listen = nil }, "listen addresses"},
		{func(c *ServiceConfig) { c.Listen = []string{"256.0.0.1:0"} }, "listen"},
		{func(c *ServiceConfig) { c.BootID = 0 }, "boot ID"},
	}
	for i, tt := range bad {
		c := cfg()
		tt.mod(&c)
		if _, err := NewService(c); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("case %d: got %v, want %q", i, err, tt.want)
		}
	}

	// Close before Start.
	s, err := NewService(cfg())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Start(t.Context()); err == nil {
		t.Error("Start after Close succeeded")
	}
	if ch, _ := s.Subscribe(); !isClosed(ch) {
		t.Error("Subscribe after Close: channel open")
	}

	// Cancelling the context stops everything and closes subscriptions.
	s, err = NewService(cfg())
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := s.Subscribe()
	_, unsub := s.Subscribe()
	unsub()
	unsub()
	ctx, cancel := context.WithCancel(t.Context())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("second Start succeeded")
	}
	cancel()
	for range ch {
	}
	s.Close()
	s.Close()
	if c := s.Counters(); c.Sent+c.SendErrors == 0 {
		t.Errorf("nothing sent: %+v", c)
	}
}

func isClosed(ch <-chan Change) bool {
	select {
	case _, ok := <-ch:
		return !ok
	default:
		return false
	}
}
