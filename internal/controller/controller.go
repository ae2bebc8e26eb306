// Package controller is the DC: on the quorate Raft leader it turns the
// replicated state into a plan (scheduler.Compute) and the plan into tasks
// for the nodes' executors. It keeps nothing that matters in memory: every
// round starts from the store, so a new DC continues where the last one
// stopped (docs/architecture.md, "The resource manager").
//
// The round, in order:
//  1. read a View of the store;
//  2. build the Snapshot (node states with proof rules, records, pending
//     tasks) and Compute the plan;
//  3. commit, in one transaction, the tasks for the plan's actions that wait
//     for nothing, and the removal of answered tasks. A task is committed
//     before any executor can see it, so the intent is durable first.
//
// Executors answer by writing results and records, which wakes the next
// round. An action that waits for another is issued in the round after that
// other one's result is in the status.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// Store is what the controller needs of the replicated store.
type Store interface {
	Read(fn func(*store.State))
	Propose(ctx context.Context, cmd store.Command) (store.Result, error)
	Watch() <-chan struct{}
	Status() store.Status
}

// Config configures a Controller.
type Config struct {
	// Self is this node's name.
	Self  string
	Store Store
	// Alive reports whether a node is a member in this node's view.
	Alive func(node string) bool
	// Quorate reports whether this node's partition holds quorum.
	Quorate func() bool
	Log     *slog.Logger
	// Now is the clock for failure-timeout; default time.Now.
	Now func() time.Time
	// Recheck is the longest time between rounds without any change, so
	// that time-based rules (failure-timeout) are applied; default 1s.
	Recheck time.Duration
	// Fencer runs fence devices (nil: no device fencing).
	Fencer Fencer
	// SelfFenced reports whether a lost node with a watchdog has been lost,
	// by a majority's account, long enough for its lease to have ended and
	// its watchdog to have fired (nil: never).
	SelfFenced func(node string) bool
	// Releases returns the isolation claims read from the datastore
	// heartbeats (isolation.go; nil: none).
	Releases func() []ReleaseClaim
	// HandOver asks for another node, none of avoid, to become DC (raft
	// leadership transfer) and reports whether one could be asked (nil:
	// never).
	HandOver func(ctx context.Context, why string, avoid []string) bool
}

// Controller is the DC's loop.
type Controller struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu   sync.Mutex
	term uint64 // the term we act in; 0 while not DC
	seq  uint64
	last *scheduler.Plan

	fencing    map[string]struct{}  // fences in flight, by node
	fenceAfter map[string]time.Time // no new fence of the node before
	monitored  map[string]time.Time // last monitor of each fence device
	handedOver time.Time            // last hand-over asked (handOverEvery)
}

// New returns a Controller.
func New(cfg Config) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Recheck == 0 {
		cfg.Recheck = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Controller{
		cfg: cfg, log: cfg.Log.With("component", "controller"), kick: make(chan struct{}, 1),
		fencing: map[string]struct{}{}, fenceAfter: map[string]time.Time{}, monitored: map[string]time.Time{},
	}
}

// Kick asks for a round soon: the agent calls it when membership changes,
// which the store does not see.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Term returns the term this node acts as DC in, or 0.
func (c *Controller) Term() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.term
}

// LastPlan returns the plan of the last round (nil before the first).
func (c *Controller) LastPlan() *scheduler.Plan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// isDC reports whether this node may act as DC now, and in which term: it
// must be the Raft leader and quorate.
func (c *Controller) isDC() (uint64, bool) {
	st := c.cfg.Store.Status()
	if st.Lead != st.ID || st.ID == 0 || !c.cfg.Quorate() {
		return 0, false
	}
	return st.Term, true
}

// Run acts as DC whenever this node is one, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Recheck)
	defer t.Stop()
	for {
		w := c.cfg.Store.Watch()
		term, ok := c.isDC()
		c.mu.Lock()
		prev := c.term
		if !ok {
			c.term = 0
		}
		c.mu.Unlock()
		switch {
		case !ok && prev != 0:
			c.log.Info("no longer DC", "term", prev)
		case ok:
			if prev != term {
				if err := c.takeOver(ctx, term); err != nil {
					c.log.Warn("taking over as DC", "term", term, "err", err)
					break
				}
			}
			if err := c.round(ctx, term); err != nil && ctx.Err() == nil {
				c.log.Warn("DC round failed; retrying", "err", err)
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w:
		case <-c.kick:
		case <-t.C:
		}
	}
}

