package controller

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/executor"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// answer writes the outcome res of task t as the executor does: the result
// and the record executor.AfterTask derives.
func (w *world) answer(s *store.State, t model.Task, res agents.Result) []store.Op {
	base := model.ResourceRecord{V: 1, Resource: t.Resource, Node: t.Node, State: model.StateStopped}
	recs, _ := clusterstate.Records(s, t.Node)
	for _, r := range recs {
		if r.Resource == t.Resource {
			base = r
		}
	}
	rec, ok := executor.AfterTask(base, t, res, time.Now())
	w.mu.Lock()
	w.ran = append(w.ran, t)
	w.mu.Unlock()
	return []store.Op{
		{Key: clusterstate.ResultKey(t.Node, t.ID), Value: clusterstate.Encode(model.TaskResult{V: 1, ID: t.ID, Term: t.Term, Node: t.Node, RC: int(res.Code), OK: ok, Output: executor.Output(res)})},
		{Key: clusterstate.RecordKey(t.Node, t.Resource), Value: clusterstate.Encode(rec)},
	}
}

// fakeVM answers as the vigil:vm agent does (vm_migrate.go), failing the
// migration step named fail.
func fakeVM(fail string) func(t model.Task) agents.Result {
	return func(t model.Task) agents.Result {
		if t.Migration != "" && t.Migration == fail {
			return agents.Result{Code: agents.CodeErrGeneric, Err: errors.New("simulated " + fail + " failure")}
		}
		if t.Migration == model.MigratePrepare {
			return agents.Result{Code: agents.CodeOK, Output: "tcp:" + t.Config.Meta[metaMigrateListen] + ":49152\n"}
		}
		return agents.Result{Code: agents.CodeOK}
	}
}

func vmResource(id string) model.Resource {
	return model.Resource{ID: id, Agent: vmAgent, Meta: map[string]string{model.MetaAllowMigrate: "true"}}
}

// migWorld runs vm1 on n2 under the fake vm agent, with every record state
// checked: never two started records of vm1.
func migWorld(t *testing.T, fail string) *world {
	w := newWorld(t, nil)
	w.mu.Lock()
	w.agent = fakeVM(fail)
	w.check = func(s *store.State) {
		recs, _ := clusterstate.Records(s, "")
		var on []string
		for _, r := range recs {
			if r.Resource == "vm1" && r.State == model.StateStarted {
				on = append(on, r.Node)
			}
		}
		if len(on) > 1 {
			t.Errorf("never twice: vm1 recorded started on %v", on)
		}
	}
	w.mu.Unlock()
	for _, n := range []string{"n1", "n2", "n3"} {
		w.advertise(n, model.NodeFeatures()...)
	}
	w.put(clusterstate.ResourceKey("vm1"), vmResource("vm1"),
		clusterstate.LocationKey("l"), model.Location{ID: "l", Resource: "vm1", Node: "n2", Score: model.Infinity})
	w.waitFor("vm1 on n2", func() bool { s := w.startedOn("vm1"); return len(s) == 1 && s[0] == "n2" })
	return w
}

// advertise rewrites node's record with the features given, as its
// executor does when it registers (none: a release that predates them).
func (w *world) advertise(node string, features ...string) {
	w.t.Helper()
	var rec model.NodeRecord
	w.node.Read(func(s *store.State) { rec = clusterstate.NodeRecord(s, node) })
	rec.Features = features
	w.put(clusterstate.NodeKey(node), rec)
}

func (w *world) tasksRan() []model.Task {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ran)
}

func (w *world) migrations() []Migration {
	var ms []Migration
	w.node.Read(func(s *store.State) { ms, _ = readMigrations(s) })
	return ms
}

func (w *world) pendingTasks() int {
	var n int
	w.node.Read(func(s *store.State) { ts, _ := clusterstate.Tasks(s, ""); n = len(ts) })
	return n
}

func (w *world) record(node, inst string) model.ResourceRecord {
	var out model.ResourceRecord
	w.node.Read(func(s *store.State) {
		recs, _ := clusterstate.Records(s, node)
		for _, r := range recs {
			if r.Resource == inst {
				out = r
			}
		}
	})
	return out
}

func moveTo(w *world, node string) int {
	before := len(w.tasksRan())
	w.put(clusterstate.LocationKey("l"), model.Location{ID: "l", Resource: "vm1", Node: node, Score: model.Infinity})
	return before
}

func describe(ts []model.Task) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%s %s/%s on %s; ", t.Action, t.Resource, t.Migration, t.Node)
	}
	return b.String()
}

