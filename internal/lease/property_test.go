package lease

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The property the package exists for (DESIGN: "never twice"; "the quorum
// side may treat a silent node as dead only after lease + watchdog timeout
// + margin"): whenever the Judge says node X is fenced at real time t, X's
// lease — computed by X's own Holder from the echoes X really received —
// was not valid at some instant τ after the DC last heard X, with τ no
// later than the confirmation and at least two watchdog timeouts before t.
// So if X had resources then, it stopped petting at τ and was reset by t.
//
// The simulation runs whole clusters under simulated real time with
// per-node clock offsets and rates (drift), one-way link cuts, loss, delay
// spikes far longer than the timeouts, and stalled processes.

const (
	simStep = time.Millisecond
	simNT   = time.Second // membership node timeout
)

type simMsg struct {
	at       time.Duration // real delivery time
	from, to int
	send     time.Duration // sender's clock
	echo     time.Duration // receiver's clock
	hasEcho  bool
	info     []byte
}

type simNode struct {
	name      string
	off       time.Duration
	rate      float64
	holder    *Holder
	newest    map[int]time.Duration // newest SendTime heard from each peer
	lastHeard map[int]time.Duration // own clock, newest receipt from each peer
	info      []byte
	nextSend  time.Duration
	nextInfo  time.Duration
	infoEvery time.Duration
	stallTill time.Duration
}

func (n *simNode) clock(t time.Duration) time.Duration {
	return n.off + time.Duration(float64(t)*n.rate)
}

// interval is a real-time span [from, to) during which a lease was invalid.
type interval struct{ from, to time.Duration }

const open = time.Duration(1<<62 - 1)

type simResult struct {
	fences     int
	violations []string
	firstFence time.Duration // real time of the first fence, -1: none
}

// simulate runs one seeded cluster with random faults. mutate may weaken
// the Judge.
func simulate(seed uint64, mutate func(*Judge)) simResult {
	return simulateOpts(seed, mutate, -1)
}

// simulateOpts: with crashAt ≥ 0, the network is perfect and node n2
// stops for good at crashAt (a crash or a hang) instead.
func simulateOpts(seed uint64, mutate func(*Judge), crashAt time.Duration) simResult {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	cfg := Config{
		LeaseDuration:   time.Second,
		WatchdogTimeout: 500 * time.Millisecond,
		Margin:          50 * time.Millisecond,
		Drift:           0.01,
	}
	n := 3 + rng.IntN(3)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
	}
	members, err := NewMemberSet(names)
	if err != nil {
		panic(err)
	}
	nodes := make([]*simNode, n)
	for i := range nodes {
		h, err := NewHolder(cfg)
		if err != nil {
			panic(err)
		}
		h.SetVoters(names, names[i])
		nodes[i] = &simNode{
			name:      names[i],
			off:       time.Duration(rng.Int64N(int64(100 * time.Second))),
			rate:      1 + cfg.Drift*(2*rng.Float64()-1),
			holder:    h,
			newest:    map[int]time.Duration{},
			lastHeard: map[int]time.Duration{},
			nextSend:  time.Duration(rng.Int64N(int64(100 * time.Millisecond))),
			infoEvery: time.Duration(20+rng.IntN(200)) * time.Millisecond,
		}
	}
	const dc = 0
	judge, err := NewJudge(cfg)
	if err != nil {
		panic(err)
	}
	judge.SetVoters(names, names[dc])
	if mutate != nil {
		mutate(judge)
	}

	// Directed links: up or down; faults start after a warm-up.
	up := make([][]bool, n)
	for i := range up {
		up[i] = make([]bool, n)
		for j := range up[i] {
			up[i][j] = true
		}
	}
	pFlip := 0.002 + 0.01*rng.Float64() // per link per 10ms
	loss := 0.2 * rng.Float64()
	pSpike := 0.05 * rng.Float64()
	if crashAt >= 0 {
		pFlip, loss, pSpike = 0, 0, 0
		nodes[1].stallTill = open
	}
	hbEvery := time.Duration(50+rng.IntN(150)) * time.Millisecond

	var queue []simMsg
	invalid := make([][]interval, n) // per node, real time
	for i := range invalid {
		invalid[i] = []interval{{0, open}}
	}
	heardByDC := make([]time.Duration, n)   // real time
	confirmedAt := make([]time.Duration, n) // real time, -1: none
	checked := make([]bool, n)
	for i := range confirmedAt {
		confirmedAt[i] = -1
	}
	res := simResult{firstFence: -1}
	const warmup = 3 * time.Second
	end := 30 * time.Second
	if crashAt >= 0 {
		end = crashAt + 10*time.Second
	}

	lostOf := func(nd *simNode, local time.Duration) []Loss {
		var lost []Loss
		for j := range nodes {
			if h, ok := nd.lastHeard[j]; ok && local-h >= simNT {
				lost = append(lost, Loss{Node: names[j], Silence: local - h})
			}
		}
		return lost
	}

	for t := time.Duration(0); t < end; t += simStep {
		// Faults.
		if crashAt >= 0 && t < crashAt {
			nodes[1].stallTill = 0
		} else if crashAt >= 0 {
			nodes[1].stallTill = open
		}
		if crashAt < 0 && t >= warmup && t%(10*time.Millisecond) == 0 {
			for i := range up {
				for j := range up[i] {
					if i != j && rng.Float64() < pFlip {
						up[i][j] = !up[i][j]
					}
				}
			}
			if rng.Float64() < 0.002 {
				nd := nodes[rng.IntN(n)]
				nd.stallTill = t + time.Duration(rng.Int64N(int64(3*time.Second)))
			}
		}
		// Deliver.
		slices.SortStableFunc(queue, func(a, b simMsg) int { return int(a.at - b.at) })
		k := 0
		for ; k < len(queue) && queue[k].at <= t; k++ {
		}
		due := queue[:k]
		var keep []simMsg
		for _, m := range due {
			rcv := nodes[m.to]
			if rcv.stallTill == open {
				continue // gone for good
			}
			if rcv.stallTill > t {
				m.at = rcv.stallTill
				keep = append(keep, m)
				continue
			}
			local := rcv.clock(t)
			if old, ok := rcv.newest[m.from]; ok && m.send <= old {
				continue // older than one already heard: proves nothing
			}
			rcv.newest[m.from] = m.send
			rcv.lastHeard[m.from] = local
			if m.hasEcho {
				rcv.holder.Observe(local, names[m.from], m.echo)
			}
			if m.to == dc {
				heardByDC[m.from] = t
				if rep, _, err := members.DecodeReport(m.info); err == nil && m.hasEcho {
					judge.Report(local, Report{Reporter: names[m.from], Lost: rep.Lost,
						Age: m.send - rep.AsOf, SentAfter: m.echo})
				}
			}
		}
		queue = append(keep, queue[k:]...)
		// The DC's own view, every step.
		if nodes[dc].stallTill <= t {
			local := nodes[dc].clock(t)
			judge.ReportSelf(local, lostOf(nodes[dc], local))
		}
		// Infos and heartbeats.
		for i, nd := range nodes {
			if nd.stallTill > t {
				continue
			}
			local := nd.clock(t)
			if t >= nd.nextInfo {
				nd.nextInfo = t + nd.infoEvery
				b, err := members.AppendReport(nil, LossReport{AsOf: local, Lost: lostOf(nd, local)})
				if err != nil {
					panic(err)
				}
				nd.info = b
			}
			if t < nd.nextSend {
				continue
			}
			nd.nextSend = t + hbEvery
			for j := range nodes {
				if j == i {
					continue
				}
				echo, hasEcho := nd.newest[j]
				m := simMsg{from: i, to: j, send: local, echo: echo, hasEcho: hasEcho, info: nd.info}
				if !up[i][j] || rng.Float64() < loss {
					continue
				}
				m.at = t + time.Duration(1+rng.IntN(5))*time.Millisecond
				if rng.Float64() < pSpike {
					m.at += time.Duration(rng.Int64N(int64(4 * time.Second)))
				}
				queue = append(queue, m)
			}
		}
		// Ground truth: each node's lease, on its own clock.
		for i, nd := range nodes {
			valid := nd.holder.Valid(nd.clock(t))
			iv := invalid[i]
			last := &iv[len(iv)-1]
			switch {
			case valid && last.to == open:
				last.to = t
			case !valid && last.to != open:
				invalid[i] = append(iv, interval{t, open})
			}
		}
		// The verdicts.
		dcLocal := nodes[dc].clock(t)
		for x := range nodes {
			if x == dc {
				continue
			}
			if _, ok := judge.SelfFencedAt(names[x]); !ok {
				confirmedAt[x], checked[x] = -1, false
				continue
			}
			if confirmedAt[x] < 0 {
				confirmedAt[x] = t
			}
			if checked[x] || !judge.Fenced(dcLocal, names[x]) {
				continue
			}
			checked[x] = true
			res.fences++
			if res.firstFence < 0 {
				res.firstFence = t
			}
			limit := min(confirmedAt[x], t-2*cfg.WatchdogTimeout)
			if !lapsedIn(invalid[x], heardByDC[x], limit) {
				res.violations = append(res.violations, fmt.Sprintf(
					"seed %d: %s fenced at %s (confirmed %s), DC last heard it at %s, but its lease was valid throughout (%s, %s]; holder %s",
					seed, names[x], t, confirmedAt[x], heardByDC[x], heardByDC[x], limit, nd(nodes[x])))
			}
		}
	}
	return res
}

