package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/executor"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// The whole-system layer: on every node, the agent's executor with
// simulated agents and its self-stop; on the DC, the controller's round;
// fence devices; an operator; and the ground truth the checkers read.

// Invariants of the whole-system layer.
const (
	InvNeverTwice    = "never twice"
	InvRecovered     = "recovered after heal"
	InvConfigWrites  = "acknowledged configuration changes survive"
	InvFalseFailover = "no false failover"
)

// clientPrefix holds the client writes of the whole-system runs (status
// keys: they do not move the epoch, and nothing of Vigil reads them).
const clientPrefix = store.StatusPrefix + "sim-client/"

// epoch0 is the wall clock at simulated time 0 (records and tasks carry
// wall times; the simulation has one clock).
var epoch0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func wall(d time.Duration) time.Time { return epoch0.Add(d) }

// Timings of the modelled parts (the real ones where the code has them).
const (
	// proposeTimeout is the executor's and the DC round's write timeout
	// (executor.proposeTimeout, controller.round); takeOverTimeout is the
	// DC takeover's.
	proposeTimeout  = 10 * time.Second
	takeOverTimeout = 5 * time.Second
	minBackoff      = 50 * time.Millisecond
	maxBackoff      = 2 * time.Second
	// recheck is the controller's Config.Recheck default; roundRetry the
	// pause after a failed round.
	recheck    = time.Second
	roundRetry = 100 * time.Millisecond
	// roundGap is the least simulated time between two rounds of one DC:
	// rounds are instantaneous here, and a real one takes a read, a
	// schedule and a commit; results that arrive meanwhile are batched.
	roundGap = 50 * time.Millisecond
	// fenceRetry is the controller's pause after a failed fence.
	fenceRetry = 10 * time.Second
	// fenceIntentTimeout and fenceIntentRetry are the controller's: how
	// long a fence's intent may take to commit, and the pause after it
	// did not.
	fenceIntentTimeout = 2 * time.Second
	fenceIntentRetry   = time.Second
	// probeParallelism is the executor's default.
	probeParallelism = 8
	// monitorInterval is every resource's recurring monitor.
	monitorInterval = 2 * time.Second
)

// Agent behaviour: seeded durations and rare failures.
var (
	startTime   = [2]time.Duration{50 * time.Millisecond, 800 * time.Millisecond}
	stopTime    = [2]time.Duration{20 * time.Millisecond, 400 * time.Millisecond}
	monitorTime = [2]time.Duration{5 * time.Millisecond, 50 * time.Millisecond}
	fenceTime   = [2]time.Duration{300 * time.Millisecond, 3 * time.Second}
	rebootTime  = [2]time.Duration{time.Second, 6 * time.Second}
)

const (
	pStartFail = 0.02
	pStopFail  = 0.01
	pFenceFail = 0.05
)

// resTruth is the ground truth of one instance on one node: active from the
// moment a start begins until a stop succeeds (a failed start or stop, a
// fault or an aborted action may leave it active), or until the node
// powers off.
type resTruth struct {
	active  bool
	faulted bool // a monitor fails (the resource broke; it may still hold its data)
	stuck   bool // (tests) its stops fail
}

// system is the whole-system state of a Cluster.
type system struct {
	c *Cluster

	// configured: the operator's initial configuration was acknowledged.
	configured bool
	nextRes    int
	// cfgAcked lists the acknowledged configuration transactions, in ack
	// order; cfgValues every value ever proposed per configuration key.
	cfgAcked  []ackedTxn
	cfgValues map[string]map[uint64]bool

	// warm: the cluster has been recovered once (the quiet class checks
	// false failovers from then on).
	warm bool
	// lastCheck is when the quiet class last tried whether it is warm.
	lastCheck time.Duration
}

type ackedTxn struct {
	index uint64
	ops   []store.Op
}

func newSystem(c *Cluster) *system {
	return &system{c: c, cfgValues: map[string]map[uint64]bool{}}
}

// proc is the agent of a running node, its system part.
type proc struct {
	n  *node
	ex *simExec
	dc *simDC
	// The agent's lease loop (internal/agent/lease.go), without a
	// watchdog: quorate once in this incarnation, and a self-stop running.
	wasQuorate bool
	stopping   bool
	// exDirty / dcDirty: the store (or membership) changed since the
	// executor / the DC last looked.
	exDirty, dcDirty bool
	own              []string // key prefixes of this node's status
	// hb is the agent's datastore heartbeat loop (datastore.go).
	hb *hbAgent
}