// A move of a VM is one live migration: prepare on the target (listening
// on its link-0 address), migrate_to on the source with the URI the
// prepare answered, finish on the target; the VM ends started on the
// target only, never stopped nor started on the way.
func TestLiveMigrationSteps(t *testing.T) {
	w := migWorld(t, "")
	from := moveTo(w, "n3")
	w.waitFor("vm1 migrated to n3", func() bool {
		s := w.startedOn("vm1")
		return len(s) == 1 && s[0] == "n3" && len(w.migrations()) == 0 && w.pendingTasks() == 0
	})
	ran := w.tasksRan()[from:]
	if len(ran) != 3 {
		t.Fatalf("tasks: %s; want prepare, transfer, finish", describe(ran))
	}
	want := []struct{ step, action, node string }{
		{model.MigratePrepare, model.ActMigrateFrom, "n3"},
		{model.MigrateTransfer, model.ActMigrateTo, "n2"},
		{model.MigrateFinish, model.ActMigrateFrom, "n3"},
	}
	for i, wt := range want {
		got := ran[i]
		if got.Migration != wt.step || got.Action != wt.action || got.Node != wt.node || got.MigrateSource != "n2" || got.MigrateTarget != "n3" {
			t.Fatalf("#%d: got %s %s on %s (%s→%s), want %s %s on %s", i, got.Migration, got.Action, got.Node, got.MigrateSource, got.MigrateTarget, wt.step, wt.action, wt.node)
		}
	}
	if m := ran[0].Config.Meta; m[metaMigratePhase] != phasePrepare || m[metaMigrateListen] != "10.0.0.3" {
		t.Fatalf("prepare meta: %v", m)
	}
	if m := ran[1].Config.Meta; m[metaMigrateURI] != "tcp:10.0.0.3:49152" {
		t.Fatalf("migrate_to meta: %v", m)
	}
	if m := ran[2].Config.Meta; m[metaMigratePhase] != phaseFinish {
		t.Fatalf("finish meta: %v", m)
	}
	if r := w.record("n2", "vm1"); r.State != model.StateStopped || r.FailCount != 0 {
		t.Fatalf("source record: %+v", r)
	}
	// The stored configuration keeps no migration meta.
	var r model.Resource
	w.node.Read(func(s *store.State) { c, _ := clusterstate.LoadConfig(s); r, _ = c.Resource("vm1") })
	if _, ok := r.Meta[metaMigrateURI]; ok {
		t.Fatalf("the migration meta leaked into the configuration: %v", r.Meta)
	}
}

// A failed prepare or transfer leaves the VM running on the source, never
// stopped there: the target is stopped, counting a failure, and the retries
// end at migration-threshold. A failed finish comes after the source handed
// the guest over: the VM cannot be on the source any more; the target is
// stopped and the VM started afresh (on the target, whose fail count is
// below the threshold).
func TestLiveMigrationFailures(t *testing.T) {
	for i, step := range []string{model.MigratePrepare, model.MigrateTransfer, model.MigrateFinish} {
		t.Run(step, func(t *testing.T) {
			w := migWorld(t, step)
			from := moveTo(w, "n3")
			if step == model.MigrateFinish {
				w.waitFor("vm1 restarted on n3", func() bool {
					s := w.startedOn("vm1")
					return len(s) == 1 && s[0] == "n3" && len(w.migrations()) == 0 && w.pendingTasks() == 0
				})
				ran := w.tasksRan()[from:]
				if len(ran) != 5 || ran[3].Migration != model.MigrateAbort || ran[3].Node != "n3" || ran[4].Action != model.ActStart {
					t.Fatalf("#%d tasks: %s", i, describe(ran))
				}
				if r := w.record("n3", "vm1"); r.FailCount != 1 {
					t.Fatalf("#%d target record: %+v", i, r)
				}
				return
			}
			th := model.DefaultMigrationThreshold
			w.waitFor("the retries to end", func() bool {
				return w.record("n3", "vm1").FailCount >= int64(th) && len(w.migrations()) == 0 && w.pendingTasks() == 0
			})
			w.never("another migration after migration-threshold", 300*time.Millisecond, func() bool { return len(w.migrations()) > 0 })
			if s := w.startedOn("vm1"); len(s) != 1 || s[0] != "n2" {
				t.Fatalf("#%d: vm1 started on %v, want n2 (the source)", i, s)
			}
			ran := w.tasksRan()[from:]
			prepares := 0
			for _, tk := range ran {
				if tk.Node == "n2" && tk.Action == model.ActStop || tk.Action == model.ActStart {
					t.Fatalf("#%d: the source was stopped or the VM restarted: %s", i, describe(ran))
				}
				if tk.Migration == model.MigratePrepare {
					prepares++
				}
			}
			if prepares != th {
				t.Fatalf("#%d: %d migrations tried, want %d (migration-threshold): %s", i, prepares, th, describe(ran))
			}
			if r := w.record("n3", "vm1"); r.State != model.StateStopped || !strings.Contains(r.FailureReason, "simulated "+step) {
				t.Fatalf("#%d target record: %+v", i, r)
			}
			if r := w.record("n2", "vm1"); r.State != model.StateStarted || r.FailCount != 0 {
				t.Fatalf("#%d source record: %+v", i, r)
			}
		})
	}
}

