package executor

import (
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// maxOutput bounds the agent output kept in a record or a result: both
// live in the replicated store, once per instance and node.
const maxOutput = 1024

// output renders what an action said, and why it could not run, keeping
// the tail (where agents put their error) within maxOutput bytes.
func output(res agents.Result) string {
	s := strings.TrimSpace(res.Output)
	if res.Err != nil {
		if s != "" {
			s += "\n"
		}
		s += res.Err.Error()
	}
	if len(s) > maxOutput {
		s = s[len(s)-maxOutput:]
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
	}
	return s
}

// running reports whether a monitor's code says the instance runs well
// enough: OK, or DEGRADED (OCF 1.1: running, with a warning; Pacemaker does
// not recover it).
func running(c agents.Code) bool { return c == agents.CodeOK || c == agents.CodeDegraded }

// probeState maps a one-shot monitor's code to the state to record.
//
// NB: ERR_INSTALLED and a missing agent mean "cannot run here, so does not
// run here", as in Pacemaker. Recording them as failed would make the DC
// stop the instance on a node that cannot run the stop either, and a failed
// stop blocks it until the node is fenced.
func probeState(c agents.Code) string {
	switch {
	case running(c):
		return model.StateStarted
	case c == agents.CodeNotRunning, c == agents.CodeErrInstalled, c == agents.CodeNotFound:
		return model.StateStopped
	}
	return model.StateFailed
}

// startFailCount is the fail count a failed start leaves: the resource's
// migration-threshold, so that it moves at once (Pacemaker's
// start-failure-is-fatal). A threshold of 0 (never move on failure) still
// records one failure.
func startFailCount(r model.Resource, old int64) int64 {
	return max(old, r.MigrationThreshold(), 1)
}

// baseRecord returns the record of inst as found (with the fields this
// node owns set), or a fresh stopped one.
func (e *Executor) baseRecord(old model.ResourceRecord, found bool, inst string) model.ResourceRecord {
	if !found {
		return model.ResourceRecord{V: clusterstate.FormatVersion, Resource: inst, Node: e.cfg.Node, State: model.StateStopped}
	}
	old.V = clusterstate.FormatVersion
	old.Resource = inst
	old.Node = e.cfg.Node
	return old
}

// afterTask applies the outcome of task t to the instance's record and
// reports whether the task succeeded.
func afterTask(rec model.ResourceRecord, t model.Task, res agents.Result, now time.Time) (model.ResourceRecord, bool) {
	code := res.Code
	var ok bool
	switch t.Action {
	case model.ActStart:
		ok = code == agents.CodeOK
		if ok {
			rec.State = model.StateStarted
		} else {
			rec.State = model.StateFailed
			rec.FailCount = startFailCount(t.Config, rec.FailCount)
			rec.LastFailure = now
		}
	case model.ActMigrateFrom, model.ActMigrateTo:
		if t.Migration != "" {
			return afterMigrationStep(rec, t, res, now)
		}
		// Pacemaker-style (OCF) migration. After a successful migrate_to the instance may still be active
		// here until the DC's stop (after migrate_from on the target):
		// it stays recorded as started, without a recurring monitor.
		ok = code == agents.CodeOK
		if ok {
			rec.State = model.StateStarted
		} else {
			rec.State = model.StateFailed
			rec.FailCount++
			rec.LastFailure = now
		}
	case model.ActStop:
		ok = code == agents.CodeOK
		if ok {
			rec.State = model.StateStopped
		} else {
			// Including a timeout: whether it still runs is unknown.
			rec.State = model.StateStopFailed
			rec.LastFailure = now
		}
		if t.Migration == model.MigrateAbort {
			// The target of a failed live migration: one failure here, so
			// that migration-threshold ends the retries to this node.
			rec.FailCount++
			rec.LastFailure = now
			rec.FailureReason = "live migration: " + t.Reason
		}
	case model.ActProbe:
		rec.State = probeState(code)
		ok = rec.State != model.StateFailed
	}
	rec.LastOp = t.Action
	rec.LastRC = int(code)
	rec.Output = output(res)
	rec.Changed = now
	if !ok {
		rec.FailureReason = failureReason(t.Action, res)
	}
	return rec, ok
}

// afterMigrationStep records the outcome of a step of a DC-driven live
// migration (model.MigratePrepare...). The states say what runs where, so
// that the scheduler never sees two running copies:
//
//   - prepare: the target only waits for the instance (StateMigrating); on
//     failure it may be half set up (StateFailed) and the DC stops it;
//   - transfer (on the source): success means the source handed the
//     instance over and runs nothing any more (StateStopped); failure means
//     it still runs here, untouched (the state stays as it was, and the
//     recurring monitor resumes: LastRC is not OK);
//   - finish: the target runs the instance (StateStarted), or failed to.
//
// No step counts a failure: a failed migration counts one on the target,
// through the DC's MigrateAbort stop, and never on the source, where
// nothing failed.
func afterMigrationStep(rec model.ResourceRecord, t model.Task, res agents.Result, now time.Time) (model.ResourceRecord, bool) {
	ok := res.Code == agents.CodeOK
	switch {
	case t.Action == model.ActMigrateTo && ok:
		rec.State = model.StateStopped
	case t.Action == model.ActMigrateTo:
		// Still running here, as before.
	case t.Migration == model.MigratePrepare && ok:
		rec.State = model.StateMigrating
	case ok:
		rec.State = model.StateStarted
	default:
		rec.State = model.StateFailed
		rec.LastFailure = now
	}
	rec.LastOp = t.Action
	rec.LastRC = int(res.Code)
	rec.Output = output(res)
	rec.Changed = now
	if !ok {
		rec.FailureReason = failureReason(t.Action+" ("+t.Migration+")", res)
	}
	return rec, ok
}

// failureReason describes a failed operation for the record.
func failureReason(op string, res agents.Result) string {
	out := output(res)
	if out == "" {
		out = res.Code.String()
	}
	return op + ": " + out
}

// afterProbe applies a one-shot monitor's outcome to a record.
func afterProbe(rec model.ResourceRecord, res agents.Result, now time.Time) model.ResourceRecord {
	rec.State = probeState(res.Code)
	rec.LastOp = model.ActProbe
	rec.LastRC = int(res.Code)
	rec.Output = output(res)
	rec.Changed = now
	return rec
}

// afterMonitorFailure records a failed recurring monitor.
func afterMonitorFailure(rec model.ResourceRecord, res agents.Result, now time.Time) model.ResourceRecord {
	rec.State = model.StateFailed
	rec.FailCount++
	rec.LastFailure = now
	rec.LastOp = model.OpMonitor
	rec.LastRC = int(res.Code)
	rec.Output = output(res)
	rec.FailureReason = failureReason(model.OpMonitor, res)
	rec.Changed = now
	return rec
}

// afterGuestStop records an instance that a monitor found stopped by its
// guest (agents.Result.StoppedByGuest): stopped, with no failure counted.
func afterGuestStop(rec model.ResourceRecord, res agents.Result, now time.Time) model.ResourceRecord {
	rec.State = model.StateStopped
	rec.LastOp = model.OpMonitor
	rec.LastRC = int(res.Code)
	rec.Output = output(res)
	rec.Changed = now
	return rec
}

// downNodes lists the nodes proven down in their current incarnation (see
// agents.Request.DownNodes), and those of them proven by their watchdog's
// timing alone (Request.WatchdogDown), sorted.
func (e *Executor) downNodes() (down, byWatchdog []string) {
	e.cfg.Store.Read(func(s *store.State) {
		recs, err := clusterstate.NodeRecords(s)
		if err != nil {
			return
		}
		for name, r := range recs {
			if r.Down != nil && r.BootID != 0 && r.Down.BootID == r.BootID && name != e.cfg.Node {
				down = append(down, name)
				if r.Down.How == "watchdog" {
					byWatchdog = append(byWatchdog, name)
				}
			}
		}
	})
	slices.Sort(down)
	slices.Sort(byWatchdog)
	return down, byWatchdog
}
