// Package executor runs, on every node, the actions the DC orders and the
// recurring monitors of what the node runs, through the resource agents, and
// reports every outcome to the replicated store (docs/architecture.md, "The
// resource manager: who writes what").
//
// The executor is the only writer of status/results/<self>/*,
// status/resources/<self>/* and, with the DC (down proofs), of
// status/nodes/<self>. Its life:
//
//  1. Register: write status/nodes/<self> with this incarnation's boot ID,
//     Probed 0, no Left, no Down. Then refuse every task addressed to this
//     node that has no result: it was issued to an earlier incarnation (or
//     while the node was down), and the node learns the truth by probing.
//  2. Probe every configured instance (see [Instance]) with a one-shot
//     monitor and record what runs, then set Probed to the boot ID: the DC
//     schedules nothing on the node before that.
//  3. On every store change: run the tasks of status/tasks/<self>/ that have
//     no result (refusing those of a deposed DC's older term, and all of
//     them during maintenance), commit each result with the instance's new
//     record in one transaction, keep one recurring monitor per started
//     instance, and serve cleanup requests (status/cleanup/<self>/<inst>).
//  4. Leave cleanly when asked ([Executor.Leave]): set Left and keep
//     running the DC's stop tasks until nothing runs here.
//  5. Self-stop when the agent says the node's lease is ending or its
//     quorum is lost ([Executor.SelfStop]): stop everything active here
//     without writing anything, run nothing more, and when the agent says
//     the node may rejoin ([Executor.Rejoin]) go back to 1 (a fresh record
//     with Probed 0 and no Down, then probes) before taking work. A node
//     that finds its own record proven down while it runs does the same.
//
// Actions on one instance never overlap: each instance has a queue, run by
// one goroutine at a time, that takes tasks in ID order, cleanups and
// monitor runs alike. Writes need a quorum: without one the executor waits
// and retries the same transaction, and never runs an action twice.
package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// Store is the replicated store as the executor uses it; *store.Node
// satisfies it.
type Store interface {
	// Read calls fn with the applied state (see store.Node.Read).
	Read(fn func(*store.State))
	// Propose commits cmd and returns once it is applied on this node.
	Propose(ctx context.Context, cmd store.Command) (store.Result, error)
	// Watch returns a channel closed at the next change.
	Watch() <-chan struct{}
}

// Agents resolves an agent spec ("vigil:dummy", "ocf:heartbeat:Dummy");
// *agents.Registry satisfies it.
type Agents interface {
	Get(spec string) (agents.Agent, error)
}

// Sentinel errors.
var (
	// ErrNoQuorum: a write needed to leave cleanly did not commit.
	ErrNoQuorum = errors.New("executor: no quorum")
	// ErrLeaveTimeout: resources still ran here when the leave bound
	// expired.
	ErrLeaveTimeout = errors.New("executor: leave timed out")
)

// Defaults.
const (
	// DefaultLeaveTimeout bounds Leave.
	DefaultLeaveTimeout = 60 * time.Second
	// DefaultProbeParallelism is how many start-up probes run at once.
	DefaultProbeParallelism = 8
)

const (
	// batchSize is how many puts one transaction of probe records or
	// refusals holds.
	batchSize = 200
	// proposeTimeout bounds one attempt of a write; the write is retried.
	proposeTimeout = 10 * time.Second
	// leaveWriteTimeout bounds the attempts to record Left.
	leaveWriteTimeout = 5 * time.Second
	leavePoll         = 50 * time.Millisecond
	minBackoff        = 50 * time.Millisecond
	maxBackoff        = 2 * time.Second
)

// Refusal reasons that callers may match.
const (
	RefusedRestarted   = "node restarted before running it"
	RefusedMaintenance = "maintenance"
	RefusedSelfStopped = "node stopped its resources (lease or quorum lost) before running it"
	RefusedNoLease     = "node does not hold its lease"
)