// The target lost while the source sends: the guest may have reached it,
// so the VM is not started anywhere until the target is proven down; then
// it is.
func TestLiveMigrationLostTarget(t *testing.T) {
	w := migWorld(t, "")
	release := make(chan struct{})
	w.mu.Lock()
	w.hold = func(t model.Task) bool {
		select {
		case <-release:
			return false
		default:
			return t.Migration == model.MigrateTransfer
		}
	}
	w.mu.Unlock()
	moveTo(w, "n3")
	w.waitFor("the transfer to be issued", func() bool {
		ms := w.migrations()
		return len(ms) == 1 && ms[0].Step == model.MigrateTransfer
	})
	w.setAlive("n3", false)
	close(release) // the transfer completes: the guest went to n3
	w.waitFor("the migration given up", func() bool { return len(w.migrations()) == 0 })
	w.never("vm1 started while n3, which may run it, is lost", time.Second, func() bool { return len(w.startedOn("vm1")) > 0 })
	if r := w.record("n3", "vm1"); r.State != model.StateMigrating {
		t.Fatalf("target record: %+v", r)
	}
	var rec model.NodeRecord
	w.node.Read(func(s *store.State) { rec = clusterstate.NodeRecord(s, "n3") })
	rec.Down = &model.DownProof{How: "confirmed", BootID: rec.BootID}
	w.put(clusterstate.NodeKey("n3"), rec)
	w.node.Read(func(*store.State) {})
	ctxPut(t, w, store.Delete{Key: clusterstate.RecordKey("n3", "vm1")})
	w.waitFor("vm1 recovered once n3 is proven down", func() bool {
		s := w.startedOn("vm1")
		return len(s) == 1 && s[0] != "n3"
	})
}

func ctxPut(t *testing.T, w *world, cmd store.Command) {
	t.Helper()
	if _, err := w.node.Propose(t.Context(), cmd); err != nil {
		t.Fatal(err)
	}
}

// migState builds a store state of vm1 migrating n2 → n3 at step, with the
// step's task issued in term 5 and answered by res (nil: unanswered).
func migState(t *testing.T, step string, res *model.TaskResult) View {
	t.Helper()
	s := store.NewState()
	put := func(kv ...any) {
		var ops []store.Op
		for i := 0; i < len(kv); i += 2 {
			ops = append(ops, store.Op{Key: kv[i].(string), Value: clusterstate.Encode(kv[i+1])})
		}
		if _, err := s.Apply(s.Index()+1, store.Txn{Ops: ops}); err != nil {
			t.Fatal(err)
		}
	}
	node := "n3"
	action := model.ActMigrateFrom
	if step == model.MigrateTransfer {
		node, action = "n2", model.ActMigrateTo
	}
	task := model.Task{V: 1, ID: "t5-1-1", Term: 5, Node: node, Action: action, Resource: "vm1", Config: vmResource("vm1"), Migration: step}
	put(clusterstate.ResourceKey("vm1"), vmResource("vm1"),
		clusterstate.KeyDC, clusterstate.DCRecord{V: 1, Name: "n1", Term: 6},
		clusterstate.RecordKey("n2", "vm1"), model.ResourceRecord{V: 1, Resource: "vm1", Node: "n2", State: model.StateStarted},
		clusterstate.RecordKey("n3", "vm1"), model.ResourceRecord{V: 1, Resource: "vm1", Node: "n3", State: model.StateMigrating},
		clusterstate.TaskKey(node, task.ID), task,
		MigrationKey("vm1"), Migration{V: 1, Resource: "vm1", Source: "n2", Target: "n3", Step: step, Task: task.ID, TaskNode: node, URI: "tcp:10.0.0.3:1", Term: 5})
	if res != nil {
		res.ID, res.Node = task.ID, node
		put(clusterstate.ResultKey(node, task.ID), *res)
	}
	v, err := ReadView(s)
	if err != nil {
		t.Fatal(err)
	}
	v.NodeRecords = map[string]model.NodeRecord{}
	for i, n := range []string{"n1", "n2", "n3"} {
		v.Members = append(v.Members, store.Member{Name: n, ID: uint64(i + 1), Links: []string{fmt.Sprintf("10.0.0.%d:7400", i+1)}})
		v.NodeRecords[n] = model.NodeRecord{V: 1, Name: n, BootID: 7, Probed: 7, Features: model.NodeFeatures()}
	}
	return v
}

