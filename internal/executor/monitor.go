package executor

import (
	"context"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// monitor is one instance's recurring monitor: a goroutine that, every
// interval, queues one monitor run on the instance's queue (so it never
// overlaps an action) and waits for it.
type monitor struct {
	inst   string
	res    model.Resource
	op     model.Op
	key    string // the configuration it runs with: a change restarts it
	ctx    context.Context
	cancel context.CancelFunc
}

// stopMonitor cancels the instance's monitor, aborting a run in flight.
// Called with e.mu held.
func stopMonitor(in *instance) {
	if in.mon != nil {
		in.mon.cancel()
		in.mon = nil
	}
}

// adjustMonitorsLocked keeps exactly one monitor per instance recorded
// started here whose configuration has a recurring monitor, none during
// maintenance. It starts monitors only on idle instances: a busy one gets
// its monitor when its queue drains (the worker pokes the loop). Called
// with e.mu held.
func (e *Executor) adjustMonitorsLocked(v view) {
	type spec struct {
		res model.Resource
		op  model.Op
		key string
	}
	want := map[string]spec{}
	if !v.maint {
		for id, rec := range v.records {
			// After migrate_to the instance waits for the DC's stop.
			if rec.State != model.StateStarted || rec.LastOp == model.ActMigrateTo {
				continue
			}
			in, ok := e.instByID[id]
			if !ok {
				continue // no longer configured: the DC stops it
			}
			op, ok := recurringMonitor(in.Resource)
			if !ok {
				continue
			}
			want[id] = spec{res: in.Resource, op: op, key: string(clusterstate.Encode(in.Resource))}
		}
	}
	for id, in := range e.insts {
		if _, ok := want[id]; !ok {
			stopMonitor(in)
		}
	}
	for id, sp := range want {
		in := e.instanceLocked(id)
		if in.busy || len(in.queue) > 0 || (in.mon != nil && in.mon.key == sp.key) {
			continue
		}
		stopMonitor(in)
		ctx, cancel := context.WithCancel(e.runCtx)
		m := &monitor{inst: id, res: sp.res, op: sp.op, key: sp.key, ctx: ctx, cancel: cancel}
		in.mon = m
		e.wg.Add(1)
		go e.monitorLoop(m)
	}
	for id, in := range e.insts {
		if !in.busy && len(in.queue) == 0 && in.mon == nil {
			delete(e.insts, id)
		}
	}
}

// monitorLoop queues a monitor run every interval, the first after one
// interval, until the monitor is stopped or a run fails.
func (e *Executor) monitorLoop(m *monitor) {
	defer e.wg.Done()
	t := time.NewTimer(m.op.Interval.D())
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-m.ctx.Done():
			return
		}
		done := make(chan bool, 1)
		e.mu.Lock()
		in := e.insts[m.inst]
		if e.closed || m.ctx.Err() != nil || in == nil || in.mon != m {
			e.mu.Unlock()
			return
		}
		e.enqueueLocked(in, job{mon: m, done: done})
		e.mu.Unlock()
		select {
		case failed := <-done:
			if failed {
				return
			}
		case <-m.ctx.Done():
			return
		}
		t.Reset(m.op.Interval.D())
	}
}

// runMonitor runs one recurring monitor and, if it fails, records the
// instance failed with its fail count raised. It reports whether it failed
// (the monitor then stops: the DC restarts or moves the instance).
func (e *Executor) runMonitor(ctx context.Context, m *monitor) bool {
	if m.ctx.Err() != nil {
		return false
	}
	res := e.exec(m.ctx, m.res, m.inst, agents.ActionMonitor, m.op.Interval.D(), m.op.Timeout.D(), nil)
	if running(res.Code) || m.ctx.Err() != nil {
		return false // fine, or canceled by a stop, a change or shutdown
	}
	var old model.ResourceRecord
	var found bool
	e.cfg.Store.Read(func(s *store.State) { old, found = e.record(s, m.inst) })
	if !found || old.State != model.StateStarted {
		return false
	}
	rec := afterMonitorFailure(e.baseRecord(old, found, m.inst), res, e.cfg.Now())
	e.log.Warn("executor: monitor failed", "resource", m.inst, "rc", res.Code, "fail_count", rec.FailCount, "output", rec.Output)
	if err := e.commit(ctx, "monitor failure of "+m.inst, []store.Op{e.recordOp(rec)}); err != nil {
		return false
	}
	return true
}
