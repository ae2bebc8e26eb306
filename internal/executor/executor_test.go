package executor

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

func dummy(id string) model.Resource { return model.Resource{ID: id, Agent: "vigil:dummy"} }

// A start task runs the agent once and commits an OK result with the
// record started; a stop task the same with the record stopped.
func TestStartThenStopTask(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	ex := h.start(nil)
	h.waitProbed(ex)
	if rec := h.mustRecord("r1"); rec.State != model.StateStopped || rec.LastOp != model.ActProbe || rec.LastRC != 7 {
		t.Fatalf("probe record: %+v", rec)
	}

	h.task("t0001", model.ActStart, r1, 1)
	res := h.waitResult("t0001")
	if !res.OK || res.RC != 0 || res.Refused != "" || res.Node != self || res.Term != 1 {
		t.Fatalf("start result: %+v", res)
	}
	rec := h.mustRecord("r1")
	if rec.State != model.StateStarted || rec.LastOp != model.ActStart || rec.Node != self || rec.Changed.IsZero() {
		t.Fatalf("after start: %+v", rec)
	}
	if !h.runs("r1") {
		t.Fatal("start returned OK but the dummy's state file is missing")
	}

	h.task("t0002", model.ActStop, r1, 1)
	if res := h.waitResult("t0002"); !res.OK {
		t.Fatalf("stop result: %+v", res)
	}
	if rec := h.mustRecord("r1"); rec.State != model.StateStopped || rec.LastOp != model.ActStop {
		t.Fatalf("after stop: %+v", rec)
	}
	if h.runs("r1") {
		t.Fatal("stop returned OK but the dummy still runs")
	}
}

// Epochs (DESIGN.md): a node refuses orders from an older term. The task
// of a deposed DC is answered, not run.
func TestOlderTermIsRefusedAndNotRun(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	h.put(clusterstate.KeyDC, clusterstate.DCRecord{V: 1, Name: "n2", Term: 5})
	tr := newTracker(h.reg)
	ex := h.start(func(c *Config) { c.Agents = tr })
	h.waitProbed(ex)

	h.task("t0001", model.ActStart, r1, 4)
	res := h.waitResult("t0001")
	if res.Refused != "older term 4 < 5" || res.OK {
		t.Fatalf("result: %+v", res)
	}
	if h.runs("r1") || slices.Contains(tr.history("r1"), "start") {
		t.Fatalf("a refused start ran: %v", tr.history("r1"))
	}
	if rec := h.mustRecord("r1"); rec.State != model.StateStopped {
		t.Fatalf("record: %+v", rec)
	}
	// The current term's order runs.
	h.task("t0002", model.ActStart, r1, 5)
	if res := h.waitResult("t0002"); !res.OK {
		t.Fatalf("current term: %+v", res)
	}
}