// A new DC (term 6) continues a migration whose step ran under the old one
// (term 5), aborts without counting a failure one whose step the executor
// refused as of an older term, and waits for a step still running.
func TestLiveMigrationAcrossDCChange(t *testing.T) {
	allOnline := func(v View) *model.Snapshot {
		snap := &model.Snapshot{Config: v.Config}
		for _, n := range []string{"n1", "n2", "n3"} {
			snap.Nodes = append(snap.Nodes, model.NodeStatus{Name: n, State: model.NodeOnline})
		}
		return snap
	}
	now := time.Unix(1000, 0)
	cases := []struct {
		name     string
		step     string
		res      *model.TaskResult
		wantStep string // "" = no task
		wantNode string
	}{
		{"transfer done under the old DC: finish", model.MigrateTransfer, &model.TaskResult{V: 1, Term: 5, OK: true}, model.MigrateFinish, "n3"},
		{"prepare refused (older term): cleanup, no failure counted", model.MigratePrepare, &model.TaskResult{V: 1, Term: 5, Refused: "older term 5 < 6"}, model.MigrateCleanup, "n3"},
		{"transfer failed: abort", model.MigrateTransfer, &model.TaskResult{V: 1, Term: 5, RC: 1, Output: "boom"}, model.MigrateAbort, "n3"},
		{"transfer still running: wait", model.MigrateTransfer, nil, "", ""},
	}
	for i, tc := range cases {
		v := migState(t, tc.step, tc.res)
		snap := v.Snapshot(func(string) bool { return true }, now)
		if !slices.ContainsFunc(snap.Pending, func(p model.Pending) bool { return p.Resource == "vm1" }) {
			t.Fatalf("#%d %s: vm1 not held out of the plan: %+v", i, tc.name, snap.Pending)
		}
		ops, tasks, _ := MigrateRound(v, allOnline(v), &scheduler.Plan{}, 6, now, 0)
		if tc.wantStep == "" {
			if len(ops)+len(tasks) != 0 {
				t.Fatalf("#%d %s: ops %v tasks %s", i, tc.name, ops, describe(tasks))
			}
			continue
		}
		if len(tasks) != 1 || tasks[0].Migration != tc.wantStep || tasks[0].Node != tc.wantNode || tasks[0].Term != 6 {
			t.Fatalf("#%d %s: tasks %s", i, tc.name, describe(tasks))
		}
		if len(ops) != 1 || ops[0].Key != MigrationKey("vm1") || ops[0].Delete {
			t.Fatalf("#%d %s: ops %+v", i, tc.name, ops)
		}
	}
}

// The agent's meta keys, which the controller spells itself.
func TestMigrationMetaKeysMatchTheAgent(t *testing.T) {
	if metaMigratePhase != agents.MetaMigratePhase || metaMigrateListen != agents.MetaMigrateListen ||
		metaMigrateURI != agents.MetaMigrateURI || phasePrepare != agents.MigratePhasePrepare || phaseFinish != agents.MigratePhaseFinish {
		t.Fatal("the controller's migration meta keys differ from the vigil:vm agent's")
	}
	if vmAgent != agents.ClassVigil+":"+agents.TypeVM {
		t.Fatalf("vmAgent %q", vmAgent)
	}
}

