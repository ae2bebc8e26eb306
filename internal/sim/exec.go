package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/executor"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// simExec is one incarnation's executor (internal/executor), re-enacted in
// simulated time: the same life (register, refuse stale tasks, probe, set
// Probed, serve; self-stop and rejoin), the same per-instance queues, the
// same keys and records. Its decisions (refusals, records after an action,
// probe states, self-stop waves) are the executor's own functions. What is
// modelled: goroutines become state machines stepped every StepDuration,
// agents are simulated (agentBegin/agentEnd), and every write is the
// executor's commit loop (retry with backoff, 10 s per attempt).
type simExec struct {
	c    *Cluster
	n    *node
	boot uint64

	phase  int // exJoin, exServe, exWaitRejoin
	join   *joinRun
	probed bool
	joins  int

	selfStopped, stopping, stopAgain, rejoinWanted bool
	stopGen                                        uint64
	coord                                          *coordRun
	onStopped                                      []func()

	localKnown  bool
	local       map[string]bool
	lastConfig  map[string]model.Resource
	stoppedHere map[string]time.Duration
	active      map[string]bool // task IDs refused, queued or running
	insts       map[string]*simInst
	ids         []string // sorted keys of insts
	refusing    *refusalRun
	kick        bool

	// released is the release claim (executor.Released): what self-stops
	// stopped since the last registration; it is tied to this node's
	// record as the node sees it when the claim is read.
	released map[string]bool

	cfgEpoch uint64
	conf     model.Config
	instByID map[string]executor.Instance
	recCache map[string]cachedRec
}

const (
	exJoin = iota
	exServe
	exWaitRejoin
)

type cachedRec struct {
	index uint64
	rec   model.ResourceRecord
	ok    bool
}

type refusalRun struct {
	cr  *commitRun
	ids []string
}

type jobKind int

const (
	jobTask jobKind = iota
	jobMon
	jobSelfStop
)

const (
	jobQueued = iota
	jobOp
	jobCommit
	jobDone
)

// sjob is one entry of an instance's queue.
type sjob struct {
	kind   jobKind
	task   model.Task
	mon    *smon
	stage  int
	action string
	opFrom time.Duration
	opEnd  time.Duration
	old    model.ResourceRecord
	found  bool
	cr     *commitRun
	// outcomes, as the executor's worker reads them
	answered, failed, stopped bool
}

// smon is a recurring monitor (executor.monitor).
type smon struct {
	inst   string
	res    model.Resource
	op     model.Op
	key    string
	nextAt time.Duration
	queued bool
	dead   bool
}

type simInst struct {
	id    string
	queue []*sjob
	cur   *sjob
	mon   *smon
}

func newSimExec(c *Cluster, n *node) *simExec {
	e := &simExec{
		c: c, n: n, boot: n.boot,
		local: map[string]bool{}, lastConfig: map[string]model.Resource{}, stoppedHere: map[string]time.Duration{},
		active: map[string]bool{}, insts: map[string]*simInst{}, recCache: map[string]cachedRec{},
		released: map[string]bool{},
	}
	e.startJoin(false)
	return e
}

// ---- writes ----

// commitRun is one write the executor (or the join) must get committed: the
// executor's commit, which retries the same transaction until it commits or
// the state machine rejects it.
type commitRun struct {
	cmd      store.Txn
	timeout  time.Duration
	attempt  int
	id       uint64
	deadline time.Duration
	retryAt  time.Duration
	backoff  time.Duration
	done     bool
	err      error
	index    uint64
	wake     func()
}

var errAborted = errors.New("sim: aborted")

func (c *Cluster) newCommit(ops []store.Op, wake func()) *commitRun {
	return &commitRun{cmd: store.Txn{Ops: ops}, timeout: proposeTimeout, retryAt: c.now, backoff: minBackoff, wake: wake}
}