// The probe at start records what already runs (an agent restart learns
// what its previous incarnation started), then sets Probed; registering
// clears Left and Down of the previous incarnation.
func TestProbeAtStartLearnsWhatRuns(t *testing.T) {
	h := newHarness(t)
	h.resource(dummy("r1"))
	h.resource(dummy("r2"))
	h.resource(dummy("r3"))
	h.put(clusterstate.PrefixClones+"c", model.Clone{ID: "c", Of: "r3", Max: 2})
	h.put(clusterstate.NodeKey(self), model.NodeRecord{V: 1, Name: self, BootID: 99, Probed: 99, Left: true,
		Down: &model.DownProof{How: "confirmed", BootID: 99}})
	if err := os.MkdirAll(h.dir+"/dummy", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, inst := range []string{"r1", "c:1"} {
		if err := os.WriteFile(h.stateFile(inst), []byte("fake=x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ex := h.start(nil)
	h.waitProbed(ex)
	nr := h.nodeRecord()
	if nr.BootID != 100 || nr.Probed != 100 || nr.Left || nr.Down != nil {
		t.Fatalf("node record: %+v", nr)
	}
	want := map[string]string{"r1": model.StateStarted, "r2": model.StateStopped, "c:0": model.StateStopped, "c:1": model.StateStarted}
	for inst, state := range want {
		if rec := h.mustRecord(inst); rec.State != state || rec.LastOp != model.ActProbe {
			t.Errorf("%s: %+v, want %s", inst, rec, state)
		}
	}
	if _, ok := h.record("r3"); ok {
		t.Error("a cloned resource was probed as an instance of its own")
	}
}

// A recurring monitor that finds the resource gone records it failed with
// the fail count raised, and stops.
func TestMonitorDetectsFailure(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	r1.Ops = []model.Op{{Name: model.OpMonitor, Interval: model.Duration(50 * time.Millisecond), Timeout: model.Duration(5 * time.Second)}}
	h.resource(r1)
	tr := newTracker(h.reg)
	ex := h.start(func(c *Config) { c.Agents = tr })
	h.waitProbed(ex)
	h.task("t0001", model.ActStart, r1, 1)
	if res := h.waitResult("t0001"); !res.OK {
		t.Fatalf("start: %+v", res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for countOf(tr.history("r1"), "recurring-monitor") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("monitor did not run: %v", tr.history("r1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rec := h.mustRecord("r1"); rec.State != model.StateStarted || rec.FailCount != 0 {
		t.Fatalf("a passing monitor changed the record: %+v", rec)
	}

	if err := os.Remove(h.stateFile("r1")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("r1 failed", func(s *store.State) bool {
		r, ok := ex.ex.record(s, "r1")
		return ok && r.State == model.StateFailed
	})
	rec := h.mustRecord("r1")
	if rec.FailCount != 1 || rec.LastRC != 7 || rec.LastOp != model.OpMonitor || rec.LastFailure.IsZero() {
		t.Fatalf("failed record: %+v", rec)
	}
	n := countOf(tr.history("r1"), "recurring-monitor")
	time.Sleep(300 * time.Millisecond)
	if m := countOf(tr.history("r1"), "recurring-monitor"); m != n {
		t.Fatalf("the monitor kept running after the failure: %d runs, then %d", n, m)
	}
	if rec := h.mustRecord("r1"); rec.FailCount != 1 {
		t.Fatalf("fail count moved on: %+v", rec)
	}
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// Never two actions on one instance at once: tasks run one after another
// in ID order, and the recurring monitor waits its turn; another instance
// is not held up.
func TestActionsOnOneInstanceNeverOverlap(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	r1.Params = map[string]string{"op_sleep": "60ms"}
	r1.Ops = []model.Op{{Name: model.OpMonitor, Interval: model.Duration(20 * time.Millisecond)}}
	r2 := dummy("r2")
	r2.Params = map[string]string{"op_sleep": "60ms"}
	h.resource(r1)
	h.resource(r2)
	tr := newTracker(h.reg)
	ex := h.start(func(c *Config) { c.Agents = tr })
	h.waitProbed(ex)

	h.put(
		clusterstate.TaskKey(self, "t0004"), model.Task{V: 1, ID: "t0004", Term: 1, Node: self, Action: model.ActStop, Resource: "r1", Config: r1},
		clusterstate.TaskKey(self, "t0001"), model.Task{V: 1, ID: "t0001", Term: 1, Node: self, Action: model.ActStart, Resource: "r1", Config: r1},
		clusterstate.TaskKey(self, "t0003"), model.Task{V: 1, ID: "t0003", Term: 1, Node: self, Action: model.ActStart, Resource: "r1", Config: r1},
		clusterstate.TaskKey(self, "t0002"), model.Task{V: 1, ID: "t0002", Term: 1, Node: self, Action: model.ActStop, Resource: "r1", Config: r1},
		clusterstate.TaskKey(self, "t0005"), model.Task{V: 1, ID: "t0005", Term: 1, Node: self, Action: model.ActStart, Resource: "r2", Config: r2},
	)
	if res := h.waitResult("t0005"); !res.OK {
		t.Fatalf("r2 start: %+v", res)
	}
	for _, id := range []string{"t0001", "t0002", "t0003", "t0004"} {
		if res := h.waitResult(id); !res.OK {
			t.Fatalf("%s: %+v", id, res)
		}
	}
	// Let the monitor run between and after (it starts after t0003).
	h.task("t0006", model.ActStart, r1, 1)
	h.waitResult("t0006")
	time.Sleep(200 * time.Millisecond)
	h.task("t0007", model.ActStop, r1, 1)
	h.waitResult("t0007")

	tr.mu.Lock()
	overlaps, maxTotal := tr.overlaps, tr.maxTotal
	tr.mu.Unlock()
	if len(overlaps) > 0 {
		t.Fatalf("overlapping actions: %v", overlaps)
	}
	if maxTotal < 2 {
		t.Error("r2's start never ran beside r1's actions: instances are serialized with each other")
	}
	var ops []string
	for _, a := range tr.history("r1") {
		if a != "recurring-monitor" {
			ops = append(ops, a)
		}
	}
	want := []string{"monitor", "start", "stop", "start", "stop", "start", "stop"} // the probe first
	if !slices.Equal(ops, want) {
		t.Fatalf("r1 actions %v, want %v", ops, want)
	}
	if countOf(tr.history("r1"), "recurring-monitor") == 0 {
		t.Fatal("the recurring monitor never ran while r1 was started")
	}
	if rec := h.mustRecord("r1"); rec.State != model.StateStopped {
		t.Fatalf("r1: %+v", rec)
	}
}

// A failed start sets the fail count to migration-threshold (Pacemaker's
// start-failure-is-fatal: the resource moves at once); 0 counts as 1.
func TestStartFailureSetsThreshold(t *testing.T) {
	h := newHarness(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ex := h.start(func(c *Config) { c.Now = func() time.Time { return now } })
	h.waitProbed(ex)
	cases := []struct {
		threshold string
		want      int64
	}{{"5", 5}, {"0", 1}, {"", model.DefaultMigrationThreshold}, {"INFINITY", int64(model.Infinity)}}
	for i, c := range cases {
		r := dummy("bad" + string(rune('a'+i)))
		r.Params = map[string]string{"op_sleep": "not-a-duration"} // ERR_CONFIGURED
		if c.threshold != "" {
			r.Meta = map[string]string{model.MetaMigrationThreshold: c.threshold}
		}
		id := "t" + r.ID
		h.task(id, model.ActStart, r, 1)
		res := h.waitResult(id)
		if res.OK || res.RC != 6 || res.Output == "" {
			t.Fatalf("%d: result %+v", i, res)
		}
		rec := h.mustRecord(r.ID)
		if rec.State != model.StateFailed || rec.FailCount != c.want || !rec.LastFailure.Equal(now) || rec.LastRC != 6 {
			t.Errorf("%d: threshold %q: record %+v, want fail count %d", i, c.threshold, rec, c.want)
		}
	}
}

// Tasks left from before a restart (or issued while the node was down) are
// refused at start and not run; answered tasks are left alone.
func TestTasksOfPreviousBootAreRefused(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	h.task("t0001", model.ActStart, r1, 1)
	h.task("t0002", model.ActStop, r1, 1)
	done := model.TaskResult{V: 1, ID: "t0002", Term: 1, Node: self, OK: true}
	h.put(clusterstate.ResultKey(self, "t0002"), done)
	tr := newTracker(h.reg)
	ex := h.start(func(c *Config) { c.Agents = tr })
	h.waitProbed(ex)
	if res := h.waitResult("t0001"); res.Refused != RefusedRestarted {
		t.Fatalf("stale task: %+v", res)
	}
	if res := h.waitResult("t0002"); string(clusterstate.Encode(res)) != string(clusterstate.Encode(done)) {
		t.Fatalf("answered task's result changed: %+v", res)
	}
	if got := tr.history("r1"); !slices.Equal(got, []string{"monitor"}) {
		t.Fatalf("r1 actions: %v, want only the probe", got)
	}
}

// Maintenance (the cluster property or the node's flag) refuses tasks.
func TestMaintenanceRefusesTasks(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	ex := h.start(nil)
	h.waitProbed(ex)
	h.put(clusterstate.PropertyKey(model.PropMaintenanceMode), "true")
	h.task("t0001", model.ActStart, r1, 1)
	if res := h.waitResult("t0001"); res.Refused != RefusedMaintenance {
		t.Fatalf("cluster maintenance: %+v", res)
	}
	h.put(clusterstate.PropertyKey(model.PropMaintenanceMode), "false",
		clusterstate.NodeConfigKey(self), model.NodeConfig{Name: self, Maintenance: true})
	h.task("t0002", model.ActStart, r1, 1)
	if res := h.waitResult("t0002"); res.Refused != RefusedMaintenance {
		t.Fatalf("node maintenance: %+v", res)
	}
	h.put(clusterstate.NodeConfigKey(self), model.NodeConfig{Name: self})
	h.task("t0003", model.ActStart, r1, 1)
	if res := h.waitResult("t0003"); !res.OK {
		t.Fatalf("after maintenance: %+v", res)
	}
}

// A cleanup request re-probes the instance, resets its fail count and is
// deleted in the same transaction.
func TestCleanupResetsFailCount(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	h.put(clusterstate.RecordKey(self, "r1"), model.ResourceRecord{V: 1, Resource: "r1", Node: self, State: model.StateFailed,
		FailCount: 3, LastFailure: time.Now(), LastOp: model.OpMonitor, LastRC: 1, FailureReason: "monitor: gone"})
	ex := h.start(nil)
	h.waitProbed(ex)
	if rec := h.mustRecord("r1"); rec.State != model.StateStopped || rec.FailCount != 3 || rec.FailureReason != "monitor: gone" {
		t.Fatalf("probe must keep the fail count and its reason: %+v", rec)
	}
	if err := os.WriteFile(h.stateFile("r1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.put(clusterstate.CleanupKey(self, "r1"), time.Now().UTC().Format(time.RFC3339))
	h.waitFor("the cleanup request to go", func(s *store.State) bool {
		_, ok := s.Get(clusterstate.CleanupKey(self, "r1"))
		return !ok
	})
	rec := h.mustRecord("r1")
	if rec.State != model.StateStarted || rec.FailCount != 0 || !rec.LastFailure.IsZero() || rec.FailureReason != "" {
		t.Fatalf("after cleanup: %+v", rec)
	}
}

// A failed start's reason survives the stop that follows it.
func TestFailureReasonKeptThroughStop(t *testing.T) {
	h := newHarness(t)
	r := model.Resource{ID: "bad", Agent: "vigil:process", Params: map[string]string{"command": "echo no such thing >&2; exit 3"}}
	h.resource(r)
	ex := h.start(nil)
	h.waitProbed(ex)
	h.task("t1", model.ActStart, r, 1)
	h.waitResult("t1")
	rec := h.mustRecord("bad")
	if rec.State != model.StateFailed || !strings.HasPrefix(rec.FailureReason, "start: ") {
		t.Fatalf("after the failed start: %+v", rec)
	}
	reason := rec.FailureReason
	h.task("t2", model.ActStop, r, 1)
	h.waitResult("t2")
	if rec := h.mustRecord("bad"); rec.State != model.StateStopped || rec.FailureReason != reason {
		t.Fatalf("after the stop: %+v, want the reason %q kept", rec, reason)
	}
}

// A restart request stops and starts the instance in place, keeps it on
// this node, and is deleted with the record it produces.
func TestRestartInPlace(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	ex := h.start(nil)
	h.waitProbed(ex)
	h.task("t0001", model.ActStart, r1, 1)
	if res := h.waitResult("t0001"); !res.OK {
		t.Fatalf("start: %+v", res)
	}
	before, err := os.Stat(h.stateFile("r1"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // a new state file gets a later mtime
	h.put(clusterstate.RestartKey(self, "r1"), time.Now().UTC().Format(time.RFC3339))
	h.waitFor("the restart request to go", func(s *store.State) bool {
		_, ok := s.Get(clusterstate.RestartKey(self, "r1"))
		return !ok
	})
	rec := h.mustRecord("r1")
	if rec.State != model.StateStarted || !strings.HasPrefix(rec.LastOp, "restart") {
		t.Fatalf("after restart: %+v", rec)
	}
	after, err := os.Stat(h.stateFile("r1"))
	if err != nil {
		t.Fatalf("not running after the restart: %v", err)
	}
	if !after.ModTime().After(before.ModTime()) {
		t.Fatalf("the state file was not recreated: the resource was not stopped and started")
	}
}

// A restart request for an instance that does not run here is dropped and
// starts nothing.
func TestRestartOfStoppedIsDropped(t *testing.T) {
	h := newHarness(t)
	h.resource(dummy("r1"))
	ex := h.start(nil)
	h.waitProbed(ex)
	h.put(clusterstate.RestartKey(self, "r1"), time.Now().UTC().Format(time.RFC3339))
	h.waitFor("the restart request to go", func(s *store.State) bool {
		_, ok := s.Get(clusterstate.RestartKey(self, "r1"))
		return !ok
	})
	if _, err := os.Stat(h.stateFile("r1")); err == nil {
		t.Fatal("a restart request started a stopped resource")
	}
}

// A clean leave sets Left, keeps running the DC's stop tasks, and returns
// once nothing runs here.
func TestCleanLeave(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	r1.Ops = []model.Op{{Name: model.OpMonitor, Interval: model.Duration(20 * time.Millisecond)}}
	h.resource(r1)
	ex := h.start(nil)
	h.waitProbed(ex)
	h.task("t0001", model.ActStart, r1, 1)
	if res := h.waitResult("t0001"); !res.OK {
		t.Fatalf("start: %+v", res)
	}

	left := make(chan error, 1)
	go func() { left <- ex.ex.Leave(context.Background()) }()
	h.waitFor("Left", func(s *store.State) bool { return clusterstate.NodeRecord(s, self).Left })
	select {
	case err := <-left:
		t.Fatalf("Leave returned while r1 runs: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	h.task("t0002", model.ActStop, r1, 1) // the DC's answer to Left
	select {
	case err := <-left:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Leave did not return after the stop")
	}
	if rec := h.mustRecord("r1"); rec.State != model.StateStopped || h.runs("r1") {
		t.Fatalf("after leave: %+v", rec)
	}
	if nr := h.nodeRecord(); !nr.Left || nr.Probed != 100 {
		t.Fatalf("node record: %+v", nr)
	}
}

// Leave is bounded: with a resource the DC never stops it gives up.
func TestLeaveIsBounded(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	ex := h.start(func(c *Config) { c.LeaveTimeout = 200 * time.Millisecond })
	h.waitProbed(ex)
	h.task("t0001", model.ActStart, r1, 1)
	h.waitResult("t0001")
	err := ex.ex.Leave(context.Background())
	if !errors.Is(err, ErrLeaveTimeout) || !strings.Contains(err.Error(), "r1=started") {
		t.Fatalf("Leave: %v", err)
	}
}

func TestInstanceNames(t *testing.T) {
	c := model.Config{
		Resources: []model.Resource{dummy("a"), dummy("b"), dummy("solo"), dummy("web"), dummy("x"), dummy("y")},
		Groups:    []model.Group{{ID: "g", Resources: []string{"a", "b"}}, {ID: "gx", Resources: []string{"x", "y"}}},
		Clones:    []model.Clone{{ID: "web-clone", Of: "web"}, {ID: "gx-clone", Of: "gx", Max: 2}},
	}
	var got []string
	for _, in := range Instances(c, 3) {
		got = append(got, in.ID)
	}
	want := []string{"a", "b", "solo", "web-clone:0", "web-clone:1", "web-clone:2", "x:0", "x:1", "y:0", "y:1"}
	if !slices.Equal(got, want) {
		t.Fatalf("instances %v, want %v", got, want)
	}
}

// Without a quorum a finished action's result waits and is written once
// the quorum is back; the action runs once.
func TestResultWaitsForQuorumAndActionRunsOnce(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	fl := &flaky{Node: h.node}
	tr := newTracker(h.reg)
	ex := h.start(func(c *Config) { c.Store, c.Agents = fl, tr })
	h.waitProbed(ex)

	fl.down.Store(true)
	h.task("t0001", model.ActStart, r1, 1) // the test writes through the real node
	deadline := time.Now().Add(10 * time.Second)
	for fl.refusals.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the executor never tried to write the result")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !h.runs("r1") {
		t.Fatal("the start did not run")
	}
	fl.down.Store(false)
	if res := h.waitResult("t0001"); !res.OK {
		t.Fatalf("result: %+v", res)
	}
	time.Sleep(100 * time.Millisecond) // any second run would show now
	if got := tr.history("r1"); !slices.Equal(got, []string{"monitor", "start"}) {
		t.Fatalf("r1 actions %v, want the probe and one start", got)
	}
}

// Leave returns at once with ErrNoQuorum when Left cannot be written.
func TestLeaveWithoutQuorum(t *testing.T) {
	h := newHarness(t)
	fl := &flaky{Node: h.node}
	ex := h.start(func(c *Config) { c.Store, c.LeaveTimeout = fl, 300*time.Millisecond })
	h.waitProbed(ex)
	fl.down.Store(true)
	if err := ex.ex.Leave(context.Background()); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("Leave: %v", err)
	}
	if h.nodeRecord().Left {
		t.Fatal("Left written without a quorum")
	}
}

// Monitors follow the configuration (a removed monitor op stops the
// monitor) and pause during maintenance.
func TestMonitorsFollowConfigAndMaintenance(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	r1.Ops = []model.Op{{Name: model.OpMonitor, Interval: model.Duration(20 * time.Millisecond)}}
	h.resource(r1)
	tr := newTracker(h.reg)
	ex := h.start(func(c *Config) { c.Agents = tr })
	h.waitProbed(ex)
	h.task("t0001", model.ActStart, r1, 1)
	h.waitResult("t0001")
	monitors := func() int { return countOf(tr.history("r1"), "recurring-monitor") }
	waitMore := func(what string) {
		t.Helper()
		n := monitors()
		deadline := time.Now().Add(10 * time.Second)
		for monitors() < n+2 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the monitor does not run", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	still := func(what string) {
		t.Helper()
		time.Sleep(50 * time.Millisecond) // a run in flight ends
		n := monitors()
		time.Sleep(150 * time.Millisecond)
		if m := monitors(); m != n {
			t.Fatalf("%s: the monitor still runs (%d → %d)", what, n, m)
		}
	}
	waitMore("started")

	h.put(clusterstate.PropertyKey(model.PropMaintenanceMode), "true")
	still("maintenance")
	h.put(clusterstate.PropertyKey(model.PropMaintenanceMode), "false")
	waitMore("after maintenance")

	r1.Ops = nil
	h.resource(r1)
	still("monitor op removed")
	if rec := h.mustRecord("r1"); rec.State != model.StateStarted {
		t.Fatalf("record: %+v", rec)
	}
}

// The real ocf:heartbeat:Dummy, as a clone instance: started, monitored,
// a removed state file detected, stopped.
func TestOCFDummyCloneInstance(t *testing.T) {
	const script = "/usr/lib/ocf/resource.d/heartbeat/Dummy"
	if _, err := os.Stat(script); err != nil {
		t.Skipf("%s is absent: install Debian's resource-agents", script)
	}
	h := newHarness(t)
	r := model.Resource{ID: "od", Agent: "ocf:heartbeat:Dummy",
		Ops: []model.Op{{Name: model.OpMonitor, Interval: model.Duration(100 * time.Millisecond), Timeout: model.Duration(10 * time.Second)}}}
	h.resource(r)
	h.put(clusterstate.PrefixClones+"od-clone", model.Clone{ID: "od-clone", Of: "od", Max: 1})
	ex := h.start(nil)
	h.waitProbed(ex)
	if rec := h.mustRecord("od-clone:0"); rec.State != model.StateStopped {
		t.Fatalf("probe: %+v", rec)
	}
	inst := model.Task{V: 1, ID: "t0001", Term: 1, Node: self, Action: model.ActStart, Resource: "od-clone:0", Config: r}
	h.put(clusterstate.TaskKey(self, inst.ID), inst)
	if res := h.waitResult("t0001"); !res.OK {
		t.Fatalf("start: %+v", res)
	}
	state := h.dir + "/ocf/rsctmp/Dummy-od-clone:0.state" // OCF_RESOURCE_INSTANCE is the instance id
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("the Dummy's state file: %v", err)
	}
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	h.waitFor("od-clone:0 failed", func(s *store.State) bool {
		r, ok := ex.ex.record(s, "od-clone:0")
		return ok && r.State == model.StateFailed && r.FailCount == 1 && r.LastRC == 7
	})
	inst.ID, inst.Action = "t0002", model.ActStop
	h.put(clusterstate.TaskKey(self, inst.ID), inst)
	if res := h.waitResult("t0002"); !res.OK {
		t.Fatalf("stop: %+v", res)
	}
	if rec := h.mustRecord("od-clone:0"); rec.State != model.StateStopped || rec.FailCount != 1 {
		t.Fatalf("after stop: %+v", rec)
	}
}

// A restart request obeys the start rules: without the node's lease it is
// dropped, and the running resource is left as it is (neither stopped nor
// started again).
func TestRestartWithoutLeaseIsDropped(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	var lease atomic.Bool
	lease.Store(true)
	ex := h.start(func(c *Config) { c.Lease = lease.Load })
	h.waitProbed(ex)
	h.task("t0001", model.ActStart, r1, 1)
	if res := h.waitResult("t0001"); !res.OK {
		t.Fatalf("start: %+v", res)
	}
	before, err := os.Stat(h.stateFile("r1"))
	if err != nil {
		t.Fatal(err)
	}
	lease.Store(false)
	time.Sleep(20 * time.Millisecond)
	h.put(clusterstate.RestartKey(self, "r1"), time.Now().UTC().Format(time.RFC3339))
	h.waitFor("the restart request to go", func(s *store.State) bool {
		_, ok := s.Get(clusterstate.RestartKey(self, "r1"))
		return !ok
	})
	after, err := os.Stat(h.stateFile("r1"))
	if err != nil {
		t.Fatalf("the resource was stopped by a restart without lease: %v", err)
	}
	if !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("the resource was restarted without the node's lease")
	}
}