// Config configures an Executor.
type Config struct {
	// Node is this node's name. Required.
	Node string
	// BootID identifies this incarnation of the agent (non-zero, different
	// at every start). Required.
	BootID uint64
	// Store is the replicated store. Required.
	Store Store
	// Agents resolves agent specs. Required.
	Agents Agents
	// Log receives the executor's logs; default slog.Default().
	Log *slog.Logger
	// Now is the clock for the times written into records; default
	// time.Now.
	Now func() time.Time
	// LeaveTimeout bounds Leave; default DefaultLeaveTimeout.
	LeaveTimeout time.Duration
	// ProbeParallelism bounds the start-up probes that run at once;
	// default DefaultProbeParallelism.
	ProbeParallelism int
	// Watchdog, when set, is written into this node's record at every
	// registration: the DC then knows the node resets itself when its
	// lease ends.
	Watchdog *model.WatchdogInfo
	// Lease reports whether the node holds its lease (nil: always). A
	// start or migrate_from is refused while it does not.
	Lease func() bool
	// Survivors lists the instances whose processes run on this node
	// outside this incarnation's knowledge (a QEMU that outlived an agent
	// restart): before the first probe they count as active, like the
	// node's records, so that a node that restarts its agent while cut
	// off neither pets its watchdog nor forgets to stop them.
	Survivors func() []string
	// KeepMargin: a self-stop leaves an instance running for its agent
	// (agents.IsolationKeeper) only while its guard lasts at least this
	// long from now; the agent sets it a little above its watchdog's
	// timeout.
	KeepMargin time.Duration
}

// Executor runs actions and monitors on one node. Create it with New, run
// it with Run, and on shutdown call Leave before canceling Run's context.
type Executor struct {
	cfg    Config
	log    *slog.Logger
	probed atomic.Bool
	kick   chan struct{} // a worker finished: reconcile again

	nodeMu sync.Mutex // serializes read-modify-writes of status/nodes/<self>

	mu         sync.Mutex
	started    bool
	closed     bool            // Run is returning: start no goroutine
	runCtx     context.Context // Run's context, for workers and monitors
	leaving    bool
	active     map[string]bool // task IDs being refused, queued or running
	cleaning   map[string]bool // instances with a cleanup queued or running
	restarting map[string]bool // instances with a restart queued or running
	insts      map[string]*instance
	wg         sync.WaitGroup

	// Self-stop (selfstop.go). local is what this incarnation knows may
	// be active here (instance → true), authoritative once localKnown
	// (its probes ran); before that the node's records count.
	selfStopped  bool
	stopGen      uint64             // bumped by every self-stop
	stopping     bool               // a self-stop coordinator runs
	stopAgain    bool               // ... and must run once more
	stopDone     chan struct{}      // closed when the coordinator ends
	joinCancel   context.CancelFunc // cancels a join in progress
	rejoinWanted bool
	joins        int // joins completed
	localKnown   bool
	local        map[string]bool
	lastConfig   map[string]model.Resource // of the last task per instance
	stoppedHere  map[string]time.Time      // what self-stops stopped
	// released: the instances self-stops have stopped since the last
	// registration (see Released).
	released map[string]bool
	// kept: the instances the current self-stop left running (the
	// isolation response leave-running).
	kept map[string]bool

	// Configuration cache, refreshed when the epoch moves.
	cfgEpoch uint64
	conf     model.Config
	instByID map[string]Instance
}

// instance is the executor's per-instance state: the queue that serializes
// actions, and the recurring monitor.
type instance struct {
	id    string
	queue []job
	busy  bool // a worker goroutine owns the queue
	mon   *monitor
	// kickPending: Notify came while no monitor ran; the next one runs at
	// once.
	kickPending bool
	// cancel aborts the job running now; selfStop says it is a self-stop
	// (which a later self-stop does not abort).
	cancel   context.CancelFunc
	selfStop bool
}

