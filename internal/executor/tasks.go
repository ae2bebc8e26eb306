package executor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// view is what one reconcile round reads from the store.
type view struct {
	downNow  bool // this incarnation's record carries a down proof
	dcTerm   uint64
	maint    bool
	tasks    []taskEntry // without a result, in ID order
	cleanups []string    // instances with a cleanup request
	restarts []string    // instances with a restart request
	records  map[string]model.ResourceRecord
}

type taskEntry struct {
	id   string
	task model.Task
	err  error // the task could not be decoded
}

// readViewLocked reads a view; called with e.mu held, inside Store.Read.
func (e *Executor) readViewLocked(s *store.State) view {
	_ = e.refreshConfigLocked(s) // logged; the cache stays
	v := view{dcTerm: clusterstate.DC(s).Term, maint: e.maintenance(s), records: e.recordsOf(s)}
	if rec := clusterstate.NodeRecord(s, e.cfg.Node); rec.BootID == e.cfg.BootID && rec.Down != nil && rec.Down.BootID == e.cfg.BootID {
		v.downNow = true
	}
	prefix := clusterstate.PrefixTasks + e.cfg.Node + "/"
	s.Range(prefix, func(k string, it store.Item) bool {
		id := strings.TrimPrefix(k, prefix)
		if e.active[id] {
			return true
		}
		if _, done := s.Get(clusterstate.ResultKey(e.cfg.Node, id)); done {
			return true
		}
		te := taskEntry{id: id}
		te.err = decode(k, it.Value, &te.task)
		v.tasks = append(v.tasks, te)
		return true
	})
	cprefix := clusterstate.PrefixCleanup + e.cfg.Node + "/"
	s.Range(cprefix, func(k string, _ store.Item) bool {
		v.cleanups = append(v.cleanups, strings.TrimPrefix(k, cprefix))
		return true
	})
	rprefix := clusterstate.PrefixRestart + e.cfg.Node + "/"
	s.Range(rprefix, func(k string, _ store.Item) bool {
		v.restarts = append(v.restarts, strings.TrimPrefix(k, rprefix))
		return true
	})
	return v
}

// refusal says why a task must not run, or "".
func refusal(te taskEntry, dcTerm uint64, maint bool) string {
	t := te.task
	switch {
	case te.err != nil:
		return fmt.Sprintf("cannot read the task: %v", te.err)
	case t.V > clusterstate.FormatVersion:
		return fmt.Sprintf("task format version %d is newer than this node's %d", t.V, clusterstate.FormatVersion)
	case t.Term < dcTerm:
		return fmt.Sprintf("older term %d < %d", t.Term, dcTerm)
	case maint:
		return RefusedMaintenance
	case t.Resource == "" || strings.Contains(t.Resource, "/"):
		return fmt.Sprintf("bad resource instance id %q", t.Resource)
	case t.Config.Agent == "":
		return "the task's configuration names no agent"
	}
	if action, _ := taskAction(t); action == "" {
		return fmt.Sprintf("unknown action %q", t.Action)
	}
	return ""
}

// taskAction maps a task to the agent action and its timeout.
func taskAction(t model.Task) (string, time.Duration) {
	opTimeout := func(name string) time.Duration {
		op, _ := t.Config.Op(name)
		return op.Timeout.D()
	}
	switch t.Action {
	case model.ActStart:
		return agents.ActionStart, opTimeout(model.OpStart)
	case model.ActStop:
		return agents.ActionStop, opTimeout(model.OpStop)
	case model.ActProbe:
		return agents.ActionMonitor, probeTimeout(t.Config).D()
	case model.ActMigrateTo:
		return agents.ActionMigrateTo, opTimeout(model.OpMigrateTo)
	case model.ActMigrateFrom:
		return agents.ActionMigrateFrom, opTimeout(model.OpMigrateFrom)
	}
	return "", 0
}

// reconcile runs one round: queue new tasks and cleanups, refuse what must
// not run, and bring the recurring monitors in line with the records.
func (e *Executor) reconcile(ctx context.Context) {
	var refusals []store.Op
	var refused []string
	e.mu.Lock()
	if e.closed || e.selfStopped {
		e.mu.Unlock()
		return
	}
	var v view
	e.cfg.Store.Read(func(s *store.State) { v = e.readViewLocked(s) })
	if v.downNow {
		// Someone proved this node down while it runs: whatever it ran
		// may run elsewhere already. Stop everything, then rejoin as a
		// fenced node does.
		e.beginSelfStopLocked("this node is recorded as proven down while it runs")
		e.mu.Unlock()
		return
	}
	for _, te := range v.tasks {
		e.active[te.id] = true
		if why := refusal(te, v.dcTerm, v.maint); why != "" {
			e.log.Info("executor: refusing task", "task", te.id, "action", te.task.Action, "resource", te.task.Resource, "why", why)
			refusals = append(refusals, e.resultOp(model.TaskResult{ID: te.id, Term: te.task.Term, Refused: why}))
			refused = append(refused, te.id)
			continue
		}
		t := te.task
		in := e.instanceLocked(t.Resource)
		if t.Action == model.ActStop || t.Action == model.ActMigrateTo {
			// A stop must not wait behind, or be followed by, a monitor.
			stopMonitor(in)
		}
		e.enqueueLocked(in, job{task: &t})
	}
	for _, inst := range v.cleanups {
		if e.cleaning[inst] {
			continue
		}
		e.cleaning[inst] = true
		e.enqueueLocked(e.instanceLocked(inst), job{cleanup: true})
	}
	for _, inst := range v.restarts {
		if e.restarting[inst] {
			continue
		}
		e.restarting[inst] = true
		in := e.instanceLocked(inst)
		stopMonitor(in)
		e.enqueueLocked(in, job{restart: true})
	}
	e.adjustMonitorsLocked(v)
	e.mu.Unlock()

	if len(refusals) > 0 {
		_ = e.commitBatches(ctx, "task refusals", refusals)
		e.mu.Lock()
		for _, id := range refused {
			delete(e.active, id)
		}
		e.mu.Unlock()
	}
}

