package sim

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The simulation allocates a lot of short-lived JSON; a larger heap
	// goal trades memory for a third less GC work.
	debug.SetGCPercent(400)
	os.Exit(m.Run())
}

// simSeeds is how many seeds TestSimSeeds runs: VIGIL_SIM_SEEDS, default 200.
func simSeeds(t *testing.T) uint64 {
	s := os.Getenv("VIGIL_SIM_SEEDS")
	if s == "" {
		if testing.Short() {
			return 20
		}
		return 200
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("VIGIL_SIM_SEEDS=%q: want a positive number", s)
	}
	return n
}

// seedList is 1..simSeeds, or the one seed VIGIL_SIM_SEED names (a replay).
func seedList(t *testing.T) (seeds []uint64, replay bool) {
	if s := os.Getenv("VIGIL_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("VIGIL_SIM_SEED=%q: want a number", s)
		}
		return []uint64{seed}, true
	}
	n := simSeeds(t)
	for seed := uint64(1); seed <= n; seed++ {
		seeds = append(seeds, seed)
	}
	return seeds, false
}

// SeedOptions returns the options TestSimSeeds runs seed with, so that a
// seed alone says everything about its run:
//
//   - the bulk: 8 s of faults (crashes, agent kills, partitions, link cuts,
//     loss bursts, monitor faults, operator changes), then heal and settle;
//   - every 10th seed (seed%10 == 0) is long: 30 s of faults;
//   - seed%10 == 5 is the quiet class: 20 s of packet loss and jitter
//     alone, where no resource may move and no node be fenced;
//   - seed%3 == 1 runs 3 nodes, the others 5;
//   - odd seeds run the agent's election policy (ElectionTick 20), even
//     seeds raft's own (ElectionTick 10);
//   - seed%8 == 3 or 6 has no fence device: a lost node's resources are
//     recovered on its isolation release (read on the datastore) or when
//     it comes back, never by a fence.
func SeedOptions(seed uint64) Options {
	o := Options{Duration: 8 * time.Second}
	switch seed % 10 {
	case 0:
		o.Duration = 30 * time.Second
	case 5:
		o.Duration, o.Quiet = 20*time.Second, true
	}
	if seed%3 == 1 {
		o.Nodes = 3
	}
	if seed%2 == 1 {
		o.AgentElections, o.ElectionTick = true, 20
	}
	if seed%8 == 3 || seed%8 == 6 {
		o.NoFence = true
	}
	return o
}

func replayCommand(seed uint64) string {
	return fmt.Sprintf("VIGIL_SIM_SEED=%d go test -count=1 ./internal/sim -run 'TestSimSeeds$' -v", seed)
}

// TestSimSeeds is the randomized whole-system simulation: seeds run in
// parallel (one Cluster per goroutine; see rand.go), each SeedOptions(seed).
// A failing seed prints its report and the command that replays it alone,
// bit for bit, with its whole trace.
func TestSimSeeds(t *testing.T) {
	seeds, replay := seedList(t)
	start := time.Now()
	var mu sync.Mutex
	var reps []Report
	var failed []uint64
	var worst time.Duration
	var worstSeed uint64
	t.Run("run", func(t *testing.T) {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
				t.Parallel()
				opts := SeedOptions(seed)
				if replay {
					opts.TraceLen = 1 << 30
				}
				s := time.Now()
				rep, err := Run(seed, opts)
				d := time.Since(s)
				mu.Lock()
				reps = append(reps, rep)
				if d > worst {
					worst, worstSeed = d, seed
				}
				if err != nil {
					failed = append(failed, seed)
				}
				mu.Unlock()
				if err != nil {
					t.Fatalf("%v\n%s\nreplay: %s", err, rep, replayCommand(seed))
				}
				if replay || testing.Verbose() {
					t.Logf("%d nodes, %s faults, quiet %t: %d acked writes, %d crashes, %d agent kills, %d partitions, %d fences, %d self-stops, %d starts; recovered %s after heal; trace %016x",
						rep.Nodes, fmtTime(opts.Duration), opts.Quiet, rep.Acked, rep.Crashes, rep.AgentKills, rep.Partitions,
						rep.Fences, rep.SelfStops, rep.Starts, fmtTime(rep.RecoverTime), rep.TraceHash)
				}
				if replay {
					t.Logf("\n%s", rep)
				}
			})
		}
	})
	el := time.Since(start)
	t.Log(summary(reps, failed))
	t.Logf("%d seeds in %s (%s per seed, parallel %d); slowest seed %d (%s)",
		len(seeds), el.Round(time.Millisecond), (el / time.Duration(len(seeds))).Round(time.Microsecond),
		runtimeParallel(), worstSeed, worst.Round(time.Millisecond))
}

