package sim

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-ha/vigil/internal/membership"
	"github.com/vigil-ha/vigil/internal/quorum"
	"github.com/vigil-ha/vigil/internal/store"
)

// The agent's real timings.
const (
	// StepDuration is one simulation step: packets due are delivered, the
	// membership Machines tick, and the invariants are checked.
	StepDuration = 10 * time.Millisecond
	// TickInterval is one raft tick (store.NodeConfig's default).
	TickInterval = 100 * time.Millisecond
	// HeartbeatTick is the agent's raft heartbeat (Options.ElectionTick
	// sets the election timeout).
	HeartbeatTick = 1
	// HeartbeatInterval and NodeTimeout are the membership defaults.
	HeartbeatInterval = membership.DefaultInterval
	NodeTimeout       = membership.DefaultNodeTimeout
	// IsolationMargin is how long after NodeTimeout a node that hears no
	// majority may still believe it is quorate (invariant 4).
	IsolationMargin = 100 * time.Millisecond
	// Links is the number of networks every node is on.
	Links = 2

	clusterID = "sim-cluster"
)

// heartbeatKey is the test key heartbeats are authenticated with.
var heartbeatKey = []byte("vigil-sim-heartbeat-key-32-bytes")

// Names of the invariants a Violation reports.
const (
	InvLeader    = "one leader per term"
	InvDC        = "one DC per term"
	InvAcked     = "acknowledged writes survive"
	InvConverge  = "states converge"
	InvApplied   = "applied state never diverges or goes back"
	InvIsolation = "isolated node is not quorate"
	InvCodec     = "heartbeat codec"
	InvLiveness  = "cluster recovers after heal"
	InvCrash     = "no node fails"
)

// Violation is a broken invariant: the first one a run met.
type Violation struct {
	Seed      uint64
	At        time.Duration // simulated time
	Invariant string        // one of the Inv constants
	Detail    string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("sim: seed %d at %s: %s: %s", v.Seed, fmtTime(v.At), v.Invariant, v.Detail)
}

// bug is a test-only fault planted in the harness to prove that the
// checker catches what it claims to (TestSimCatchesViolation).
type bug int

const (
	bugNone bug = iota
	// bugAckOnPropose acknowledges a write as soon as Propose takes it,
	// before it is committed.
	bugAckOnPropose
	// bugRotDisk makes node 1's disk store a different value than it was
	// given, once in a while.
	bugRotDisk
	// bugDeafQuorum counts every voter alive, whatever membership says.
	bugDeafQuorum
	// bugForgeVotes delivers a copy of every granted vote to every other
	// node, as if addressed to it: a vote counts twice.
	bugForgeVotes
	// bugWipeDisk restarts a crashed node on an empty disk.
	bugWipeDisk
	// bugProofWithoutFence: the fence device reports success without
	// powering the node off (recovery skips the real fence).
	bugProofWithoutFence
	// bugBlindMonitor: monitors never see a fault.
	bugBlindMonitor
	// bugHastyDC: the DC counts a suspect node as dead (it fences it).
	bugHastyDC
	// bugSelfStopNoConfig is the executor as it was before the fix the
	// simulator found (TestSimSelfStopBeforeProbe): a self-stop before the
	// first probe did not load the configuration, so it could not stop
	// what the node's records from an earlier incarnation named.
	bugSelfStopNoConfig
	// bugReleaseIgnoresIndex: the DC takes a node's isolation claim as
	// tied to whatever record the node has now, not to the one the claim
	// names (a release without the node-index guard).
	bugReleaseIgnoresIndex
)

// node is one simulated node. disk survives crashes; the rest is the
// running process.
type node struct {
	cl   *Cluster
	idx  int
	id   uint64
	name string
	disk *simDisk

	up        bool
	inc       int // incarnation, bumped on restart
	core      *store.Core
	mach      *membership.Machine
	qs        quorum.State
	quorate   bool
	leader    bool
	term      uint64 // the term it leads in, when leader
	restartAt time.Duration
	// rebootAt is when a node a fence device powered off boots again (0:
	// not fenced off).
	rebootAt time.Duration
	// boot is the running incarnation's boot ID (membership and executor).
	boot uint64
	// p is the agent's DC, executor and self-stop (nil when down, or with
	// Options.StoreOnly); truth is what really runs on the node (cleared
	// when it powers off).
	p     *proc
	truth map[string]*resTruth
	// tickPhase offsets this process's raft ticks within TickInterval, so
	// that nodes do not tick in lockstep.
	tickPhase time.Duration

	// The agent's election policy (Options.AgentElections).
	leaderless   time.Duration // when it last saw no leader begin; -1 while it has one
	lastCampaign time.Duration
	campaignAt   time.Duration // a staggered campaign after a lost leader; -1 for none
	lostLead     uint64
}

