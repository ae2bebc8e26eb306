package controller

import (
	"log/slog"
	"time"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// The pure steps of a DC round, as functions of their inputs, for the
// deterministic simulator (internal/sim), which runs the round's order
// under simulated time. Each one calls the very method the Controller
// runs, on a throwaway Controller that holds only what the step reads, so
// the simulator and the real DC cannot drift apart.

var discard = slog.New(slog.DiscardHandler)

// FenceTarget is one node a round wants proven down (see fenceTargets).
type FenceTarget struct {
	Node, Reason, By string
	// Manual: an operator asked for it (a proof already recorded does not
	// end it).
	Manual bool
}

// FenceTargets returns the nodes a round of DC self wants proven down:
// those the plan asks for, every member lost uncleanly, and the operators'
// requests.
func FenceTargets(v View, plan *scheduler.Plan, self string, alive func(string) bool) []FenceTarget {
	ts := fenceTargets(v, plan, self, alive)
	out := make([]FenceTarget, len(ts))
	for i, t := range ts {
		out[i] = FenceTarget{Node: t.node, Reason: t.reason, By: t.by, Manual: t.manual}
	}
	return out
}

// Collect returns a round's deletions of answered tasks, their results, and
// the tasks of nodes proven down.
func Collect(v View) []store.Op {
	c := &Controller{log: discard}
	return c.collect(v)
}

// Dispatch turns a plan's ready actions into tasks, as a round at now in
// term does. seq is the DC's task counter (reset when it takes over); the
// counter after the round is returned with the tasks.
func Dispatch(v View, snap *model.Snapshot, plan *scheduler.Plan, term uint64, now time.Time, seq uint64) ([]model.Task, uint64) {
	c := &Controller{cfg: Config{Now: func() time.Time { return now }}, log: discard, seq: seq}
	tasks := c.dispatch(v, snap, plan, term)
	return tasks, c.seq
}

// FenceHistoryOps returns the ops that append a fencing event to the
// history (answering an operator's request for that node), as the DC
// records every fence outcome.
func FenceHistoryOps(v View, ev model.FenceEvent) []store.Op {
	c := &Controller{log: discard}
	return c.historyOps(v, ev)
}

// MigrateRound advances the live migrations in progress and starts those
// the plan asks for, as a round at now in term does (migrate.go): the ops
// (migration records) and tasks to commit, and the task counter after.
// Tasks of Dispatch for an instance that MigrateRound gave a task are
// dropped by the round.
func MigrateRound(v View, snap *model.Snapshot, plan *scheduler.Plan, term uint64, now time.Time, seq uint64) ([]store.Op, []model.Task, uint64) {
	c := &Controller{cfg: Config{Now: func() time.Time { return now }}, log: discard, seq: seq}
	ops, tasks := c.migrateRound(v, snap, plan, term)
	return ops, tasks, c.seq
}