// job is one entry of an instance's queue: a task, a cleanup, or one run
// of a recurring monitor.
type job struct {
	task    *model.Task
	cleanup bool
	restart bool
	mon     *monitor
	done    chan bool // monitor runs: receives whether it failed
	// announce: announce the active instance again (agents.Announcer).
	announce bool
	// selfStop: stop the instance without writing anything; stopped
	// receives whether it is stopped.
	selfStop bool
	stopped  chan bool
}

// New returns an executor. It panics on a missing required field (a
// programmer error).
func New(cfg Config) *Executor {
	switch {
	case cfg.Node == "":
		panic("executor: Config.Node is required")
	case cfg.BootID == 0:
		panic("executor: Config.BootID is required")
	case cfg.Store == nil:
		panic("executor: Config.Store is required")
	case cfg.Agents == nil:
		panic("executor: Config.Agents is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LeaveTimeout <= 0 {
		cfg.LeaveTimeout = DefaultLeaveTimeout
	}
	if cfg.ProbeParallelism <= 0 {
		cfg.ProbeParallelism = DefaultProbeParallelism
	}
	e := &Executor{
		cfg:         cfg,
		log:         cfg.Log.With("component", "executor"),
		kick:        make(chan struct{}, 1),
		active:      map[string]bool{},
		cleaning:    map[string]bool{},
		restarting:  map[string]bool{},
		insts:       map[string]*instance{},
		local:       map[string]bool{},
		lastConfig:  map[string]model.Resource{},
		stoppedHere: map[string]time.Time{},
		released:    map[string]bool{},
		kept:        map[string]bool{},
	}
	// Agents that hear of changes between monitors (vigil:vm's QEMU
	// events) bring the instance's monitor forward.
	if n, ok := cfg.Agents.(agents.Notifier); ok {
		n.SetNotify(e.Notify)
	}
	return e
}

// Probed reports whether this incarnation has recorded its probes (and
// Probed in its node record).
func (e *Executor) Probed() bool { return e.probed.Load() }

// Run registers this incarnation, probes, then runs tasks, monitors and
// cleanups until ctx ends. It returns once every action and monitor it
// started has ended: canceling ctx cancels the actions in flight (their
// agents are killed and no result is written; the next incarnation
// refuses those tasks and probes). For a clean leave call Leave first.
// Run returns nil when ctx ends; it may be called once.
func (e *Executor) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		panic("executor: Run called twice")
	}
	e.started = true
	e.runCtx = ctx
	e.mu.Unlock()
	defer e.shutdown()

	for {
		err := e.join(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			e.serve(ctx)
			if ctx.Err() != nil {
				return nil
			}
		case !e.SelfStopped():
			return err
		}
		// Self-stopped (during the join or after): wait until the agent
		// says the node may rejoin, then register and probe again.
		if err := e.waitRejoin(ctx); err != nil {
			return nil
		}
	}
}

// join registers this incarnation (again, after a self-stop: a fresh
// record, Probed 0, no Down), refuses the tasks it will not run, probes
// every instance and sets Probed. A self-stop cancels it.
func (e *Executor) join(ctx context.Context) error {
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.mu.Lock()
	if e.selfStopped && e.stopping {
		e.mu.Unlock()
		return errSelfStopped
	}
	gen, again := e.stopGen, e.joins > 0
	e.joinCancel = cancel
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.joinCancel = nil
		e.mu.Unlock()
	}()
	reason := RefusedRestarted
	if again {
		reason = RefusedSelfStopped
		e.log.Warn("executor: rejoining after a self-stop: registering again and probing every resource before taking any work")
	}
	if err := e.updateNode(jctx, "register", true, func(*model.NodeRecord) {}); err != nil {
		return err
	}
	// Registered: this incarnation may run things again, so it claims no
	// release any more. Claims already written name the node record as it
	// was before this write, which voids them; until it committed they
	// still held (a failed join keeps them).
	e.mu.Lock()
	clear(e.released)
	clear(e.kept)
	e.mu.Unlock()
	if err := e.refuseStale(jctx, reason); err != nil {
		return err
	}
	if err := e.probeAll(jctx); err != nil {
		return err
	}
	if err := e.updateNode(jctx, "probed", false, func(r *model.NodeRecord) { r.Probed = e.cfg.BootID }); err != nil {
		return err
	}
	e.mu.Lock()
	if e.stopGen != gen {
		e.mu.Unlock()
		return errSelfStopped
	}
	e.selfStopped = false
	e.joins++
	clear(e.active) // tasks left unanswered are refused above
	e.mu.Unlock()
	e.probed.Store(true)
	e.log.Info("executor: probed; ready for tasks", "boot_id", e.cfg.BootID, "rejoin", again)
	return nil
}

