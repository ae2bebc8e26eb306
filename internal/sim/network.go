package sim

import (
	"container/heap"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// packet is one datagram (heartbeat) or one raft message in flight on one
// link. Exactly one of hb and msg is set.
type packet struct {
	at   time.Duration // delivery time
	seq  uint64        // send order; breaks ties so that delivery is deterministic
	from int
	to   int
	link int

	hb      []byte // encoded heartbeat
	corrupt bool   // hb was damaged in flight: Decode must refuse it
	msg     *raftpb.Message
}

// queue is the network's in-flight packets ordered by (at, seq).
type queue []*packet

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*packet)) }
func (q *queue) Pop() any {
	old := *q
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return p
}

// network is the simulated network: nLinks independent networks (link i of
// every node is on network i), partitions (groups of nodes that can talk),
// per-pair and whole-link cuts, and seeded delay, loss, duplication,
// reordering and heartbeat corruption.
//
// Reachability is checked both when a packet is sent and when it would be
// delivered: a packet in flight when its path is cut is lost, as on a real
// wire. So a node cut off at time T hears nothing sent to it after T.
type network struct {
	n        int
	links    int
	group    []int         // partition group per node
	cutPair  [][][]bool    // cutPair[link][from][to]
	cutLink  []bool        // a whole link (switch) down
	loss     float64       // current drop probability
	lossTill time.Duration // end of a loss burst (0: none)
	q        queue         // in flight
	seq      uint64        // next packet seq
	minDelay time.Duration // per-packet delay bounds
	maxDelay time.Duration //
	reorder  time.Duration // extra delay for a reordered packet
	dupP     float64       // duplication probability
	corruptP float64       // heartbeat corruption probability
	baseLoss float64       // loss outside bursts
	jitter   time.Duration // extra delay bound during a jitter burst
	jitTill  time.Duration // end of a jitter burst (0: none)
}

func newNetwork(n, links int) *network {
	nw := &network{n: n, links: links, group: make([]int, n), cutLink: make([]bool, links)}
	nw.cutPair = make([][][]bool, links)
	for l := range nw.cutPair {
		nw.cutPair[l] = make([][]bool, n)
		for i := range n {
			nw.cutPair[l][i] = make([]bool, n)
		}
	}
	nw.minDelay, nw.maxDelay = time.Millisecond, 30*time.Millisecond
	nw.reorder = 50 * time.Millisecond
	nw.dupP, nw.corruptP, nw.baseLoss = 0.01, 0.005, 0.002
	nw.loss = nw.baseLoss
	return nw
}

// reachable reports whether a packet from → to on link gets through now
// (before random loss).
func (nw *network) reachable(from, to, link int) bool {
	return nw.group[from] == nw.group[to] && !nw.cutLink[link] && !nw.cutPair[link][from][to]
}

// anyLink returns the first link on which from reaches to, or -1. The raft
// transport tries the links in order (docs/architecture.md).
func (nw *network) anyLink(from, to int) int {
	for l := range nw.links {
		if nw.reachable(from, to, l) {
			return l
		}
	}
	return -1
}

// partition sets the groups; nodes not listed form one more group.
func (nw *network) partition(groups [][]int) {
	for i := range nw.group {
		nw.group[i] = 0
	}
	for g, ids := range groups {
		for _, i := range ids {
			nw.group[i] = g + 1
		}
	}
}

// healAll removes partitions, cuts and loss bursts.
func (nw *network) healAll() {
	nw.partition(nil)
	for l := range nw.links {
		nw.cutLink[l] = false
		for i := range nw.n {
			clear(nw.cutPair[l][i])
		}
	}
	nw.loss, nw.lossTill = nw.baseLoss, 0
	nw.jitter, nw.jitTill = 0, 0
}

func (nw *network) push(p *packet) {
	p.seq = nw.seq
	nw.seq++
	heap.Push(&nw.q, p)
}

// next pops the next packet due at or before now, or nil.
func (nw *network) next(now time.Duration) *packet {
	if len(nw.q) == 0 || nw.q[0].at > now {
		return nil
	}
	return heap.Pop(&nw.q).(*packet)
}