// takeOver records this node as DC for term: executors then refuse tasks of
// older terms, so a deposed DC's queued tasks are not run.
//
// The write is guarded on the record it read, and refused if a newer term is
// already recorded: a node that was DC a moment ago can still have its
// proposal forwarded and committed after its successor's, and must not put
// the record back to its older term.
func (c *Controller) takeOver(ctx context.Context, term uint64) error {
	var cur clusterstate.DCRecord
	var version uint64
	c.cfg.Store.Read(func(s *store.State) {
		cur = clusterstate.DC(s)
		it, _ := s.Get(clusterstate.KeyDC)
		version = it.Version
	})
	if cur.Term > term {
		return fmt.Errorf("a DC of a newer term (%s, term %d) is recorded", cur.Name, cur.Term)
	}
	rec := clusterstate.DCRecord{V: clusterstate.FormatVersion, Name: c.cfg.Self, Term: term}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	txn := store.Txn{Ops: []store.Op{{Key: clusterstate.KeyDC, Value: clusterstate.Encode(rec)}},
		If: []store.Cmp{{Key: clusterstate.KeyDC, Version: version}}}
	if _, err := c.cfg.Store.Propose(pctx, txn); err != nil {
		return err
	}
	c.mu.Lock()
	c.term, c.seq = term, 0
	c.mu.Unlock()
	c.log.Info("acting as DC", "term", term)
	return nil
}