func runtimeParallel() int {
	if f := flag.Lookup("test.parallel"); f != nil {
		n, _ := strconv.Atoi(f.Value.String())
		return n
	}
	return 0
}

// summary renders totals over a set of runs: faults by kind, the
// whole-system work, and recovery times after the final heal.
func summary(reps []Report, failed []uint64) string {
	var tot Report
	var rec []time.Duration
	quiet, warm, noFence := 0, 0, 0
	var warmAt time.Duration
	for _, r := range reps {
		if SeedOptions(r.Seed).Quiet {
			quiet++
			if r.WarmAt > 0 {
				warm++
				warmAt += r.WarmAt
			}
		}
		tot.Crashes += r.Crashes
		tot.AgentKills += r.AgentKills
		tot.Partitions += r.Partitions
		tot.LinkCuts += r.LinkCuts
		tot.LossBursts += r.LossBursts
		tot.MonitorFaults += r.MonitorFaults
		tot.OpAcked += r.OpAcked
		tot.Acked += r.Acked
		tot.Fences += r.Fences
		tot.PowerOffs += r.PowerOffs
		tot.Proofs += r.Proofs
		tot.SelfStops += r.SelfStops
		tot.Tasks += r.Tasks
		tot.Starts += r.Starts
		tot.Workarounds += r.Workarounds
		tot.ManualReboots += r.ManualReboots
		tot.StorageCuts += r.StorageCuts
		tot.Releases += r.Releases
		tot.StaleClaims += r.StaleClaims
		tot.StaleClaimsRunning += r.StaleClaimsRunning
		if SeedOptions(r.Seed).NoFence {
			noFence++
		}
		tot.SimTime += r.SimTime
		if r.RecoverTime > 0 {
			rec = append(rec, r.RecoverTime)
		}
	}
	slices.Sort(rec)
	pct := func(p float64) string {
		if len(rec) == 0 {
			return "-"
		}
		return fmtTime(rec[min(len(rec)-1, int(p*float64(len(rec))))])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d seeds, %s simulated; violations: %d %v\n", len(reps), tot.SimTime.Round(time.Second), len(failed), failed)
	if warm > 0 {
		warmAt /= time.Duration(warm)
	}
	fmt.Fprintf(&b, "quiet class (loss and jitter only): %d seeds, %d watched for false failovers (from %s on average)\n", quiet, warm, fmtTime(warmAt))
	fmt.Fprintf(&b, "faults: %d crashes, %d agent kills, %d partitions, %d link cuts, %d loss bursts, %d monitor faults; %d config changes and %d writes acknowledged\n",
		tot.Crashes, tot.AgentKills, tot.Partitions, tot.LinkCuts, tot.LossBursts, tot.MonitorFaults, tot.OpAcked, tot.Acked)
	fmt.Fprintf(&b, "system: %d tasks, %d starts, %d self-stops; %d fences, %d power-offs, %d proofs\n",
		tot.Tasks, tot.Starts, tot.SelfStops, tot.Fences, tot.PowerOffs, tot.Proofs)
	fmt.Fprintf(&b, "datastore: %d storage cuts; %d isolation releases; %d stale claims refused by the node-index guard (%d naming an instance then running on its node)\n",
		tot.StorageCuts, tot.Releases, tot.StaleClaims, tot.StaleClaimsRunning)
	fmt.Fprintf(&b, "known issue (a stop failed on the DC's node): worked around %d times; without a fence device (%d seeds): %d manual power cycles\n",
		tot.Workarounds, noFence, tot.ManualReboots)
	fmt.Fprintf(&b, "recovered after the final heal: p50 %s, p99 %s, max %s", pct(0.5), pct(0.99), pct(1))
	return b.String()
}

// TestSimDeterministic: a seed replays bit for bit, trace hash included,
// also when two runs of it go on at once on two goroutines.
func TestSimDeterministic(t *testing.T) {
	for _, seed := range []uint64{3, 10, 42} {
		opts := SeedOptions(seed)
		var a, b Report
		var errA, errB error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); a, errA = Run(seed, opts) }()
		go func() { defer wg.Done(); b, errB = Run(seed, opts) }()
		wg.Wait()
		if fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Fatalf("seed %d: errors differ: %v vs %v", seed, errA, errB)
		}
		if a.TraceHash != b.TraceHash || a.Events != b.Events {
			t.Fatalf("seed %d: traces differ: %d events %016x vs %d events %016x", seed, a.Events, a.TraceHash, b.Events, b.TraceHash)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("seed %d: reports differ:\n%s\nvs\n%s", seed, a, b)
		}
		c, _ := Run(seed, opts) // and alone, after the others
		if c.TraceHash != a.TraceHash {
			t.Fatalf("seed %d: a third run differs: %016x vs %016x", seed, c.TraceHash, a.TraceHash)
		}
		if errA != nil || a.Acked == 0 || a.OpAcked == 0 || a.Starts == 0 || len(a.Leaders) < 1 || a.SettleTime == 0 {
			t.Errorf("seed %d: a run that tests little:\n%s", seed, a)
		}
		t.Logf("seed %d: %d events, trace hash %016x", seed, a.Events, a.TraceHash)
	}
	a, _ := Run(1, SeedOptions(1))
	b, _ := Run(2, SeedOptions(1))
	if a.TraceHash == b.TraceHash {
		t.Error("seeds 1 and 2 gave the same trace")
	}
	s, _ := Run(3, Options{StoreOnly: true})
	s2, _ := Run(3, Options{StoreOnly: true})
	if s.TraceHash != s2.TraceHash || !reflect.DeepEqual(s, s2) {
		t.Error("store-only seed 3 differs between two runs")
	}
}