type proposal struct {
	node, inc  int
	key, value string
	// fn, when set, receives the Result instead of the client-write
	// bookkeeping (executor, DC and operator writes).
	fn func(store.Result)
}

// entryKey names one key written at one raft index (a Txn writes several).
type entryKey struct {
	index uint64
	key   string
}

type stateFP struct {
	node  int
	fp    uint64
	epoch uint64
	keys  int
}

// Cluster is a simulated cluster. Its methods are the faults and client
// actions a driver (Run, or a script) applies between steps; all of them
// are deterministic given the seed and the order of calls. Not safe for
// concurrent use.
type Cluster struct {
	seed uint64
	opts Options
	rng  *rand.Rand
	now  time.Duration
	n    []*node
	net  *network

	voters []quorum.Voter
	addrs  map[string]int // heartbeat address -> node

	nextWait uint64
	nextKey  int
	pending  map[uint64]proposal
	acked    map[string]string // key -> value
	ackOrder []string

	leaders   map[uint64]int // term -> node
	dcs       map[uint64]int
	entries   map[entryKey]uint64 // (raft index, key) -> hash of the value written
	states    map[uint64]stateFP  // applied index -> state fingerprint
	lastReach [][]time.Duration   // [to][from]: last time from could reach to
	snapEvery uint64

	rep       Report
	trace     []string
	traceNext int
	err       *Violation

	active *node    // the node being driven, to name it in a panic
	log    []string // with logAll, every trace line (scripts print them)
	logAll bool
	// hash covers every trace line ever written (Report.TraceHash).
	hash   uint64
	events int

	sys *system  // the whole-system layer (nil with Options.StoreOnly)
	ds  *dsModel // the shared datastore (nil with Options.StoreOnly)
	// staleSeen: the stale claims already counted (Report.StaleClaims).
	staleSeen map[string]bool

	unregister func()
	closed     bool
}

// NewCluster starts a cluster of opts.Nodes bootstrapped nodes at time 0.
// Close it when done (it holds the package lock; see the package doc).
func NewCluster(seed uint64, opts Options) (*Cluster, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Cluster{
		seed:    seed,
		opts:    opts,
		rng:     rand.New(rand.NewPCG(seed, 0x5eed_51a1)),
		net:     newNetwork(opts.Nodes, Links),
		addrs:   map[string]int{},
		pending: map[uint64]proposal{},
		acked:   map[string]string{},
		leaders: map[uint64]int{},
		dcs:     map[uint64]int{},
		entries: map[entryKey]uint64{},
		states:  map[uint64]stateFP{},
		trace:   make([]string, 0, min(max(opts.TraceLen, 0), 1024)),
		hash:    fnvOffset,
	}
	c.unregister = registerRand(seed)
	c.snapEvery = opts.SnapshotEvery
	if c.snapEvery == 0 {
		c.snapEvery = 10 + c.rng.Uint64N(191)
	}
	c.rep = Report{Seed: seed, Nodes: opts.Nodes, SnapshotEvery: c.snapEvery, Leaders: map[uint64]uint64{}}
	if !opts.StoreOnly {
		c.sys = newSystem(c)
		c.ds = newDSModel(c)
		c.staleSeen = map[string]bool{}
	}

	var members []store.Member
	for i := range opts.Nodes {
		n := &node{cl: c, idx: i, id: uint64(i + 1), name: fmt.Sprintf("n%d", i+1)}
		c.n = append(c.n, n)
		members = append(members, store.Member{Name: n.name, ID: n.id, Role: store.RoleVoter,
			Links: []string{addr(i, 0), addr(i, 1)}})
		c.voters = append(c.voters, quorum.Voter{Name: n.name})
		for l := range Links {
			c.addrs[addr(i, l)] = i
		}
	}
	c.lastReach = make([][]time.Duration, opts.Nodes)
	for i := range c.lastReach {
		c.lastReach[i] = make([]time.Duration, opts.Nodes)
	}
	for _, n := range c.n {
		n.disk = newSimDisk(c, n.idx)
		if err := store.Bootstrap(n.disk, members); err != nil {
			c.Close()
			return nil, err
		}
		c.start(n)
	}
	return c, c.Err()
}

