package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

var (
	// ErrTimeout is a proposal whose context ended before it was applied
	// here. The write may or may not have happened.
	ErrTimeout = errors.New("store: proposal timed out (the write may still commit)")
	// ErrStopped is returned once the Node has stopped.
	ErrStopped = errors.New("store: node stopped")
)

// Transport sends raft messages to peers. Send must not block for long and
// may drop messages (raft retries); the peer package implements it over
// mTLS, LocalNetwork in memory.
type Transport interface {
	Send(msgs []*raftpb.Message)
}

// NodeConfig configures a Node.
type NodeConfig struct {
	Core Config
	// Disk is the node's storage; the caller owns it and closes it after
	// Stop.
	Disk      Disk
	Transport Transport
	// TickInterval is the length of one raft tick; default 100ms (with the
	// default ElectionTick of 10, elections time out after 1-2 s).
	TickInterval time.Duration
}

// Node runs a Core in one goroutine: it ticks it, steps inbound messages,
// proposes, processes each Ready and sends the messages, and wakes the
// proposers whose entries were applied.
//
// How a result reaches its proposer: Propose registers a unique wait id and
// puts it, with this node's raft ID, in the entry. On a follower raft
// forwards the proposal to the leader; once committed, every node applies
// the entry, and the node whose ID is in it (this one) reports the result
// to the waiter. So Propose returns only after commit and apply, on the
// proposer's own node.
type Node struct {
	cfg  NodeConfig
	log  *slog.Logger
	wait *wait

	mu   sync.Mutex // guards core: the run goroutine holds it while working
	core *Core

	inbox chan *raftpb.Message
	propc chan proposal
	actc  chan func(*Core)

	watchMu  sync.Mutex
	watchc   chan struct{} // closed and replaced whenever the applied index or leader moves
	stopc    chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	err      error // fatal error, set before done closes

	idMu   sync.Mutex
	nextID uint64
}

type proposal struct {
	id   uint64
	cmd  Command
	errc chan error
}

// StartNode starts a Node on cfg.Disk (which must be bootstrapped, hold a
// previous run, or be empty for a joining node).
func StartNode(cfg NodeConfig) (*Node, error) {
	if cfg.Disk == nil || cfg.Transport == nil {
		return nil, errors.New("store: node config: Disk and Transport are required")
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	core, err := NewCore(cfg.Core, cfg.Disk)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:    cfg,
		log:    core.log,
		wait:   newWait(),
		core:   core,
		inbox:  make(chan *raftpb.Message, 1024),
		propc:  make(chan proposal),
		actc:   make(chan func(*Core)),
		watchc: make(chan struct{}),
		stopc:  make(chan struct{}),
		done:   make(chan struct{}),
		// Wait ids must not repeat across restarts, or a late entry from a
		// previous run could wake a new waiter: start from the clock, as
		// etcd's idutil does, leaving 2^20 ids per millisecond of uptime.
		nextID: uint64(time.Now().UnixMilli()) << 20,
	}
	go n.run()
	return n, nil
}

func (n *Node) run() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			n.mu.Lock()
			n.core.Tick()
		case m := <-n.inbox:
			n.mu.Lock()
			if err := n.core.Step(m); err != nil {
				n.log.Debug("store: dropped message", "err", err)
			}
		case p := <-n.propc:
			n.mu.Lock()
			p.errc <- n.core.Propose(p.id, p.cmd)
		case fn := <-n.actc:
			n.mu.Lock()
			fn(n.core)
		case <-n.stopc:
			return
		}
		err := n.processAll()
		n.mu.Unlock()
		if err != nil {
			n.log.Error("store: stopping on storage error", "err", err)
			n.err = err
			return
		}
	}
}

// processAll handles every pending Ready. Called with mu held.
func (n *Node) processAll() error {
	before := n.core.progress()
	defer func() {
		if n.core.progress() != before {
			n.notify()
		}
	}()
	for n.core.HasReady() {
		out, err := n.core.Process()
		if err != nil {
			return err
		}
		// Messages go out only now that Process has made them durable.
		n.cfg.Transport.Send(out.Messages)
		for _, m := range out.Messages {
			if m.GetType() == raftpb.MsgSnap {
				// The transport is fire-and-forget; if the snapshot is
				// lost, the follower's rejection makes raft send again.
				n.core.ReportSnapshot(m.GetTo(), false)
			}
		}
		for _, r := range out.Applied {
			n.wait.trigger(r.ID, r)
		}
	}
	return nil
}

// Step delivers a message from a peer. It blocks until the run goroutine
// takes it, ctx ends, or the node stops.
func (n *Node) Step(ctx context.Context, m *raftpb.Message) error {
	select {
	case n.inbox <- m:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store: step %s: %w", m.GetType(), ctx.Err())
	case <-n.done:
		return n.stoppedErr()
	}
}

