package executor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// refuseStale answers every task addressed to this node that has no result:
// it was issued to an earlier incarnation, or while the node was down. Its
// action may or may not have run; the probes that follow tell the DC what
// runs now.
func (e *Executor) refuseStale(ctx context.Context, reason string) error {
	var ops []store.Op
	e.cfg.Store.Read(func(s *store.State) {
		prefix := clusterstate.PrefixTasks + e.cfg.Node + "/"
		s.Range(prefix, func(k string, it store.Item) bool {
			id := strings.TrimPrefix(k, prefix)
			if _, done := s.Get(clusterstate.ResultKey(e.cfg.Node, id)); done {
				return true
			}
			var t model.Task
			_ = decode(k, it.Value, &t) // best effort: the term, for the DC
			ops = append(ops, e.resultOp(model.TaskResult{ID: id, Term: t.Term, Refused: reason}))
			return true
		})
	})
	if len(ops) == 0 {
		return nil
	}
	e.log.Info("executor: refusing tasks left from before this start", "tasks", len(ops))
	return e.commitBatches(ctx, "refusals of stale tasks", ops)
}

// resultOp renders a task result for this node.
func (e *Executor) resultOp(r model.TaskResult) store.Op {
	r.V = clusterstate.FormatVersion
	r.Node = e.cfg.Node
	return store.Op{Key: clusterstate.ResultKey(e.cfg.Node, r.ID), Value: clusterstate.Encode(r)}
}

// recordOp renders a resource record of this node.
func (e *Executor) recordOp(r model.ResourceRecord) store.Op {
	return store.Op{Key: clusterstate.RecordKey(e.cfg.Node, r.Resource), Value: clusterstate.Encode(r)}
}

// probeAll runs a one-shot monitor of every configured instance and records
// the outcomes (only records that change are written).
func (e *Executor) probeAll(ctx context.Context) error {
	var insts []Instance
	var recs map[string]model.ResourceRecord
	var err error
	e.mu.Lock()
	e.cfg.Store.Read(func(s *store.State) {
		e.instByID = nil // force a load
		if err = e.refreshConfigLocked(s); err != nil {
			return
		}
		for _, in := range e.instByID {
			insts = append(insts, in)
		}
		recs = e.recordsOf(s)
	})
	e.mu.Unlock()
	if err != nil {
		// Without the configuration Probed would be a lie.
		return fmt.Errorf("executor: probe: %w", err)
	}
	slices.SortFunc(insts, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })

	results := make([]agents.Result, len(insts))
	sem := make(chan struct{}, e.cfg.ProbeParallelism)
	var wg sync.WaitGroup
probe:
	for i, in := range insts {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break probe
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = e.exec(ctx, in.Resource, in.ID, agents.ActionMonitor, 0, probeTimeout(in.Resource).D(), nil)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	// What runs here is known from now on, written or not: the watchdog
	// and the self-stop go by it.
	e.mu.Lock()
	clear(e.local)
	for inst, r := range recs {
		if _, ok := e.instByID[inst]; !ok && r.State != model.StateStopped {
			e.local[inst] = true // not configured: the DC stops it with a task
		}
	}
	for i, in := range insts {
		if probeState(results[i].Code) != model.StateStopped {
			e.local[in.ID] = true
		}
	}
	e.localKnown = true
	e.mu.Unlock()

	now := e.cfg.Now()
	var ops []store.Op
	count := map[string]int{}
	for i, in := range insts {
		old, found := recs[in.ID]
		rec := afterProbe(e.baseRecord(old, found, in.ID), results[i], now)
		count[rec.State]++
		if rec.State == model.StateFailed {
			e.log.Warn("executor: probe failed", "resource", in.ID, "rc", results[i].Code, "output", rec.Output)
		}
		if found && old.State == rec.State && old.LastRC == rec.LastRC {
			continue // already recorded
		}
		ops = append(ops, e.recordOp(rec))
	}
	e.log.Info("executor: probed", "instances", len(insts), "started", count[model.StateStarted],
		"stopped", count[model.StateStopped], "failed", count[model.StateFailed], "written", len(ops))
	return e.commitBatches(ctx, "probe records", ops)
}