// Close releases the Cluster's seeded crypto/rand stream (see rand.go).
func (c *Cluster) Close() {
	if c.closed {
		return
	}
	c.closed = true
	c.unregister()
}

func addr(i, link int) string { return fmt.Sprintf("10.0.%d.%d:5405", link, i+1) }

// Now returns the simulated time.
func (c *Cluster) Now() time.Duration { return c.now }

// Err returns the first violation, or nil.
func (c *Cluster) Err() error {
	if c.err == nil {
		return nil
	}
	return c.err
}

// Report returns the counts so far and the trace tail.
func (c *Cluster) Report() Report {
	r := c.rep
	r.SimTime = c.now
	r.Leaders = make(map[uint64]uint64, len(c.leaders))
	for t, i := range c.leaders {
		r.Leaders[t] = c.n[i].id
		r.Terms = max(r.Terms, t)
	}
	r.DCTerms = len(c.dcs)
	r.TraceHash, r.Events = c.hash, c.events
	r.Trace = make([]string, 0, len(c.trace))
	r.Trace = append(r.Trace, c.trace[c.traceNext:]...)
	r.Trace = append(r.Trace, c.trace[:c.traceNext]...)
	return r
}

func (c *Cluster) violate(inv, format string, args ...any) {
	if c.err != nil {
		return
	}
	c.err = &Violation{Seed: c.seed, At: c.now, Invariant: inv, Detail: fmt.Sprintf(format, args...)}
	c.tracef("VIOLATION %s: %s", inv, c.err.Detail)
}

