package datastore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAcquireRaceAtMostOneWins: acquirers that find the same lease free at
// the same instant all write; the settle check must leave at most one of
// them holding it. The invariant is checked on the leases' validity, which
// is computed rather than observed and so does not depend on scheduling:
// the validity of one winner must end before the next winner's Acquire
// returned. (A winner whose settle check ran late may be granted a lease
// that lapses soon after; a later winner is then fine.) Without the
// settle check every acquirer of a round wins.
func TestAcquireRaceAtMostOneWins(t *testing.T) {
	for _, mode := range []string{"absent", "released", "expired"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			root := newDatastore(t)
			opts := testOpts()
			rounds := 40
			if mode == "expired" {
				rounds = 12
			}
			wins := 0
			for r := range rounds {
				resource := fmt.Sprintf("vm%d", r)
				switch mode {
				case "released":
					writeLease(t, root, Record{Resource: resource, Holder: holder("old"), Counter: 5, Released: true})
				case "expired":
					writeLease(t, root, Record{Resource: resource, Holder: holder("dead"), Counter: 5})
				}
				const n = 3
				type win struct {
					node string
					at   time.Time
					l    *Lease
				}
				var (
					mu  sync.Mutex
					won []win
					wg  sync.WaitGroup
				)
				start := make(chan struct{})
				for i := range n {
					wg.Go(func() {
						<-start
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						node := fmt.Sprintf("n%d", i)
						l, err := Acquire(ctx, root, resource, holder(node), opts)
						at := time.Now()
						if err != nil {
							if !IsHeld(err) && !errors.Is(err, ErrSlow) && !errors.Is(err, ErrTimeout) {
								t.Errorf("round %d: %s: unexpected error %v", r, node, err)
							}
							return
						}
						mu.Lock()
						won = append(won, win{node, at, l})
						mu.Unlock()
					})
				}
				close(start)
				wg.Wait()
				for _, w := range won {
					w.l.Close() // freezes ValidUntil
				}
				slices.SortFunc(won, func(a, b win) int { return a.at.Compare(b.at) })
				for i := 1; i < len(won); i++ {
					prev, next := won[i-1], won[i]
					if until := prev.l.ValidUntil(); until.After(next.at) {
						t.Fatalf("round %d (%s): %s holds the lease until %v after %s acquired it",
							r, mode, prev.node, until.Sub(next.at), next.node)
					}
				}
				if len(won) > 1 {
					t.Logf("round %d: %d winners, one after the other's lease lapsed", r, len(won))
				}
				if len(won) > 0 {
					wins++
					// A loser's too-slow write may land after the winner's
					// check (the winner then loses at its next renewal).
					last := won[len(won)-1]
					if rec, err := Read(context.Background(), root, resource); err != nil || rec.Holder.Node != last.node {
						t.Logf("round %d: %s won, then a late write left %+v (%v)", r, last.node, rec, err)
					}
				}
				writes.idle()
			}
			t.Logf("%s: %d of %d rounds had a winner", mode, wins, rounds)
			if wins == 0 {
				t.Errorf("no round had a winner: the test exercised nothing")
			}
		})
	}
}

// The never-twice promise end to end: workers loop acquiring one lease,
// "run the VM" for a while, then release it, or just close the handle (a
// crash: the lease is left to expire), or stop when the lease is lost.
// Each hold is a tenure, from when Acquire returned to when the worker
// stopped relying on the lease: before calling Release, or the end of the
// lease's validity after a Close or a loss (when a real driver would have
// killed QEMU at the latest). No two tenures may overlap.
func TestMutualExclusionGoroutines(t *testing.T) {
	root := newDatastore(t)
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []tenure
	for i := range 3 {
		wg.Go(func() {
			ts, notes := exclusionWorker(root, holder(fmt.Sprintf("g%d", i)), deadline, uint64(i))
			mu.Lock()
			defer mu.Unlock()
			all = append(all, ts...)
			for _, n := range notes {
				t.Log(n)
			}
		})
	}
	wg.Wait()
	checkTenures(t, all)
}

