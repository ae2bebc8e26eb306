package executor

// Self-stop: a node that loses its lease or its quorum stops what it runs
// itself, before its lease ends, so that its watchdog need not fire and so
// that the majority may recover the resources once it has proven the node
// out of action (package lease). Without a quorum nothing can be written,
// so a self-stop writes nothing: it runs the stops through the instances'
// queues (never beside another action on the same instance), remembers
// locally what it stopped, and the executor then refuses all work until
// the agent says the node may rejoin. Rejoining is a fenced node's return:
// a fresh node record (Probed 0, no Down), the unanswered tasks refused, a
// probe of every instance, and only then Probed, before which the DC
// schedules nothing here.

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// errSelfStopped: a join was interrupted by a self-stop.
var errSelfStopped = errors.New("executor: self-stopped")

// rejoinPoll is how often a self-stopped executor checks whether it may
// rejoin while its stops finish.
const rejoinPoll = 20 * time.Millisecond

// SelfStop stops every instance this node believes active (what it started
// or found running, and what its own records in its local view of the store
// say), without any store write, and waits until they are stopped or ctx
// ends. From the call on, the executor runs no task, cleanup, restart or
// monitor, and any action in flight is aborted (its task stays unanswered:
// the rejoin refuses it). It returns nil once nothing is active here
// (LocalActive is 0), else an error naming what still runs. It may be called
// again (say, when the lease ends while an earlier self-stop waits): stops
// in flight go on, and the instances still active are stopped again.
func (e *Executor) SelfStop(ctx context.Context, why string) error {
	e.mu.Lock()
	done := e.beginSelfStopLocked(why)
	e.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if n, left := e.UnguardedActive(e.cfg.Now()); n > 0 {
		return errors.New("executor: self-stop: still active: " + strings.Join(left, ", "))
	}
	return nil
}

// SelfStopped reports whether the executor is self-stopped: it runs
// nothing new until it has rejoined.
func (e *Executor) SelfStopped() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.selfStopped
}

// Rejoin tells a self-stopped executor that the node may rejoin (it is
// quorate and holds its lease again). Once its stops have finished it
// registers again and probes every instance before it takes any work. The
// agent calls it as long as that holds; it does nothing when the executor
// is not self-stopped.
func (e *Executor) Rejoin() {
	e.mu.Lock()
	if e.selfStopped {
		e.rejoinWanted = true
	}
	e.mu.Unlock()
	e.poke()
}

// LocalActive returns how many instances may be active on this node as far
// as this incarnation knows: what it found running, started, or failed to
// stop. Before its first probes it counts the node's records in its view of
// the store that are not stopped (they may be an earlier incarnation's).
// The agent pets its watchdog without a lease only while this is 0.
func (e *Executor) LocalActive() int {
	n, _ := e.localActive()
	return n
}

// StoppedHere returns the instances that self-stops stopped on this node,
// with when, since this incarnation started.
func (e *Executor) StoppedHere() map[string]time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.stoppedHere)
}

// Released is this node's release claim while it is self-stopped: the
// instances its self-stops have stopped since it last registered (each
// really stopped, any disk lease let go), and the store index of this
// node's record as it sees it now. The claim is what the node writes to its
// datastore heartbeat for the DC, which may then recover those instances at
// once instead of waiting for a fence or the watchdog. It stays true for as
// long as the node record keeps that index: a self-stopped executor runs
// nothing, and it runs something again only after rejoining, whose
// registration writes the record anew (then clears the set) and whose
// "probed" write rewrites it once more before any task, refusing every
// unanswered one: a claim read just before the clear names the
// registration's record, which the probed write voids before anything
// runs. Empty while not self-stopped, or when the record is not known.
func (e *Executor) Released() (insts []string, nodeIndex uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.selfStopped {
		return nil, 0
	}
	e.cfg.Store.Read(func(s *store.State) { insts, nodeIndex = Claim(s, e.cfg.Node, e.released, e.local) })
	return insts, nodeIndex
}

// Claim is a self-stopped node's release claim given its state: the
// instances in released not active (local) again, sorted, tied to the
// index of node's record in s; nothing when the record is not known. The
// simulator's executor model uses it too.
func Claim(s *store.State, node string, released, local map[string]bool) (insts []string, nodeIndex uint64) {
	it, ok := s.Get(clusterstate.NodeKey(node))
	if !ok || it.Index == 0 {
		return nil, 0
	}
	for inst := range released {
		if !local[inst] {
			insts = append(insts, inst)
		}
	}
	slices.Sort(insts)
	return insts, it.Index
}