// serve runs tasks, monitors and cleanups until ctx ends or a self-stop.
func (e *Executor) serve(ctx context.Context) {
	for {
		w := e.cfg.Store.Watch()
		if e.SelfStopped() {
			return
		}
		e.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w:
		case <-e.kick:
		}
	}
}

// ignoreDone turns an error caused by the end of ctx into nil.
func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (e *Executor) shutdown() {
	e.mu.Lock()
	e.closed = true
	for _, in := range e.insts {
		stopMonitor(in)
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// poke asks the main loop to reconcile again.
func (e *Executor) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Leave records that this node leaves cleanly (Left in its node record:
// the DC stops treating it as eligible and stops its resources here
// through ordinary stop tasks), and waits until every resource record of
// this node is stopped. Run must keep running meanwhile: it executes those
// stops. Leave returns nil once nothing runs here; an error wrapping
// ErrLeaveTimeout when ctx or Config.LeaveTimeout ends first; at once an
// error wrapping ErrNoQuorum when Left cannot be written (without a quorum
// nobody can stop the resources through the DC: they stay as they are).
// Cancel Run's context afterwards.
func (e *Executor) Leave(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.LeaveTimeout)
	defer cancel()
	e.mu.Lock()
	e.leaving = true
	stopped := e.selfStopped
	e.mu.Unlock()
	if stopped {
		// The DC cannot stop anything here through tasks the executor
		// will not run: what ran here was stopped by the self-stop.
		if n := e.LocalActive(); n > 0 {
			return fmt.Errorf("%w: self-stopped with %d resources still active", ErrLeaveTimeout, n)
		}
		e.log.Warn("executor: leaving while self-stopped: nothing runs here, but the records stay until the node is proven down")
		return nil
	}

	wctx, wcancel := context.WithTimeout(ctx, leaveWriteTimeout)
	err := e.updateNode(wctx, "leave", false, func(r *model.NodeRecord) { r.Left = true })
	wcancel()
	if err != nil {
		e.log.Error("executor: cannot record the clean leave (no quorum?); resources here are left as they are", "err", err)
		return fmt.Errorf("%w: record leave: %w", ErrNoQuorum, err)
	}
	e.log.Info("executor: leaving; waiting for the DC to stop this node's resources")
	for {
		w := e.cfg.Store.Watch()
		var left []string
		e.cfg.Store.Read(func(s *store.State) {
			for inst, r := range e.recordsOf(s) {
				if r.State != model.StateStopped {
					left = append(left, inst+"="+r.State)
				}
			}
			// A task still unanswered may be a start that has done its
			// work without a record yet: the node has not left until every
			// task addressed to it has its result.
			prefix := clusterstate.PrefixTasks + e.cfg.Node + "/"
			s.Range(prefix, func(k string, _ store.Item) bool {
				id := strings.TrimPrefix(k, prefix)
				if _, done := s.Get(clusterstate.ResultKey(e.cfg.Node, id)); !done {
					left = append(left, "task "+id+" unanswered")
				}
				return true
			})
		})
		e.mu.Lock()
		for id := range e.active {
			left = append(left, "task "+id+" running")
		}
		e.mu.Unlock()
		if len(left) == 0 {
			e.log.Info("executor: left cleanly: nothing runs here")
			return nil
		}
		// A task's worker forgets it (e.active) just after its result is
		// committed, which is no store change: poll as well.
		select {
		case <-w:
		case <-time.After(leavePoll):
		case <-ctx.Done():
			e.log.Warn("executor: leave bound reached with resources not stopped", "resources", left)
			return fmt.Errorf("%w: not stopped: %s", ErrLeaveTimeout, strings.Join(left, ", "))
		}
	}
}

// updateNode applies fn to this node's record and writes it, retrying
// until it commits or ctx ends. With fresh, or when the record is of
// another incarnation, it starts from a fresh record (clearing Probed, Left
// and Down). Left is kept once Leave was called.
func (e *Executor) updateNode(ctx context.Context, what string, fresh bool, fn func(*model.NodeRecord)) error {
	e.nodeMu.Lock()
	defer e.nodeMu.Unlock()
	var rec model.NodeRecord
	e.cfg.Store.Read(func(s *store.State) { rec = clusterstate.NodeRecord(s, e.cfg.Node) })
	if fresh || rec.BootID != e.cfg.BootID {
		rec = model.NodeRecord{Name: e.cfg.Node, BootID: e.cfg.BootID}
	}
	rec.V = clusterstate.FormatVersion
	rec.Watchdog = e.cfg.Watchdog
	rec.Features = model.NodeFeatures() // what this release can take part in (model.FeatureLiveMigration)
	fn(&rec)
	e.mu.Lock()
	rec.Left = rec.Left || e.leaving
	e.mu.Unlock()
	return e.commit(ctx, "node record ("+what+")", []store.Op{{Key: clusterstate.NodeKey(e.cfg.Node), Value: clusterstate.Encode(rec)}})
}

// commit writes ops in one transaction, retrying the same transaction
// until it commits or ctx ends (never re-running what produced it). A
// transaction the state machine rejects is not retried.
func (e *Executor) commit(ctx context.Context, what string, ops []store.Op) error {
	return e.commitTxn(ctx, what, store.Txn{Ops: ops})
}

// commitTxn is commit for a transaction with guards: one the state machine
// rejects (a failed guard) is returned, not retried.
func (e *Executor) commitTxn(ctx context.Context, what string, cmd store.Txn) error {
	backoff := minBackoff
	waited := false
	for {
		actx, cancel := context.WithTimeout(ctx, proposeTimeout)
		r, err := e.cfg.Store.Propose(actx, cmd)
		cancel()
		switch {
		case err == nil:
			if waited {
				e.log.Info("executor: write committed after waiting for a quorum", "what", what)
			}
			return nil
		case r.Err != nil:
			if errors.Is(r.Err, store.ErrCompareFailed) {
				// A guarded write that lost a race: the caller reads again.
				e.log.Info("executor: guarded write lost a race", "what", what, "err", err)
			} else {
				e.log.Error("executor: write rejected by the store", "what", what, "err", err)
			}
			return err
		case errors.Is(err, store.ErrStopped):
			return err
		case ctx.Err() != nil:
			return fmt.Errorf("executor: write %s: %w", what, ctx.Err())
		}
		if !waited {
			e.log.Warn("executor: cannot write (no leader or no quorum); waiting and retrying", "what", what, "err", err)
			waited = true
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("executor: write %s: %w", what, ctx.Err())
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// commitBatches writes ops in transactions of at most batchSize ops.
func (e *Executor) commitBatches(ctx context.Context, what string, ops []store.Op) error {
	for i := 0; i < len(ops); i += batchSize {
		if err := e.commit(ctx, what, ops[i:min(i+batchSize, len(ops))]); err != nil {
			return err
		}
	}
	return nil
}

// decode reads strictly, as clusterstate does: an unknown field means a
// newer writer.
func decode(key string, b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// recordsOf returns this node's resource records by instance (records
// that cannot be decoded are skipped).
func (e *Executor) recordsOf(s *store.State) map[string]model.ResourceRecord {
	prefix := clusterstate.PrefixRecords + e.cfg.Node + "/"
	out := map[string]model.ResourceRecord{}
	s.Range(prefix, func(k string, it store.Item) bool {
		var r model.ResourceRecord
		if err := decode(k, it.Value, &r); err == nil {
			out[strings.TrimPrefix(k, prefix)] = r
		}
		return true
	})
	return out
}

// record returns this node's record of inst.
func (e *Executor) record(s *store.State, inst string) (model.ResourceRecord, bool) {
	var r model.ResourceRecord
	k := clusterstate.RecordKey(e.cfg.Node, inst)
	it, ok := s.Get(k)
	if !ok || decode(k, it.Value, &r) != nil {
		return r, false
	}
	return r, true
}

// maintenance reports whether this node must not touch its resources:
// cluster property maintenance-mode, or the node's own maintenance flag.
func (e *Executor) maintenance(s *store.State) bool {
	if it, ok := s.Get(clusterstate.PropertyKey(model.PropMaintenanceMode)); ok {
		if b, _ := strconv.ParseBool(strings.TrimSpace(string(it.Value))); b {
			return true
		}
	}
	k := clusterstate.NodeConfigKey(e.cfg.Node)
	if it, ok := s.Get(k); ok {
		var nc model.NodeConfig
		if decode(k, it.Value, &nc) == nil && nc.Maintenance {
			return true
		}
	}
	return false
}

// witness reports whether this node is a witness (it runs nothing).
func (e *Executor) witness(s *store.State) bool {
	m, ok := s.Member(e.cfg.Node)
	return ok && m.Role == store.RoleWitness
}

// refreshConfigLocked reloads the configuration cache when the epoch has
// moved (membership changes move it too, and with them clone sizes). If the
// configuration cannot be read (written by a newer release) it keeps the
// previous one and returns the error. Called with e.mu held, inside
// Store.Read.
func (e *Executor) refreshConfigLocked(s *store.State) error {
	if e.instByID != nil && s.Epoch() == e.cfgEpoch {
		return nil
	}
	c, err := clusterstate.LoadConfig(s)
	if err != nil {
		if e.instByID == nil {
			e.instByID = map[string]Instance{}
		}
		e.cfgEpoch = s.Epoch() // log once per epoch
		e.log.Error("executor: cannot read the configuration; keeping the previous one", "err", err)
		return err
	}
	e.conf, e.cfgEpoch = c, s.Epoch()
	e.instByID = map[string]Instance{}
	if e.witness(s) {
		return nil
	}
	for _, in := range Instances(c, runners(s)) {
		e.instByID[in.ID] = in
	}
	return nil
}

// exec runs one action of an instance through its agent. t is the task,
// for the migration fields, or nil.
func (e *Executor) exec(ctx context.Context, r model.Resource, inst, action string, interval, timeout time.Duration, t *model.Task) agents.Result {
	return e.execAs(ctx, r, inst, action, interval, timeout, t, false)
}

// execAs is exec; selfStop marks a stop this node runs on its own after
// losing quorum (agents.Request.SelfStop).
func (e *Executor) execAs(ctx context.Context, r model.Resource, inst, action string, interval, timeout time.Duration, t *model.Task, selfStop bool) agents.Result {
	a, err := e.cfg.Agents.Get(r.Agent)
	if err != nil {
		code := agents.CodeNotFound
		if errors.Is(err, agents.ErrBadSpec) {
			code = agents.CodeErrConfigured
		}
		return agents.Result{Code: code, Err: err}
	}
	req := agents.Request{
		Resource: inst,
		Action:   action,
		Params:   r.Params,
		Meta:     r.Meta,
		Interval: interval,
		Timeout:  timeout,
		Node:     e.cfg.Node,
	}
	if t != nil {
		req.MigrateSource, req.MigrateTarget = t.MigrateSource, t.MigrateTarget
	}
	if action == agents.ActionStart || action == agents.ActionMigrateFrom {
		req.DownNodes, req.WatchdogDown = e.downNodes()
	}
	req.SelfStop = selfStop
	return a.Exec(ctx, req)
}