// proposeFn proposes cmd on n; fn receives the Result when the proposal is
// applied there (never if it is lost, or n crashes first).
func (c *Cluster) proposeFn(n *node, cmd store.Command, fn func(store.Result)) (uint64, error) {
	c.nextWait++
	id := c.nextWait
	c.pending[id] = proposal{node: n.idx, inc: n.inc, fn: fn}
	c.active = n
	if err := n.core.Propose(id, cmd); err != nil {
		delete(c.pending, id)
		return 0, err
	}
	c.processAll(n)
	return id, nil
}

// stepCommit advances a write: proposes when due, gives an attempt up after
// its timeout (the write may still commit), and backs off between attempts.
func (c *Cluster) stepCommit(n *node, cr *commitRun) {
	if cr.done || !n.up {
		return
	}
	if cr.id != 0 {
		if c.now < cr.deadline {
			return
		}
		delete(c.pending, cr.id)
		cr.id = 0
		cr.retryAt = c.now + cr.backoff
		cr.backoff = min(2*cr.backoff, maxBackoff)
		return
	}
	if c.now < cr.retryAt {
		return
	}
	cr.attempt++
	att := cr.attempt
	id, err := c.proposeFn(n, cr.cmd, func(r store.Result) {
		if cr.attempt != att || cr.done {
			return
		}
		cr.id, cr.done, cr.index, cr.err = 0, true, r.Index, r.Err
		if cr.wake != nil {
			cr.wake()
		}
	})
	switch {
	case cr.done:
	case err != nil:
		cr.retryAt = c.now + cr.backoff
		cr.backoff = min(2*cr.backoff, maxBackoff)
	default:
		cr.id, cr.deadline = id, c.now+cr.timeout
	}
}

// abortCommit stops waiting for a write (its context ended). A proposal in
// flight may still commit.
func (c *Cluster) abortCommit(cr *commitRun) {
	if cr == nil || cr.done {
		return
	}
	if cr.id != 0 {
		delete(c.pending, cr.id)
		cr.id = 0
	}
	cr.done, cr.err = true, errAborted
}

func (e *simExec) wake() { e.kick = true }

func (e *simExec) commit(ops []store.Op) *commitRun {
	cr := e.c.newCommit(ops, e.wake)
	e.c.stepCommit(e.n, cr)
	return cr
}

func (e *simExec) resultOp(r model.TaskResult) store.Op {
	r.V = clusterstate.FormatVersion
	r.Node = e.n.name
	return store.Op{Key: clusterstate.ResultKey(e.n.name, r.ID), Value: clusterstate.Encode(r)}
}

func (e *simExec) recordOp(r model.ResourceRecord) store.Op {
	return store.Op{Key: clusterstate.RecordKey(e.n.name, r.Resource), Value: clusterstate.Encode(r)}
}

func (e *simExec) baseRecord(old model.ResourceRecord, found bool, inst string) model.ResourceRecord {
	if !found {
		return model.ResourceRecord{V: clusterstate.FormatVersion, Resource: inst, Node: e.n.name, State: model.StateStopped}
	}
	old.V = clusterstate.FormatVersion
	old.Resource = inst
	old.Node = e.n.name
	return old
}

// ---- reading ----

