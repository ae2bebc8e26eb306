package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/fencing"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// world is a real single-voter store holding a three-node cluster (n1 is
// the DC; n2 and n3 exist as members only), fake executors that answer
// tasks for the nodes the test says are alive, and a controller.
type world struct {
	t     *testing.T
	node  *store.Node
	ctrl  *Controller
	mu    sync.Mutex
	alive map[string]bool
	stop  func()
	// agent, if set, answers each task (see migrate_test.go); its outcome
	// becomes the record as the executor writes it. hold, if set, keeps a
	// task unanswered while it returns true.
	agent func(t model.Task) agents.Result
	hold  func(t model.Task) bool
	ran   []model.Task // every task answered, in order
	// check, if set, runs on the state after every answer.
	check func(s *store.State)
}

const boot = 7

func newWorld(t *testing.T, mod func(*Config)) *world {
	t.Helper()
	disk := store.NewMemDisk()
	members := []store.Member{
		{Name: "n1", ID: 1, Role: store.RoleVoter, Links: []string{"10.0.0.1:7400"}},
		{Name: "n2", ID: 2, Role: store.RoleLearner, Links: []string{"10.0.0.2:7400"}},
		{Name: "n3", ID: 3, Role: store.RoleLearner, Links: []string{"10.0.0.3:7400"}},
	}
	if err := store.Bootstrap(disk, members); err != nil {
		t.Fatal(err)
	}
	net := store.NewLocalNetwork()
	n, err := store.StartNode(store.NodeConfig{
		Core: store.Config{ID: 1, Name: "n1", Log: slog.New(slog.DiscardHandler)}, Disk: disk,
		Transport: net.Transport(1), TickInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	net.Attach(1, n)
	for deadline := time.Now().Add(10 * time.Second); n.Status().Lead != 1; {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		n.Campaign(context.Background())
		time.Sleep(10 * time.Millisecond)
	}
	w := &world{t: t, node: n, alive: map[string]bool{"n1": true, "n2": true, "n3": true}}
	for _, name := range []string{"n1", "n2", "n3"} {
		w.put(clusterstate.NodeKey(name), model.NodeRecord{V: 1, Name: name, BootID: boot, Probed: boot})
	}
	cfg := Config{
		Self: "n1", Store: n, Alive: w.isAlive, Quorate: func() bool { return true },
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Recheck: 20 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	w.ctrl = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.ctrl.Run(ctx) }()
	go func() { defer wg.Done(); w.executors(ctx) }()
	w.stop = func() {
		cancel()
		wg.Wait()
		net.Detach(1)
		_ = n.Stop()
		_ = disk.Close()
		net.Close()
	}
	t.Cleanup(w.stop)
	return w
}

func (w *world) isAlive(n string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alive[n]
}

func (w *world) setAlive(n string, up bool) {
	w.mu.Lock()
	w.alive[n] = up
	w.mu.Unlock()
	w.ctrl.Kick()
}

func (w *world) put(kv ...any) {
	w.t.Helper()
	var ops []store.Op
	for i := 0; i < len(kv); i += 2 {
		ops = append(ops, store.Op{Key: kv[i].(string), Value: clusterstate.Encode(kv[i+1])})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.node.Propose(ctx, store.Txn{Ops: ops}); err != nil {
		w.t.Fatal(err)
	}
}

// executors plays every alive node's executor: each unanswered task for an
// alive node succeeds at once, with the record it implies.
func (w *world) executors(ctx context.Context) {
	for {
		ch := w.node.Watch()
		var ops []store.Op
		w.node.Read(func(s *store.State) {
			tasks, _ := clusterstate.Tasks(s, "")
			for _, t := range tasks {
				if _, done := clusterstate.Result(s, t.Node, t.ID); done || !w.isAlive(t.Node) {
					continue
				}
				w.mu.Lock()
				agent, hold := w.agent, w.hold
				w.mu.Unlock()
				if hold != nil && hold(t) {
					continue
				}
				if agent != nil {
					ops = append(ops, w.answer(s, t, agent(t))...)
					continue
				}
				state := model.StateStarted
				if t.Action == model.ActStop {
					state = model.StateStopped
				}
				ops = append(ops,
					store.Op{Key: clusterstate.ResultKey(t.Node, t.ID), Value: clusterstate.Encode(model.TaskResult{V: 1, ID: t.ID, Term: t.Term, Node: t.Node, OK: true})},
					store.Op{Key: clusterstate.RecordKey(t.Node, t.Resource), Value: clusterstate.Encode(model.ResourceRecord{V: 1, Resource: t.Resource, Node: t.Node, State: state})})
			}
		})
		if len(ops) > 0 {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = w.node.Propose(pctx, store.Txn{Ops: ops})
			cancel()
			w.mu.Lock()
			check := w.check
			w.mu.Unlock()
			if check != nil {
				w.node.Read(check)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startedOn returns the nodes whose records say the instance is started.
func (w *world) startedOn(inst string) []string {
	var out []string
	w.node.Read(func(s *store.State) {
		recs, _ := clusterstate.Records(s, "")
		for _, r := range recs {
			if r.Resource == inst && r.State == model.StateStarted {
				out = append(out, r.Node)
			}
		}
	})
	return out
}

func (w *world) waitFor(what string, cond func() bool) {
	w.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// never checks that cond stays false for d.
func (w *world) never(what string, d time.Duration, cond func() bool) {
	w.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			w.t.Fatalf("%s", what)
		}
	}
}

func (w *world) runningOn(inst string) string {
	w.t.Helper()
	var on []string
	w.waitFor(inst+" to start", func() bool { on = w.startedOn(inst); return len(on) == 1 })
	return on[0]
}

func dummy(id string) model.Resource { return model.Resource{ID: id, Agent: "vigil:dummy"} }

// The DC records itself with its term, and every task it issues carries
// that term (executors refuse older ones).
func TestTasksCarryTheDCTerm(t *testing.T) {
	w := newWorld(t, nil)
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"))
	w.runningOn("r1")
	var dc clusterstate.DCRecord
	w.node.Read(func(s *store.State) { dc = clusterstate.DC(s) })
	if dc.Name != "n1" || dc.Term != w.node.Status().Term {
		t.Fatalf("DC record %+v, raft term %d", dc, w.node.Status().Term)
	}
	if got := w.ctrl.Term(); got != dc.Term {
		t.Fatalf("controller acts in term %d, recorded %d", got, dc.Term)
	}
}

// Never twice: a resource on a lost node is not started elsewhere until the
// node is proven down; with the proof it is.
func TestLostNodeHoldsItsResourcesUntilProvenDown(t *testing.T) {
	w := newWorld(t, nil)
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"))
	on := w.runningOn("r1")
	if on == "n1" {
		// Keep the DC out of it: move r1 to n2 by hand.
		w.put(clusterstate.LocationKey("l"), model.Location{ID: "l", Resource: "r1", Node: "n2", Score: model.Infinity})
		w.waitFor("r1 on n2", func() bool { s := w.startedOn("r1"); return len(s) == 1 && s[0] == "n2" })
		on = "n2"
		w.node.Read(func(*store.State) {})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := w.node.Propose(ctx, store.Delete{Key: clusterstate.LocationKey("l")}); err != nil {
			t.Fatal(err)
		}
	}
	w.setAlive(on, false)
	w.never(fmt.Sprintf("r1 started elsewhere while %s is lost and not proven down", on), time.Second, func() bool {
		for _, n := range w.startedOn("r1") {
			if n != on {
				return true
			}
		}
		return false
	})
	// The operator's proof, as `vigil fence confirm` writes it.
	var rec model.NodeRecord
	w.node.Read(func(s *store.State) { rec = clusterstate.NodeRecord(s, on) })
	rec.Down = &model.DownProof{How: "confirmed", BootID: rec.BootID}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.node.Propose(ctx, store.Txn{Ops: []store.Op{
		{Key: clusterstate.NodeKey(on), Value: clusterstate.Encode(rec)},
		{Key: clusterstate.RecordKey(on, "r1"), Delete: true},
	}}); err != nil {
		t.Fatal(err)
	}
	w.waitFor("r1 to start on another node", func() bool {
		s := w.startedOn("r1")
		return len(s) == 1 && s[0] != on
	})
}

// fakeFencer answers every fence with a fixed outcome and counts calls.
type fakeFencer struct {
	mu       sync.Mutex
	ok       bool
	calls    []string
	monitors []string
	gate     chan struct{} // if set, Fence waits for it
}

func (f *fakeFencer) Fence(ctx context.Context, node string, levels [][]fencing.DeviceRef, devices map[string]fencing.Device) fencing.Outcome {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, node)
	if !f.ok {
		return fencing.Outcome{Node: node, Err: "every level failed"}
	}
	return fencing.Outcome{OK: true, Node: node, Level: 1, Devices: []string{"lab"}, Confirmed: fencing.ConfirmedStatusOff}
}

func (f *fakeFencer) Monitor(ctx context.Context, d fencing.Device) fencing.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.monitors = append(f.monitors, d.Name)
	if f.ok {
		return fencing.Result{Code: 0}
	}
	return fencing.Result{Code: 1, Output: "device unreachable"}
}

func withDevice(w *world) {
	w.put(clusterstate.FenceDeviceKey("lab"), fencing.Device{Name: "lab", Agent: "fence_dummy", HostList: []string{"n1", "n2", "n3"}})
}

// pinned starts r1 on n2 and returns once it runs there.
func pinned(w *world) {
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"),
		clusterstate.LocationKey("l"), model.Location{ID: "l", Resource: "r1", Node: "n2", Score: 100})
	w.waitFor("r1 on n2", func() bool { s := w.startedOn("r1"); return len(s) == 1 && s[0] == "n2" })
}

func history(w *world) []model.FenceEvent {
	var h []model.FenceEvent
	w.node.Read(func(s *store.State) { h, _ = clusterstate.FenceHistory(s) })
	return h
}

// A lost node with a fence device is fenced; on confirmed off its
// resources are released and recovered, and the history says so.
func TestFenceReleasesResources(t *testing.T) {
	f := &fakeFencer{ok: true}
	w := newWorld(t, func(c *Config) { c.Fencer = f })
	withDevice(w)
	pinned(w)
	w.setAlive("n2", false)
	w.waitFor("r1 recovered on another node", func() bool {
		s := w.startedOn("r1")
		return len(s) == 1 && s[0] != "n2"
	})
	h := history(w)
	if len(h) != 1 || !h[0].OK || h[0].Target != "n2" || h[0].How != "device" {
		t.Fatalf("history: %+v", h)
	}
	var rec model.NodeRecord
	w.node.Read(func(s *store.State) { rec = clusterstate.NodeRecord(s, "n2") })
	if rec.Down == nil || rec.Down.How != "fenced" || rec.Down.BootID != boot {
		t.Fatalf("n2's down proof: %+v", rec.Down)
	}
}

// A fence that fails leaves the resources blocked (never started elsewhere)
// and is recorded as failed.
func TestFailedFenceKeepsResourcesBlocked(t *testing.T) {
	f := &fakeFencer{ok: false}
	w := newWorld(t, func(c *Config) { c.Fencer = f })
	withDevice(w)
	pinned(w)
	w.setAlive("n2", false)
	w.waitFor("a failed fence in the history", func() bool {
		h := history(w)
		return len(h) > 0 && !h[0].OK
	})
	w.never("r1 started elsewhere after a failed fence", time.Second, func() bool {
		for _, n := range w.startedOn("r1") {
			if n != "n2" {
				return true
			}
		}
		return false
	})
}

// A node that comes back (a new incarnation registers) while it is being
// fenced must not have its fresh records deleted by a late proof.
func TestLateProofDoesNotEraseANewIncarnation(t *testing.T) {
	f := &fakeFencer{ok: true, gate: make(chan struct{})}
	w := newWorld(t, func(c *Config) { c.Fencer = f })
	withDevice(w)
	pinned(w)
	w.setAlive("n2", false)
	w.waitFor("the fence to start", func() bool {
		w.ctrl.mu.Lock()
		defer w.ctrl.mu.Unlock()
		_, busy := w.ctrl.fencing["n2"]
		return busy
	})
	// n2 reboots and registers again before the fence outcome is recorded.
	w.put(clusterstate.NodeKey("n2"), model.NodeRecord{V: 1, Name: "n2", BootID: boot + 1})
	w.setAlive("n2", true)
	close(f.gate)
	w.waitFor("the fence to finish", func() bool {
		w.ctrl.mu.Lock()
		defer w.ctrl.mu.Unlock()
		_, busy := w.ctrl.fencing["n2"]
		return !busy
	})
	var rec model.NodeRecord
	var recs []model.ResourceRecord
	w.node.Read(func(s *store.State) {
		rec = clusterstate.NodeRecord(s, "n2")
		recs, _ = clusterstate.Records(s, "n2")
	})
	if rec.Down != nil || rec.BootID != boot+1 {
		t.Fatalf("the new incarnation's record was overwritten: %+v", rec)
	}
	if len(recs) == 0 {
		t.Fatal("n2's records were deleted although n2 came back before the proof")
	}
}

// With a watchdog and the lease arithmetic satisfied, a lost node is proven
// down without any device.
func TestWatchdogProof(t *testing.T) {
	var mu sync.Mutex
	selfFenced := false
	w := newWorld(t, func(c *Config) {
		c.SelfFenced = func(n string) bool { mu.Lock(); defer mu.Unlock(); return n == "n2" && selfFenced }
	})
	w.put(clusterstate.NodeKey("n2"), model.NodeRecord{V: 1, Name: "n2", BootID: boot, Probed: boot,
		Watchdog: &model.WatchdogInfo{Backend: "process", Timeout: 2 * time.Second, Lease: time.Second}})
	pinned(w)
	w.setAlive("n2", false)
	w.never("r1 recovered before the watchdog time passed", 500*time.Millisecond, func() bool {
		for _, n := range w.startedOn("r1") {
			if n != "n2" {
				return true
			}
		}
		return false
	})
	mu.Lock()
	selfFenced = true
	mu.Unlock()
	w.ctrl.Kick()
	w.waitFor("r1 recovered after the watchdog time", func() bool {
		s := w.startedOn("r1")
		return len(s) == 1 && s[0] != "n2"
	})
	if h := history(w); len(h) != 1 || h[0].How != "watchdog" {
		t.Fatalf("history: %+v", h)
	}
}

// Without quorum the DC does nothing: no tasks, no fencing.
func TestNoQuorumNoActions(t *testing.T) {
	f := &fakeFencer{ok: true}
	w := newWorld(t, func(c *Config) { c.Quorate = func() bool { return false }; c.Fencer = f })
	withDevice(w)
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"))
	w.setAlive("n2", false)
	w.never("a task was issued without quorum", 500*time.Millisecond, func() bool {
		var n int
		w.node.Read(func(s *store.State) { ts, _ := clusterstate.Tasks(s, ""); n = len(ts) })
		return n > 0 || len(w.startedOn("r1")) > 0
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) > 0 {
		t.Fatalf("fenced without quorum: %v", f.calls)
	}
}

// A node lost uncleanly is fenced even when it runs nothing (Pacemaker's
// rule); a node never seen alive is not.
func TestLostEmptyNodeIsFenced(t *testing.T) {
	f := &fakeFencer{ok: true}
	w := newWorld(t, func(c *Config) { c.Fencer = f })
	withDevice(w)
	w.put(clusterstate.NodeKey("n3"), model.NodeRecord{V: 1, Name: "n3"}) // never alive: no incarnation
	w.setAlive("n3", false)
	w.setAlive("n2", false)
	w.waitFor("n2 fenced", func() bool {
		h := history(w)
		return len(h) > 0 && h[0].Target == "n2" && h[0].OK
	})
	w.never("n3 (never seen alive) fenced", 300*time.Millisecond, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.Contains(f.calls, "n3")
	})
}

// A node proven down in its current incarnation is offline even while
// membership still hears it (the moments after a power-off): nothing is
// placed on it.
func TestProofWinsOverMembership(t *testing.T) {
	rec := model.NodeRecord{Name: "n2", BootID: 9, Probed: 9, Down: &model.DownProof{How: "fenced", BootID: 9}}
	if got := NodeState("n2", true, rec, nil); got != model.NodeOffline {
		t.Fatalf("alive with a proof for its boot: %s, want offline", got)
	}
	rec.BootID, rec.Probed = 10, 10 // it rebooted: the old proof no longer counts
	if got := NodeState("n2", true, rec, nil); got != model.NodeOnline {
		t.Fatalf("new incarnation: %s, want online", got)
	}
}

// The DC checks every fence device's health and records it, so a broken
// device shows before a node must be fenced with it.
func TestFenceDeviceMonitor(t *testing.T) {
	f := &fakeFencer{ok: false}
	w := newWorld(t, func(c *Config) { c.Fencer = f })
	withDevice(w)
	w.waitFor("the device's health recorded", func() bool {
		var ms map[string]model.FenceMonitor
		w.node.Read(func(s *store.State) { ms, _ = clusterstate.FenceMonitors(s) })
		m, ok := ms["lab"]
		return ok && !m.OK && m.RC == 1
	})
}

// ProofOps, used by fencing, the watchdog and `vigil fence confirm`:
// applied to the state it was built from, it records the proof and releases
// the node's records, tasks and restart requests; once the node has
// re-registered (its record rewritten), the same transaction is refused and
// changes nothing.
func TestProofOpsGuardsTheIncarnation(t *testing.T) {
	s := store.NewState()
	put := func(ops ...store.Op) {
		t.Helper()
		if _, err := s.Apply(s.Index()+1, store.Txn{Ops: ops}); err != nil {
			t.Fatal(err)
		}
	}
	put(store.Op{Key: clusterstate.NodeKey("n2"), Value: clusterstate.Encode(model.NodeRecord{V: 1, Name: "n2", BootID: 5, Probed: 5})},
		store.Op{Key: clusterstate.RecordKey("n2", "r1"), Value: clusterstate.Encode(model.ResourceRecord{V: 1, Resource: "r1", Node: "n2", State: model.StateStarted})},
		store.Op{Key: clusterstate.TaskKey("n2", "t1"), Value: clusterstate.Encode(model.Task{V: 1, ID: "t1", Node: "n2", Action: model.ActStop, Resource: "r1"})},
		store.Op{Key: clusterstate.RestartKey("n2", "r1"), Value: []byte("{}")})
	v, err := ReadView(s)
	if err != nil {
		t.Fatal(err)
	}
	ops, guard := ProofOps(v, v.NodeRecords["n2"], model.DownProof{How: "confirmed"})

	late := s.Clone()
	if _, err := late.Apply(late.Index()+1, store.Put{Key: clusterstate.NodeKey("n2"), Value: clusterstate.Encode(model.NodeRecord{V: 1, Name: "n2", BootID: 6})}); err != nil {
		t.Fatal(err)
	}
	if _, err := late.Apply(late.Index()+1, store.Txn{Ops: ops, If: guard}); !errors.Is(err, store.ErrCompareFailed) {
		t.Fatalf("proof after the node came back: err %v, want ErrCompareFailed", err)
	}
	if _, still := late.Get(clusterstate.RecordKey("n2", "r1")); !still {
		t.Fatal("a refused proof deleted the node's records")
	}

	if _, err := s.Apply(s.Index()+1, store.Txn{Ops: ops, If: guard}); err != nil {
		t.Fatal(err)
	}
	rec := clusterstate.NodeRecord(s, "n2")
	if rec.Down == nil || rec.Down.BootID != 5 {
		t.Fatalf("proof: %+v", rec.Down)
	}
	for _, k := range []string{clusterstate.RecordKey("n2", "r1"), clusterstate.TaskKey("n2", "t1"), clusterstate.RestartKey("n2", "r1")} {
		if _, still := s.Get(k); still {
			t.Errorf("%s not released by the proof", k)
		}
	}
}

// A deposed DC's takeover can be committed after its successor's (raft
// forwards proposals): the record then names an older term. The current DC
// takes over again instead of failing every round, and keeps working.
func TestStaleDCRecordIsRepaired(t *testing.T) {
	w := newWorld(t, nil)
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"))
	w.runningOn("r1")
	term := w.node.Status().Term
	w.put(clusterstate.KeyDC, clusterstate.DCRecord{V: 1, Name: "n9", Term: term - 1})
	w.waitFor("the DC record back at the current term", func() bool {
		var dc clusterstate.DCRecord
		w.node.Read(func(s *store.State) { dc = clusterstate.DC(s) })
		return dc.Name == "n1" && dc.Term == term
	})
	w.put(clusterstate.ResourceKey("r2"), dummy("r2"))
	w.runningOn("r2")
}

// A takeover never writes over a DC record of a newer term.
func TestTakeOverRefusesANewerTerm(t *testing.T) {
	w := newWorld(t, nil)
	term := w.node.Status().Term
	w.put(clusterstate.KeyDC, clusterstate.DCRecord{V: 1, Name: "n9", Term: term + 5})
	if err := w.ctrl.takeOver(context.Background(), term); err == nil {
		t.Fatal("takeOver overwrote a DC record of a newer term")
	}
	var dc clusterstate.DCRecord
	w.node.Read(func(s *store.State) { dc = clusterstate.DC(s) })
	if dc.Term != term+5 {
		t.Fatalf("DC record changed to %+v", dc)
	}
}

// Starts wait while a live node has not finished probing: it may already
// run what would be started elsewhere.
func TestStartsWaitForProbes(t *testing.T) {
	w := newWorld(t, nil)
	// n3 is alive but has not probed its new incarnation yet.
	w.put(clusterstate.NodeKey("n3"), model.NodeRecord{V: 1, Name: "n3", BootID: boot + 1})
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"))
	w.never("r1 started while n3 is still probing", 500*time.Millisecond, func() bool { return len(w.startedOn("r1")) > 0 })
	w.put(clusterstate.NodeKey("n3"), model.NodeRecord{V: 1, Name: "n3", BootID: boot + 1, Probed: boot + 1})
	w.ctrl.Kick()
	w.runningOn("r1")
}

// refusingIntents is the store of a DC cut off from its peers at the
// moment it decides to fence: its proposals of fence intents never commit.
type refusingIntents struct {
	Store
	refused atomic.Int32
}

func (r *refusingIntents) Propose(ctx context.Context, cmd store.Command) (store.Result, error) {
	if txn, ok := cmd.(store.Txn); ok {
		for _, op := range txn.Ops {
			if strings.HasPrefix(op.Key, clusterstate.PrefixFenceIntent) && !op.Delete {
				r.refused.Add(1)
				return store.Result{}, errors.New("store: not committed (no quorum)")
			}
		}
	}
	return r.Store.Propose(ctx, cmd)
}

// Intent before action: a DC that cannot commit the fence's intent never
// runs the device (an isolated DC would otherwise power off healthy nodes
// it saw lost one by one while it still counted a quorum), and the node's
// resources stay where they are.
func TestFenceNeedsItsIntentCommitted(t *testing.T) {
	f := &fakeFencer{ok: true}
	var rs *refusingIntents
	w := newWorld(t, func(c *Config) {
		rs = &refusingIntents{Store: c.Store}
		c.Store = rs
		c.Fencer = f
	})
	withDevice(w)
	pinned(w)
	w.setAlive("n2", false)
	w.waitFor("the DC to try", func() bool { return rs.refused.Load() > 0 })
	w.never("a fence without its intent", time.Second, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.calls) > 0
	})
	if s := w.startedOn("r1"); len(s) != 1 || s[0] != "n2" {
		t.Fatalf("r1 started on %v, want n2 alone (no proof)", s)
	}
}

// A node lost before its current incarnation recorded its probes may run
// anything (an agent that died after a start, before recording it, and
// whose next incarnation refused the unanswered task): starts wait until
// it is proven down.
func TestStartsWaitForALostUnprobedNode(t *testing.T) {
	w := newWorld(t, nil)
	w.put(clusterstate.NodeKey("n2"), model.NodeRecord{V: 1, Name: "n2", BootID: boot + 1, Probed: boot})
	w.setAlive("n2", false)
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"))
	w.never("r1 started while n2 is lost and unprobed", time.Second, func() bool { return len(w.startedOn("r1")) > 0 })
	w.put(clusterstate.NodeKey("n2"), model.NodeRecord{V: 1, Name: "n2", BootID: boot + 1, Probed: boot,
		Down: &model.DownProof{How: "confirmed", BootID: boot + 1}})
	w.waitFor("r1 started once n2 is proven down", func() bool { return len(w.startedOn("r1")) == 1 })
}

func TestStartsHeld(t *testing.T) {
	v := View{NodeRecords: map[string]model.NodeRecord{
		"n1": {Name: "n1", BootID: 5, Probed: 5},
		"n2": {Name: "n2", BootID: 6, Probed: 4},
	}}
	for i, tc := range []struct {
		nodes []model.NodeStatus
		want  string
	}{
		{[]model.NodeStatus{{Name: "n1", State: model.NodeOnline}, {Name: "n2", State: model.NodeOnline}}, ""},
		{[]model.NodeStatus{{Name: "n1", State: model.NodePending}}, "n1"},
		{[]model.NodeStatus{{Name: "n1", State: model.NodeLost}, {Name: "n2", State: model.NodeOnline}}, ""}, // probed: its records hold
		{[]model.NodeStatus{{Name: "n1", State: model.NodeOnline}, {Name: "n2", State: model.NodeLost}}, "n2"},
		{[]model.NodeStatus{{Name: "n2", State: model.NodeOffline}}, ""}, // proven down
		{[]model.NodeStatus{{Name: "n2", State: model.NodePending, Witness: true}}, ""},
	} {
		if got, why := StartsHeld(v, &model.Snapshot{Nodes: tc.nodes}); got != tc.want {
			t.Errorf("%d: held by %q (%s), want %q", i, got, why, tc.want)
		}
	}
}