func (e *Executor) instanceLocked(id string) *instance {
	in, ok := e.insts[id]
	if !ok {
		in = &instance{id: id}
		e.insts[id] = in
	}
	return in
}

// enqueueLocked appends j to the instance's queue and starts its worker if
// none runs.
func (e *Executor) enqueueLocked(in *instance, j job) {
	in.queue = append(in.queue, j)
	if in.busy {
		return
	}
	in.busy = true
	e.wg.Add(1)
	go e.work(e.runCtx, in)
}

// work runs the instance's queue until it is empty.
func (e *Executor) work(ctx context.Context, in *instance) {
	defer e.wg.Done()
	for {
		e.mu.Lock()
		if len(in.queue) == 0 {
			in.busy = false
			e.mu.Unlock()
			e.poke()
			return
		}
		j := in.queue[0]
		in.queue = in.queue[1:]
		jctx, cancel := context.WithCancel(ctx)
		in.cancel, in.selfStop = cancel, j.selfStop
		e.mu.Unlock()

		failed, answered, stopped := false, true, false
		if jctx.Err() == nil {
			switch {
			case j.selfStop:
				stopped = e.runSelfStop(jctx, in.id)
			case j.task != nil:
				answered = e.runTask(jctx, *j.task)
			case j.cleanup:
				e.runCleanup(jctx, in.id)
			case j.restart:
				e.runRestart(jctx, in.id)
			case j.announce:
				e.runAnnounce(jctx, in.id)
			case j.mon != nil:
				failed = e.runMonitor(jctx, j.mon)
			}
		}
		cancel()

		e.mu.Lock()
		in.cancel, in.selfStop = nil, false
		switch {
		case j.selfStop:
			j.stopped <- stopped
		case j.task != nil:
			if answered || ctx.Err() != nil {
				// Else the store rejected the result: keep the task marked
				// so that it never runs twice.
				delete(e.active, j.task.ID)
			}
			stopMonitor(in) // the record changed: the next round starts a fresh one
		case j.cleanup:
			delete(e.cleaning, in.id)
			stopMonitor(in)
		case j.restart:
			delete(e.restarting, in.id)
			stopMonitor(in)
		case j.mon != nil:
			if failed && in.mon == j.mon {
				stopMonitor(in)
			}
			j.done <- failed
		}
		e.mu.Unlock()
		e.poke()
	}
}

// runTask runs one task and commits its result with the instance's record.
// It returns false if the store rejected the result.
func (e *Executor) runTask(ctx context.Context, t model.Task) bool {
	log := e.log.With("task", t.ID, "action", t.Action, "resource", t.Resource)
	// Check again: the DC or the maintenance flags may have changed while
	// the task waited in the queue.
	var why string
	var old model.ResourceRecord
	var found bool
	e.cfg.Store.Read(func(s *store.State) {
		why = refusal(taskEntry{id: t.ID, task: t}, clusterstate.DC(s).Term, e.maintenance(s))
		old, found = e.record(s, t.Resource)
	})
	if why == "" && (t.Action == model.ActStart || t.Action == model.ActMigrateFrom) && e.cfg.Lease != nil && !e.cfg.Lease() {
		why = RefusedNoLease
	}
	e.mu.Lock()
	stopped := e.selfStopped
	if !stopped && why == "" {
		e.lastConfig[t.Resource] = t.Config
		if t.Action == model.ActStart || t.Action == model.ActMigrateFrom {
			e.local[t.Resource] = true // from the moment the agent may act
		}
	}
	e.mu.Unlock()
	if stopped {
		log.Warn("executor: not running task: self-stopped")
		return true
	}
	if why != "" {
		log.Info("executor: refusing task", "why", why)
		err := e.commit(ctx, "refusal of task "+t.ID, []store.Op{e.resultOp(model.TaskResult{ID: t.ID, Term: t.Term, Refused: why})})
		return err == nil
	}
	action, timeout := taskAction(t)
	log.Info("executor: running task", "reason", t.Reason)
	res := e.exec(ctx, t.Config, t.Resource, action, 0, timeout, &t)
	if res.Code == agents.CodeCanceled && ctx.Err() != nil {
		// Hard stop: the outcome is unknown. The next incarnation refuses
		// the task and probes.
		log.Warn("executor: task interrupted by shutdown; no result written")
		return true
	}
	rec, ok := afterTask(e.baseRecord(old, found, t.Resource), t, res, e.cfg.Now())
	e.setLocal(t.Resource, rec.State)
	result := model.TaskResult{ID: t.ID, Term: t.Term, RC: int(res.Code), OK: ok, Output: output(res), Duration: res.Duration}
	if err := e.commit(ctx, "result of task "+t.ID, []store.Op{e.resultOp(result), e.recordOp(rec)}); err != nil {
		log.Error("executor: result not written", "rc", res.Code, "err", err)
		return false
	}
	lvl := log.Info
	if !ok {
		lvl = log.Warn
	}
	lvl("executor: task done", "rc", res.Code, "ok", ok, "state", rec.State, "fail_count", rec.FailCount, "duration", res.Duration)
	return true
}

