package sim

import (
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Options shape a run. The zero value is the default run.
type Options struct {
	// Nodes is the cluster size, 1 to 9; default 5.
	Nodes int
	// Duration is the simulated time with faults and writes; default 30s.
	Duration time.Duration
	// Settle bounds the quiet time after the final heal (the recovery
	// bound of the whole system); default 60s, 30s with StoreOnly.
	Settle time.Duration
	// FaultEvery is the mean time between faults; default 1s.
	FaultEvery time.Duration
	// WriteEvery is the mean time between client writes; default 150ms.
	WriteEvery time.Duration
	// MaxDown is the most nodes down at once; default a majority (so the
	// cluster is sometimes unavailable).
	MaxDown int
	// SnapshotEvery is the store's snapshot interval; 0 draws one from
	// [10, 200] per seed, so snapshots and compaction are exercised.
	SnapshotEvery uint64
	// ElectionTick is raft's election timeout in ticks; default 10.
	ElectionTick int
	// AgentElections adds the agent's election policy (internal/agent):
	// membership declaring the leader lost makes the survivors ForgetLeader
	// and campaign staggered by raft ID, and a quorate voter left without a
	// leader campaigns. Use it with ElectionTick 20, as the agent does.
	AgentElections bool
	// TraceLen is how many of the last events Report.Trace keeps; default
	// 60, negative for none.
	TraceLen int

	// StoreOnly runs membership, store and quorum alone, as before the
	// whole-system layer (no DC, executors, resources or operator).
	StoreOnly bool
	// Quiet is the false-failover class: no crash, partition, link cut,
	// monitor fault or operator change, only packet loss (at most
	// QuietLoss) and delay jitter. Once every resource is placed, no
	// resource may start or stop and no node may be fenced.
	Quiet bool
	// QuietLoss bounds the loss of the quiet class; default 10%.
	QuietLoss float64
	// FailEvery is the mean time between monitor faults (a running
	// resource breaks); default 4s.
	FailEvery time.Duration
	// OperateEvery is the mean time between operator changes; default 3s.
	OperateEvery time.Duration
	// NoWorkarounds leaves out the operator's workaround for a known
	// issue (a stop failed on the DC's own node: see doc.go).
	NoWorkarounds bool
	// NoFence: the cluster has no fence device. A lost node's resources
	// are recovered on its release claim (datastore.go) or when it comes
	// back, never by a fence.
	NoFence bool
	// StorageFaultEvery is the mean time between storage faults (a node,
	// or everyone, loses the datastore for a while); default 3s. The quiet
	// class has none.
	StorageFaultEvery time.Duration

	bug bug // test-only: a planted fault (see bug)
}

func (o Options) withDefaults() Options {
	if o.Nodes == 0 {
		o.Nodes = 5
	}
	if o.Duration == 0 {
		o.Duration = 30 * time.Second
	}
	switch {
	case o.Settle != 0:
	case o.StoreOnly:
		o.Settle = 30 * time.Second
	default:
		o.Settle = 60 * time.Second
	}
	if o.FaultEvery == 0 {
		o.FaultEvery = time.Second
	}
	if o.WriteEvery == 0 {
		o.WriteEvery = 150 * time.Millisecond
	}
	if o.MaxDown == 0 {
		o.MaxDown = o.Nodes/2 + 1
	}
	if o.ElectionTick == 0 {
		o.ElectionTick = 10
	}
	if o.TraceLen == 0 {
		o.TraceLen = 60
	}
	if o.QuietLoss == 0 {
		o.QuietLoss = 0.1
	}
	if o.FailEvery == 0 {
		o.FailEvery = 4 * time.Second
	}
	if o.OperateEvery == 0 {
		o.OperateEvery = 3 * time.Second
	}
	if o.StorageFaultEvery == 0 {
		o.StorageFaultEvery = 3 * time.Second
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Nodes < 1 || o.Nodes > 9:
		return fmt.Errorf("sim: nodes %d: want 1 to 9", o.Nodes)
	case o.Duration < 0 || o.Settle < 0 || o.FaultEvery < 0 || o.WriteEvery < 0 || o.FailEvery < 0 || o.OperateEvery < 0 || o.StorageFaultEvery < 0:
		return errors.New("sim: durations must not be negative")
	case o.ElectionTick < 2:
		return fmt.Errorf("sim: election tick %d: want at least 2", o.ElectionTick)
	case o.QuietLoss < 0 || o.QuietLoss > 1:
		return fmt.Errorf("sim: quiet loss %g: want 0 to 1", o.QuietLoss)
	case o.MaxDown < 0 || o.MaxDown > o.Nodes:
		return fmt.Errorf("sim: max down %d: want 0 to %d", o.MaxDown, o.Nodes)
	}
	return nil
}

// Report is what a run did.
type Report struct {
	Seed          uint64
	Nodes         int
	SnapshotEvery uint64
	Steps         int
	SimTime       time.Duration
	// SettleTime is how long the cluster took to converge after the final
	// heal.
	SettleTime time.Duration

	Crashes, Restarts, Partitions, Heals, LinkCuts, LossBursts int

	// Proposed writes, Refused by the Core (no leader, down node), and
	// Acked by the proposer's own apply.
	Proposed, Refused, Acked int

	// Terms is the highest term that had a leader; Leaders maps each term
	// that had one to its leader's raft ID; DCTerms counts terms with a DC.
	Terms   uint64
	Leaders map[uint64]uint64
	DCTerms int
	// DCOverlapSteps counts steps at which two nodes (of different terms)
	// were both leader and quorate: a deposed leader that has not noticed
	// yet. Not a violation (terms differ; leases and epochs handle it), but
	// worth watching.
	DCOverlapSteps int
	// LostNotices counts membership transitions to lost.
	LostNotices int

	HeartbeatsSent, HeartbeatsDelivered, CorruptInjected, CorruptRejected int
	RaftSent, RaftDelivered, SnapshotsSent, Duplicated                    int

	// The whole-system layer: agent actions begun, self-stops, DC rounds
	// and tasks issued, fences started / failed / that powered a node
	// off / recorded as proofs, monitor faults injected, operator changes.
	AgentKills, Starts, Stops, SelfStops, Rounds, Tasks     int
	Fences, FenceFailures, PowerOffs, Proofs, MonitorFaults int
	OpProposed, OpRefused, OpAcked                          int
	// The datastore: storage faults injected, isolation releases
	// committed, and stale claims (read after the node record they name
	// was replaced) that would have released an instance without the
	// node-index guard.
	StorageCuts, Releases, StaleClaims int
	// StaleClaimsRunning counts the stale claims that name an instance
	// then running on the node.
	StaleClaimsRunning int
	// Workarounds counts the operator's restarts of a DC's agent whose
	// own node has a failed stop (a known issue; see doc.go);
	// ManualReboots his power cycles of a node with a failed stop in a
	// cluster without a fence device.
	Workarounds, ManualReboots int
	// WarmAt is when the quiet class found every resource placed and began
	// to watch for false failovers (0: never, or not the quiet class).
	WarmAt time.Duration
	// RecoverTime is how long after the final heal every resource ran
	// where the plan puts it (0 with StoreOnly).
	RecoverTime time.Duration

	// TraceHash is a hash of every trace line, in order; Events counts
	// them. Two runs of one seed agree on both.
	TraceHash uint64
	Events    int
	// Trace is the tail of the event log, oldest first.
	Trace []string
}

// String renders the counts on a few lines, then the trace.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d nodes, %d steps, %s simulated, settled in %s, snapshot every %d\n",
		r.Seed, r.Nodes, r.Steps, fmtTime(r.SimTime), fmtTime(r.SettleTime), r.SnapshotEvery)
	fmt.Fprintf(&b, "faults: %d crashes, %d restarts, %d partitions, %d heals, %d link cuts, %d loss bursts\n",
		r.Crashes, r.Restarts, r.Partitions, r.Heals, r.LinkCuts, r.LossBursts)
	fmt.Fprintf(&b, "writes: %d proposed, %d refused, %d acked\n", r.Proposed, r.Refused, r.Acked)
	fmt.Fprintf(&b, "raft: %d terms with a leader (last %d), %d with a DC, %d DC-overlap steps; %d msgs sent, %d delivered, %d snapshots\n",
		len(r.Leaders), r.Terms, r.DCTerms, r.DCOverlapSteps, r.RaftSent, r.RaftDelivered, r.SnapshotsSent)
	fmt.Fprintf(&b, "membership: %d heartbeats sent, %d delivered, %d corrupted (%d rejected), %d duplicates, %d lost notices\n",
		r.HeartbeatsSent, r.HeartbeatsDelivered, r.CorruptInjected, r.CorruptRejected, r.Duplicated, r.LostNotices)
	fmt.Fprintf(&b, "system: %d agent kills, %d DC rounds, %d tasks, %d starts, %d stops, %d self-stops, %d monitor faults; recovered %s after heal\n",
		r.AgentKills, r.Rounds, r.Tasks, r.Starts, r.Stops, r.SelfStops, r.MonitorFaults, fmtTime(r.RecoverTime))
	fmt.Fprintf(&b, "fencing: %d started, %d failed, %d power-offs, %d proofs; operator: %d changes, %d refused, %d acked\n",
		r.Fences, r.FenceFailures, r.PowerOffs, r.Proofs, r.OpProposed, r.OpRefused, r.OpAcked)
	fmt.Fprintf(&b, "datastore: %d storage cuts, %d releases, %d stale claims refused (%d naming an instance running)\n",
		r.StorageCuts, r.Releases, r.StaleClaims, r.StaleClaimsRunning)
	if r.Workarounds > 0 {
		fmt.Fprintf(&b, "known issue: %d agent restarts of a DC whose node has a failed stop\n", r.Workarounds)
	}
	if r.ManualReboots > 0 {
		fmt.Fprintf(&b, "no fence device: %d manual power cycles of a node with a failed stop\n", r.ManualReboots)
	}
	fmt.Fprintf(&b, "trace: %d events, hash %016x\n", r.Events, r.TraceHash)
	for _, t := range r.Trace {
		b.WriteString("  " + t + "\n")
	}
	return b.String()
}