func (s *system) newProc(n *node) *proc {
	p := &proc{n: n, exDirty: true, dcDirty: true, hb: newHBAgent(), own: []string{
		clusterstate.PrefixTasks + n.name + "/", clusterstate.PrefixResults + n.name + "/",
		clusterstate.PrefixRecords + n.name + "/", clusterstate.NodeKey(n.name),
		clusterstate.PrefixCleanup + n.name + "/", clusterstate.PrefixRestart + n.name + "/",
	}}
	if n.truth == nil { // (an agent restart finds its resources running)
		n.truth = map[string]*resTruth{}
	}
	p.ex = newSimExec(s.c, n)
	p.dc = newSimDC(s.c, n)
	return p
}

// changed is the disk's report of what one Save applied on node idx.
func (s *system) changed(idx int, ch *store.Changes) {
	p := s.c.n[idx].p
	if p == nil {
		return
	}
	if ch.Reset {
		p.exDirty, p.dcDirty = true, true
		return
	}
	for _, kv := range ch.Put {
		p.note(kv.Key)
	}
	for _, k := range ch.Delete {
		p.note(k)
	}
}

// note marks what a changed key wakes. The DC's round reads all of the
// configuration and status; an executor only its own node's status, the DC
// record and the configuration (the real executor wakes on every change,
// and its reconcile does nothing new on the others).
func (p *proc) note(key string) {
	cfg := strings.HasPrefix(key, clusterstate.PrefixConfig)
	if !cfg && (!strings.HasPrefix(key, store.StatusPrefix) || strings.HasPrefix(key, clientPrefix)) {
		return
	}
	p.dcDirty = true
	if p.exDirty || cfg || key == clusterstate.KeyDC {
		p.exDirty = true
		return
	}
	for _, pre := range p.own {
		if strings.HasPrefix(key, pre) {
			p.exDirty = true
			return
		}
	}
}

// step runs every up node's agent for one StepDuration.
func (s *system) step() {
	c := s.c
	for _, n := range c.n {
		if !n.up && n.rebootAt != 0 && c.now >= n.rebootAt {
			c.Restart(n.idx) // back after the fence's power cycle
		}
	}
	c.ds.step()
	for _, n := range c.n {
		if !n.up || n.p == nil {
			continue
		}
		c.active = n
		n.p.leaseTick()
		if n.p == nil {
			continue
		}
		n.p.ex.tick()
		if n.p == nil {
			continue
		}
		n.p.hbTick()
		n.p.dc.tick()
	}
	if c.opts.Quiet && !s.warm && c.now-s.lastCheck >= 500*time.Millisecond && s.configured {
		s.lastCheck = c.now
		if ok, _ := s.recovered(); ok {
			s.warm = true
			c.rep.WarmAt = c.now
			c.tracef("warm: every resource placed; no failover from here on")
		}
	}
}

// leaseTick is the agent's self-stop decision (internal/agent/lease.go,
// leaseTick, without a watchdog): a node that was quorate in this
// incarnation and lost quorum, with something active, stops it itself; once
// quorate again it rejoins.
func (p *proc) leaseTick() {
	n := p.n
	quorate := n.quorate
	ending := false
	if quorate {
		p.wasQuorate = true
	} else if p.wasQuorate {
		ending = true
	}
	ex := p.ex
	switch {
	case ending && !p.stopping && ex.localActive() > 0:
		p.stopping = true
		n.cl.rep.SelfStops++
		n.cl.tracef("%s SELF-STOP: quorum lost", n.name)
		ex.beginSelfStop("quorum lost", func() { p.stopping = false })
	case !ending && quorate && ex.selfStopped:
		ex.rejoin()
	}
}