// Mixed releases: while a node does not advertise live migration (an
// older release would record a prepared target as started), a VM move is
// a stop on the source and a start on the target, never a migration step,
// and the stop's reason says why. Any member counts, not only the two the
// move involves (it could become the DC mid-way). Once every node
// advertises it, the next move live-migrates.
func TestLiveMigrationNeedsEveryNode(t *testing.T) {
	for _, old := range []string{"n3", "n1"} {
		t.Run("old "+old, func(t *testing.T) {
			w := migWorld(t, "")
			w.advertise(old)
			from := moveTo(w, "n3")
			w.waitFor("vm1 moved to n3", func() bool {
				s := w.startedOn("vm1")
				return len(s) == 1 && s[0] == "n3" && w.pendingTasks() == 0
			})
			ran := w.tasksRan()[from:]
			if len(ran) != 2 || ran[0].Action != model.ActStop || ran[0].Node != "n2" || ran[1].Action != model.ActStart || ran[1].Node != "n3" {
				t.Fatalf("tasks: %s; want a stop on n2 and a start on n3", describe(ran))
			}
			for _, tk := range ran {
				if tk.Migration != "" {
					t.Fatalf("a migration step with %s on an older release: %s", old, describe(ran))
				}
			}
			if why := ran[0].Reason; !strings.Contains(why, "live migration is off") || !strings.Contains(why, old) || !strings.Contains(why, "n3 has the highest score") {
				t.Fatalf("the stop's reason does not say why the VM is not live-migrated: %q", why)
			}
			// The node is upgraded: the move back is a live migration.
			w.advertise(old, model.NodeFeatures()...)
			from = moveTo(w, "n2")
			w.waitFor("vm1 migrated back to n2", func() bool {
				s := w.startedOn("vm1")
				return len(s) == 1 && s[0] == "n2" && len(w.migrations()) == 0 && w.pendingTasks() == 0
			})
			if ran := w.tasksRan()[from:]; len(ran) != 3 || ran[0].Migration != model.MigratePrepare || ran[2].Migration != model.MigrateFinish {
				t.Fatalf("tasks after the upgrade: %s; want prepare, transfer, finish", describe(ran))
			}
		})
	}
}

// The gate as a pure function: every member that runs resources must
// advertise the feature (a witness runs none); a member with no record
// has not registered and may be of any release.
func TestLiveMigrationOff(t *testing.T) {
	all := model.NodeFeatures()
	v := View{
		Members: []store.Member{{Name: "n1", Role: store.RoleVoter}, {Name: "n2", Role: store.RoleVoter}, {Name: "w", Role: store.RoleWitness}},
		NodeRecords: map[string]model.NodeRecord{
			"n1": {Name: "n1", Features: all},
			"n2": {Name: "n2", Features: all},
		},
	}
	if why := liveMigrationOff(v); why != "" {
		t.Fatalf("every node advertises it, a witness has no record: %q", why)
	}
	v.Members = append(v.Members, store.Member{Name: "n3", Role: store.RoleLearner})
	if why := liveMigrationOff(v); !strings.Contains(why, "n3") {
		t.Fatalf("n3 has never registered: %q", why)
	}
	v.NodeRecords["n3"] = model.NodeRecord{Name: "n3", Features: []string{"something-else"}}
	if why := liveMigrationOff(v); !strings.Contains(why, "n3") || strings.Contains(why, "n1") {
		t.Fatalf("n3 of an older release: %q", why)
	}
	v.NodeRecords["n3"] = model.NodeRecord{Name: "n3", Features: all}
	if why := liveMigrationOff(v); why != "" {
		t.Fatalf("n3 upgraded: %q", why)
	}
}

// The gate is checked again before the transfer, the point of no return: a
// prepared migration goes on to the transfer while every node advertises
// live migration, and is cleaned up (the target stopped, no failure
// counted; the VM stays on its source) if a node that does not joined
// meanwhile.
func TestLiveMigrationGateBeforeTransfer(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, old := range []string{"", "n1", "n4"} {
		v := migState(t, model.MigratePrepare, &model.TaskResult{V: 1, Term: 6, OK: true, Output: "tcp:10.0.0.3:49152\n"})
		switch old {
		case "n1":
			rec := v.NodeRecords["n1"]
			rec.Features = nil
			v.NodeRecords["n1"] = rec
		case "n4":
			v.Members = append(v.Members, store.Member{Name: "n4", ID: 4, Role: store.RoleLearner})
		}
		snap := v.Snapshot(func(string) bool { return true }, now)
		_, tasks, _ := MigrateRound(v, snap, &scheduler.Plan{}, 6, now, 0)
		want, node := model.MigrateTransfer, "n2"
		if old != "" {
			want, node = model.MigrateCleanup, "n3"
		}
		if len(tasks) != 1 || tasks[0].Migration != want || tasks[0].Node != node {
			t.Fatalf("older node %q: tasks %s; want %s on %s", old, describe(tasks), want, node)
		}
		if old != "" && !strings.Contains(tasks[0].Reason, "live migration is off") {
			t.Fatalf("older node %q: the cleanup's reason %q", old, tasks[0].Reason)
		}
	}
}