// Run simulates one seeded run: opts.Duration of faults and client writes
// on a fresh cluster, then a final heal, Stabilize and Check. The error is
// nil or a *Violation naming the first broken invariant, its simulated time
// and the seed. The same seed and options always give the same Report.
func Run(seed uint64, opts Options) (rep Report, err error) {
	c, err := NewCluster(seed, opts)
	if c == nil {
		return Report{Seed: seed}, err
	}
	defer c.Close()
	defer func() {
		if p := recover(); p != nil {
			who := "harness"
			if c.active != nil {
				who = c.active.name
			}
			c.violate(InvCrash, "panic in %s: %v\n%s", who, p, debug.Stack())
			rep, err = c.Report(), c.err
		}
	}()
	d := driver{c: c}
	d.nextFault = c.between(0, 2*c.opts.FaultEvery)
	if c.sys != nil {
		d.nextFail = c.between(c.opts.FailEvery/2, 2*c.opts.FailEvery)
		d.nextOp = c.between(c.opts.OperateEvery/2, 2*c.opts.OperateEvery)
		d.nextStorage = c.between(c.opts.StorageFaultEvery/2, 2*c.opts.StorageFaultEvery)
	}
	for c.now < c.opts.Duration && c.err == nil {
		d.faults()
		d.writes()
		d.system()
		c.Step()
	}
	if c.err == nil {
		c.tracef("final heal")
		if c.sys != nil {
			c.settle(c.opts.Settle)
		} else if c.Stabilize(c.opts.Settle) {
			_ = c.Check()
		}
	}
	return c.Report(), c.Err()
}

