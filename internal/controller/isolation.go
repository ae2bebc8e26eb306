package controller

// Isolation releases: recovery on a node's own word, read from shared
// storage. A node cut off from the cluster (no quorum) stops its resources
// itself (executor.SelfStop, applying each VM's isolation response), and
// writes on every datastore, in its heartbeat slot, which it has stopped,
// tied to the store index of its node record as it saw it (the claim). The
// DC reads the slots (the agent's heartbeat loop) and hands the claims over
// through Config.Releases. A claim lets the DC recover those resources at
// once, where otherwise it would wait for a fence device (which may not
// reach a node whose network is gone) or for the node's lease and watchdog
// to run out.
//
// Why a claim is enough: a self-stopped executor runs nothing, and it runs
// something again only after rejoining, which first writes its node record
// anew (and refuses every task left unanswered). So while the node record
// is still the one the claim names (same incarnation, same store index),
// the resources claimed are stopped there, and stay stopped; the release is
// committed guarded on that very record, so a node that rejoined in the
// meantime (a new record) keeps its resources, however late the claim was
// read. Any disk lease was released by the stop, so the next start takes
// it at once.

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// ReleaseClaim is what a node wrote in its datastore heartbeat slot while
// isolated: the instances it stopped, and the node record they are tied
// to.
type ReleaseClaim struct {
	Node   string
	BootID uint64
	// NodeIndex is the store index of the node record the claim is tied
	// to.
	NodeIndex uint64
	Resources []string
	// Datastore is where the claim was read; Beating whether the node's
	// heartbeat there still moves (it is isolated, not dead).
	Datastore string
	Beating   bool
}

// ReleaseOps returns what recovering claim's resources takes, given v: the
// resource records, tasks and restart requests of those instances on the
// node are deleted, so that the scheduler sees them stopped there, in one
// transaction guarded on the node record the claim names. released lists
// the instances that had anything to release; nil ops when the claim does
// not hold (another incarnation or record, the node already proven down)
// or releases nothing. An instance in a live migration is left alone: the
// migration's own recovery decides it.
func ReleaseOps(v View, cl ReleaseClaim) (ops []store.Op, guard []store.Cmp, released []string) {
	rec, ok := v.NodeRecords[cl.Node]
	if !ok || rec.BootID == 0 || rec.BootID != cl.BootID || cl.NodeIndex == 0 || rec.Index != cl.NodeIndex {
		return nil, nil, nil
	}
	if rec.Down != nil && rec.Down.BootID == rec.BootID {
		return nil, nil, nil
	}
	claimed := func(inst string) bool {
		return slices.Contains(cl.Resources, inst) &&
			!slices.ContainsFunc(v.Migrations, func(m Migration) bool { return m.Resource == inst })
	}
	mark := func(inst string) {
		if !slices.Contains(released, inst) {
			released = append(released, inst)
		}
	}
	for _, r := range v.Records {
		if r.Node == cl.Node && claimed(r.Resource) && r.State != model.StateStopped {
			ops = append(ops, store.Op{Key: clusterstate.RecordKey(r.Node, r.Resource), Delete: true})
			mark(r.Resource)
		}
	}
	for _, t := range v.Tasks {
		if t.Node == cl.Node && claimed(t.Resource) {
			ops = append(ops, store.Op{Key: clusterstate.TaskKey(t.Node, t.ID), Delete: true})
			mark(t.Resource)
		}
	}
	prefix := clusterstate.PrefixRestart + cl.Node + "/"
	for _, k := range v.Restarts {
		if inst, ok := strings.CutPrefix(k, prefix); ok && claimed(inst) {
			ops = append(ops, store.Op{Key: k, Delete: true})
		}
	}
	if len(released) == 0 {
		return nil, nil, nil
	}
	slices.Sort(released)
	return ops, []store.Cmp{{Key: clusterstate.NodeKey(cl.Node), Version: rec.Version}}, released
}

// ReleaseTxn is the whole transaction that releases what claim allows, as
// the DC commits it: ReleaseOps, and the node's isolation record (the
// instances released so far in this isolation, from prior), guarded as
// ReleaseOps says and on the DC record as v read it. ok is false when the
// claim releases nothing.
func ReleaseTxn(v View, cl ReleaseClaim, prior map[string]model.IsolationRecord, now time.Time) (txn store.Txn, released []string, ok bool) {
	ops, guard, released := ReleaseOps(v, cl)
	if len(ops) == 0 {
		return store.Txn{}, nil, false
	}
	ir := model.IsolationRecord{V: clusterstate.FormatVersion, Node: cl.Node, BootID: cl.BootID, NodeIndex: cl.NodeIndex,
		Datastore: cl.Datastore, Beating: cl.Beating, Released: released, At: now}
	if p, ok := prior[cl.Node]; ok && p.BootID == cl.BootID && p.NodeIndex == cl.NodeIndex {
		for _, r := range p.Released {
			if !slices.Contains(ir.Released, r) {
				ir.Released = append(ir.Released, r)
			}
		}
		slices.Sort(ir.Released)
	}
	ops = append(ops, store.Op{Key: clusterstate.IsolationKey(cl.Node), Value: clusterstate.Encode(ir)})
	guard = append(guard, store.Cmp{Key: clusterstate.KeyDC, Version: v.DCVersion})
	return store.Txn{Ops: ops, If: guard}, released, true
}

// releaseTimeout bounds the commit of one release.
const releaseTimeout = 5 * time.Second

// releaseRound commits the releases the claims allow, one transaction per
// node, guarded on the node record and the DC record. It reports whether
// it committed any (the round then starts over on the new state).
func (c *Controller) releaseRound(ctx context.Context, v View) bool {
	if c.cfg.Releases == nil {
		return false
	}
	claims := c.cfg.Releases()
	if len(claims) == 0 {
		return false
	}
	var prior map[string]model.IsolationRecord
	c.cfg.Store.Read(func(s *store.State) { prior = clusterstate.Isolations(s) })
	committed := false
	done := map[string]bool{}
	for _, cl := range claims {
		if done[cl.Node] {
			continue // one release per node per round; the next round sees the rest
		}
		txn, released, ok := ReleaseTxn(v, cl, prior, c.cfg.Now())
		if !ok {
			continue
		}
		done[cl.Node] = true
		pctx, cancel := context.WithTimeout(ctx, releaseTimeout)
		_, err := c.cfg.Store.Propose(pctx, txn)
		cancel()
		if err != nil {
			c.log.Warn("isolation release not recorded", "node", cl.Node, "resources", released, "err", err)
			continue
		}
		committed = true
		c.log.Warn("node isolated: recovering what it released on the datastore", "node", cl.Node,
			"resources", released, "datastore", cl.Datastore, "beating", cl.Beating)
	}
	return committed
}
