package executor

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// startRunning starts the resources through tasks and waits until they run.
func (h *harness) startRunning(rs ...model.Resource) {
	h.t.Helper()
	for i, r := range rs {
		id := "s" + string(rune('a'+i))
		h.task(id, model.ActStart, r, 1)
		if res := h.waitResult(id); !res.OK {
			h.t.Fatalf("start %s: %+v", r.ID, res)
		}
	}
}

// result returns a task's result, if any.
func (h *harness) result(id string) (model.TaskResult, bool) {
	var r model.TaskResult
	var ok bool
	h.node.Read(func(s *store.State) { r, ok = clusterstate.Result(s, self, id) })
	return r, ok
}

// eventually polls cond (outside the store) until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Without a quorum (no write can commit) a self-stop still stops what runs
// here, dependents first, writes nothing, and the executor then runs
// nothing until it rejoins: a fresh registration that clears the down
// proof, the unanswered tasks refused, every instance probed, then Probed.
func TestSelfStopWithoutQuorumThenRejoin(t *testing.T) {
	h := newHarness(t)
	r1, r2, r3 := dummy("r1"), dummy("r2"), dummy("r3")
	r1.Ops = []model.Op{{Name: model.OpMonitor, Interval: model.Duration(10 * time.Millisecond)}}
	for _, r := range []model.Resource{r1, r2, r3} {
		h.resource(r)
	}
	h.put(clusterstate.PrefixGroups+"g", model.Group{ID: "g", Resources: []string{"r1", "r2"}})
	h.put(clusterstate.PrefixOrders+"o", model.Order{ID: "o", First: "r3", Then: "g"})
	fl := &flaky{Node: h.node}
	tr := newTracker(h.reg)
	wd := &model.WatchdogInfo{Backend: model.WatchdogProcess, Timeout: 2 * time.Second, Lease: time.Second}
	ex := h.start(func(c *Config) { c.Store, c.Agents, c.Watchdog = fl, tr, wd })
	h.waitProbed(ex)
	if nr := h.nodeRecord(); nr.Watchdog == nil || *nr.Watchdog != *wd {
		t.Fatalf("node record watchdog: %+v", nr.Watchdog)
	}
	h.startRunning(r3, r1, r2)
	if n := ex.ex.LocalActive(); n != 3 {
		t.Fatalf("LocalActive %d, want 3", n)
	}

	if insts, _ := ex.ex.Released(); insts != nil {
		t.Fatalf("a running executor claims released %v", insts)
	}
	recBefore := h.nodeRecord()
	fl.down.Store(true)
	before := fl.refusals.Load()
	seqStart := len(tr.sequence())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ex.ex.SelfStop(ctx, "test: lease ending"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"r1", "r2", "r3"} {
		if h.runs(r) {
			t.Fatalf("%s still runs after the self-stop", r)
		}
		if rec := h.mustRecord(r); rec.State != model.StateStarted {
			t.Fatalf("%s: the self-stop wrote a record: %+v", r, rec)
		}
	}
	if n := ex.ex.LocalActive(); n != 0 || !ex.ex.SelfStopped() || ex.ex.Probed() {
		t.Fatalf("LocalActive %d, self-stopped %v, probed %v", n, ex.ex.SelfStopped(), ex.ex.Probed())
	}
	if got := ex.ex.StoppedHere(); len(got) != 3 {
		t.Fatalf("stopped here: %v", got)
	}
	// The release claim: what the self-stop stopped, tied to the node
	// record as it was when the node lost quorum; every stop ran as a
	// self-stop (the agents' isolation response).
	if insts, idx := ex.ex.Released(); !slices.Equal(insts, []string{"r1", "r2", "r3"}) || idx == 0 || idx != recBefore.Index {
		t.Fatalf("released %v at node index %d, want [r1 r2 r3] at %d", insts, idx, recBefore.Index)
	}
	if n := tr.selfStops.Load(); n != 3 {
		t.Fatalf("%d stops marked SelfStop, want 3", n)
	}
	if fl.refusals.Load() != before {
		t.Fatalf("the self-stop tried to write (%d proposals)", fl.refusals.Load()-before)
	}
	var stops []string
	for _, a := range tr.sequence()[seqStart:] {
		if strings.HasSuffix(a, " stop") {
			stops = append(stops, strings.TrimSuffix(a, " stop"))
		}
	}
	// Dependents first: r2 (the later group member), then r1, then r3
	// (first of the order before the group).
	if !slices.Equal(stops, []string{"r2", "r1", "r3"}) {
		t.Fatalf("stop order %v, want [r2 r1 r3]", stops)
	}

	// Self-stopped: a new task is not run, even with the store back, until
	// the agent says the node may rejoin.
	h.task("t0100", model.ActStart, r1, 1)
	fl.down.Store(false)
	time.Sleep(100 * time.Millisecond)
	if h.runs("r1") {
		t.Fatal("a self-stopped executor started r1")
	}
	if _, answered := h.result("t0100"); answered {
		t.Fatal("a self-stopped executor answered a task")
	}
	// The DC proved the node down meanwhile.
	nr := h.nodeRecord()
	nr.Down = &model.DownProof{How: "watchdog", BootID: 100}
	h.put(clusterstate.NodeKey(self), nr)

	seqRejoin := len(tr.sequence())
	ex.ex.Rejoin()
	res := h.waitResult("t0100")
	if res.Refused != RefusedSelfStopped || res.OK {
		t.Fatalf("task left from before the rejoin: %+v", res)
	}
	h.waitProbed(ex)
	if nr := h.nodeRecord(); nr.Down != nil || nr.Probed != 100 || nr.Watchdog == nil {
		t.Fatalf("node record after rejoin: %+v", nr)
	}
	for _, r := range []string{"r1", "r2", "r3"} {
		if rec := h.mustRecord(r); rec.State != model.StateStopped || rec.LastOp != model.ActProbe {
			t.Fatalf("%s after rejoin: %+v", r, rec)
		}
	}
	probes := 0
	for _, a := range tr.sequence()[seqRejoin:] {
		if strings.HasSuffix(a, " monitor") {
			probes++
		}
	}
	if probes != 3 {
		t.Fatalf("%d probes at the rejoin, want 3: %v", probes, tr.sequence()[seqRejoin:])
	}
	if ex.ex.SelfStopped() {
		t.Fatal("still self-stopped after the rejoin")
	}
	if insts, idx := ex.ex.Released(); insts != nil || idx != 0 {
		t.Fatalf("a rejoined executor still claims %v at %d", insts, idx)
	}
	if nr := h.nodeRecord(); nr.Index == recBefore.Index {
		t.Fatal("the rejoin did not write the node record anew: an old claim would still hold")
	}
	// Back to work.
	h.task("t0101", model.ActStart, r1, 1)
	if res := h.waitResult("t0101"); !res.OK || !h.runs("r1") {
		t.Fatalf("start after the rejoin: %+v", res)
	}
	if len(tr.overlaps) > 0 {
		t.Fatalf("overlapping actions: %v", tr.overlaps)
	}
}