// settle heals, restarts every node and runs until the store has
// converged and the system has recovered (see system.recovered), then
// checks that it stays so for one more second, and runs the end-of-run
// checks. Not recovering within limit is a violation.
func (c *Cluster) settle(limit time.Duration) {
	c.Heal()
	for _, n := range c.n {
		c.Restart(n.idx)
	}
	start := c.now
	why := ""
	stuckSince := time.Duration(-1)
	for c.now-start < limit && c.err == nil {
		if !c.sys.configured && (c.now-start)%(5*TickInterval) == 0 {
			c.sys.configure() // the operator still waits for it
		}
		// Known issue (see doc.go): a failed stop on the DC's own node
		// waits for a fence that no DC gives. The operator's way out is
		// to restart the agent there, so that another node becomes DC.
		// Without a fence device a failed stop on any node waits for the
		// operator: he power-cycles the node (a manual fence).
		switch n := c.sys.stopFailed(!c.opts.NoFence); {
		case n == nil:
			stuckSince = -1
		case stuckSince < 0:
			stuckSince = c.now
		case c.now-stuckSince >= 10*time.Second && !c.opts.NoWorkarounds && c.opts.NoFence:
			c.rep.ManualReboots++
			c.tracef("operator: a stop failed on %s and no fence device can fence it: power-cycling it", n.name)
			c.powerOff(n)
			n.rebootAt = c.now + c.between(rebootTime[0], rebootTime[1])
			stuckSince = -1
		case c.now-stuckSince >= 10*time.Second && !c.opts.NoWorkarounds:
			c.rep.Workarounds++
			c.tracef("operator: a stop failed on DC %s, which never fences itself: restarting its agent", n.name)
			c.KillAgent(n.idx)
			c.Restart(n.idx)
			stuckSince = -1
		}
		c.RunFor(TickInterval)
		if _, ok := c.converged(); !ok {
			why = "store not converged: " + c.describe()
			continue
		}
		ok, w := c.sys.recovered()
		if !ok {
			why = w
			continue
		}
		at := c.now - start
		c.RunFor(time.Second)
		if ok, w := c.sys.recovered(); !ok {
			why = "recovered, then not: " + w
			continue
		}
		if _, ok := c.converged(); !ok {
			continue
		}
		c.rep.RecoverTime = at
		c.rep.SettleTime = c.now - start
		c.tracef("recovered %s after heal", fmtTime(at))
		if c.Check() == nil {
			c.sys.checkConfigWrites()
		}
		return
	}
	if c.err == nil {
		c.violate(InvRecovered, "not recovered %s after heal: %s", limit, why)
	}
}