// agentBegin starts an agent action on node n: a start makes the instance
// active at once (never twice is checked here: it is the only way an
// instance becomes active). It returns how long the action takes.
func (c *Cluster) agentBegin(n *node, inst, action string) time.Duration {
	switch action {
	case agents.ActionStart:
		c.rep.Starts++
		c.noteFailover(n, "start", inst)
		t := n.truth[inst]
		if t == nil {
			t = &resTruth{}
			n.truth[inst] = t
		}
		t.active = true
		for _, o := range c.n {
			// (o.truth is nil once o is powered off; a node whose agent
			// died still runs what it ran.)
			if o != n && o.truth[inst] != nil && o.truth[inst].active {
				c.violate(InvNeverTwice, "%s starts on %s while active on %s", inst, n.name, o.name)
			}
		}
		return c.between(startTime[0], startTime[1])
	case agents.ActionStop:
		c.rep.Stops++
		c.noteFailover(n, "stop", inst)
		return c.between(stopTime[0], stopTime[1])
	}
	return c.between(monitorTime[0], monitorTime[1])
}

// agentEnd finishes an agent action and returns its result.
func (c *Cluster) agentEnd(n *node, inst, action string, took time.Duration) agents.Result {
	t := n.truth[inst]
	if t == nil {
		t = &resTruth{}
		n.truth[inst] = t
	}
	res := agents.Result{Code: agents.CodeOK, Duration: took}
	switch action {
	case agents.ActionStart:
		if c.chance(pStartFail) {
			t.faulted = true
			res.Code, res.Output = agents.CodeErrGeneric, "simulated start failure"
			c.tracef("%s start of %s fails", n.name, inst)
		} else {
			t.faulted = false
		}
	case agents.ActionStop:
		if c.chance(pStopFail) || t.stuck {
			res.Code, res.Output = agents.CodeErrGeneric, "simulated stop failure"
			c.tracef("%s stop of %s fails", n.name, inst)
		} else {
			t.active, t.faulted = false, false
		}
	default: // monitor, probe
		switch {
		case !t.active:
			res.Code = agents.CodeNotRunning
		case t.faulted && c.opts.bug != bugBlindMonitor:
			res.Code, res.Output = agents.CodeErrGeneric, "simulated fault"
		}
	}
	return res
}

// noteFailover: in the quiet class, once warm, no start or stop may happen.
func (c *Cluster) noteFailover(n *node, what, inst string) {
	if c.opts.Quiet && c.sys.warm {
		c.violate(InvFalseFailover, "%s of %s on %s under loss and jitter alone", what, inst, n.name)
	}
}