func decodeStrict(key string, b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// records returns this node's resource records (decoded once per write).
func (e *simExec) records(s *store.State) map[string]model.ResourceRecord {
	prefix := clusterstate.PrefixRecords + e.n.name + "/"
	out := map[string]model.ResourceRecord{}
	s.Range(prefix, func(k string, it store.Item) bool {
		cr, ok := e.recCache[k]
		if !ok || cr.index != it.Index {
			var r model.ResourceRecord
			err := decodeStrict(k, it.Value, &r)
			cr = cachedRec{index: it.Index, rec: r, ok: err == nil}
			e.recCache[k] = cr
		}
		if cr.ok {
			out[strings.TrimPrefix(k, prefix)] = cr.rec
		}
		return true
	})
	return out
}

func (e *simExec) record(s *store.State, inst string) (model.ResourceRecord, bool) {
	k := clusterstate.RecordKey(e.n.name, inst)
	it, ok := s.Get(k)
	if !ok {
		return model.ResourceRecord{}, false
	}
	var r model.ResourceRecord
	if decodeStrict(k, it.Value, &r) != nil {
		return r, false
	}
	return r, true
}

func (e *simExec) maintenance(s *store.State) bool {
	if it, ok := s.Get(clusterstate.PropertyKey(model.PropMaintenanceMode)); ok {
		if b, _ := strconv.ParseBool(strings.TrimSpace(string(it.Value))); b {
			return true
		}
	}
	k := clusterstate.NodeConfigKey(e.n.name)
	if it, ok := s.Get(k); ok {
		var nc model.NodeConfig
		if decodeStrict(k, it.Value, &nc) == nil && nc.Maintenance {
			return true
		}
	}
	return false
}

func (e *simExec) refreshConfig(s *store.State, force bool) {
	if !force && e.instByID != nil && s.Epoch() == e.cfgEpoch {
		return
	}
	conf, err := clusterstate.LoadConfig(s)
	if err != nil {
		e.c.violate(InvCrash, "%s executor: load configuration: %v", e.n.name, err)
		return
	}
	e.conf, e.cfgEpoch = conf, s.Epoch()
	e.instByID = map[string]executor.Instance{}
	runners := 0
	for _, m := range s.Members() {
		if m.Role != store.RoleWitness {
			runners++
		}
	}
	for _, in := range executor.Instances(conf, runners) {
		e.instByID[in.ID] = in
	}
}

type taskEntry struct {
	id   string
	task model.Task
	err  error
}

type exView struct {
	downNow bool
	dcTerm  uint64
	maint   bool
	tasks   []taskEntry
	records map[string]model.ResourceRecord
}

func (e *simExec) readView(s *store.State) exView {
	e.refreshConfig(s, false)
	v := exView{dcTerm: clusterstate.DC(s).Term, maint: e.maintenance(s), records: e.records(s)}
	if rec := clusterstate.NodeRecord(s, e.n.name); rec.BootID == e.boot && rec.Down != nil && rec.Down.BootID == e.boot {
		v.downNow = true
	}
	prefix := clusterstate.PrefixTasks + e.n.name + "/"
	s.Range(prefix, func(k string, it store.Item) bool {
		id := strings.TrimPrefix(k, prefix)
		if e.active[id] {
			return true
		}
		if _, done := s.Get(clusterstate.ResultKey(e.n.name, id)); done {
			return true
		}
		te := taskEntry{id: id}
		te.err = decodeStrict(k, it.Value, &te.task)
		v.tasks = append(v.tasks, te)
		return true
	})
	return v
}

// ---- the loop ----

// tick runs the executor for one step: the join, the workers, the
// self-stop coordinator, the rejoin, a reconcile when the store changed or
// a worker finished, and the recurring monitors.
func (e *simExec) tick() {
	c, p := e.c, e.n.p
	if e.join != nil {
		e.stepJoin()
	}
	if e.refusing != nil {
		c.stepCommit(e.n, e.refusing.cr)
		if e.refusing.cr.done {
			for _, id := range e.refusing.ids {
				delete(e.active, id)
			}
			e.refusing = nil
			e.kick = true
		}
	}
	e.stepAll()
	if e.coord != nil {
		e.stepCoord()
		e.stepAll()
	}
	if e.phase == exWaitRejoin && e.rejoinWanted && !e.stopping && e.idle() {
		e.rejoinWanted = false
		e.startJoin(true)
		e.stepJoin()
	}
	if e.phase == exServe && !e.selfStopped && e.refusing == nil && (p.exDirty || e.kick) {
		p.exDirty, e.kick = false, false
		e.reconcile()
		e.stepAll()
	}
	if e.selfStopped {
		return
	}
	for _, id := range e.ids {
		in := e.insts[id]
		if m := in.mon; m != nil && !m.queued && !m.dead && c.now >= m.nextAt {
			m.queued = true
			in.queue = append(in.queue, &sjob{kind: jobMon, mon: m})
			e.stepInst(in)
		}
	}
}

func (e *simExec) stepAll() {
	for i := 0; i < len(e.ids); i++ {
		e.stepInst(e.insts[e.ids[i]])
	}
}

func (e *simExec) idle() bool {
	for _, in := range e.insts {
		if in.cur != nil || len(in.queue) > 0 {
			return false
		}
	}
	return true
}

func (e *simExec) instance(id string) *simInst {
	in, ok := e.insts[id]
	if !ok {
		in = &simInst{id: id}
		e.insts[id] = in
		i, _ := slices.BinarySearch(e.ids, id)
		e.ids = slices.Insert(e.ids, i, id)
	}
	return in
}

func (e *simExec) dropInstance(id string) {
	delete(e.insts, id)
	if i, ok := slices.BinarySearch(e.ids, id); ok {
		e.ids = slices.Delete(e.ids, i, i+1)
	}
}

// reconcile is the executor's reconcile: queue new tasks, refuse what must
// not run, bring the monitors in line with the records.
func (e *simExec) reconcile() {
	var v exView
	e.n.core.Read(func(s *store.State) { v = e.readView(s) })
	if v.downNow {
		e.c.tracef("%s executor: recorded as proven down while it runs", e.n.name)
		e.beginSelfStop("this node is recorded as proven down while it runs", nil)
		return
	}
	var refusals []store.Op
	var refused []string
	for _, te := range v.tasks {
		e.active[te.id] = true
		if why := executor.Refusal(te.task, te.err, v.dcTerm, v.maint); why != "" {
			e.c.tracef("%s refuses %s (%s %s): %s", e.n.name, te.id, te.task.Action, te.task.Resource, why)
			refusals = append(refusals, e.resultOp(model.TaskResult{ID: te.id, Term: te.task.Term, Refused: why}))
			refused = append(refused, te.id)
			continue
		}
		in := e.instance(te.task.Resource)
		if te.task.Action == model.ActStop || te.task.Action == model.ActMigrateTo {
			e.stopMonitor(in)
		}
		in.queue = append(in.queue, &sjob{kind: jobTask, task: te.task})
	}
	e.adjustMonitors(v)
	if len(refusals) > 0 {
		e.refusing = &refusalRun{cr: e.commit(refusals), ids: refused}
	}
}

func (e *simExec) stopMonitor(in *simInst) {
	if in.mon != nil {
		in.mon.dead = true
		in.mon = nil
	}
}

// adjustMonitors keeps one recurring monitor per instance recorded started
// here (executor.adjustMonitorsLocked).
func (e *simExec) adjustMonitors(v exView) {
	type spec struct {
		res model.Resource
		op  model.Op
		key string
	}
	want := map[string]spec{}
	if !v.maint {
		for id, rec := range v.records {
			if rec.State != model.StateStarted || rec.LastOp == model.ActMigrateTo {
				continue
			}
			in, ok := e.instByID[id]
			if !ok {
				continue
			}
			op, ok := executor.RecurringMonitor(in.Resource)
			if !ok {
				continue
			}
			want[id] = spec{res: in.Resource, op: op, key: string(clusterstate.Encode(in.Resource))}
		}
	}
	for _, id := range e.ids {
		if _, ok := want[id]; !ok {
			e.stopMonitor(e.insts[id])
		}
	}
	for _, id := range sortedKeys(want) {
		sp := want[id]
		in := e.instance(id)
		if in.cur != nil || len(in.queue) > 0 || (in.mon != nil && in.mon.key == sp.key) {
			continue
		}
		e.stopMonitor(in)
		in.mon = &smon{inst: id, res: sp.res, op: sp.op, key: sp.key, nextAt: e.c.now + sp.op.Interval.D()}
	}
	for _, id := range slices.Clone(e.ids) {
		if in := e.insts[id]; in.cur == nil && len(in.queue) == 0 && in.mon == nil {
			e.dropInstance(id)
		}
	}
}

// ---- workers ----

func (e *simExec) stepInst(in *simInst) {
	for {
		j := in.cur
		if j == nil {
			if len(in.queue) == 0 {
				return
			}
			j = in.queue[0]
			in.queue = in.queue[1:]
			in.cur = j
			e.beginJob(in, j)
		} else {
			e.advanceJob(in, j)
		}
		if j.stage != jobDone {
			return
		}
		in.cur = nil
		e.finishJob(in, j)
		e.kick = true
	}
}

func (e *simExec) beginJob(in *simInst, j *sjob) {
	c := e.c
	switch j.kind {
	case jobTask:
		t := j.task
		var why string
		e.n.core.Read(func(s *store.State) {
			why = executor.Refusal(t, nil, clusterstate.DC(s).Term, e.maintenance(s))
			j.old, j.found = e.record(s, t.Resource)
		})
		if e.selfStopped {
			j.answered, j.stage = true, jobDone
			return
		}
		if why != "" {
			c.tracef("%s refuses %s (%s %s): %s", e.n.name, t.ID, t.Action, t.Resource, why)
			j.cr, j.stage = e.commit([]store.Op{e.resultOp(model.TaskResult{ID: t.ID, Term: t.Term, Refused: why})}), jobCommit
			return
		}
		e.lastConfig[t.Resource] = t.Config
		if t.Action == model.ActStart || t.Action == model.ActMigrateFrom {
			e.local[t.Resource] = true
		}
		j.action, _ = executor.TaskAction(t)
		c.tracef("%s runs %s: %s %s", e.n.name, t.ID, t.Action, t.Resource)
	case jobMon:
		if j.mon.dead {
			j.stage = jobDone
			return
		}
		j.action = agents.ActionMonitor
	case jobSelfStop:
		_, known := e.instByID[in.id]
		if _, ok := e.lastConfig[in.id]; !known && !ok {
			c.tracef("%s self-stop: no configuration known for %s: cannot stop it", e.n.name, in.id)
			j.stage = jobDone
			return
		}
		j.action = agents.ActionStop
	}
	j.opFrom = c.now
	j.opEnd = c.now + c.agentBegin(e.n, in.id, j.action)
	j.stage = jobOp
}

func (e *simExec) advanceJob(in *simInst, j *sjob) {
	c := e.c
	switch j.stage {
	case jobOp:
		if j.kind == jobMon && j.mon.dead {
			j.stage = jobDone // canceled by a stop, a change or a self-stop
			return
		}
		if c.now < j.opEnd {
			return
		}
		e.endOp(in, j)
	case jobCommit:
		c.stepCommit(e.n, j.cr)
		if !j.cr.done {
			return
		}
		switch j.kind {
		case jobTask:
			j.answered = j.cr.err == nil
		case jobMon:
			j.failed = j.cr.err == nil
		}
		j.stage = jobDone
	}
}

func (e *simExec) endOp(in *simInst, j *sjob) {
	c := e.c
	now := wall(c.now)
	res := c.agentEnd(e.n, in.id, j.action, c.now-j.opFrom)
	switch j.kind {
	case jobTask:
		t := j.task
		rec, ok := executor.AfterTask(e.baseRecord(j.old, j.found, t.Resource), t, res, now)
		e.setLocal(t.Resource, rec.State)
		result := model.TaskResult{ID: t.ID, Term: t.Term, RC: int(res.Code), OK: ok, Output: executor.Output(res), Duration: res.Duration}
		c.tracef("%s %s %s: %s (rc %d)", e.n.name, t.Action, t.Resource, rec.State, res.Code)
		j.cr, j.stage = e.commit([]store.Op{e.resultOp(result), e.recordOp(rec)}), jobCommit
	case jobMon:
		if executor.Running(res.Code) {
			j.stage = jobDone
			return
		}
		var old model.ResourceRecord
		var found bool
		e.n.core.Read(func(s *store.State) { old, found = e.record(s, in.id) })
		if !found || old.State != model.StateStarted {
			j.stage = jobDone
			return
		}
		rec := executor.AfterMonitorFailure(e.baseRecord(old, found, in.id), res, now)
		c.tracef("%s monitor of %s fails (rc %d, fail count %d)", e.n.name, in.id, res.Code, rec.FailCount)
		j.cr, j.stage = e.commit([]store.Op{e.recordOp(rec)}), jobCommit
	case jobSelfStop:
		if res.Code == agents.CodeOK {
			delete(e.local, in.id)
			e.stoppedHere[in.id] = c.now
			if e.selfStopped {
				e.released[in.id] = true
			}
			j.stopped = true
			c.tracef("%s self-stop: stopped %s", e.n.name, in.id)
		} else {
			c.tracef("%s self-stop: stop of %s failed: it may still run", e.n.name, in.id)
		}
		j.stage = jobDone
	}
}

// finishJob is what the executor's worker does after each job.
func (e *simExec) finishJob(in *simInst, j *sjob) {
	switch j.kind {
	case jobTask:
		if j.answered {
			delete(e.active, j.task.ID)
		}
		e.stopMonitor(in)
	case jobMon:
		m := j.mon
		m.queued = false
		if j.failed {
			if in.mon == m {
				e.stopMonitor(in)
			}
			m.dead = true
		} else if !m.dead {
			m.nextAt = e.c.now + m.op.Interval.D()
		}
	}
}

func (e *simExec) setLocal(inst, state string) {
	if state == model.StateStopped {
		delete(e.local, inst)
	} else {
		e.local[inst] = true
	}
}

// ---- self-stop ----

// activeSet is executor.activeSetLocked: what may be active here.
func (e *simExec) activeSet(records bool) map[string]bool {
	set := map[string]bool{}
	for inst, on := range e.local {
		if on {
			set[inst] = true
		}
	}
	if records {
		e.n.core.Read(func(s *store.State) {
			for inst, r := range e.records(s) {
				if r.State != model.StateStopped {
					set[inst] = true
				}
			}
		})
	}
	return set
}

func (e *simExec) localActive() int { return len(e.activeSet(!e.localKnown)) }

// beginSelfStop is executor.beginSelfStopLocked: abort everything but
// earlier self-stops, and start (or re-run) the coordinator. onDone runs
// when the coordinator ends (the agent's SelfStop returning).
func (e *simExec) beginSelfStop(why string, onDone func()) {
	c := e.c
	e.selfStopped = true
	e.rejoinWanted = false
	e.stopGen++
	e.probed = false
	if e.join != nil {
		c.abortCommit(e.join.cr)
		e.join = nil
	}
	e.phase = exWaitRejoin
	for _, id := range e.ids {
		in := e.insts[id]
		e.stopMonitor(in)
		kept := in.queue[:0]
		for _, j := range in.queue {
			switch j.kind {
			case jobSelfStop:
				kept = append(kept, j)
			case jobMon:
				j.mon.queued = false
			case jobTask:
				delete(e.active, j.task.ID)
			}
		}
		in.queue = kept
		if j := in.cur; j != nil && j.kind != jobSelfStop && j.stage != jobDone {
			// Canceled: an action's agent is killed (what it did stays
			// done: a start may have started it), a write in flight is no
			// longer waited for.
			switch {
			case j.stage == jobCommit:
				c.abortCommit(j.cr)
				if j.kind == jobTask {
					j.answered = false
				}
			case j.kind == jobTask:
				j.answered = true // "interrupted: no result written"
			}
			j.stage = jobDone
		}
	}
	if onDone != nil {
		e.onStopped = append(e.onStopped, onDone)
	}
	if e.stopping {
		e.stopAgain = true
		return
	}
	e.stopping = true
	e.startCoord()
}

type coordRun struct {
	targets map[string]bool
	waves   [][]string
	wave    int
	jobs    []*sjob
}

func (e *simExec) startCoord() {
	e.stopAgain = false
	if e.c.opts.bug != bugSelfStopNoConfig {
		e.n.core.Read(func(s *store.State) { e.refreshConfig(s, false) })
	}
	targets := e.activeSet(true)
	e.coord = &coordRun{targets: targets, waves: executor.StopWaves(targets, e.instByID, e.conf), wave: -1}
	e.nextWave()
}

func (e *simExec) nextWave() {
	cr := e.coord
	cr.wave++
	cr.jobs = nil
	if cr.wave >= len(cr.waves) {
		if e.stopAgain {
			e.startCoord()
			return
		}
		e.stopping = false
		e.coord = nil
		if left := e.activeSet(!e.localKnown); len(left) > 0 {
			e.c.tracef("%s SELF-STOP INCOMPLETE: still active: %s", e.n.name, strings.Join(sortedKeys(left), ","))
		} else if len(cr.targets) > 0 {
			e.c.tracef("%s self-stop done: nothing runs here", e.n.name)
		}
		fns := e.onStopped
		e.onStopped = nil
		for _, fn := range fns {
			fn()
		}
		e.kick = true
		return
	}
	for _, inst := range cr.waves[cr.wave] {
		j := &sjob{kind: jobSelfStop}
		in := e.instance(inst)
		in.queue = append([]*sjob{j}, in.queue...)
		cr.jobs = append(cr.jobs, j)
	}
}

func (e *simExec) stepCoord() {
	for e.coord != nil {
		for _, j := range e.coord.jobs {
			if j.stage != jobDone {
				return
			}
		}
		e.nextWave()
	}
}

// releasedClaim is executor.Released: the instances self-stops stopped
// since the last registration (and not found active since), tied to this
// node's record as it sees it now; nothing while not self-stopped or
// without a known record.
func (e *simExec) releasedClaim() (insts []string, nodeIndex uint64) {
	if !e.selfStopped {
		return nil, 0
	}
	e.n.core.Read(func(s *store.State) { insts, nodeIndex = executor.Claim(s, e.n.name, e.released, e.local) })
	return insts, nodeIndex
}

func (e *simExec) rejoin() {
	if e.selfStopped {
		e.rejoinWanted = true
	}
}

// ---- join ----

const (
	joinRegister = iota
	joinRefuse
	joinProbe
	joinProbeWrite
	joinProbed
)

type joinRun struct {
	stage    int
	gen      uint64
	again    bool
	cr       *commitRun
	probing  bool
	probeEnd time.Duration
	insts    []executor.Instance
	recs     map[string]model.ResourceRecord
}

func (e *simExec) startJoin(again bool) {
	e.phase = exJoin
	e.join = &joinRun{gen: e.stopGen, again: again}
	if again {
		e.c.tracef("%s executor: rejoining after a self-stop", e.n.name)
	}
}

// nodeRecord is executor.updateNode's record: fresh, or this node's own
// record when it is of this incarnation.
func (e *simExec) nodeRecord(fresh bool, fn func(*model.NodeRecord)) store.Op {
	var rec model.NodeRecord
	e.n.core.Read(func(s *store.State) { rec = clusterstate.NodeRecord(s, e.n.name) })
	if fresh || rec.BootID != e.boot {
		rec = model.NodeRecord{Name: e.n.name, BootID: e.boot}
	}
	rec.V = clusterstate.FormatVersion
	rec.Watchdog = nil
	fn(&rec)
	return store.Op{Key: clusterstate.NodeKey(e.n.name), Value: clusterstate.Encode(rec)}
}

// stepJoin advances the join: register, refuse stale tasks, probe, record
// the probes, set Probed.
func (e *simExec) stepJoin() {
	c := e.c
	for j := e.join; j != nil && e.join == j; {
		if j.cr != nil {
			c.stepCommit(e.n, j.cr)
			if !j.cr.done {
				return
			}
			if j.cr.err != nil {
				c.violate(InvCrash, "%s executor: join write rejected: %v", e.n.name, j.cr.err)
				return
			}
			j.cr = nil
			j.stage++
			if j.stage > joinProbed {
				e.joined(j)
				return
			}
		}
		switch j.stage {
		case joinRegister:
			j.cr = e.commit([]store.Op{e.nodeRecord(true, func(*model.NodeRecord) {})})
		case joinRefuse:
			// Registered (executor.join): no claim any more; those
			// written name the record the registration replaced.
			clear(e.released)
			reason := executor.RefusedRestarted
			if j.again {
				reason = executor.RefusedSelfStopped
			}
			var ops []store.Op
			e.n.core.Read(func(s *store.State) {
				prefix := clusterstate.PrefixTasks + e.n.name + "/"
				s.Range(prefix, func(k string, it store.Item) bool {
					id := strings.TrimPrefix(k, prefix)
					if _, done := s.Get(clusterstate.ResultKey(e.n.name, id)); done {
						return true
					}
					var t model.Task
					_ = decodeStrict(k, it.Value, &t)
					ops = append(ops, e.resultOp(model.TaskResult{ID: id, Term: t.Term, Refused: reason}))
					return true
				})
			})
			if len(ops) == 0 {
				j.stage++
				continue
			}
			c.tracef("%s executor: refusing %d tasks left from before", e.n.name, len(ops))
			j.cr = e.commit(ops)
		case joinProbe:
			if !j.probing {
				j.probing = true
				e.n.core.Read(func(s *store.State) {
					e.refreshConfig(s, true)
					j.recs = e.records(s)
				})
				for _, id := range sortedKeys(e.instByID) {
					j.insts = append(j.insts, e.instByID[id])
				}
				var lanes [probeParallelism]time.Duration
				for range j.insts {
					i := slices.Index(lanes[:], slices.Min(lanes[:]))
					lanes[i] += c.between(monitorTime[0], monitorTime[1])
				}
				j.probeEnd = c.now + slices.Max(lanes[:])
			}
			if c.now < j.probeEnd {
				return
			}
			e.probeDone(j)
		case joinProbeWrite:
			j.stage++ // (probeDone set the write, or there was none)
		case joinProbed:
			j.cr = e.commit([]store.Op{e.nodeRecord(false, func(r *model.NodeRecord) { r.Probed = e.boot })})
		}
	}
}

func (e *simExec) probeDone(j *joinRun) {
	c := e.c
	now := wall(c.now)
	results := make([]agents.Result, len(j.insts))
	for i, in := range j.insts {
		results[i] = c.agentEnd(e.n, in.ID, agents.ActionMonitor, 0)
	}
	clear(e.local)
	for _, inst := range sortedKeys(j.recs) {
		if _, ok := e.instByID[inst]; !ok && j.recs[inst].State != model.StateStopped {
			e.local[inst] = true
		}
	}
	for i, in := range j.insts {
		if executor.ProbeState(results[i].Code) != model.StateStopped {
			e.local[in.ID] = true
		}
	}
	e.localKnown = true
	var ops []store.Op
	for i, in := range j.insts {
		old, found := j.recs[in.ID]
		rec := executor.AfterProbe(e.baseRecord(old, found, in.ID), results[i], now)
		if found && old.State == rec.State && old.LastRC == rec.LastRC {
			continue
		}
		ops = append(ops, e.recordOp(rec))
	}
	c.tracef("%s executor: probed %d instances (%d active), %d records written", e.n.name, len(j.insts), len(e.local), len(ops))
	j.stage = joinProbeWrite
	if len(ops) > 0 {
		j.cr = e.commit(ops)
	}
}

func (e *simExec) joined(j *joinRun) {
	e.join = nil
	if e.stopGen != j.gen {
		e.phase = exWaitRejoin
		return
	}
	e.selfStopped = false
	e.joins++
	clear(e.active)
	e.probed = true
	e.phase = exServe
	e.kick = true
	e.c.tracef("%s executor: probed; ready for tasks", e.n.name)
}