// driver draws faults and writes from the cluster's seed.
type driver struct {
	c         *Cluster
	nextFault time.Duration
	nextWrite time.Duration
	healAt    time.Duration
	nextFail  time.Duration
	nextOp    time.Duration
	nextConf  time.Duration
	// nextStorage is when the next storage fault comes.
	nextStorage time.Duration
}

// system drives the whole-system layer: the initial configuration, the
// operator's changes and monitor faults.
func (d *driver) system() {
	c := d.c
	s := c.sys
	if s == nil {
		return
	}
	if !s.configured {
		if c.now >= d.nextConf {
			d.nextConf = c.now + 500*time.Millisecond
			s.configure()
		}
		return
	}
	if c.opts.Quiet {
		return
	}
	if c.now >= d.nextOp {
		d.nextOp = c.now + c.between(c.opts.OperateEvery/2, c.opts.OperateEvery*3/2)
		s.operate()
	}
	if c.now >= d.nextFail {
		d.nextFail = c.now + c.between(c.opts.FailEvery/2, c.opts.FailEvery*3/2)
		var cands []string
		for _, n := range c.n {
			if !n.up {
				continue
			}
			for _, inst := range sortedKeys(n.truth) {
				if t := n.truth[inst]; t.active && !t.faulted {
					cands = append(cands, n.name+"/"+inst)
				}
			}
		}
		if len(cands) > 0 {
			x := cands[c.rng.IntN(len(cands))]
			name, inst, _ := strings.Cut(x, "/")
			c.byName(name).truth[inst].faulted = true
			c.rep.MonitorFaults++
			c.tracef("fault: %s breaks on %s", inst, name)
		}
	}
	if c.now >= d.nextStorage {
		d.nextStorage = c.now + c.between(c.opts.StorageFaultEvery/2, c.opts.StorageFaultEvery*3/2)
		d.storage()
	}
}

// storage cuts a node's access to the datastore, or everyone's, for 1-10
// s. Half the time, when a self-stopped node's slot holds its release
// claim, it is one of those: when the cut outlasts its return, the DC
// goes on reading its old claim while it rejoins and runs things again
// (which the node-index guard must refuse).
func (d *driver) storage() {
	c := d.c
	var iso []int
	for _, n := range c.n {
		if rec := c.ds.slots[n.name]; n.up && n.p != nil && n.p.ex.selfStopped && len(rec.Released) > 0 {
			iso = append(iso, n.idx)
		}
	}
	i := c.rng.IntN(len(c.n))
	switch {
	case len(iso) > 0 && c.chance(0.5):
		i = iso[c.rng.IntN(len(iso))]
	case c.chance(0.15):
		i = -1
	}
	c.StorageCut(i, c.between(dsCutTime[0], dsCutTime[1]), c.chance(0.5))
}