// keepLocked takes out of targets the instances the self-stop leaves
// running (the isolation response leave-running, agents.IsolationKeeper):
// those whose guard lasts at least Config.KeepMargin from now (else the
// node's watchdog would have to reset the node for them: stopping is
// better), and that depend on no other active instance here (which would
// be stopped under them, or keep the node unguarded). Called with e.mu
// held.
func (e *Executor) keepLocked(targets map[string]bool) {
	before := stopsBefore(targets, e.instByID, e.conf)
	dependsOnActive := func(inst string) bool {
		for a, bs := range before {
			if a != inst && slices.Contains(bs, inst) {
				return true
			}
		}
		return false
	}
	now := e.cfg.Now()
	for _, inst := range slices.Sorted(maps.Keys(targets)) {
		until, ok := e.keptLocked(inst)
		if !ok {
			continue
		}
		switch {
		case until.Before(now.Add(e.cfg.KeepMargin)):
			e.log.Error("executor: self-stop: cannot leave it running (leave-running): its disk lease does not outlast a watchdog reset; stopping it instead",
				"resource", inst, "guarded_for", until.Sub(now).Round(time.Millisecond), "needed", e.cfg.KeepMargin)
		case dependsOnActive(inst):
			e.log.Error("executor: self-stop: cannot leave it running (leave-running): it depends on other resources active here; stopping it instead", "resource", inst)
		default:
			delete(targets, inst)
			if !e.kept[inst] {
				e.kept[inst] = true
				e.log.Warn("executor: self-stop: left running (isolation response leave-running; its disk lease guards it)", "resource", inst)
			}
		}
	}
}

// keptLocked asks inst's agent whether it keeps inst running through an
// isolation, and until when that is guarded. Called with e.mu held.
func (e *Executor) keptLocked(inst string) (time.Time, bool) {
	r, ok := e.instByID[inst]
	res := r.Resource
	if !ok {
		res, ok = e.lastConfig[inst]
	}
	if !ok {
		return time.Time{}, false
	}
	a, err := e.cfg.Agents.Get(res.Agent)
	if err != nil {
		return time.Time{}, false
	}
	k, ok := a.(agents.IsolationKeeper)
	if !ok {
		return time.Time{}, false
	}
	return k.KeepsRunning(inst)
}

// UnguardedActive is LocalActive less the instances a self-stop left
// running (the isolation response leave-running) whose guard lasts at
// least until until. The agent pets its watchdog without a node lease
// only while this is 0 with until = now + the watchdog's reset time: a
// node frozen after its last pet is then reset before any other node may
// take the disk over.
func (e *Executor) UnguardedActive(until time.Time) (int, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	set := e.activeSetLocked(!e.localKnown)
	for inst := range set {
		if !e.kept[inst] {
			continue
		}
		if g, ok := e.keptLocked(inst); ok && !g.Before(until) {
			delete(set, inst)
		}
	}
	return len(set), slices.Sorted(maps.Keys(set))
}

func (e *Executor) localActive() (int, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	set := e.activeSetLocked(!e.localKnown)
	return len(set), slices.Sorted(maps.Keys(set))
}

// activeSetLocked returns the instances that may be active here; with
// records, also those this node's records in the store say are not
// stopped. Called with e.mu held.
func (e *Executor) activeSetLocked(records bool) map[string]bool {
	set := map[string]bool{}
	for inst, on := range e.local {
		if on {
			set[inst] = true
		}
	}
	if records {
		if e.cfg.Survivors != nil {
			for _, inst := range e.cfg.Survivors() {
				if !e.released[inst] {
					set[inst] = true
				}
			}
		}
		e.cfg.Store.Read(func(s *store.State) {
			for inst, r := range e.recordsOf(s) {
				// A record the current self-stop has answered with a
				// stop that succeeded is out of date (a self-stop cannot
				// write it): the instance is not active.
				if r.State != model.StateStopped && !e.released[inst] {
					set[inst] = true
				}
			}
		})
	}
	return set
}

// setLocal records what an outcome says of an instance here.
func (e *Executor) setLocal(inst, state string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if state == model.StateStopped {
		delete(e.local, inst)
	} else {
		e.local[inst] = true
	}
}