// runCleanup re-probes an instance, writes its record with the fail count
// reset, and deletes the request, in one transaction.
func (e *Executor) runCleanup(ctx context.Context, inst string) {
	var in Instance
	var known, present, found bool
	var old model.ResourceRecord
	e.mu.Lock()
	e.cfg.Store.Read(func(s *store.State) {
		_ = e.refreshConfigLocked(s) // logged; the cache stays
		in, known = e.instByID[inst]
		_, present = s.Get(clusterstate.CleanupKey(e.cfg.Node, inst))
		old, found = e.record(s, inst)
	})
	e.mu.Unlock()
	if !present {
		return
	}
	ops := []store.Op{{Key: clusterstate.CleanupKey(e.cfg.Node, inst), Delete: true}}
	rec := e.baseRecord(old, found, inst)
	if known {
		res := e.exec(ctx, in.Resource, inst, agents.ActionMonitor, 0, probeTimeout(in.Resource).D(), nil)
		if res.Code == agents.CodeCanceled && ctx.Err() != nil {
			return
		}
		rec = afterProbe(rec, res, e.cfg.Now())
		e.setLocal(inst, rec.State)
	}
	rec.FailCount = 0
	rec.LastFailure = time.Time{}
	rec.FailureReason = ""
	if known || found {
		ops = append(ops, e.recordOp(rec))
	}
	if err := e.commit(ctx, "cleanup of "+inst, ops); err == nil {
		e.log.Info("executor: cleaned up", "resource", inst, "state", rec.State)
	}
}

// runRestart stops and starts an instance where it runs, under its lock, and
// writes the outcome with the request's deletion in one transaction. The
// instance stays on this node (no DC round in between); what runs after it
// in order constraints is not restarted.
func (e *Executor) runRestart(ctx context.Context, inst string) {
	var in Instance
	var known, present, found, maint bool
	var old model.ResourceRecord
	e.mu.Lock()
	e.cfg.Store.Read(func(s *store.State) {
		_ = e.refreshConfigLocked(s) // logged; the cache stays
		in, known = e.instByID[inst]
		_, present = s.Get(clusterstate.RestartKey(e.cfg.Node, inst))
		old, found = e.record(s, inst)
		maint = e.maintenance(s)
	})
	e.mu.Unlock()
	if !present {
		return
	}
	ops := []store.Op{{Key: clusterstate.RestartKey(e.cfg.Node, inst), Delete: true}}
	// A restart starts the resource again: it obeys the same rules as a
	// task's start (maintenance, the node's lease).
	noLease := e.cfg.Lease != nil && !e.cfg.Lease()
	if !known || !found || old.State != model.StateStarted || maint || noLease {
		if maint || noLease {
			e.log.Warn("executor: restart request dropped", "resource", inst, "maintenance", maint, "no_lease", noLease)
		}
		_ = e.commit(ctx, "restart request of "+inst, ops)
		return
	}
	task := model.Task{Resource: inst, Config: in.Resource}
	stop, _ := in.Resource.Op(model.OpStop)
	res := e.exec(ctx, in.Resource, inst, agents.ActionStop, 0, stop.Timeout.D(), nil)
	if res.Code == agents.CodeCanceled && ctx.Err() != nil {
		return
	}
	task.Action = model.ActStop
	rec, ok := afterTask(e.baseRecord(old, found, inst), task, res, e.cfg.Now())
	if ok {
		start, _ := in.Resource.Op(model.OpStart)
		res = e.exec(ctx, in.Resource, inst, agents.ActionStart, 0, start.Timeout.D(), nil)
		if res.Code == agents.CodeCanceled && ctx.Err() != nil {
			return
		}
		task.Action = model.ActStart
		rec, _ = afterTask(rec, task, res, e.cfg.Now())
	}
	e.setLocal(inst, rec.State)
	rec.LastOp = "restart (" + rec.LastOp + ")"
	ops = append(ops, e.recordOp(rec))
	if err := e.commit(ctx, "restart of "+inst, ops); err == nil {
		e.log.Info("executor: restarted", "resource", inst, "state", rec.State)
	}
}