// TestSimCatchesViolation proves each invariant can fail: a bug planted in
// the harness (or in the simulated system) must be reported, as the right
// invariant, within a bounded number of seeds (the first failing seed is
// deterministic).
func TestSimCatchesViolation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bug      bug
		opts     Options
		inv      string
		maxSeeds uint64
	}{
		// The store layer.
		// Acking at Propose loses writes that were never committed.
		{"ack-on-propose", bugAckOnPropose, Options{StoreOnly: true}, InvAcked, 30},
		// A disk that stores something else than it was given diverges.
		{"rot-disk", bugRotDisk, Options{StoreOnly: true}, InvApplied, 30},
		// A quorum that ignores membership stays quorate when isolated.
		{"deaf-quorum", bugDeafQuorum, Options{StoreOnly: true}, InvIsolation, 30},
		// A network that forges votes gives a term two leaders.
		{"forge-votes", bugForgeVotes, Options{StoreOnly: true}, InvLeader, 30},
		// A node restarted on an empty disk has forgotten its log; raft
		// notices (it panics on a commit index past its log) or writes
		// are lost.
		{"wipe-disk", bugWipeDisk, Options{StoreOnly: true}, "", 30},

		// The whole system.
		// Recovery that records a fence proof without the fence: the lost
		// node still runs what is started elsewhere.
		{"proof-without-fence", bugProofWithoutFence, Options{Duration: 8 * time.Second}, InvNeverTwice, 30},
		// Monitors that see nothing leave broken resources in place.
		{"blind-monitor", bugBlindMonitor, Options{Duration: 8 * time.Second, Settle: 20 * time.Second}, InvRecovered, 30},
		// A DC that takes a suspect node for dead fences it under loss.
		{"hasty-dc", bugHastyDC, Options{Duration: 20 * time.Second, Quiet: true, QuietLoss: 0.4}, InvFalseFailover, 30},
		// An isolation release that ignores the node-index guard: a claim
		// read after its node rejoined (its storage cut, so its slot still
		// holds the claim) releases an instance the node runs again, and
		// the DC starts it elsewhere. (About one 30 s seed in ten meets
		// that schedule; see TestSimReleases for how often the guard
		// refuses such a claim in the seeded runs.)
		{"release-ignores-index", bugReleaseIgnoresIndex, Options{Duration: 30 * time.Second, NoFence: true}, InvNeverTwice, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.bug = tc.bug
			for seed := uint64(1); seed <= tc.maxSeeds; seed++ {
				_, err := Run(seed, opts)
				if err == nil {
					continue
				}
				var v *Violation
				if !errors.As(err, &v) || v.Seed != seed {
					t.Fatalf("seed %d: not a Violation for this seed: %v", seed, err)
				}
				if tc.inv != "" && v.Invariant != tc.inv {
					// A planted bug may break another invariant first.
					t.Logf("seed %d: %.200s", seed, err)
					continue
				}
				t.Logf("caught at seed %d: %.300s", seed, err)
				if !tc.opts.StoreOnly {
					// The same seed without the bug passes: the bug, not
					// the seed, broke the invariant.
					if _, err := Run(seed, tc.opts); err != nil {
						t.Fatalf("seed %d fails without the bug too: %v", seed, err)
					}
				}
				return
			}
			t.Fatalf("no violation in %d seeds", tc.maxSeeds)
		})
	}
}

