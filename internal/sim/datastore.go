package sim

import (
	"slices"
	"strconv"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// The shared datastore and the isolation releases (internal/agent/
// heartbeat.go, internal/controller/isolation.go).
//
// Every cluster has one datastore, ds1, in its configuration. Every running
// node's agent writes its heartbeat slot there (the agent's beat: every
// hbTick it sets what its Heartbeater says, and writes when that changed or
// heartbeatEvery passed; a write still in flight makes the next one busy,
// so writes never overtake each other). While its executor is self-stopped
// the slot says "isolated", with the executor's release claim: the
// instances its self-stop stopped and the store index of its node record
// when the self-stop began (simExec.released, as executor.Released). The
// acting DC reads every slot every heartbeatRead into the real
// datastore.HeartbeatJudge, kicks its controller when a claim is there, and
// every round begins with the controller's releaseRound: for each claim,
// controller.ReleaseOps on the round's View, committed with the isolation
// record in one transaction guarded on the node record's version and the
// DC record; a round that committed a release plans nothing (the next one
// plans on the new state).
//
// What is modelled is the datastore itself: a slot holds the latest write
// that landed. A write lands after 1-20 ms, sometimes (3%) after 0.3-3 s; a
// read takes 2-30 ms, sometimes 0.3-2 s, and returns the slots as they were
// when it began. Storage faults (driver.storage) cut one node's access, or
// everyone's, for 1-10 s: a write due meanwhile either hangs and lands
// after the cut (a hard NFS mount) or fails; a read begun meanwhile fails
// (after datastoreCheckTimeout when the mount hangs). The final heal does
// not end them. So a claim may stop being written, the DC may go on seeing
// a node's old claim long after the node rejoined, and an old claim may
// land after newer news of a dead incarnation. Half of the faults hit a
// self-stopped node whose slot holds its claim.
//
// Report.StaleClaims counts the claims the node-index guard refused that
// would have released something; StaleClaimsRunning those naming an
// instance the node then runs again (the ground truth: without the guard,
// a second start). bugReleaseIgnoresIndex plants the release without the
// guard.

const (
	dsName = "ds1"
	dsPath = "/srv/vigil/ds1"

	// The agent's heartbeat timings (internal/agent/heartbeat.go).
	hbTick          = 100 * time.Millisecond
	heartbeatEvery  = time.Second
	heartbeatRead   = 500 * time.Millisecond
	heartbeatWindow = 3 * heartbeatEvery
	// datastoreCheckTimeout bounds a DC's read of the slots.
	datastoreCheckTimeout = 4 * time.Second
	// releaseTimeout bounds the commit of one release (the controller's).
	releaseTimeout = 5 * time.Second
)

// Datastore latencies: seeded, sometimes slow.
var (
	dsWriteTime = [2]time.Duration{time.Millisecond, 20 * time.Millisecond}
	dsSlowWrite = [2]time.Duration{300 * time.Millisecond, 3 * time.Second}
	dsReadTime  = [2]time.Duration{2 * time.Millisecond, 30 * time.Millisecond}
	dsSlowRead  = [2]time.Duration{300 * time.Millisecond, 2 * time.Second}
	dsCutTime   = [2]time.Duration{time.Second, 10 * time.Second}
)

const pDSSlow = 0.03

// dsModel is the cluster's shared datastore: the slots and the writes in
// flight. It outlives every node process.
type dsModel struct {
	c     *Cluster
	slots map[string]datastore.HeartbeatRecord
	// writes in flight, in the order they were issued (a writer has one
	// at most).
	writes []*hbWrite
	// cuts: until when node i's access is cut (0: not), and whether its
	// IO hangs (else fails); the last entry is everyone's.
	cutTill []time.Duration
	cutHang []bool
}

type hbWrite struct {
	w   *hbWriter
	rec datastore.HeartbeatRecord
	at  time.Duration // lands (or fails) then, unless its node's access is cut
}

func newDSModel(c *Cluster) *dsModel {
	return &dsModel{c: c, slots: map[string]datastore.HeartbeatRecord{},
		cutTill: make([]time.Duration, c.opts.Nodes+1), cutHang: make([]bool, c.opts.Nodes+1)}
}

// cut reports whether node i's IO on the datastore is cut at now, and
// whether it hangs.
func (ds *dsModel) cut(i int) (cut, hang bool) {
	now := ds.c.now
	all := len(ds.cutTill) - 1
	switch {
	case now < ds.cutTill[i]:
		return true, ds.cutHang[i]
	case now < ds.cutTill[all]:
		return true, ds.cutHang[all]
	}
	return false, false
}

// cutEnd is when node i's access comes back.
func (ds *dsModel) cutEnd(i int) time.Duration {
	return max(ds.cutTill[i], ds.cutTill[len(ds.cutTill)-1])
}

// StorageCut cuts node i's access to the datastore (i < 0: everyone's) for
// d; hang: its IO hangs until then (writes land after it), else fails.
func (c *Cluster) StorageCut(i int, d time.Duration, hang bool) {
	ds := c.ds
	if ds == nil {
		return
	}
	who, k := "everyone", len(ds.cutTill)-1
	if i >= 0 {
		who, k = c.n[i].name, i
	}
	if till := c.now + d; till > ds.cutTill[k] {
		ds.cutTill[k], ds.cutHang[k] = till, hang
	}
	how := "fails"
	if hang {
		how = "hangs"
	}
	c.rep.StorageCuts++
	c.tracef("storage: %s loses the datastore for %s (IO %s)", who, d, how)
}

// step lands (or fails) the writes that are due, in the order issued.
func (ds *dsModel) step() {
	c := ds.c
	kept := ds.writes[:0]
	for _, wr := range ds.writes {
		if c.now < wr.at {
			kept = append(kept, wr)
			continue
		}
		if cut, hang := ds.cut(wr.w.node); cut {
			if hang {
				// A hard mount: the request waits and goes through
				// once the mount is back.
				wr.at = ds.cutEnd(wr.w.node) + c.between(dsWriteTime[0], dsWriteTime[1])
				kept = append(kept, wr)
				continue
			}
			c.tracef("storage: heartbeat %d of %s (%s) not written: IO error", wr.rec.Counter, wr.rec.Node, wr.rec.State)
		} else {
			ds.slots[wr.rec.Node] = wr.rec
			if wr.rec.State == datastore.StateIsolated {
				c.tracef("storage: heartbeat %d of %s lands: isolated, released %v at index %d", wr.rec.Counter, wr.rec.Node, wr.rec.Released, wr.rec.NodeIndex)
			}
		}
		if wr.w.inflight == wr {
			wr.w.inflight = nil
		}
	}
	clear(ds.writes[len(kept):])
	ds.writes = kept
}

// hbWriter is one node incarnation's datastore.Heartbeater on ds1.
type hbWriter struct {
	node     int
	inc      string
	counter  uint64
	state    datastore.State
	released []string
	index    uint64
	inflight *hbWrite
	last     time.Duration // the latest beat started
}

// setState is Heartbeater.SetState.
func (w *hbWriter) setState(state datastore.State, released []string, index uint64) bool {
	if len(released) == 0 {
		released, index = nil, 0
	}
	changed := w.state != state || w.index != index || !slices.Equal(w.released, released)
	w.state, w.released, w.index = state, released, index
	return changed
}

// hbAgent is the agent's heartbeat loop state (agent.hbState): its writer
// and, while DC, its judge.
type hbAgent struct {
	cfgEpoch uint64
	cfgKnown bool
	hasDS    bool
	w        *hbWriter
	judge    *datastore.HeartbeatJudge
	lastRead time.Duration
	reading  *dsRead
}

type dsRead struct {
	slots []datastore.Slot // as they were when the read began
	done  time.Duration
	fail  bool
}

func newHBAgent() *hbAgent { return &hbAgent{lastRead: -time.Hour} }

// hbTick is one turn of the agent's heartbeatLoop (every hbTick): look up
// the datastores, beat, and while DC read the slots every heartbeatRead.
func (p *proc) hbTick() {
	n, c := p.n, p.n.cl
	h := p.hb
	if r := h.reading; r != nil && c.now >= r.done {
		h.reading = nil
		p.readDone(r)
	}
	if (c.now-n.tickPhase)%hbTick != 0 {
		return
	}
	n.core.Read(func(s *store.State) {
		if h.cfgKnown && s.Epoch() == h.cfgEpoch {
			return
		}
		ds, err := clusterstate.LoadDatastores(s)
		if err != nil {
			return
		}
		h.cfgEpoch, h.cfgKnown = s.Epoch(), true
		h.hasDS = slices.ContainsFunc(ds, func(d model.Datastore) bool { return d.Name == dsName })
	})
	if !h.hasDS {
		h.w = nil
		return
	}
	p.beat()
	switch {
	case p.dc.term != 0 && c.now-h.lastRead >= heartbeatRead:
		h.lastRead = c.now
		p.readSlots()
	case p.dc.term == 0:
		h.judge = nil // forgetHeartbeats: a later term starts afresh
	}
}

// beat is the agent's beat: set what the slot says, and write when that
// changed or heartbeatEvery passed.
func (p *proc) beat() {
	n, c := p.n, p.n.cl
	h := p.hb
	if h.w == nil {
		h.w = &hbWriter{node: n.idx, inc: strconv.FormatUint(n.boot, 16), state: datastore.StateAlive, last: -time.Hour}
	}
	w := h.w
	state := datastore.StateAlive
	var released []string
	var index uint64
	if p.ex.selfStopped {
		state = datastore.StateIsolated
		released, index = p.ex.releasedClaim()
	}
	changed := w.setState(state, released, index)
	if !changed && c.now-w.last < heartbeatEvery {
		return
	}
	w.last = c.now
	if w.inflight != nil {
		if changed {
			c.tracef("%s datastore heartbeat (%s, released %v) not written: the previous write is still pending", n.name, state, released)
		}
		return // datastore.ErrBusy
	}
	w.counter++
	rec := datastore.HeartbeatRecord{Node: n.name, Incarnation: w.inc, Counter: w.counter, State: w.state,
		Released: w.released, NodeIndex: w.index, Written: wall(c.now)}
	d := c.between(dsWriteTime[0], dsWriteTime[1])
	if c.chance(pDSSlow) {
		d = c.between(dsSlowWrite[0], dsSlowWrite[1])
	}
	wr := &hbWrite{w: w, rec: rec, at: c.now + d}
	w.inflight = wr
	c.ds.writes = append(c.ds.writes, wr)
	if changed && state == datastore.StateIsolated {
		c.tracef("%s datastore heartbeat %d: isolated, released %v at index %d", n.name, w.counter, w.released, w.index)
	}
}

// readSlots begins a read of every slot (one at a time).
func (p *proc) readSlots() {
	n, c := p.n, p.n.cl
	h := p.hb
	if h.reading != nil {
		return
	}
	if h.judge == nil {
		h.judge = datastore.NewHeartbeatJudge()
	}
	r := &dsRead{}
	if cut, hang := c.ds.cut(n.idx); cut {
		r.fail, r.done = true, c.now+StepDuration
		if hang {
			r.done = c.now + datastoreCheckTimeout
		}
	} else {
		for _, name := range sortedKeys(c.ds.slots) {
			r.slots = append(r.slots, datastore.Slot{Node: name, Record: c.ds.slots[name]})
		}
		d := c.between(dsReadTime[0], dsReadTime[1])
		if c.chance(pDSSlow) {
			d = c.between(dsSlowRead[0], dsSlowRead[1])
		}
		r.done = c.now + d
	}
	h.reading = r
}

// readDone feeds a finished read to the judge, and kicks the controller
// when there is a claim.
func (p *proc) readDone(r *dsRead) {
	h := p.hb
	if r.fail || h.judge == nil {
		return
	}
	h.judge.ObserveSlots(r.slots, p.n.cl.now)
	if len(p.releaseClaims()) > 0 {
		p.dcDirty = true
	}
}

// releaseClaims is the agent's releaseClaims: every isolation claim the
// judge holds.
func (p *proc) releaseClaims() []controller.ReleaseClaim {
	j := p.hb.judge
	if j == nil {
		return nil
	}
	now := p.n.cl.now
	var out []controller.ReleaseClaim
	for _, n := range j.Nodes() {
		rec, ok := j.Latest(n)
		if !ok || rec.State != datastore.StateIsolated || len(rec.Released) == 0 || rec.NodeIndex == 0 {
			continue
		}
		boot, err := strconv.ParseUint(rec.Incarnation, 16, 64)
		if err != nil {
			continue
		}
		out = append(out, controller.ReleaseClaim{
			Node: n, BootID: boot, NodeIndex: rec.NodeIndex, Resources: rec.Released,
			Datastore: dsName, Beating: j.Beating(n, now, heartbeatWindow),
		})
	}
	return out
}

// releaseRun is the controller's releaseRound in progress: its
// transactions, proposed one after the other (each Propose blocks the
// loop), then, if none committed, the rest of the round on the same View.
type releaseRun struct {
	term      uint64
	v         controller.View
	txns      []releaseTxn
	next      int
	committed bool
}

type releaseTxn struct {
	cl       controller.ReleaseClaim
	txn      store.Txn
	released []string
}

// startRelease is the beginning of Controller.releaseRound: it computes
// the releases the claims allow and proposes the first. It reports whether
// the round now waits for them.
func (d *simDC) startRelease(term uint64, v controller.View) bool {
	c, n := d.c, d.n
	claims := n.p.releaseClaims()
	if len(claims) == 0 {
		return false
	}
	var prior map[string]model.IsolationRecord
	n.core.Read(func(s *store.State) { prior = clusterstate.Isolations(s) })
	run := &releaseRun{term: term, v: v}
	done := map[string]bool{}
	for _, cl := range claims {
		if done[cl.Node] {
			continue
		}
		if rec, ok := v.NodeRecords[cl.Node]; ok && c.opts.bug == bugReleaseIgnoresIndex && rec.Index != cl.NodeIndex {
			// The planted bug: the claim is taken as tied to whatever
			// record the node has now.
			c.tracef("%s DC (planted bug): takes the claim of %s at index %d as tied to its record at index %d", n.name, cl.Node, cl.NodeIndex, rec.Index)
			cl.NodeIndex = rec.Index
		}
		txn, released, ok := controller.ReleaseTxn(v, cl, prior, wall(c.now))
		if !ok {
			d.noteStale(v, cl)
			continue
		}
		done[cl.Node] = true
		run.txns = append(run.txns, releaseTxn{cl: cl, txn: txn, released: released})
	}
	if len(run.txns) == 0 {
		return false
	}
	d.rel = run
	d.proposeRelease()
	return true
}

// proposeRelease proposes the run's next release.
func (d *simDC) proposeRelease() {
	r := d.rel
	t := r.txns[r.next]
	d.c.tracef("%s DC releases %v of isolated %s (claim of boot %d at index %d, read on %s, beating %t)",
		d.n.name, t.released, t.cl.Node, t.cl.BootID, t.cl.NodeIndex, t.cl.Datastore, t.cl.Beating)
	d.propose(t.txn, &oneShot{term: r.term, release: true}, releaseTimeout)
}

// releaseDone takes the outcome of the release in flight, and proposes
// the next one or ends the release round: a round that committed a
// release ends there, else it plans on the View it read.
func (d *simDC) releaseDone(err error) {
	c := d.c
	r := d.rel
	t := r.txns[r.next]
	if err != nil {
		c.tracef("%s: isolation release of %v on %s not recorded: %v", d.n.name, t.released, t.cl.Node, err)
	} else {
		r.committed = true
		c.rep.Releases++
		c.tracef("%s recovers what %s released on the datastore: %v", d.n.name, t.cl.Node, t.released)
	}
	r.next++
	if r.next < len(r.txns) {
		d.proposeRelease()
		return
	}
	d.rel = nil
	if !r.committed {
		d.plan(r.term, r.v)
	}
}

// noteStale counts, once each, the claims the node-index guard refused
// although they name an instance the node's current record would let go:
// the claims that would release a running instance without the guard.
func (d *simDC) noteStale(v controller.View, cl controller.ReleaseClaim) {
	c := d.c
	rec, ok := v.NodeRecords[cl.Node]
	if !ok || rec.BootID != cl.BootID || rec.Index == cl.NodeIndex {
		return
	}
	key := cl.Node + "/" + strconv.FormatUint(cl.BootID, 10) + "/" + strconv.FormatUint(cl.NodeIndex, 10) + "/" + strconv.FormatUint(rec.Index, 10)
	if c.staleSeen[key] {
		return
	}
	cur := cl
	cur.NodeIndex = rec.Index
	if ops, _, released := controller.ReleaseOps(v, cur); len(ops) > 0 {
		c.staleSeen[key] = true
		c.rep.StaleClaims++
		var running []string
		if n := c.byName(cl.Node); n.truth != nil {
			for _, r := range released {
				if t := n.truth[r]; t != nil && t.active {
					running = append(running, r)
				}
			}
		}
		if len(running) > 0 {
			c.rep.StaleClaimsRunning++
		}
		c.tracef("%s: stale claim of %s (index %d, record now at %d) not honoured: it would release %v (running there: %v)", d.n.name, cl.Node, cl.NodeIndex, rec.Index, released, running)
	}
}
