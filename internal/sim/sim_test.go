package sim

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"
)

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

// TestSimSeeds is the randomized simulation: every seed runs 30 s of
// simulated faults and writes, then heals and checks. A failing seed
// replays alone, bit for bit.
func TestSimSeeds(t *testing.T) {
	n := simSeeds(t)
	start := time.Now()
	var worst time.Duration
	var worstSeed uint64
	for seed := uint64(1); seed <= n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s := time.Now()
			rep, err := Run(seed, Options{})
			if d := time.Since(s); d > worst {
				worst, worstSeed = d, seed
			}
			if err != nil {
				t.Fatalf("%v\n%s\nreplay: go test ./internal/sim -run 'TestSimSeeds/seed=%d$' -v", err, rep, seed)
			}
			if testing.Verbose() {
				t.Logf("%d acked, %d crashes, %d partitions, %d terms, settled in %s",
					rep.Acked, rep.Crashes, rep.Partitions, len(rep.Leaders), fmtTime(rep.SettleTime))
			}
		})
	}
	t.Logf("%d seeds in %s: %s per seed, slowest seed %d (%s)",
		n, time.Since(start).Round(time.Millisecond), (time.Since(start) / time.Duration(n)).Round(time.Millisecond),
		worstSeed, worst.Round(time.Millisecond))
}

// TestSimDeterministic: a seed replays bit for bit, trace included.
func TestSimDeterministic(t *testing.T) {
	for _, seed := range []uint64{3, 42} {
		a, errA := Run(seed, Options{})
		b, errB := Run(seed, Options{})
		if fmt.Sprint(errA) != fmt.Sprint(errB) {
			t.Fatalf("seed %d: errors differ: %v vs %v", seed, errA, errB)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("seed %d: reports differ:\n%s\nvs\n%s", seed, a, b)
		}
		if a.String() != b.String() || len(a.Trace) == 0 {
			t.Fatalf("seed %d: traces differ or are empty", seed)
		}
		if a.Acked == 0 || a.Crashes == 0 || a.Partitions == 0 || len(a.Leaders) < 2 {
			t.Errorf("seed %d: a run that tests little:\n%s", seed, a)
		}
	}
	a, _ := Run(1, Options{})
	b, _ := Run(2, Options{})
	if reflect.DeepEqual(a.Trace, b.Trace) {
		t.Error("seeds 1 and 2 gave the same trace")
	}
}

// TestSimCatchesViolation proves each invariant can fail: a bug planted in
// the harness must be reported, as the right invariant, within a bounded
// number of seeds (the first failing seed is deterministic).
func TestSimCatchesViolation(t *testing.T) {
	for _, tc := range []struct {
		name string
		bug  bug
		inv  string
	}{
		// Acking at Propose loses writes that were never committed.
		{"ack-on-propose", bugAckOnPropose, InvAcked},
		// A disk that stores something else than it was given diverges.
		{"rot-disk", bugRotDisk, InvApplied},
		// A quorum that ignores membership stays quorate when isolated.
		{"deaf-quorum", bugDeafQuorum, InvIsolation},
		// A network that forges votes gives a term two leaders.
		{"forge-votes", bugForgeVotes, InvLeader},
		// A node restarted on an empty disk has forgotten its log; raft
		// notices (it panics on a commit index past its log) or writes
		// are lost.
		{"wipe-disk", bugWipeDisk, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const maxSeeds = 30
			for seed := uint64(1); seed <= maxSeeds; seed++ {
				_, err := Run(seed, Options{bug: tc.bug})
				if err == nil {
					continue
				}
				var v *Violation
				if !errors.As(err, &v) || v.Seed != seed {
					t.Fatalf("seed %d: not a Violation for this seed: %v", seed, err)
				}
				if tc.inv != "" && v.Invariant != tc.inv {
					t.Fatalf("seed %d: got %q, want %q: %v", seed, v.Invariant, tc.inv, err)
				}
				t.Logf("caught at seed %d: %.200s", seed, err)
				return
			}
			t.Fatalf("no violation in %d seeds", maxSeeds)
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for i, o := range []Options{{Nodes: 10}, {Nodes: -1}, {Duration: -time.Second}, {Nodes: 3, MaxDown: 4}} {
		if _, err := Run(1, o); err == nil {
			t.Errorf("%d: %+v: want an error", i, o)
		}
	}
	for _, n := range []int{1, 2, 3} {
		if rep, err := Run(5, Options{Nodes: n, Duration: 10 * time.Second}); err != nil {
			t.Errorf("%d nodes: %v\n%s", n, err, rep)
		}
	}
}

// TestSimAgentElections runs seeds with the agent's election policy
// (membership-driven ForgetLeader and staggered campaigns, ElectionTick 20).
func TestSimAgentElections(t *testing.T) {
	n := max(simSeeds(t)/2, 1)
	for seed := uint64(1); seed <= n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rep, err := Run(seed, Options{AgentElections: true, ElectionTick: 20})
			if err != nil {
				t.Fatalf("%v\n%s\nreplay: go test ./internal/sim -run 'TestSimAgentElections/seed=%d$' -v", err, rep, seed)
			}
		})
	}
}
