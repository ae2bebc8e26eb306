package store

import (
	"context"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Stepper takes inbound raft messages; *Node is one.
type Stepper interface {
	Step(ctx context.Context, m *raftpb.Message) error
}

// LocalNetwork connects Nodes in one process, for tests and demos. Each
// endpoint has an unbounded queue drained by its own goroutine, so Send never
// blocks; messages are cloned, as a wire would. Partition and Heal cut and
// restore links. Close stops the goroutines.
type LocalNetwork struct {
	mu     sync.Mutex
	eps    map[uint64]*endpoint
	group  map[uint64]int // partition group; absent = group 0
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type endpoint struct {
	mu     sync.Mutex
	q      []*raftpb.Message
	wake   chan struct{}
	to     Stepper
	closed chan struct{}
}

// NewLocalNetwork returns an empty network.
func NewLocalNetwork() *LocalNetwork {
	ctx, cancel := context.WithCancel(context.Background())
	return &LocalNetwork{eps: map[uint64]*endpoint{}, group: map[uint64]int{}, ctx: ctx, cancel: cancel}
}

// Transport returns the Transport for node id (its messages carry From = id
// already; the network only needs it to apply partitions).
func (ln *LocalNetwork) Transport(id uint64) Transport { return localTransport{ln, id} }

// Attach routes messages for id to s, replacing (and stopping) any previous
// endpoint of id, as when a node restarts.
func (ln *LocalNetwork) Attach(id uint64, s Stepper) {
	ep := &endpoint{wake: make(chan struct{}, 1), to: s, closed: make(chan struct{})}
	ln.mu.Lock()
	old := ln.eps[id]
	ln.eps[id] = ep
	ln.mu.Unlock()
	if old != nil {
		close(old.closed)
	}
	ln.wg.Add(1)
	go ln.deliver(ep)
}

// Detach drops id from the network (its messages in flight are lost).
func (ln *LocalNetwork) Detach(id uint64) {
	ln.mu.Lock()
	ep := ln.eps[id]
	delete(ln.eps, id)
	ln.mu.Unlock()
	if ep != nil {
		close(ep.closed)
	}
}

// Partition splits the network: nodes in different groups cannot talk;
// nodes not listed form one more group together.
func (ln *LocalNetwork) Partition(groups ...[]uint64) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	clear(ln.group)
	for i, g := range groups {
		for _, id := range g {
			ln.group[id] = i + 1
		}
	}
}

// Heal removes all partitions.
func (ln *LocalNetwork) Heal() { ln.Partition() }

// Close stops every endpoint; later sends are dropped.
func (ln *LocalNetwork) Close() {
	ln.mu.Lock()
	for id, ep := range ln.eps {
		close(ep.closed)
		delete(ln.eps, id)
	}
	ln.mu.Unlock()
	ln.cancel()
	ln.wg.Wait()
}

type localTransport struct {
	ln   *LocalNetwork
	from uint64
}

func (t localTransport) Send(msgs []*raftpb.Message) {
	ln := t.ln
	ln.mu.Lock()
	defer ln.mu.Unlock()
	for _, m := range msgs {
		ep := ln.eps[m.GetTo()]
		if ep == nil || ln.group[t.from] != ln.group[m.GetTo()] {
			continue
		}
		ep.mu.Lock()
		ep.q = append(ep.q, proto.CloneOf(m))
		ep.mu.Unlock()
		select {
		case ep.wake <- struct{}{}:
		default:
		}
	}
}

func (ln *LocalNetwork) deliver(ep *endpoint) {
	defer ln.wg.Done()
	ctx, cancel := context.WithCancel(ln.ctx)
	defer cancel()
	go func() {
		select {
		case <-ep.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ep.wake:
		}
		ep.mu.Lock()
		q := ep.q
		ep.q = nil
		ep.mu.Unlock()
		for _, m := range q {
			if ep.to.Step(ctx, m) != nil && ctx.Err() != nil {
				return
			}
		}
	}
}