// beginSelfStopLocked marks the executor self-stopped, aborts everything
// queued or running (but earlier self-stops' stops), and starts the
// coordinator that stops what is active, unless one runs (it then runs
// once more). It returns a channel closed when the stops are done. Called
// with e.mu held.
func (e *Executor) beginSelfStopLocked(why string) <-chan struct{} {
	if !e.selfStopped {
		e.log.Error("executor: SELF-STOP: stopping every resource on this node without the cluster; it will rejoin and probe before running anything again", "why", why)
	} else {
		e.log.Warn("executor: self-stop requested again", "why", why)
	}
	e.selfStopped = true
	e.rejoinWanted = false
	e.stopGen++
	e.probed.Store(false)
	if e.joinCancel != nil {
		e.joinCancel()
	}
	for _, in := range e.insts {
		stopMonitor(in)
		kept := in.queue[:0]
		for _, j := range in.queue {
			switch {
			case j.selfStop:
				kept = append(kept, j)
			case j.mon != nil:
				j.done <- false
			case j.task != nil:
				delete(e.active, j.task.ID) // unanswered: the rejoin refuses it
			case j.cleanup:
				delete(e.cleaning, in.id)
			case j.restart:
				delete(e.restarting, in.id)
			}
		}
		in.queue = kept
		if in.cancel != nil && !in.selfStop {
			in.cancel()
		}
	}
	if e.stopping {
		e.stopAgain = true
		return e.stopDone
	}
	e.stopDone = make(chan struct{})
	if !e.started || e.closed {
		close(e.stopDone) // nothing runs without Run
		return e.stopDone
	}
	e.stopping = true
	e.wg.Add(1)
	go e.coordinateSelfStop(e.runCtx, e.stopDone)
	return e.stopDone
}

// coordinateSelfStop stops the active instances in waves that respect the
// configuration's order (dependents first), each wave's stops in parallel
// on the instances' queues.
func (e *Executor) coordinateSelfStop(ctx context.Context, done chan struct{}) {
	defer e.wg.Done()
	defer close(done)
	for {
		e.mu.Lock()
		e.stopAgain = false
		// The configuration cache is empty until the first reconcile or
		// probe: a self-stop before them (quorum lost while registering)
		// must still know how to stop what an earlier incarnation's
		// records say is active.
		e.cfg.Store.Read(func(s *store.State) { _ = e.refreshConfigLocked(s) })
		targets := e.activeSetLocked(true)
		e.keepLocked(targets)
		waves := stopWaves(targets, e.instByID, e.conf)
		e.mu.Unlock()
		if len(targets) > 0 {
			e.log.Warn("executor: self-stop: stopping", "instances", slices.Sorted(maps.Keys(targets)), "waves", len(waves))
		}
		for _, wave := range waves {
			var chans []chan bool
			e.mu.Lock()
			for _, inst := range wave {
				if e.closed || ctx.Err() != nil {
					break
				}
				ch := make(chan bool, 1)
				in := e.instanceLocked(inst)
				// First in line: whatever ran was aborted.
				in.queue = append([]job{{selfStop: true, stopped: ch}}, in.queue...)
				if !in.busy {
					in.busy = true
					e.wg.Add(1)
					go e.work(ctx, in)
				}
				chans = append(chans, ch)
			}
			e.mu.Unlock()
			for _, ch := range chans {
				select {
				case <-ch:
				case <-ctx.Done():
				}
			}
		}
		e.mu.Lock()
		again := e.stopAgain && ctx.Err() == nil && !e.closed
		if !again {
			e.stopping = false
			left := e.activeSetLocked(!e.localKnown)
			for inst := range e.kept {
				delete(left, inst)
			}
			e.mu.Unlock()
			if len(left) > 0 {
				e.log.Error("executor: SELF-STOP INCOMPLETE: still active here; the watchdog (if any) must reset this node", "instances", slices.Sorted(maps.Keys(left)))
			} else if len(targets) > 0 {
				e.log.Warn("executor: self-stop done: nothing runs here")
			}
			return
		}
		e.mu.Unlock()
	}
}

