package sim

import (
	"errors"
	"fmt"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/membership"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// simDC is the controller (internal/controller) of one incarnation, in the
// order of Controller.Run and round: take over (a guarded write of the DC
// record), then rounds that read a View (controller.ReadView), build the
// Snapshot (View.Snapshot, controller.NodeState), Compute the plan
// (scheduler.Compute), collect answered tasks (controller.Collect), start
// fences for controller.FenceTargets, dispatch tasks (controller.Dispatch)
// and commit all of it in one transaction guarded on the DC record. A fence
// runs only once its intent committed; the device powers the target off in
// the simulation; its proof is written with
// controller.ProofOps. What is modelled: the loop's goroutines (a round runs
// when the store or membership changed, at least every second, at most
// every roundGap; a blocked Propose blocks the loop, as it does), and the
// fence devices (seeded duration and failures, one per node, no levels).
type simDC struct {
	c *Cluster
	n *node

	term uint64 // the term it acts in; 0 while not DC
	seq  uint64
	busy *oneShot

	lastRound time.Duration
	retryAt   time.Duration
	// idle: the last round wrote nothing (see tick).
	idle bool

	fencing    map[string]*fenceRun
	fenceAfter map[string]time.Duration
	// rel is the release round in progress (datastore.go).
	rel *releaseRun
}

// oneShot is one blocking Propose of the DC loop (no retry).
type oneShot struct {
	takeover bool
	release  bool
	term     uint64
	id       uint64
	deadline time.Duration
	done     bool
	err      error
	ntasks   int
}

type fenceRun struct {
	t       controller.FenceTarget
	node    model.NodeRecord // the target's record when the fence began
	term    uint64
	started time.Duration
	end     time.Duration
	ok      bool
	intent  *oneShot // the intent's write: the device runs once it applied
	rec     *oneShot // the outcome's write, once the device answered
}

var errTimeout = errors.New("sim: propose timed out")

func newSimDC(c *Cluster, n *node) *simDC {
	return &simDC{c: c, n: n, lastRound: -time.Hour, fencing: map[string]*fenceRun{}, fenceAfter: map[string]time.Duration{}}
}

// isDC is Controller.isDC: the Raft leader, quorate. (n.leader and n.term
// follow the Core's Status at every leader change; reading them is cheaper
// than a Status.)
func (d *simDC) isDC() (uint64, bool) {
	if !d.n.leader || !d.n.quorate {
		return 0, false
	}
	return d.n.term, true
}

func (d *simDC) alive(name string) bool {
	if name == d.n.name {
		return true
	}
	ns, ok := d.n.mach.Node(name)
	if d.c.opts.bug == bugHastyDC {
		return ok && ns.Status == membership.StatusMember
	}
	return ok && ns.Status.IsMember()
}

func (d *simDC) propose(txn store.Txn, o *oneShot, timeout time.Duration) {
	c := d.c
	id, err := c.proposeFn(d.n, txn, func(r store.Result) {
		if o.done {
			return
		}
		o.done, o.err = true, r.Err
	})
	if err != nil {
		o.done, o.err = true, err
	}
	o.id, o.deadline = id, c.now+timeout
	d.busy = o
}

func (d *simDC) tick() {
	c, n := d.c, d.n
	d.stepFences()
	if n.p == nil {
		return // a fence powered this node off? (never itself; but be safe)
	}
	if b := d.busy; b != nil {
		if !b.done && c.now < b.deadline {
			return
		}
		d.busy = nil
		if !b.done {
			delete(c.pending, b.id)
			b.err = errTimeout
		}
		n.p.dcDirty = true // the watch taken before the Propose has fired
		switch {
		case b.release:
			d.releaseDone(b.err)
		case b.takeover && b.err == nil:
			d.term, d.seq = b.term, 0
			c.tracef("%s acts as DC in term %d", n.name, b.term)
		case b.takeover:
			c.tracef("%s: taking over as DC in term %d: %v", n.name, b.term, b.err)
		case b.err != nil:
			c.tracef("%s: DC round failed (%d tasks): %v", n.name, b.ntasks, b.err)
			d.retryAt = c.now + roundRetry
		}
		return
	}
	term, ok := d.isDC()
	if !ok {
		if d.term != 0 {
			c.tracef("%s no longer DC (term %d)", n.name, d.term)
			d.term = 0
		}
		return
	}
	if !n.p.dcDirty && c.now-d.lastRound < recheck {
		return
	}
	if c.now < d.retryAt || c.now-d.lastRound < roundGap {
		return
	}
	if !n.p.dcDirty && d.term == term && d.idle && !d.retryDue() {
		// The periodic recheck, with nothing changed since a round that
		// wrote nothing: it would write nothing again (its only
		// time-based rules are failure-timeout, never configured here,
		// and the fence retry, checked).
		d.lastRound = c.now
		return
	}
	n.p.dcDirty = false
	d.lastRound = c.now
	d.idle = false
	if d.term != term {
		d.takeOver(term)
		return
	}
	d.round(term)
}

// retryDue reports whether a failed fence may be retried now that could
// not be at the last round.
func (d *simDC) retryDue() bool {
	for _, at := range d.fenceAfter {
		if at > d.lastRound && at <= d.c.now {
			return true
		}
	}
	return false
}

// takeOver is Controller.takeOver.
func (d *simDC) takeOver(term uint64) {
	var cur clusterstate.DCRecord
	var version uint64
	d.n.core.Read(func(s *store.State) {
		cur = clusterstate.DC(s)
		it, _ := s.Get(clusterstate.KeyDC)
		version = it.Version
	})
	if cur.Term > term {
		d.c.tracef("%s: a DC of a newer term (%s, term %d) is recorded", d.n.name, cur.Name, cur.Term)
		return
	}
	rec := clusterstate.DCRecord{V: clusterstate.FormatVersion, Name: d.n.name, Term: term}
	txn := store.Txn{Ops: []store.Op{{Key: clusterstate.KeyDC, Value: clusterstate.Encode(rec)}},
		If: []store.Cmp{{Key: clusterstate.KeyDC, Version: version}}}
	d.propose(txn, &oneShot{takeover: true, term: term}, takeOverTimeout)
}

// round is Controller.round.
func (d *simDC) round(term uint64) {
	c, n := d.c, d.n
	var v controller.View
	var err error
	n.core.Read(func(s *store.State) { v, err = controller.ReadView(s) })
	if err != nil {
		c.violate(InvCrash, "%s DC: read state: %v", n.name, err)
		return
	}
	if v.DC.Term != term || v.DC.Name != n.name {
		d.term = 0
		d.retryAt = c.now + roundRetry
		return
	}
	c.rep.Rounds++
	if d.startRelease(term, v) {
		return // the round goes on when the releases are done
	}
	d.plan(term, v)
}

// plan is the rest of Controller.round, after releaseRound: schedule,
// collect, fence, dispatch and commit.
func (d *simDC) plan(term uint64, v controller.View) {
	c, n := d.c, d.n
	now := wall(c.now)
	snap := v.Snapshot(d.alive, now)
	plan := scheduler.Compute(snap)

	ops := controller.Collect(v)
	fenceOps, guards := d.fenceRound(v, plan, term)
	ops = append(ops, fenceOps...)
	var tasks []model.Task
	tasks, d.seq = controller.Dispatch(v, snap, plan, term, now, d.seq)
	for _, t := range tasks {
		ops = append(ops, store.Op{Key: clusterstate.TaskKey(t.Node, t.ID), Value: clusterstate.Encode(t)})
	}
	if len(ops) == 0 {
		d.idle = true
		return
	}
	if cur, ok := d.isDC(); !ok || cur != term {
		return
	}
	guards = append(guards, store.Cmp{Key: clusterstate.KeyDC, Version: v.DCVersion})
	for _, t := range tasks {
		c.rep.Tasks++
		c.tracef("%s DC issues %s: %s %s on %s (%s)", n.name, t.ID, t.Action, t.Resource, t.Node, t.Reason)
	}
	d.propose(store.Txn{Ops: ops, If: guards}, &oneShot{term: term, ntasks: len(tasks)}, proposeTimeout)
}

// fenceRound is Controller.fenceRound with device fencing only (no node
// runs a watchdog here): it starts a fence for every target not yet proven
// down, and returns no ops of its own.
func (d *simDC) fenceRound(v controller.View, plan *scheduler.Plan, term uint64) ([]store.Op, []store.Cmp) {
	for _, t := range controller.FenceTargets(v, plan, d.n.name, d.alive) {
		if t.Node == d.n.name {
			continue
		}
		rec := v.NodeRecords[t.Node]
		if rec.Down != nil && rec.Down.BootID == rec.BootID && !t.Manual {
			continue
		}
		d.startDeviceFence(v, t, rec, term)
	}
	return nil, nil
}

func (d *simDC) startDeviceFence(v controller.View, t controller.FenceTarget, rec model.NodeRecord, term uint64) {
	c := d.c
	if v.Config.Properties[model.PropStonithEnabled] == "false" || c.opts.NoFence {
		return // (NoFence: no device can fence it)
	}
	if d.fencing[t.Node] != nil || c.now < d.fenceAfter[t.Node] {
		return
	}
	f := &fenceRun{t: t, node: rec, term: term, ok: !c.chance(pFenceFail)}
	d.fencing[t.Node] = f
	// Controller.startDeviceFence: the intent is committed, guarded on
	// the DC record, before the device runs.
	intent := model.FenceEvent{V: clusterstate.FormatVersion, Target: t.Node, By: t.By, Reason: t.Reason, How: "device", Started: wall(c.now)}
	o := &oneShot{deadline: c.now + fenceIntentTimeout}
	f.intent = o
	id, err := c.proposeFn(d.n, store.Txn{
		Ops: []store.Op{{Key: clusterstate.FenceIntentKey(t.Node), Value: clusterstate.Encode(intent)}},
		If:  []store.Cmp{{Key: clusterstate.KeyDC, Version: v.DCVersion}},
	}, func(r store.Result) {
		if !o.done {
			o.done, o.err = true, r.Err
		}
	})
	o.id = id
	if err != nil {
		o.done, o.err = true, err
	}
	c.tracef("%s decides to fence %s (boot %d): %s", d.n.name, t.Node, rec.BootID, t.Reason)
}

// stepFences finishes the fences whose device has answered: on success the
// target is powered off; then the proof (and always the history entry) is
// written if this node is still DC in the fence's term, and the fence
// counts as in flight until that write is applied or times out
// (Controller.finishDeviceFence: the fence's entry is dropped after its
// Propose returns).
func (d *simDC) stepFences() {
	c, n := d.c, d.n
	for _, name := range sortedKeys(d.fencing) {
		f := d.fencing[name]
		switch {
		case f.rec != nil:
			if f.rec.done || c.now >= f.rec.deadline {
				if !f.rec.done {
					delete(c.pending, f.rec.id)
				}
				delete(d.fencing, name)
				if !f.ok {
					d.fenceAfter[name] = c.now + fenceRetry
				}
				n.p.dcDirty = true
			}
			continue
		case f.end == 0:
			// The intent is on its way: the device runs only once it
			// applied; a DC that cannot commit it never fences.
			o := f.intent
			if !o.done && c.now < o.deadline {
				continue
			}
			if !o.done || o.err != nil {
				if !o.done {
					delete(c.pending, o.id)
				}
				c.tracef("%s: fence of %s not started: its intent did not commit", n.name, name)
				delete(d.fencing, name)
				d.fenceAfter[name] = c.now + fenceIntentRetry
				n.p.dcDirty = true
				continue
			}
			f.started, f.end = c.now, c.now+c.between(fenceTime[0], fenceTime[1])
			c.rep.Fences++
			c.noteFence(name)
			c.tracef("%s fences %s (boot %d): %s", n.name, name, f.node.BootID, f.t.Reason)
			continue
		case c.now < f.end:
			continue
		}
		target := c.byName(name)
		if f.ok {
			// The device cuts the power: whatever runs there stops, the
			// agent's process (if alive) too.
			if c.opts.bug != bugProofWithoutFence && (target.up || target.truth != nil) {
				c.rep.PowerOffs++
				c.tracef("fence device powers %s off", name)
				c.powerOff(target)
				target.rebootAt = c.now + c.between(rebootTime[0], rebootTime[1])
			}
		} else {
			c.rep.FenceFailures++
			c.tracef("fencing %s failed", name)
		}
		n.p.dcDirty = true
		var v controller.View
		var err error
		n.core.Read(func(s *store.State) { v, err = controller.ReadView(s) })
		if err != nil {
			c.violate(InvCrash, "%s DC: read state: %v", n.name, err)
			return
		}
		ev := model.FenceEvent{
			V: clusterstate.FormatVersion, Target: name, By: f.t.By, Reason: f.t.Reason, How: "device",
			OK: f.ok, Started: wall(f.started), Duration: f.end - f.started,
		}
		var ops []store.Op
		var guard []store.Cmp
		if f.ok {
			ev.Level, ev.Devices, ev.Confirmed = 1, []string{"pdu-" + name}, "off"
			ops, guard = controller.ProofOps(v, f.node, model.DownProof{How: "fenced", Device: "pdu-" + name, By: "dc " + n.name, At: wall(c.now)})
			ops = append(ops, controller.FenceHistoryOps(v, ev)...)
		} else {
			ev.Error = "simulated fence failure"
			ops = controller.FenceHistoryOps(v, ev)
		}
		ops = append(ops, store.Op{Key: clusterstate.FenceIntentKey(name), Delete: true})
		f.rec = &oneShot{deadline: c.now + proposeTimeout}
		if cur, ok := d.isDC(); !ok || cur != f.term {
			c.tracef("%s: fence outcome for %s not recorded: no longer DC", n.name, name)
			f.rec.done = true
			continue
		}
		o, ok, boot := f.rec, f.ok, f.node.BootID
		o.id, err = c.proposeFn(n, store.Txn{Ops: ops, If: guard}, func(r store.Result) {
			o.done = true
			switch {
			case r.Err != nil:
				c.tracef("%s: fence record of %s refused: %v", n.name, name, r.Err)
			case ok:
				c.rep.Proofs++
				c.tracef("%s recorded %s proven down (boot %d)", n.name, name, boot)
			}
		})
		if err != nil {
			o.done = true
		}
	}
}

func (c *Cluster) byName(name string) *node {
	for _, n := range c.n {
		if n.name == name {
			return n
		}
	}
	panic(fmt.Sprintf("sim: no node %q", name))
}

// noteFence: in the quiet class, once warm, nobody is fenced.
func (c *Cluster) noteFence(node string) {
	if c.opts.Quiet && c.sys.warm {
		c.violate(InvFalseFailover, "%s fenced under loss and jitter alone", node)
	}
}