func (d *driver) faults() {
	c := d.c
	for _, n := range c.n {
		if !n.up && n.restartAt != 0 && c.now >= n.restartAt {
			c.Restart(n.idx)
		}
	}
	if d.healAt != 0 && c.now >= d.healAt {
		d.healAt = 0
		c.Heal()
	}
	if c.now < d.nextFault {
		return
	}
	d.nextFault = c.now + c.between(c.opts.FaultEvery/2, c.opts.FaultEvery*3/2)
	if c.opts.Quiet {
		d.quiet()
		return
	}
	n := len(c.n)
	switch k := c.rng.IntN(14); {
	case k < 3: // crash a random node
		d.crash(c.rng.IntN(n))
	case k < 4: // crash the leader
		for _, nd := range c.n {
			if nd.up && nd.leader {
				d.crash(nd.idx)
				break
			}
		}
	case k < 7: // partition
		d.partition()
	case k < 8: // isolate the leader
		for _, nd := range c.n {
			if nd.up && nd.leader {
				c.Partition([]int{nd.idx})
				d.healAt = c.now + c.between(time.Second, 6*time.Second)
				break
			}
		}
	case k < 10:
		c.Heal()
		d.healAt = 0
	case k < 12: // cut a link between two nodes, or a whole link
		l := c.rng.IntN(Links)
		if n < 2 || c.chance(0.2) {
			c.CutLink(l, -1, -1)
		} else {
			a := c.rng.IntN(n)
			b := (a + 1 + c.rng.IntN(n-1)) % n
			c.CutLink(l, a, b)
		}
	default:
		c.LossBurst(0.1+0.5*c.rng.Float64(), c.between(500*time.Millisecond, 3*time.Second))
	}
}

// quiet draws the quiet class's only faults: packet loss and delay jitter.
func (d *driver) quiet() {
	c := d.c
	if c.chance(0.5) {
		c.LossBurst(c.opts.QuietLoss*c.rng.Float64(), c.between(500*time.Millisecond, 5*time.Second))
	} else {
		c.Jitter(c.between(20*time.Millisecond, 200*time.Millisecond), c.between(500*time.Millisecond, 5*time.Second))
	}
}

func (d *driver) crash(i int) {
	c := d.c
	down := 0
	for _, n := range c.n {
		if !n.up {
			down++
		}
	}
	if !c.n[i].up || down >= c.opts.MaxDown {
		return
	}
	if c.sys != nil && c.chance(0.3) {
		c.KillAgent(i)
	} else {
		c.Crash(i)
	}
	c.n[i].restartAt = c.now + c.between(200*time.Millisecond, 5*time.Second)
}

// partition splits the nodes at random: majority/minority, one isolated,
// or three groups.
func (d *driver) partition() {
	c := d.c
	n := len(c.n)
	if n < 2 {
		return
	}
	perm := c.rng.Perm(n)
	var groups [][]int
	switch c.rng.IntN(3) {
	case 0: // majority | minority
		cut := n/2 + 1
		groups = [][]int{perm[:cut]}
	case 1: // isolate one
		groups = [][]int{perm[:1]}
	default: // three-way (or two-way with two nodes)
		a := 1 + c.rng.IntN(n-1)
		groups = [][]int{perm[:a]}
		if a < n-1 {
			b := a + 1 + c.rng.IntN(n-1-a)
			groups = append(groups, perm[a:b])
		}
	}
	for _, g := range groups {
		slices.Sort(g)
	}
	c.Partition(groups...)
	d.healAt = c.now + c.between(time.Second, 8*time.Second)
}

func (d *driver) writes() {
	c := d.c
	if c.now < d.nextWrite {
		return
	}
	d.nextWrite = c.now + c.between(c.opts.WriteEvery/2, c.opts.WriteEvery*3/2)
	c.nextKey++
	key := fmt.Sprintf("k%05d", c.nextKey)
	if c.sys != nil {
		// Status keys do not move the epoch: client writes then do not
		// conflict with the operator's changes, as in a real cluster.
		key = clientPrefix + key
	}
	c.Propose(c.rng.IntN(len(c.n)), key, fmt.Sprintf("v%d.%d", c.seed, c.nextKey))
}