// Propose proposes cmd and returns once it is committed and applied on
// this node, with the state machine's verdict: err is Result.Err when the
// command was rejected (ErrEpochMismatch, ...). Without a known leader it
// fails fast with ErrNoLeader. If ctx ends first it returns ErrTimeout
// (wrapping ctx.Err()): the write may or may not have happened.
func (n *Node) Propose(ctx context.Context, cmd Command) (Result, error) {
	n.idMu.Lock()
	n.nextID++
	id := n.nextID
	n.idMu.Unlock()
	ch := n.wait.register(id)

	p := proposal{id: id, cmd: cmd, errc: make(chan error, 1)}
	select {
	case n.propc <- p:
	case <-ctx.Done():
		n.wait.cancel(id)
		return Result{}, fmt.Errorf("store: propose %T: %w", cmd, ctx.Err())
	case <-n.done:
		n.wait.cancel(id)
		return Result{}, n.stoppedErr()
	}
	if err := <-p.errc; err != nil {
		n.wait.cancel(id)
		return Result{}, fmt.Errorf("store: propose %T: %w", cmd, err)
	}
	select {
	case r := <-ch:
		return applied(cmd, r)
	case <-ctx.Done():
		n.wait.cancel(id)
		return Result{ID: id}, fmt.Errorf("store: propose %T: %w: %w", cmd, ErrTimeout, ctx.Err())
	case <-n.done:
		n.wait.cancel(id)
		select {
		case r := <-ch: // applied just before the stop
			return applied(cmd, r)
		default:
		}
		return Result{ID: id}, fmt.Errorf("store: propose %T: %w (the write may still commit)", cmd, n.stoppedErr())
	}
}

func applied(cmd Command, r Result) (Result, error) {
	if r.Err != nil {
		return r, fmt.Errorf("store: apply %T at %d: %w", cmd, r.Index, r.Err)
	}
	return r, nil
}

// act runs fn on the core in the run goroutine, then processes the Ready it
// caused. It returns false if the node stopped or ctx ended first.
func (n *Node) act(ctx context.Context, fn func(*Core)) bool {
	select {
	case n.actc <- fn:
		return true
	case <-ctx.Done():
	case <-n.done:
	}
	return false
}

// ForgetLeader makes a follower forget its leader, so that it grants
// pre-votes at once instead of waiting out the election timeout. Call it
// when the membership layer, a faster failure detector than raft's own
// timeout, has declared the leader lost; raft's safety does not depend on it.
func (n *Node) ForgetLeader(ctx context.Context) {
	n.act(ctx, func(c *Core) {
		if err := c.ForgetLeader(); err != nil {
			n.log.Debug("store: forget leader", "err", err)
		}
	})
}

// Campaign starts an election (a pre-vote first) from this node.
func (n *Node) Campaign(ctx context.Context) {
	n.act(ctx, func(c *Core) {
		if err := c.Campaign(); err != nil {
			n.log.Debug("store: campaign", "err", err)
		}
	})
}

// ReportSnapshot tells raft whether a snapshot sent to a peer was lost, so
// a follower is not left waiting for one that never arrives.
func (n *Node) ReportSnapshot(ctx context.Context, id uint64, failed bool) {
	n.act(ctx, func(c *Core) { c.ReportSnapshot(id, failed) })
}

// TransferLeader asks raft to hand leadership to the given voter once it
// has caught up (a leader-only operation; ignored elsewhere).
func (n *Node) TransferLeader(ctx context.Context, to uint64) {
	n.act(ctx, func(c *Core) { c.TransferLeader(to) })
}

// ReportUnreachable tells raft that a peer could not be reached, so the
// leader stops pipelining to it until it answers again.
func (n *Node) ReportUnreachable(ctx context.Context, id uint64) {
	n.act(ctx, func(c *Core) { c.ReportUnreachable(id) })
}

// Watch returns a channel that is closed at the next change of the applied
// state, the leader or the term. Watchers re-read what they need and call
// Watch again; a change between two calls is never missed because the
// channel is replaced only when it is closed.
func (n *Node) Watch() <-chan struct{} {
	n.watchMu.Lock()
	defer n.watchMu.Unlock()
	return n.watchc
}

func (n *Node) notify() {
	n.watchMu.Lock()
	close(n.watchc)
	n.watchc = make(chan struct{})
	n.watchMu.Unlock()
}

// Status returns the core's status.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.core.Status()
}

// Read calls fn with the applied state, under the node's lock: fn must be
// quick, must not modify the state or keep it, and must not call the Node.
func (n *Node) Read(fn func(*State)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.core.Read(fn)
}

// Done is closed when the node has stopped (Stop or a fatal error).
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns the fatal error that stopped the node, or nil.
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.err
	default:
		return nil
	}
}

func (n *Node) stoppedErr() error {
	if n.err != nil {
		return n.err
	}
	return ErrStopped
}

// Stop stops the run goroutine; pending proposals fail with ErrStopped.
// It does not close the Disk. It returns the fatal error if one had stopped
// the node already.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.done
	return n.err
}

// wait is a registry of proposers waiting for their result (etcd's
// pkg/wait), keyed by wait id.
type wait struct {
	mu sync.Mutex
	m  map[uint64]chan Result
}

func newWait() *wait { return &wait{m: map[uint64]chan Result{}} }

func (w *wait) register(id uint64) <-chan Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan Result, 1)
	w.m[id] = ch
	return ch
}

func (w *wait) trigger(id uint64, r Result) {
	w.mu.Lock()
	ch := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

func (w *wait) cancel(id uint64) {
	w.mu.Lock()
	delete(w.m, id)
	w.mu.Unlock()
}
