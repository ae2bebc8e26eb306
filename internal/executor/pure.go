package executor

import (
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/model"
)

// The executor's pure decisions, exported for the deterministic simulator
// (internal/sim), which runs simulated agents under simulated time and
// writes what these say, so that its records and results are exactly the
// executor's. Each is a thin wrapper of the function the Executor uses.

// Refusal says why a task must not run ("" if it may): decodeErr is the
// error decoding it, dcTerm the recorded DC's term, maint whether the node
// is in maintenance.
func Refusal(t model.Task, decodeErr error, dcTerm uint64, maint bool) string {
	return refusal(taskEntry{id: t.ID, task: t, err: decodeErr}, dcTerm, maint)
}

// TaskAction maps a task to the agent action and its timeout.
func TaskAction(t model.Task) (string, time.Duration) { return taskAction(t) }

// AfterTask applies the outcome of task t to the instance's record and
// reports whether the task succeeded.
func AfterTask(rec model.ResourceRecord, t model.Task, res agents.Result, now time.Time) (model.ResourceRecord, bool) {
	return afterTask(rec, t, res, now)
}

// AfterProbe applies a one-shot monitor's outcome to a record.
func AfterProbe(rec model.ResourceRecord, res agents.Result, now time.Time) model.ResourceRecord {
	return afterProbe(rec, res, now)
}

// AfterMonitorFailure records a failed recurring monitor.
func AfterMonitorFailure(rec model.ResourceRecord, res agents.Result, now time.Time) model.ResourceRecord {
	return afterMonitorFailure(rec, res, now)
}

// ProbeState maps a one-shot monitor's code to the state recorded.
func ProbeState(c agents.Code) string { return probeState(c) }

// Running reports whether a recurring monitor's code counts as running.
func Running(c agents.Code) bool { return running(c) }

// RecurringMonitor returns the resource's recurring monitor operation.
func RecurringMonitor(r model.Resource) (model.Op, bool) { return recurringMonitor(r) }

// StopWaves orders the instances a self-stop stops: dependents first.
func StopWaves(targets map[string]bool, insts map[string]Instance, c model.Config) [][]string {
	return stopWaves(targets, insts, c)
}

// Output renders what an action said, as records and results keep it.
func Output(res agents.Result) string { return output(res) }