// round runs one reconcile round in term.
func (c *Controller) round(ctx context.Context, term uint64) error {
	var v View
	var err error
	c.cfg.Store.Read(func(s *store.State) { v, err = ReadView(s) })
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if v.DC.Term != term || v.DC.Name != c.cfg.Self {
		// Take over again (or stand down) on the next loop rather than
		// failing every round in this term.
		c.mu.Lock()
		c.term = 0
		c.mu.Unlock()
		return fmt.Errorf("DC record says %s in term %d, not us in %d", v.DC.Name, v.DC.Term, term)
	}
	if c.releaseRound(ctx, v) {
		return nil // the next round plans on the released state
	}
	alive := func(n string) bool { return n == c.cfg.Self || c.cfg.Alive(n) }
	snap := v.Snapshot(alive, c.cfg.Now())
	plan := scheduler.Compute(snap)
	c.mu.Lock()
	c.last = plan
	c.mu.Unlock()

	ops := c.collect(v)
	fenceOps, guards := c.fenceRound(ctx, v, plan, term)
	c.monitorDevices(ctx, v, term)
	ops = append(ops, fenceOps...)
	migOps, tasks := c.migrateRound(v, snap, plan, term)
	ops = append(ops, migOps...)
	for _, t := range c.dispatch(v, snap, plan, term) {
		// One task per instance per round: a migration's step wins.
		if !slices.ContainsFunc(tasks, func(m model.Task) bool { return m.Resource == t.Resource }) {
			tasks = append(tasks, t)
		}
	}
	for _, t := range tasks {
		ops = append(ops, store.Op{Key: clusterstate.TaskKey(t.Node, t.ID), Value: clusterstate.Encode(t)})
	}
	if len(ops) == 0 {
		return nil
	}
	// Still the DC? A round computed in an old term must not be committed
	// under a new one. (Executors also refuse older terms.)
	if cur, ok := c.isDC(); !ok || cur != term {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Guarded on the DC record as read: a round of a deposed DC that is
	// forwarded and committed late is refused whole.
	guards = append(guards, store.Cmp{Key: clusterstate.KeyDC, Version: v.DCVersion})
	if _, err := c.cfg.Store.Propose(pctx, store.Txn{Ops: ops, If: guards}); err != nil {
		return fmt.Errorf("commit %d tasks: %w", len(tasks), err)
	}
	for _, t := range tasks {
		c.log.Info("task issued", "task", t.ID, "node", t.Node, "action", t.Action, "resource", t.Resource, "reason", t.Reason)
	}
	return nil
}

// collect removes answered tasks and their results: the records hold what
// matters of them.
func (c *Controller) collect(v View) []store.Op {
	var ops []store.Op
	tasks := map[string]bool{}
	for _, t := range v.Tasks {
		tasks[t.Node+"/"+t.ID] = true
		// A task for a node proven down will never be answered: drop it,
		// or its instance would stay "in motion" for ever.
		if rec := v.NodeRecords[t.Node]; rec.Down != nil && rec.Down.BootID == rec.BootID {
			ops = append(ops, store.Op{Key: clusterstate.TaskKey(t.Node, t.ID), Delete: true})
		}
	}
	for _, r := range v.Results {
		if tasks[r.Node+"/"+r.ID] {
			ops = append(ops, store.Op{Key: clusterstate.TaskKey(r.Node, r.ID), Delete: true})
		}
		ops = append(ops, store.Op{Key: clusterstate.ResultKey(r.Node, r.ID), Delete: true})
		if r.Refused != "" {
			c.log.Info("task refused", "task", r.ID, "node", r.Node, "why", r.Refused)
		}
	}
	return ops
}

// dispatch turns the plan's ready actions into tasks. An action is ready
// when it waits for no other action of the plan and its instance has no
// pending task. A migrate of a vigil:vm instance between two online nodes
// is left to migrateRound (live migration, migrate.go) while every node
// supports it; any other migrate is issued as a stop on the source (whose
// reason says why a VM is not live-migrated), and the start on the target
// follows in a later round.
func (c *Controller) dispatch(v View, snap *model.Snapshot, plan *scheduler.Plan, term uint64) []model.Task {
	pending := map[string]bool{}
	for _, p := range snap.Pending {
		pending[p.Resource] = true
	}
	probing, _ := StartsHeld(v, snap)
	var out []model.Task
	now := c.cfg.Now()
	for _, a := range plan.Actions {
		if len(a.After) > 0 || pending[a.Resource] {
			continue
		}
		if migrating(v, snap, a) {
			continue
		}
		if probing != "" && (a.Kind == scheduler.ActionStart || a.Kind == scheduler.ActionMigrate) {
			c.log.Debug("start held: a node is still probing", "resource", a.Resource, "probing", probing)
			continue
		}
		action, node, reason := a.Kind, a.Node, a.Reason
		switch a.Kind {
		case scheduler.ActionStart:
			action = model.ActStart
		case scheduler.ActionStop:
			action = model.ActStop
		case scheduler.ActionMigrate:
			action, node, reason = model.ActStop, a.From, c.moveReason(v, snap, a)
		default:
			c.log.Warn("plan action of unknown kind skipped", "kind", a.Kind, "resource", a.Resource)
			continue
		}
		rc, err := InstanceConfig(&v.Config, a.Resource)
		if err != nil {
			c.log.Warn("plan action skipped", "err", err)
			continue
		}
		if slices.ContainsFunc(out, func(t model.Task) bool { return t.Resource == a.Resource }) {
			continue // one task per instance per round
		}
		c.mu.Lock()
		c.seq++
		id := fmt.Sprintf("t%d-%d-%d", term, v.Index, c.seq)
		c.mu.Unlock()
		out = append(out, model.Task{
			V: clusterstate.FormatVersion, ID: id, Term: term, Node: node, Action: action,
			Resource: a.Resource, Config: rc, Reason: reason, Issued: now,
		})
	}
	return out
}

// StartsHeld names a node whose state holds every start back, and why;
// "" when starts may go. Stops need not wait.
//
// Starts wait while a live node is still probing: it may run, unknown to
// the cluster, what would be started elsewhere (a node whose records a
// proof released, a resource started by hand).
//
// They also wait while a node is lost, unproven, before its current
// incarnation recorded its probes: its records say nothing of what it runs.
// An agent that died after a start but before recording it leaves the
// resource running; its next incarnation refuses the unanswered task (an
// answer that says "not run") before its probes are written; lost in
// between, it would leave the resource recorded nowhere while it runs
// (found by the simulator, seed 3203). Only a proof (fenced, watchdog,
// confirmed) ends the wait.
func StartsHeld(v View, snap *model.Snapshot) (node, why string) {
	for _, n := range snap.Nodes {
		if n.Witness {
			continue
		}
		rec := v.NodeRecords[n.Name]
		switch {
		case n.State == model.NodePending:
			return n.Name, "still probing"
		case n.State == model.NodeLost && rec.BootID != 0 && rec.Probed != rec.BootID:
			return n.Name, "lost before it recorded its probes"
		}
	}
	return "", ""
}