// A start in flight (a slow agent) is aborted by a self-stop, and the
// instance is stopped after it.
func TestSelfStopAbortsActionInFlight(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	tr := newTracker(h.reg)
	ex := h.start(func(c *Config) { c.Agents = tr })
	h.waitProbed(ex)
	slow := r1
	slow.Params = map[string]string{"op_sleep": "5s"} // the task's copy only
	h.task("t0001", model.ActStart, slow, 1)
	eventually(t, "the start runs", func() bool { return slices.Contains(tr.history("r1"), "start") })
	if n := ex.ex.LocalActive(); n != 1 {
		t.Fatalf("LocalActive %d during the start, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := ex.ex.SelfStop(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if h.runs("r1") || ex.ex.LocalActive() != 0 {
		t.Fatalf("r1 runs %v, LocalActive %d", h.runs("r1"), ex.ex.LocalActive())
	}
	if got := tr.history("r1"); !slices.Equal(got[len(got)-2:], []string{"start", "stop"}) {
		t.Fatalf("history %v", got)
	}
	if _, answered := h.result("t0001"); answered {
		t.Fatal("the aborted start was answered")
	}
}

// A node that finds itself proven down while it runs stops everything
// and, told it may rejoin, registers afresh.
func TestProvenDownWhileRunning(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	ex := h.start(nil)
	h.waitProbed(ex)
	h.startRunning(r1)
	nr := h.nodeRecord()
	nr.Down = &model.DownProof{How: "confirmed", BootID: 100}
	h.put(clusterstate.NodeKey(self), nr)
	eventually(t, "self-stop", func() bool { return ex.ex.SelfStopped() && ex.ex.LocalActive() == 0 })
	if h.runs("r1") {
		t.Fatal("r1 still runs")
	}
	ex.ex.Rejoin()
	h.waitFor("a fresh registration", func(s *store.State) bool {
		r := clusterstate.NodeRecord(s, self)
		return r.Down == nil && r.Probed == 100
	})
	eventually(t, "rejoined", func() bool { return !ex.ex.SelfStopped() && ex.ex.Probed() })
}

// Before its probes, the executor counts its records in the store; the
// probes (even uncommitted, without a quorum) tell what really runs.
func TestLocalActiveBeforeAndAfterProbes(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	h.put(clusterstate.RecordKey(self, "r1"), model.ResourceRecord{V: 1, Resource: "r1", Node: self, State: model.StateStarted})
	fl := &flaky{Node: h.node}
	fl.down.Store(true)
	gate := make(chan struct{})
	tr := &gated{tracker: newTracker(h.reg), gate: gate}
	ex := New(Config{Node: self, BootID: 100, Store: fl, Agents: tr, Log: testLog(t)})
	if n := ex.LocalActive(); n != 1 {
		t.Fatalf("LocalActive before Run %d, want 1 (the record)", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ex.Run(ctx) }()
	defer func() { cancel(); <-done }()
	fl.down.Store(false) // let the registration through, then block again
	eventually(t, "registered", func() bool { return h.nodeRecord().BootID == 100 })
	fl.down.Store(true)
	close(gate)
	eventually(t, "probes known", func() bool { return ex.LocalActive() == 0 })
	if rec := h.mustRecord("r1"); rec.State != model.StateStarted {
		t.Fatalf("record written without a quorum: %+v", rec)
	}
}

// gated holds every agent action until gate is closed.
type gated struct {
	*tracker
	gate chan struct{}
}

func (g *gated) Get(spec string) (agents.Agent, error) {
	<-g.gate
	return g.tracker.Get(spec)
}

func TestStopWaves(t *testing.T) {
	c := model.Config{
		Resources: []model.Resource{dummy("a"), dummy("b"), dummy("c"), dummy("d"), dummy("w"), dummy("x")},
		Groups:    []model.Group{{ID: "g", Resources: []string{"a", "b", "c"}}},
		Clones:    []model.Clone{{ID: "w-clone", Of: "w"}},
		Orders: []model.Order{
			{ID: "o1", First: "w-clone", Then: "g"},
			{ID: "o2", First: "d", Then: "x", Symmetrical: new(false)},
		},
	}
	insts := map[string]Instance{}
	for _, in := range Instances(c, 2) {
		insts[in.ID] = in
	}
	targets := map[string]bool{"a": true, "b": true, "c": true, "d": true, "x": true, "w-clone:0": true, "w-clone:1": true, "gone": true}
	got := stopWaves(targets, insts, c)
	want := [][]string{{"c", "d", "gone", "x"}, {"b"}, {"a"}, {"w-clone:0", "w-clone:1"}}
	if len(got) != len(want) {
		t.Fatalf("waves %v, want %v", got, want)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("waves %v, want %v", got, want)
		}
	}
}

// keeping wraps an agent registry so that its agents keep the instances
// named in until running through an isolation (agents.IsolationKeeper),
// guarded until the time given.
type keeping struct {
	Agents
	mu    sync.Mutex
	until map[string]time.Time
}

func (k *keeping) Get(spec string) (agents.Agent, error) {
	a, err := k.Agents.Get(spec)
	return keeperAgent{a, k}, err
}

func (k *keeping) set(inst string, until time.Time) {
	k.mu.Lock()
	k.until[inst] = until
	k.mu.Unlock()
}

type keeperAgent struct {
	agents.Agent
	k *keeping
}

func (a keeperAgent) KeepsRunning(inst string) (time.Time, bool) {
	a.k.mu.Lock()
	defer a.k.mu.Unlock()
	u, ok := a.k.until[inst]
	return u, ok
}

// The isolation response leave-running: a self-stop leaves an instance
// its agent keeps running alone, does not claim it released, and counts
// it as unguarded only once its guard no longer lasts until the time
// asked about (the agent's pets).
func TestSelfStopLeavesKeptInstancesRunning(t *testing.T) {
	h := newHarness(t)
	r1, r2 := dummy("r1"), dummy("r2")
	h.resource(r1)
	h.resource(r2)
	fl := &flaky{Node: h.node}
	k := &keeping{Agents: h.reg, until: map[string]time.Time{}}
	ex := h.start(func(c *Config) { c.Store, c.Agents = fl, k })
	h.waitProbed(ex)
	h.startRunning(r1, r2)
	guard := time.Now().Add(time.Hour)
	k.set("r1", guard)

	fl.down.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ex.ex.SelfStop(ctx, "test: quorum lost"); err != nil {
		t.Fatalf("self-stop: %v (a kept instance is not a failure)", err)
	}
	if !h.runs("r1") || h.runs("r2") {
		t.Fatalf("after the self-stop: r1 runs %v (want kept), r2 runs %v", h.runs("r1"), h.runs("r2"))
	}
	if insts, _ := ex.ex.Released(); !slices.Equal(insts, []string{"r2"}) {
		t.Fatalf("released %v, want [r2]: r1 still runs", insts)
	}
	if n := ex.ex.LocalActive(); n != 1 {
		t.Fatalf("LocalActive %d, want 1 (r1)", n)
	}
	if n, _ := ex.ex.UnguardedActive(time.Now()); n != 0 {
		t.Fatalf("UnguardedActive before the guard's end: %d, want 0", n)
	}
	if n, left := ex.ex.UnguardedActive(guard.Add(time.Second)); n != 1 || left[0] != "r1" {
		t.Fatalf("UnguardedActive past the guard: %d %v, want r1", n, left)
	}
	// An agent that no longer keeps it (its lease lost): unguarded now.
	k.mu.Lock()
	delete(k.until, "r1")
	k.mu.Unlock()
	if n, _ := ex.ex.UnguardedActive(time.Now()); n != 1 {
		t.Fatalf("UnguardedActive without the agent's guard: %d, want 1", n)
	}
}

// A rejoin whose registration cannot commit yet keeps the release claim
// (the node record is still the one it names: nothing can have run); once
// the registration commits, the claim is gone, and the record is a new one.
func TestReleaseClaimLastsUntilTheRegistration(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	fl := &flaky{Node: h.node}
	ex := h.start(func(c *Config) { c.Store = fl })
	h.waitProbed(ex)
	h.startRunning(r1)
	before := h.nodeRecord()

	fl.down.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ex.ex.SelfStop(ctx, "test: quorum lost"); err != nil {
		t.Fatal(err)
	}
	refusals := fl.refusals.Load()
	ex.ex.Rejoin()
	eventually(t, "a registration attempt", func() bool { return fl.refusals.Load() > refusals })
	if insts, idx := ex.ex.Released(); !slices.Equal(insts, []string{"r1"}) || idx != before.Index {
		t.Fatalf("during a rejoin that cannot register: released %v at %d, want [r1] at %d", insts, idx, before.Index)
	}
	fl.down.Store(false)
	h.waitProbed(ex)
	if insts, idx := ex.ex.Released(); insts != nil || idx != 0 {
		t.Fatalf("after the rejoin: released %v at %d", insts, idx)
	}
	if h.nodeRecord().Index == before.Index {
		t.Fatal("the rejoin did not write the node record anew")
	}
}

// A self-stop leaves an instance running only while its guard outlasts a
// reset (KeepMargin) and while it depends on nothing else active here;
// otherwise it is stopped like any other.
func TestSelfStopKeepsOnlyWhatItMay(t *testing.T) {
	for i, tc := range []struct {
		name  string
		guard time.Duration
		group bool // r0 then r1 in a group: r1 depends on r0
		kept  bool
	}{
		{"guarded long enough", time.Hour, false, true},
		{"guard shorter than a reset", time.Second, false, false},
		{"depends on an active resource", time.Hour, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			r0, r1 := dummy("r0"), dummy("r1")
			h.resource(r0)
			h.resource(r1)
			if tc.group {
				h.put(clusterstate.PrefixGroups+"g", model.Group{ID: "g", Resources: []string{"r0", "r1"}})
			}
			fl := &flaky{Node: h.node}
			k := &keeping{Agents: h.reg, until: map[string]time.Time{}}
			ex := h.start(func(c *Config) { c.Store, c.Agents, c.KeepMargin = fl, k, 10*time.Second })
			h.waitProbed(ex)
			h.startRunning(r0, r1)
			k.set("r1", time.Now().Add(tc.guard))
			fl.down.Store(true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := ex.ex.SelfStop(ctx, "test: quorum lost"); err != nil {
				t.Fatalf("%d: self-stop: %v", i, err)
			}
			if h.runs("r1") != tc.kept || h.runs("r0") {
				t.Fatalf("%d: r1 runs %v (want %v), r0 runs %v", i, h.runs("r1"), tc.kept, h.runs("r0"))
			}
		})
	}
}

// Before its first probe a node counts as active what its agents find
// running outside its knowledge (a QEMU that outlived an agent restart).
func TestSurvivorsCountBeforeTheFirstProbe(t *testing.T) {
	h := newHarness(t)
	fl := &flaky{Node: h.node}
	fl.down.Store(true) // cannot register: never probes
	ex := h.start(func(c *Config) { c.Store, c.Survivors = fl, func() []string { return []string{"vm9"} } })
	eventually(t, "a registration attempt", func() bool { return fl.refusals.Load() > 0 })
	if n, left := ex.ex.UnguardedActive(time.Now()); n != 1 || left[0] != "vm9" {
		t.Fatalf("UnguardedActive %d %v before the first probe, want vm9", n, left)
	}
}

// Starts learn which nodes are proven down, and which of them only by
// their watchdog's timing (agents.Request.WatchdogDown): vigil:vm takes a
// leave-running VM's lease at once only from the others.
func TestDownNodesSayWhichProofs(t *testing.T) {
	h := newHarness(t)
	ex := h.start(nil)
	h.waitProbed(ex)
	h.put(clusterstate.NodeKey("n2"), model.NodeRecord{V: 1, Name: "n2", BootID: 5, Down: &model.DownProof{How: "watchdog", BootID: 5}},
		clusterstate.NodeKey("n3"), model.NodeRecord{V: 1, Name: "n3", BootID: 6, Down: &model.DownProof{How: "fenced", BootID: 6}},
		clusterstate.NodeKey("n4"), model.NodeRecord{V: 1, Name: "n4", BootID: 8, Down: &model.DownProof{How: "watchdog", BootID: 7}})
	down, byWatchdog := ex.ex.downNodes()
	if !slices.Equal(down, []string{"n2", "n3"}) || !slices.Equal(byWatchdog, []string{"n2"}) {
		t.Fatalf("down %v, by watchdog %v; want [n2 n3] and [n2] (n4's proof is of an older incarnation)", down, byWatchdog)
	}
}