// TestSimNeverTwiceNeedsFencing is the issue's "the checker can fail": the
// same seeds that pass with real fencing fail never-twice when recovery
// skips the fence, within 30 seeds of the bulk class.
func TestSimNeverTwiceNeedsFencing(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		opts := SeedOptions(seed)
		if opts.Quiet {
			continue
		}
		opts.bug = bugProofWithoutFence
		_, err := Run(seed, opts)
		var v *Violation
		if errors.As(err, &v) && v.Invariant == InvNeverTwice {
			t.Logf("seed %d: %v", seed, err)
			if _, err := Run(seed, SeedOptions(seed)); err != nil {
				t.Fatalf("seed %d fails with fencing too: %v", seed, err)
			}
			return
		}
	}
	t.Fatal("skipping the fence went unnoticed for 30 seeds")
}

func TestOptionsValidate(t *testing.T) {
	for i, o := range []Options{{Nodes: 10}, {Nodes: -1}, {Duration: -time.Second}, {Nodes: 3, MaxDown: 4}} {
		if _, err := Run(1, o); err == nil {
			t.Errorf("%d: %+v: want an error", i, o)
		}
	}
	for _, n := range []int{1, 2, 3} {
		for _, storeOnly := range []bool{true, false} {
			if rep, err := Run(5, Options{Nodes: n, Duration: 10 * time.Second, StoreOnly: storeOnly}); err != nil {
				t.Errorf("%d nodes, store only %t: %v\n%s", n, storeOnly, err, rep)
			}
		}
	}
}

// TestSimAgentElections runs store-only seeds with the agent's election
// policy (membership-driven ForgetLeader and staggered campaigns,
// ElectionTick 20); TestSimSeeds runs it in every odd seed of the whole
// system.
func TestSimAgentElections(t *testing.T) {
	n := max(simSeeds(t)/10, 1)
	for seed := uint64(1); seed <= n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			rep, err := Run(seed, Options{AgentElections: true, ElectionTick: 20, StoreOnly: true})
			if err != nil {
				t.Fatalf("%v\n%s\nreplay: go test ./internal/sim -run 'TestSimAgentElections/seed=%d$' -v", err, rep, seed)
			}
		})
	}
}