func fmtTime(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

const fnvOffset = 14695981039346656037

func (c *Cluster) tracef(format string, args ...any) {
	s := fmtTime(c.now) + " " + fmt.Sprintf(format, args...)
	h := fnv.New64a()
	var b [8]byte
	for i := range 8 {
		b[i] = byte(c.hash >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(s))
	c.hash = h.Sum64()
	c.events++
	if c.opts.TraceLen <= 0 {
		return
	}
	if c.logAll {
		c.log = append(c.log, s)
	}
	if len(c.trace) < c.opts.TraceLen {
		c.trace = append(c.trace, s)
		return
	}
	c.trace[c.traceNext] = s
	c.traceNext = (c.traceNext + 1) % len(c.trace)
}

func (c *Cluster) between(a, b time.Duration) time.Duration {
	return a + time.Duration(c.rng.Int64N(int64(b-a)+1))
}

func (c *Cluster) chance(p float64) bool { return p > 0 && c.rng.Float64() < p }

// start runs a node's processes on its disk (at bootstrap and restart).
func (c *Cluster) start(n *node) {
	c.active = n
	core, err := store.NewCore(store.Config{
		ID: n.id, Name: n.name,
		ElectionTick: c.opts.ElectionTick, HeartbeatTick: HeartbeatTick,
		SnapshotEvery: c.snapEvery,
		Logger:        nopLogger{},
		Log:           slog.New(slog.DiscardHandler),
	}, n.disk)
	if err != nil {
		c.violate(InvCrash, "%s: start: %v", n.name, err)
		return
	}
	if got := core.Status().Applied; got != n.disk.applied {
		c.violate(InvApplied, "%s restarted at applied index %d, its disk saved %d", n.name, got, n.disk.applied)
	}
	var peers []membership.Peer
	for _, o := range c.n {
		if o != n {
			peers = append(peers, membership.Peer{Name: o.name, Links: []string{addr(o.idx, 0), addr(o.idx, 1)}})
		}
	}
	n.boot = uint64(c.now) + 1
	mach, err := membership.New(membership.Config{
		Self: n.name, SelfLinks: Links, Peers: peers,
		Interval: HeartbeatInterval, NodeTimeout: NodeTimeout,
	}, n.boot)
	if err != nil {
		c.violate(InvCrash, "%s: membership: %v", n.name, err)
		return
	}
	n.up, n.core, n.mach = true, core, mach
	n.tickPhase = StepDuration * time.Duration(c.rng.IntN(int(TickInterval/StepDuration)))
	n.qs, n.quorate, n.leader, n.term = quorum.State{}, false, false, 0
	n.restartAt, n.rebootAt = 0, 0
	n.leaderless, n.lastCampaign, n.campaignAt, n.lostLead = -1, -time.Hour, -1, 0
	c.recomputeQuorum(n)
	if c.sys != nil {
		n.p = c.sys.newProc(n)
	}
}

// Crash stops node i (0-based) at once: its Core, Machine and everything
// in memory are gone; its disk keeps what Save returned.
func (c *Cluster) Crash(i int) {
	n := c.n[i]
	if !n.up {
		return
	}
	c.powerOff(n)
	c.rep.Crashes++
	c.tracef("crash %s", n.name)
}

// KillAgent kills node i's agent (SIGKILL): its store, membership, DC and
// executor are gone, the resources it started keep running. Restart starts
// a new incarnation on the same disk.
func (c *Cluster) KillAgent(i int) {
	n := c.n[i]
	if !n.up {
		return
	}
	truth := n.truth
	c.powerOff(n)
	n.truth = truth
	c.rep.AgentKills++
	c.tracef("kill agent on %s (its resources keep running)", n.name)
}

// powerOff stops node n at once: processes, and the resources it ran.
func (c *Cluster) powerOff(n *node) {
	// What n sent up to now may still reach its peers: the isolation
	// check must count it even if n was up for less than a step (a node
	// restarted and fenced again at once).
	if n.up {
		for _, o := range c.n {
			if o != n && c.net.anyLink(n.idx, o.idx) >= 0 {
				c.lastReach[o.idx][n.idx] = c.now
			}
		}
	}
	n.up, n.core, n.mach = false, nil, nil
	n.leader, n.quorate = false, false
	n.p, n.truth = nil, nil
}

// Restart starts node i again from its disk, with a new boot ID.
func (c *Cluster) Restart(i int) {
	n := c.n[i]
	if n.up {
		return
	}
	n.inc++
	if c.opts.bug == bugWipeDisk {
		n.disk = newSimDisk(c, n.idx)
	}
	c.rep.Restarts++
	c.tracef("restart %s (applied %d)", n.name, n.disk.applied)
	c.start(n)
}

// Partition splits the network into groups of node indexes; nodes not
// listed form one more group.
func (c *Cluster) Partition(groups ...[]int) {
	c.net.partition(groups)
	c.rep.Partitions++
	c.tracef("partition %s", fmtGroups(groups, len(c.n)))
}

func fmtGroups(groups [][]int, n int) string {
	seen := make([]bool, n)
	var parts []string
	for _, g := range groups {
		var names []string
		for _, i := range g {
			names = append(names, fmt.Sprintf("n%d", i+1))
			seen[i] = true
		}
		parts = append(parts, strings.Join(names, ","))
	}
	var rest []string
	for i, s := range seen {
		if !s {
			rest = append(rest, fmt.Sprintf("n%d", i+1))
		}
	}
	if len(rest) > 0 {
		parts = append(parts, strings.Join(rest, ","))
	}
	return strings.Join(parts, "|")
}

// Heal removes every partition, link cut and loss burst.
func (c *Cluster) Heal() {
	c.net.healAll()
	c.rep.Heals++
	c.tracef("heal")
}

// CutLink cuts link l between nodes a and b (both ways); a < 0 cuts the
// whole link for everyone.
func (c *Cluster) CutLink(l, a, b int) {
	if a < 0 {
		c.net.cutLink[l] = true
		c.tracef("cut link %d", l)
	} else {
		c.net.cutPair[l][a][b], c.net.cutPair[l][b][a] = true, true
		c.tracef("cut link %d n%d-n%d", l, a+1, b+1)
	}
	c.rep.LinkCuts++
}

// LossBurst drops a fraction p of all packets for d.
func (c *Cluster) LossBurst(p float64, d time.Duration) {
	c.net.loss, c.net.lossTill = p, c.now+d
	c.rep.LossBursts++
	c.tracef("loss %.0f%% for %s", p*100, d)
}

// Jitter adds up to j of delay to every packet for d.
func (c *Cluster) Jitter(j, d time.Duration) {
	c.net.jitter, c.net.jitTill = j, c.now+d
	c.tracef("jitter %s for %s", j, d)
}

// Propose has a client write a new unique key with a value on node i. It
// reports whether the node's Core took the proposal.
func (c *Cluster) Propose(i int, key, value string) bool {
	n := c.n[i]
	c.rep.Proposed++
	if !n.up {
		c.rep.Refused++
		return false
	}
	c.nextWait++
	id := c.nextWait
	c.active = n
	if err := n.core.Propose(id, store.Put{Key: key, Value: []byte(value)}); err != nil {
		c.rep.Refused++
		return false
	}
	c.pending[id] = proposal{node: i, inc: n.inc, key: key, value: value}
	if c.opts.bug == bugAckOnPropose {
		delete(c.pending, id)
		c.ack(n, key, value, 0)
	}
	c.processAll(n)
	return true
}

func (c *Cluster) ack(n *node, key, value string, index uint64) {
	if _, dup := c.acked[key]; dup {
		c.violate(InvAcked, "%s acknowledged key %s twice", n.name, key)
		return
	}
	c.acked[key] = value
	c.ackOrder = append(c.ackOrder, key)
	c.rep.Acked++
	c.tracef("ack %s=%s on %s at index %d", key, value, n.name, index)
}

// Step advances the simulation by one StepDuration.
func (c *Cluster) Step() {
	c.now += StepDuration
	c.rep.Steps++
	if c.net.lossTill != 0 && c.now >= c.net.lossTill {
		c.net.loss, c.net.lossTill = c.net.baseLoss, 0
	}
	if c.net.jitTill != 0 && c.now >= c.net.jitTill {
		c.net.jitter, c.net.jitTill = 0, 0
	}
	for p := c.net.next(c.now); p != nil; p = c.net.next(c.now) {
		c.deliver(p)
	}
	for _, n := range c.n {
		if n.up && (c.now-n.tickPhase)%TickInterval == 0 {
			c.active = n
			n.core.Tick()
			c.processAll(n)
		}
	}
	for _, n := range c.n {
		if !n.up {
			continue
		}
		for _, o := range n.mach.Tick(c.now) {
			c.sendHeartbeat(n, o)
		}
		c.membershipChanges(n)
	}
	if c.opts.AgentElections && c.now%agentLoop == 0 {
		for _, n := range c.n {
			if n.up {
				c.agentLoop(n)
			}
		}
	}
	if c.sys != nil {
		c.sys.step()
	}
	c.checkStep()
}

// RunFor steps for d.
func (c *Cluster) RunFor(d time.Duration) {
	for end := c.now + d; c.now < end && c.err == nil; {
		c.Step()
	}
}

func (c *Cluster) sendHeartbeat(n *node, o membership.Outgoing) {
	to, ok := c.addrs[o.Addr]
	if !ok {
		c.violate(InvCodec, "%s sent a heartbeat to unknown address %s", n.name, o.Addr)
		return
	}
	c.rep.HeartbeatsSent++
	if !c.net.reachable(n.idx, to, o.Link) || c.chance(c.net.loss) {
		return // (not even encoded: UDP loses it silently)
	}
	b, err := membership.Encode(heartbeatKey, clusterID, o.Msg)
	if err != nil {
		c.violate(InvCodec, "%s: encode heartbeat: %v", n.name, err)
		return
	}
	p := &packet{from: n.idx, to: to, link: o.Link, hb: b}
	if c.chance(c.net.corruptP) {
		p.hb = slices.Clone(b)
		p.hb[c.rng.IntN(len(b))] ^= 1 << c.rng.IntN(8)
		p.corrupt = true
		c.rep.CorruptInjected++
	}
	c.transmit(p, func(p *packet) *packet { q := *p; return &q })
}

// transmit queues p with a random delay, maybe reordered, maybe twice.
func (c *Cluster) transmit(p *packet, clone func(*packet) *packet) {
	p.at = c.now + c.delay()
	if c.chance(c.net.dupP) {
		q := clone(p)
		q.at = c.now + c.delay()
		c.net.push(q)
		c.rep.Duplicated++
	}
	c.net.push(p)
}

func (c *Cluster) delay() time.Duration {
	d := c.between(c.net.minDelay, c.net.maxDelay+c.net.jitter)
	if c.chance(0.05) {
		d += c.between(0, c.net.reorder)
	}
	return d
}

func (c *Cluster) sendRaft(n *node, msgs []*raftpb.Message) {
	for _, m := range msgs {
		to := int(m.GetTo()) - 1
		if to < 0 || to >= len(c.n) {
			continue
		}
		c.rep.RaftSent++
		isSnap := m.GetType() == raftpb.MsgSnap
		if isSnap {
			c.rep.SnapshotsSent++
		}
		l := c.net.anyLink(n.idx, to)
		if l < 0 || !c.n[to].up {
			// The transport's dial fails: raft hears of it.
			n.core.ReportUnreachable(m.GetTo())
			if isSnap {
				n.core.ReportSnapshot(m.GetTo(), true)
			}
			continue
		}
		if isSnap {
			// Fire and forget, as store.Node does: a lost snapshot is
			// noticed through the follower's rejection.
			n.core.ReportSnapshot(m.GetTo(), false)
		}
		if c.chance(c.net.loss) {
			continue
		}
		p := &packet{from: n.idx, to: to, link: l, msg: proto.CloneOf(m)}
		c.transmit(p, func(p *packet) *packet { q := *p; q.msg = proto.CloneOf(p.msg); return &q })
	}
}

func (c *Cluster) deliver(p *packet) {
	n := c.n[p.to]
	if !n.up || !c.net.reachable(p.from, p.to, p.link) {
		return
	}
	if p.hb != nil {
		hb, err := membership.Decode(heartbeatKey, clusterID, p.hb)
		switch {
		case p.corrupt && err == nil:
			c.violate(InvCodec, "%s accepted a corrupted heartbeat from n%d", n.name, p.from+1)
			return
		case p.corrupt:
			c.rep.CorruptRejected++
			return
		case err != nil:
			c.violate(InvCodec, "%s refused a valid heartbeat from n%d: %v", n.name, p.from+1, err)
			return
		}
		c.rep.HeartbeatsDelivered++
		if err := n.mach.Receive(c.now, p.link, hb); err != nil &&
			!errors.Is(err, membership.ErrReplay) && !errors.Is(err, membership.ErrStaleBoot) {
			c.violate(InvCodec, "%s dropped a heartbeat from n%d: %v", n.name, p.from+1, err)
			return
		}
		c.membershipChanges(n)
		return
	}
	c.rep.RaftDelivered++
	c.active = n
	_ = n.core.Step(p.msg) // raft refuses some messages (e.g. from removed peers); fine
	c.processAll(n)
	if c.opts.bug == bugForgeVotes && p.msg.GetType() == raftpb.MsgVoteResp && !p.msg.GetReject() {
		for _, o := range c.n {
			if o == n || !o.up || o.idx == p.from {
				continue
			}
			m := proto.CloneOf(p.msg)
			m.To = new(o.id)
			c.active = o
			_ = o.core.Step(m)
			c.processAll(o)
		}
	}
}

// processAll handles every pending Ready of n, as store.Node does after
// each event.
func (c *Cluster) processAll(n *node) {
	for n.up && n.core.HasReady() {
		out, err := n.core.Process()
		if err != nil {
			c.violate(InvCrash, "%s: %v", n.name, err)
			c.Crash(n.idx)
			return
		}
		c.sendRaft(n, out.Messages)
		for _, r := range out.Applied {
			c.result(n, r)
		}
		if out.LeaderChanged {
			c.observeLeader(n)
		}
	}
}

func (c *Cluster) result(n *node, r store.Result) {
	p, ok := c.pending[r.ID]
	if !ok {
		return
	}
	if p.node != n.idx || p.inc != n.inc {
		return // the waiter died with an earlier incarnation
	}
	delete(c.pending, r.ID)
	if p.fn != nil {
		p.fn(r)
		return
	}
	if r.Err != nil {
		c.violate(InvApplied, "%s: put %s rejected at index %d: %v", n.name, p.key, r.Index, r.Err)
		return
	}
	c.ack(n, p.key, p.value, r.Index)
}

func (c *Cluster) observeLeader(n *node) {
	st := n.core.Status()
	was := n.leader
	n.leader = st.Role == raft.StateLeader.String()
	n.term = st.Term
	if n.leader {
		if prev, ok := c.leaders[st.Term]; ok && prev != n.idx {
			c.violate(InvLeader, "%s and %s both lead term %d", c.n[prev].name, n.name, st.Term)
			return
		}
		c.leaders[st.Term] = n.idx
		if !was {
			c.tracef("%s leads term %d (commit %d, applied %d)", n.name, st.Term, st.Commit, st.Applied)
		}
	} else if was {
		c.tracef("%s steps down (term %d)", n.name, st.Term)
	}
	if n.p != nil {
		n.p.dcDirty = true
	}
	c.checkDC(n)
}

func (c *Cluster) checkDC(n *node) {
	if !n.leader || !n.quorate {
		return
	}
	if prev, ok := c.dcs[n.term]; ok && prev != n.idx {
		c.violate(InvDC, "%s and %s are both DC in term %d", c.n[prev].name, n.name, n.term)
		return
	}
	if _, ok := c.dcs[n.term]; !ok {
		c.dcs[n.term] = n.idx
		c.tracef("%s is DC in term %d", n.name, n.term)
	}
}

func (c *Cluster) membershipChanges(n *node) {
	changed := false
	for _, ch := range n.mach.Changes() {
		if ch.Kind != membership.ChangeNode {
			continue
		}
		changed = true
		if ch.To == membership.StatusLost {
			c.rep.LostNotices++
			if c.opts.AgentElections {
				c.onNodeLost(n, ch.Node)
			}
		}
	}
	if changed {
		c.recomputeQuorum(n)
		if n.p != nil {
			n.p.dcDirty = true // the agent kicks the controller
		}
	}
}

func (c *Cluster) recomputeQuorum(n *node) {
	alive := []string{n.name}
	for _, ns := range n.mach.Nodes() {
		if ns.Status.IsMember() || c.opts.bug == bugDeafQuorum {
			alive = append(alive, ns.Name)
		}
	}
	res, st := quorum.Compute(quorum.Options{}, c.voters, alive, n.qs, c.now)
	n.qs = st
	if res.Quorate != n.quorate {
		c.tracef("%s %s", n.name, res)
	}
	n.quorate = res.Quorate
	c.checkDC(n)
}

// checkStep runs the per-step invariants.
func (c *Cluster) checkStep() {
	need := len(c.n)/2 + 1
	dcs := 0
	for _, n := range c.n {
		// Also while n is down: what o sent it just before may still be in
		// flight when n restarts.
		for _, o := range c.n {
			if o != n && o.up && c.net.anyLink(o.idx, n.idx) >= 0 {
				c.lastReach[n.idx][o.idx] = c.now
			}
		}
		if !n.up {
			continue
		}
		if n.leader && n.quorate {
			dcs++
		}
		heard := 1
		for _, o := range c.n {
			if o != n && c.now-c.lastReach[n.idx][o.idx] < NodeTimeout+IsolationMargin {
				heard++
			}
		}
		if heard < need && n.quorate {
			c.violate(InvIsolation, "%s has heard from only %d of %d nodes for %s but is quorate",
				n.name, heard, len(c.n), NodeTimeout+IsolationMargin)
		}
	}
	if dcs > 1 {
		c.rep.DCOverlapSteps++
	}
}

// Stabilize heals the network, restarts every crashed node and runs until
// the cluster has converged (one leader that is DC, every node quorate and
// applied up to the leader's commit, unchanged over half a second), at most
// for limit. It reports whether it converged; not converging is a liveness
// violation.
func (c *Cluster) Stabilize(limit time.Duration) bool {
	c.Heal()
	for _, n := range c.n {
		c.Restart(n.idx)
	}
	start := c.now
	var last uint64
	stable := 0
	for c.now-start < limit && c.err == nil {
		c.RunFor(TickInterval)
		commit, ok := c.converged()
		switch {
		case !ok:
			stable = 0
		case commit == last:
			stable++
		default:
			stable, last = 1, commit
		}
		if stable >= 5 {
			c.rep.SettleTime = c.now - start
			c.tracef("converged at index %d", commit)
			return true
		}
	}
	if c.err == nil {
		c.violate(InvLiveness, "no convergence %s after heal: %s", limit, c.describe())
	}
	return false
}

func (c *Cluster) converged() (uint64, bool) {
	var lead *node
	for _, n := range c.n {
		if !n.up || !n.quorate {
			return 0, false
		}
		if n.leader {
			if lead != nil {
				return 0, false
			}
			lead = n
		}
	}
	if lead == nil {
		return 0, false
	}
	commit := lead.core.Status().Commit
	for _, n := range c.n {
		st := n.core.Status()
		if st.Applied != commit || st.Lead != lead.id {
			return 0, false
		}
	}
	return commit, true
}

func (c *Cluster) describe() string {
	var parts []string
	for _, n := range c.n {
		if !n.up {
			parts = append(parts, n.name+" down")
			continue
		}
		st := n.core.Status()
		parts = append(parts, fmt.Sprintf("%s %s term %d lead %d commit %d applied %d quorate %t",
			n.name, st.Role, st.Term, st.Lead, st.Commit, st.Applied, n.quorate))
	}
	return strings.Join(parts, "; ")
}

// Check runs the end-of-run invariants on a stabilized cluster: every
// acknowledged write is on every node with its value, and all states are
// Equal.
func (c *Cluster) Check() error {
	if c.err != nil {
		return c.err
	}
	for _, n := range c.n {
		if !n.up {
			c.violate(InvConverge, "%s is down at the final check", n.name)
			return c.err
		}
	}
	for _, key := range c.ackOrder {
		want := c.acked[key]
		for _, n := range c.n {
			var got string
			var ok bool
			n.core.Read(func(s *store.State) {
				var it store.Item
				if it, ok = s.Get(key); ok {
					got = string(it.Value)
				}
			})
			if !ok || got != want {
				c.violate(InvAcked, "acknowledged %s=%s: %s has %q (present %t)", key, want, n.name, got, ok)
				return c.err
			}
		}
	}
	first := c.n[0]
	for _, n := range c.n[1:] {
		var eq bool
		first.core.Read(func(a *store.State) {
			n.core.Read(func(b *store.State) { eq = a.Equal(b) })
		})
		if !eq {
			c.violate(InvConverge, "%s and %s hold different states", first.name, n.name)
			return c.err
		}
	}
	return nil
}

// nopLogger silences raft; panics still panic (and Run reports them).
type nopLogger struct{}

func (nopLogger) Debug(...any)            {}
func (nopLogger) Debugf(string, ...any)   {}
func (nopLogger) Info(...any)             {}
func (nopLogger) Infof(string, ...any)    {}
func (nopLogger) Warning(...any)          {}
func (nopLogger) Warningf(string, ...any) {}
func (nopLogger) Error(...any)            {}
func (nopLogger) Errorf(string, ...any)   {}
func (nopLogger) Fatal(v ...any)          { panic(fmt.Sprint(v...)) }
func (nopLogger) Fatalf(f string, v ...any) {
	panic(fmt.Sprintf(f, v...))
}
func (nopLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (nopLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }

// agentLoop and campaignStagger are the agent's (internal/agent).
const (
	agentLoop       = 50 * time.Millisecond
	campaignStagger = 150 * time.Millisecond
)

// onNodeLost mirrors the agent: when membership declares the raft leader
// lost, a voter forgets it and campaigns after rank × campaignStagger (rank
// among the voters it still sees, by raft ID) if still leaderless.
func (c *Cluster) onNodeLost(n *node, name string) {
	var lost *node
	for _, o := range c.n {
		if o.name == name {
			lost = o
		}
	}
	st := n.core.Status()
	if lost == nil || st.Lead != lost.id {
		return
	}
	rank := 0
	for _, o := range c.n {
		if o == lost || o.id >= n.id {
			continue
		}
		if ns, ok := n.mach.Node(o.name); ok && ns.Status.IsMember() {
			rank++
		}
	}
	c.active = n
	if err := n.core.ForgetLeader(); err == nil {
		c.processAll(n)
	}
	n.campaignAt, n.lostLead = c.now+time.Duration(rank)*campaignStagger, lost.id
	c.tracef("%s: leader %s lost, campaign in %s", n.name, name, time.Duration(rank)*campaignStagger)
}

// agentLoop mirrors the agent's refresh: the staggered campaign after a
// lost leader, and campaignIfLeaderless (a quorate voter without a leader
// campaigns after campaignStagger × (1 + 2 × rank), at most once a second).
func (c *Cluster) agentLoop(n *node) {
	c.active = n
	st := n.core.Status()
	if n.campaignAt >= 0 && c.now >= n.campaignAt {
		n.campaignAt = -1
		if st.Lead == 0 || st.Lead == n.lostLead {
			_ = n.core.Campaign()
			c.processAll(n)
			return
		}
	}
	if st.Lead != 0 || !n.quorate {
		n.leaderless = -1
		return
	}
	if n.leaderless < 0 {
		n.leaderless = c.now
	}
	rank := 0
	for _, o := range c.n {
		if o.id < n.id {
			if ns, ok := n.mach.Node(o.name); ok && ns.Status.IsMember() {
				rank++
			}
		}
	}
	wait := campaignStagger + time.Duration(rank)*2*campaignStagger
	if c.now-n.leaderless < wait || c.now-n.lastCampaign < time.Second {
		return
	}
	n.lastCampaign = c.now
	_ = n.core.Campaign()
	c.processAll(n)
}