func nd(n *simNode) string { return n.holder.String() }

// lapsedIn reports whether some invalid interval has an instant in
// (after, until].
func lapsedIn(ivs []interval, after, until time.Duration) bool {
	for _, iv := range ivs {
		from := max(iv.from, after+simStep)
		if from <= until && from < iv.to {
			return true
		}
	}
	return false
}

func seeds(t *testing.T) int {
	if testing.Short() {
		return 20
	}
	return 80
}

// TestNeverFencedWhileLeaseHeld is the package's property.
func TestNeverFencedWhileLeaseHeld(t *testing.T) {
	total := 0
	for seed := range uint64(seeds(t)) {
		res := simulate(seed, nil)
		total += res.fences
		for _, v := range res.violations {
			t.Error(v)
		}
	}
	if total == 0 {
		t.Fatal("no node was ever fenced: the simulation exercises nothing")
	}
	t.Logf("%d fences, none early", total)
}

// TestPropertyCatchesWeakJudges checks that the property test can fail:
// Judges that skip the majority step of the argument are caught. (Trusting
// a report's arrival time instead of its echo takes correlated delays of a
// majority's reports to go wrong; TestJudgeDelayedReport scripts that.)
func TestPropertyCatchesWeakJudges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Judge)
	}{
		{"no majority: the DC's own silence is enough", func(j *Judge) { j.needed = func(int) int { return 1 } }},
		{"a minority is enough", func(j *Judge) { j.needed = func(n int) int { return max(1, majority(n)-1) } }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(seeds(t)) {
				if res := simulate(seed, tc.mutate); len(res.violations) > 0 {
					t.Logf("caught: %s", res.violations[0])
					return
				}
			}
			t.Fatal("the weakened Judge was never caught")
		})
	}
}

// TestCrashFenceTime: with a perfect network, a crashed node is fenced
// about LeaseDuration + heartbeat and report delays + ResetBound after it
// stopped, and never earlier than the property allows.
func TestCrashFenceTime(t *testing.T) {
	const crash = 5 * time.Second
	bound, _ := Config{WatchdogTimeout: 500 * time.Millisecond, Margin: 50 * time.Millisecond, Drift: 0.01}.WithDefaults()
	var worst time.Duration
	for seed := range uint64(20) {
		res := simulateOpts(seed, nil, crash)
		for _, v := range res.violations {
			t.Error(v)
		}
		if res.firstFence < 0 {
			t.Fatalf("seed %d: the crashed node was never fenced", seed)
		}
		worst = max(worst, res.firstFence-crash)
	}
	// Silence must outlast the lease plus the report's uncertainty (an
	// interval and a delay): about 1.5s here, then the reset bound.
	if limit := 2*time.Second + bound.ResetBound(); worst > limit {
		t.Errorf("fenced %s after the crash, more than %s", worst, limit)
	}
	t.Logf("crash to fenced: at most %s (reset bound %s)", worst, bound.ResetBound())
}