// BenchmarkSeed measures one bulk seed (a figure, not a test).
func BenchmarkSeed(b *testing.B) {
	for i := range b.N {
		if _, err := Run(uint64(i%50+1), SeedOptions(uint64(i%50+1))); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKnownIssueStopFailedOnDC pins down a liveness gap of the DC (see
// doc.go): when a stop fails on the DC's own node, the plan wants that node
// fenced, but a DC never fences itself and nothing makes another node DC,
// so the resource stays blocked until an operator acts. Restarting the
// agent there (the workaround the randomized runs apply) resolves it.
func TestKnownIssueStopFailedOnDC(t *testing.T) {
	for _, workaround := range []bool{false, true} {
		c, err := NewCluster(7, Options{Nodes: 3, NoWorkarounds: !workaround})
		if err != nil {
			t.Fatal(err)
		}
		for !c.sys.configured && c.err == nil {
			c.sys.configure()
			c.RunFor(500 * time.Millisecond)
		}
		c.RunFor(5 * time.Second)
		if ok, why := c.sys.recovered(); !ok {
			c.Close()
			t.Fatalf("not placed: %s\n%s", why, c.Report())
		}
		var dc *node
		for _, n := range c.n {
			if n.leader {
				dc = n
			}
		}
		var inst string
		for _, id := range sortedKeys(dc.truth) {
			if dc.truth[id].active {
				inst = id
				break
			}
		}
		if inst == "" {
			c.Close()
			t.Fatalf("nothing runs on the DC %s", dc.name)
		}
		dc.truth[inst].faulted, dc.truth[inst].stuck = true, true
		c.RunFor(5 * time.Second)
		if got := c.sys.stuckDC(); got != dc {
			c.Close()
			t.Fatalf("the DC %s is not stuck with a failed stop of %s:\n%s", dc.name, inst, c.Report())
		}
		dc.truth[inst].stuck = false // the next stop would work
		c.settle(40 * time.Second)
		err = c.Err()
		rep := c.Report()
		c.Close()
		switch {
		case workaround && err != nil:
			t.Fatalf("with the workaround: %v\n%s", err, rep)
		case workaround:
			t.Logf("with the workaround: recovered %s after it (%d agent restarts)", fmtTime(rep.RecoverTime), rep.Workarounds)
		case err == nil || !strings.Contains(err.Error(), "stop failed on "+dc.name):
			t.Fatalf("without the workaround: got %v, want %s blocked on its own failed stop (fixed? then drop the workaround)\n%s", err, dc.name, rep)
		default:
			t.Logf("without the workaround: %v", err)
		}
	}
}

// TestSimSelfStopBeforeProbe replays the executor bug the simulator found
// (fixed in executor/selfstop.go; see executor's
// TestSelfStopBeforeFirstProbe): an incarnation that loses quorum before its
// first probe could not stop what its node's records name ("no
// configuration known"). Seed 10 meets that case.
func TestSimSelfStopBeforeProbe(t *testing.T) {
	// The first seed whose run meets a self-stop before the first probe
	// with the bug planted (searched, so that other changes to the
	// simulation, which move every trajectory, do not lose the case).
	hitOf := func(seed uint64, planted bool) string {
		opts := SeedOptions(seed)
		opts.TraceLen = 1 << 20
		if planted {
			opts.bug = bugSelfStopNoConfig
		}
		rep, _ := Run(seed, opts)
		for _, l := range rep.Trace {
			if strings.Contains(l, "no configuration known") {
				return l
			}
		}
		return ""
	}
	for seed := uint64(1); seed <= 500; seed++ {
		hit := hitOf(seed, true)
		if hit == "" {
			continue
		}
		t.Logf("seed %d, before the fix: %s", seed, hit)
		if hit := hitOf(seed, false); hit != "" {
			t.Fatalf("seed %d: the fixed executor still cannot stop: %s", seed, hit)
		}
		return
	}
	t.Fatal("no seed in 1..500 meets a self-stop before the first probe")
}

// TestSimReleases: the seeded runs exercise the isolation releases (see
// datastore.go), in the class without a fence device: some release on a
// node's word, and some read a claim after its node rejoined, which the
// node-index guard refuses, one of them while the node runs a claimed
// instance again (the claim that would run it twice).
func TestSimReleases(t *testing.T) {
	var released, stale, running uint64
	for seed := uint64(1); seed <= 400 && (released == 0 || stale == 0 || running == 0); seed++ {
		opts := SeedOptions(seed)
		if !opts.NoFence {
			continue
		}
		rep, err := Run(seed, opts)
		if err != nil {
			t.Fatalf("%v\n%s\nreplay: %s", err, rep, replayCommand(seed))
		}
		if released == 0 && rep.Releases > 0 {
			released = seed
		}
		if stale == 0 && rep.StaleClaims > 0 {
			stale = seed
		}
		if running == 0 && rep.StaleClaimsRunning > 0 {
			running = seed
		}
	}
	if released == 0 || stale == 0 || running == 0 {
		t.Fatalf("seeds 1..400 without a fence device: first release at seed %d, first stale claim at %d, first naming a running instance at %d (0: none)", released, stale, running)
	}
	t.Logf("first release at seed %d, first stale claim refused at seed %d, first naming an instance running on its node at seed %d", released, stale, running)
}