// The same across processes, on the disk rather than tmpfs: nothing is
// shared in memory, and the write queue of one process does not order
// another's writes.
func TestMutualExclusionProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	root := newDiskDatastore(t)
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+root, helperNodeEnv+"="+fmt.Sprintf("p%d", i))
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		outs = append(outs, out)
	}
	var all []tenure
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper p%d: %v\n%s", i, err, outs[i])
			continue
		}
		for _, line := range strings.Split(outs[i].String(), "\n") {
			var tn tenure
			var from, to int64
			if _, err := fmt.Sscanf(line, "tenure %s %d %d", &tn.node, &from, &to); err == nil {
				tn.from, tn.to = time.Unix(0, from), time.Unix(0, to)
				all = append(all, tn)
			} else if line != "" {
				t.Logf("p%d: %s", i, line)
			}
		}
	}
	checkTenures(t, all)
}

type tenure struct {
	node     string
	from, to time.Time
}

func checkTenures(t *testing.T, all []tenure) {
	t.Helper()
	slices.SortFunc(all, func(a, b tenure) int { return a.from.Compare(b.from) })
	nodes := map[string]int{}
	for i, tn := range all {
		nodes[tn.node]++
		for _, prev := range all[:i] {
			// A holder may take its own confirmed lease back at once (the
			// rule for an agent that closed its handle): one actor.
			if prev.to.After(tn.from) && prev.node != tn.node {
				t.Errorf("%s acquired the lease %v before %s's tenure ended", tn.node, prev.to.Sub(tn.from), prev.node)
			}
		}
	}
	t.Logf("%d tenures: %v", len(all), nodes)
	if len(nodes) < 2 {
		t.Errorf("the lease never changed hands: the test exercised nothing")
	}
}

const (
	helperEnv     = "VIGIL_DATASTORE_HELPER_ROOT"
	helperNodeEnv = "VIGIL_DATASTORE_HELPER_NODE"
)

// helperProcess is the child of TestMutualExclusionProcesses.
func helperProcess(root string) int {
	node := os.Getenv(helperNodeEnv)
	ts, notes := exclusionWorker(root, holder(node), time.Now().Add(2*time.Second), uint64(node[len(node)-1]))
	for _, n := range notes {
		fmt.Println(n)
	}
	for _, tn := range ts {
		fmt.Printf("tenure %s %d %d\n", tn.node, tn.from.UnixNano(), tn.to.UnixNano())
	}
	writes.idle()
	return 0
}

func exclusionWorker(root string, me Holder, deadline time.Time, seed uint64) (tenures []tenure, notes []string) {
	rng := rand.New(rand.NewPCG(seed, 42))
	opts := testOpts()
	outcomes := map[string]int{}
	defer func() { notes = append(notes, fmt.Sprintf("%s: %v", me.Node, outcomes)) }()
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*opts.LeaseTime)
		l, err := Acquire(ctx, root, "vm1", me, opts)
		cancel()
		if err != nil {
			switch {
			case IsHeld(err):
				outcomes["held"]++
			case errors.Is(err, ErrSlow):
				outcomes["slow"]++
			case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
				outcomes["timeout"]++
			default:
				notes = append(notes, fmt.Sprintf("%s: acquire: %v", me.Node, err))
			}
			time.Sleep(time.Duration(rng.IntN(20)) * ms)
			continue
		}
		tn := tenure{node: me.Node, from: time.Now()}
		select {
		case <-l.Lost():
			// A loser's too-slow write can land over ours: the VM is
			// killed now, or at the latest when the lease lapses.
			tn.to = l.ValidUntil()
			if now := time.Now(); now.Before(tn.to) {
				tn.to = now
			}
			outcomes["lost"]++
		case <-time.After(time.Duration(rng.IntN(3*int(opts.Renew))) + ms):
			if rng.IntN(4) == 0 {
				l.Close() // a crash: the VM may run until the lease lapses
				tn.to = l.ValidUntil()
				outcomes["closed"]++
				// Stay away a while so that others can wait it out.
				time.Sleep(time.Duration(rng.IntN(int(2 * opts.LeaseTime))))
			} else {
				tn.to = time.Now() // the VM has stopped
				if err := l.Release(context.Background()); err != nil {
					outcomes["release failed"]++
				} else {
					outcomes["released"]++
				}
				time.Sleep(time.Duration(rng.IntN(int(opts.Settle))))
			}
		}
		tenures = append(tenures, tn)
	}
	return tenures, notes
}