// runSelfStop stops one instance through its agent and writes nothing. It
// reports whether the instance is stopped.
func (e *Executor) runSelfStop(ctx context.Context, inst string) bool {
	e.mu.Lock()
	r, ok := e.instByID[inst]
	res := r.Resource
	if !ok {
		res, ok = e.lastConfig[inst]
	}
	e.mu.Unlock()
	log := e.log.With("resource", inst)
	if !ok {
		log.Error("executor: self-stop: no configuration known for this instance: cannot stop it")
		return false
	}
	op, _ := res.Op(model.OpStop)
	out := e.execAs(ctx, res, inst, agents.ActionStop, 0, op.Timeout.D(), nil, true)
	if out.Code != agents.CodeOK {
		log.Error("executor: self-stop: stop failed: it may still run", "rc", out.Code, "output", output(out))
		return false
	}
	e.mu.Lock()
	delete(e.local, inst)
	e.stoppedHere[inst] = e.cfg.Now()
	if e.selfStopped {
		e.released[inst] = true
	}
	e.mu.Unlock()
	log.Warn("executor: self-stop: stopped", "duration", out.Duration)
	return true
}

// waitRejoin waits until the agent asked to rejoin and the self-stop's
// stops have finished.
func (e *Executor) waitRejoin(ctx context.Context) error {
	t := time.NewTicker(rejoinPoll)
	defer t.Stop()
	for {
		e.mu.Lock()
		ready := e.rejoinWanted && !e.stopping
		if ready {
			for _, in := range e.insts {
				if in.busy {
					ready = false
				}
			}
		}
		if ready {
			e.rejoinWanted = false
		}
		e.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-e.kick:
		case <-t.C:
		}
	}
}

// stopsBefore maps each of targets to the targets that must stop before it
// (the later members of its group, the "then" side of its orders): those
// that depend on it.
func stopsBefore(targets map[string]bool, insts map[string]Instance, c model.Config) map[string][]string {
	groupOf := map[string]string{}
	pos := map[string]int{}
	for _, g := range c.Groups {
		for i, m := range g.Resources {
			groupOf[m] = g.ID
			pos[m] = i
		}
	}
	names := func(inst string) []string {
		in, ok := insts[inst]
		if !ok {
			return nil
		}
		out := []string{in.Resource.ID}
		if g := groupOf[in.Resource.ID]; g != "" {
			out = append(out, g)
		}
		if in.Clone != "" {
			out = append(out, in.Clone)
		}
		return out
	}
	suffix := func(inst string) string {
		if in, ok := insts[inst]; ok && in.Clone != "" {
			return inst[strings.LastIndexByte(inst, ':'):]
		}
		return ""
	}
	list := slices.Sorted(maps.Keys(targets))
	// before[a] lists the instances that must stop before a.
	before := map[string][]string{}
	for _, a := range list {
		for _, b := range list {
			if a == b {
				continue
			}
			ia, oka := insts[a]
			ib, okb := insts[b]
			if !oka || !okb {
				continue
			}
			ra, rb := ia.Resource.ID, ib.Resource.ID
			// A later member of the same group (same clone instance)
			// stops first.
			if g := groupOf[ra]; g != "" && g == groupOf[rb] && suffix(a) == suffix(b) && pos[rb] > pos[ra] {
				before[a] = append(before[a], b)
				continue
			}
			// Order first → then: then stops first.
			for _, o := range c.Orders {
				if o.IsSymmetrical() && slices.Contains(names(a), o.First) && slices.Contains(names(b), o.Then) {
					before[a] = append(before[a], b)
					break
				}
			}
		}
	}
	return before
}

// stopWaves orders the instances to stop: an instance stops only after
// those that depend on it (later members of its group, the "then" side of
// its order constraints) have stopped. Instances unknown to the
// configuration depend on nothing; those on a cycle stop together last.
func stopWaves(targets map[string]bool, insts map[string]Instance, c model.Config) [][]string {
	list := slices.Sorted(maps.Keys(targets))
	before := stopsBefore(targets, insts, c)
	var waves [][]string
	done := map[string]bool{}
	for len(done) < len(list) {
		var wave []string
		for _, a := range list {
			if done[a] {
				continue
			}
			ready := true
			for _, b := range before[a] {
				if !done[b] {
					ready = false
					break
				}
			}
			if ready {
				wave = append(wave, a)
			}
		}
		if len(wave) == 0 { // a cycle: the rest at once
			for _, a := range list {
				if !done[a] {
					wave = append(wave, a)
				}
			}
		}
		for _, a := range wave {
			done[a] = true
		}
		waves = append(waves, wave)
	}
	return waves
}