// recovered reports whether the cluster has converged on its plan: one DC
// acting in its term, every node up, quorate, registered and probed, a plan
// with nothing left to do, the ground truth exactly as placed, and (when no
// fail count bans anything) every enabled instance placed.
func (s *system) recovered() (bool, string) {
	c := s.c
	var dc *node
	for _, n := range c.n {
		switch {
		case !n.up || n.p == nil:
			return false, n.name + " down"
		case !n.quorate:
			return false, n.name + " not quorate"
		case n.p.ex.phase != exServe || !n.p.ex.probed:
			return false, n.name + " executor not serving"
		case n.leader:
			dc = n
		}
	}
	if dc == nil {
		return false, "no DC"
	}
	st := dc.core.Status()
	if dc.p.dc.term != st.Term {
		return false, fmt.Sprintf("%s not acting as DC in term %d", dc.name, st.Term)
	}
	if !s.configured {
		return false, "not configured"
	}
	var v controller.View
	var err error
	dc.core.Read(func(st *store.State) { v, err = controller.ReadView(st) })
	if err != nil {
		return false, "read view: " + err.Error()
	}
	for _, n := range c.n {
		rec := v.NodeRecords[n.name]
		if rec.BootID != n.boot || rec.Probed != n.boot || (rec.Down != nil && rec.Down.BootID == rec.BootID) {
			return false, n.name + " not registered and probed"
		}
	}
	snap := v.Snapshot(func(string) bool { return true }, wall(c.now))
	plan := scheduler.Compute(snap)
	switch {
	case len(snap.Pending) > 0:
		return false, fmt.Sprintf("%d tasks pending", len(snap.Pending))
	case len(plan.Actions) > 0:
		return false, fmt.Sprintf("%d actions planned (%s %s)", len(plan.Actions), plan.Actions[0].Kind, plan.Actions[0].Resource)
	case len(plan.Blocked) > 0:
		return false, "blocked: " + plan.Blocked[0].Resource + ": " + plan.Blocked[0].Reason
	case len(plan.Fence) > 0:
		return false, "fence wanted: " + plan.Fence[0].Node
	}
	placed := map[string]string{}
	for _, p := range plan.Placements {
		placed[p.Resource] = p.Node
	}
	eligible := 0
	for _, ni := range plan.Nodes {
		if ni.Eligible {
			eligible++
		}
	}
	cloneMax := map[string]int{}
	for _, cl := range v.Config.Clones {
		cloneMax[cl.ID] = cl.Max
	}
	recs := map[string]model.ResourceRecord{}
	// banned: a fail count has reached the threshold somewhere, for the
	// resource or a member of its group (then the scheduler may rightly
	// leave it stopped).
	banned := map[string]bool{}
	groupOf := map[string]string{}
	for _, g := range v.Config.Groups {
		for _, m := range g.Resources {
			groupOf[m] = g.ID
		}
	}
	for _, r := range v.Records {
		recs[r.Node+"/"+r.Resource] = r
		if r.FailCount >= model.DefaultMigrationThreshold {
			banned[r.Resource] = true
			if g := groupOf[r.Resource]; g != "" {
				banned[g] = true
			}
		}
	}
	for _, in := range executor.Instances(v.Config, len(v.Members)) {
		want, ok := placed[in.ID]
		if !ok {
			return false, "no placement for " + in.ID
		}
		roomy := eligible > 0 && (in.Clone == "" || cloneMax[in.Clone] <= eligible)
		if want == "" && roomy && in.Resource.Enabled() && !banned[in.ID] && !banned[groupOf[in.ID]] {
			return false, in.ID + " placed nowhere, with no fail count at the threshold"
		}
		for _, n := range c.n {
			t := n.truth[in.ID]
			active := t != nil && t.active
			switch {
			case n.name == want && !active:
				return false, fmt.Sprintf("%s placed on %s but not running there", in.ID, want)
			case n.name == want && t.faulted:
				return false, fmt.Sprintf("%s faulted on %s", in.ID, want)
			case n.name == want && recs[want+"/"+in.ID].State != model.StateStarted:
				return false, fmt.Sprintf("%s running on %s but recorded %q", in.ID, want, recs[want+"/"+in.ID].State)
			case n.name != want && active:
				return false, fmt.Sprintf("%s active on %s, placed on %q", in.ID, n.name, want)
			}
		}
	}
	for _, n := range c.n {
		for _, inst := range sortedKeys(n.truth) {
			if _, ok := placed[inst]; !ok && n.truth[inst].active {
				return false, fmt.Sprintf("%s active on %s but not configured", inst, n.name)
			}
		}
	}
	return true, ""
}

// stuckDC returns the DC when one of its own node's resources has a failed
// stop: the plan wants that node fenced, and a DC never fences itself.
func (s *system) stuckDC() *node { return s.stopFailed(true) }

// stopFailed returns a node (the DC, with dcOnly) one of whose resources
// has a failed stop, as its own records say.
func (s *system) stopFailed(dcOnly bool) *node {
	for _, n := range s.c.n {
		if !n.up || n.p == nil || (dcOnly && (!n.leader || !n.quorate)) {
			continue
		}
		stuck := false
		n.core.Read(func(st *store.State) {
			for _, r := range n.p.ex.records(st) {
				if r.State == model.StateStopFailed {
					stuck = true
				}
			}
		})
		if stuck {
			return n
		}
	}
	return nil
}

// checkConfigWrites: every acknowledged configuration write is in the final
// state, unless a later committed write replaced it.
func (s *system) checkConfigWrites() {
	c := s.c
	n := c.n[0]
	for _, a := range s.cfgAcked {
		for _, op := range a.ops {
			if op.Delete {
				continue
			}
			var it store.Item
			var ok bool
			n.core.Read(func(st *store.State) { it, ok = st.Get(op.Key) })
			switch {
			case !ok:
				c.violate(InvConfigWrites, "%s, acknowledged at index %d, is gone", op.Key, a.index)
				return
			case it.Index < a.index:
				c.violate(InvConfigWrites, "%s, acknowledged at index %d, holds an older write (index %d)", op.Key, a.index, it.Index)
				return
			case it.Index == a.index && string(it.Value) != string(op.Value):
				c.violate(InvConfigWrites, "%s at index %d holds another value than acknowledged", op.Key, a.index)
				return
			case !s.cfgValues[op.Key][valueHash(it.Value)]:
				c.violate(InvConfigWrites, "%s holds a value nobody wrote", op.Key)
				return
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
