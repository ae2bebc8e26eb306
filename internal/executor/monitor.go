package executor

import (
	"context"
	"errors"
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
	// kick makes the next run start at once (Notify): the agent saw the
	// instance change between two intervals.
	kick chan struct{}
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
			// After a successful migrate_to the instance waits for the
			// DC's stop; after a failed one (a live migration's transfer)
			// it still runs here and is monitored as before.
			if rec.State != model.StateStarted || (rec.LastOp == model.ActMigrateTo && rec.LastRC == int(agents.CodeOK)) {
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
		m := &monitor{inst: id, res: sp.res, op: sp.op, key: sp.key, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1)}
		if in.kickPending {
			// Notified while no monitor ran (during a task): run at once.
			in.kickPending = false
			m.kick <- struct{}{}
		}
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
// interval, until the monitor is stopped or a run fails. A kick (Notify)
// brings the next run forward.
func (e *Executor) monitorLoop(m *monitor) {
	defer e.wg.Done()
	t := time.NewTimer(m.op.Interval.D())
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-m.kick:
			t.Stop()
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
	if res.StoppedByGuest && res.Code == agents.CodeNotRunning {
		return e.recordGuestStop(ctx, m.inst, res)
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

// Notify makes the recurring monitor of inst run now rather than at its
// next interval: its agent (an agents.Notifier, such as vigil:vm hearing a
// QEMU event) saw it change. While a task runs on the instance (no monitor
// then), the next monitor started for it runs at once instead. A
// notification for an instance with neither is dropped: nothing recorded
// runs it here. Safe to call from any goroutine; it never blocks.
func (e *Executor) Notify(inst string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.insts[inst]
	switch {
	case in == nil:
	case in.mon != nil:
		select {
		case in.mon.kick <- struct{}{}:
		default: // a run is due already
		}
	case in.busy || len(in.queue) > 0:
		in.kickPending = true
	}
}

// guestStopRetries bounds the attempts of recordGuestStop that lose a race
// with another write of the same keys.
const guestStopRetries = 5

// recordGuestStop records that what inst runs ended itself on purpose
// (agents.Result.StoppedByGuest: a VM's guest powered itself off). That is
// the user's wish, not a failure: the record becomes stopped with its fail
// count unchanged, and the resource's target-role becomes Stopped so that
// the DC leaves it down rather than recovering it.
//
// Both go in one transaction, guarded on the versions of the two keys as
// read (not on the epoch, which any configuration change moves): a record
// alone would let the DC start the instance again before the target-role
// arrived, a target-role alone would leave a failed-looking record. The
// executor writes this one configuration key itself rather than asking the
// DC, because only this node knows why the instance stopped, and the guard
// makes it safe against any concurrent writer: on a conflict it reads again,
// and writes nothing once the record is no longer started (a stop of the DC
// got there first). A clone instance only gets its record: a target-role
// would stop every instance of the clone. It reports whether it wrote (the
// monitor then ends, as after a failure).
func (e *Executor) recordGuestStop(ctx context.Context, inst string, res agents.Result) bool {
	recKey := clusterstate.RecordKey(e.cfg.Node, inst)
	for attempt := 0; attempt < guestStopRetries; attempt++ {
		var old model.ResourceRecord
		var found, haveRes bool
		var in Instance
		var r model.Resource
		var recVer, resVer uint64
		e.mu.Lock()
		e.cfg.Store.Read(func(s *store.State) {
			_ = e.refreshConfigLocked(s) // logged; the cache stays
			old, found = e.record(s, inst)
			if it, ok := s.Get(recKey); ok {
				recVer = it.Version
			}
			in = e.instByID[inst]
			if k := clusterstate.ResourceKey(in.Resource.ID); in.Resource.ID != "" {
				if it, ok := s.Get(k); ok && decode(k, it.Value, &r) == nil {
					haveRes, resVer = true, it.Version
				}
			}
		})
		e.mu.Unlock()
		if !found || old.State != model.StateStarted {
			return false
		}
		rec := afterGuestStop(e.baseRecord(old, found, inst), res, e.cfg.Now())
		txn := store.Txn{Ops: []store.Op{e.recordOp(rec)}, If: []store.Cmp{{Key: recKey, Version: recVer}}}
		disable := haveRes && in.Clone == "" && r.Enabled()
		if disable {
			meta := make(map[string]string, len(r.Meta)+1)
			for k, v := range r.Meta {
				meta[k] = v
			}
			meta[model.MetaTargetRole] = model.RoleStopped
			r.Meta = meta
			k := clusterstate.ResourceKey(r.ID)
			txn.Ops = append(txn.Ops, store.Op{Key: k, Value: clusterstate.Encode(r)})
			txn.If = append(txn.If, store.Cmp{Key: k, Version: resVer})
		} else if in.Clone != "" {
			e.log.Warn("executor: a clone instance stopped by its guest: not disabling the whole clone; the DC will start it again", "resource", inst, "clone", in.Clone)
		}
		err := e.commitTxn(ctx, "guest stop of "+inst, txn)
		switch {
		case err == nil:
			e.setLocal(inst, model.StateStopped)
			e.log.Info("executor: stopped by its guest: recorded stopped, not failed; it stays down", "resource", inst, "target_role_stopped", disable, "output", rec.Output)
			return true
		case errors.Is(err, store.ErrCompareFailed):
			continue // someone wrote one of the keys: read again
		}
		return false
	}
	e.log.Warn("executor: could not record the guest's stop (kept losing races); the monitor will see it again", "resource", inst)
	return false
}
