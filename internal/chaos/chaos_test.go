//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// TestChaos runs VIGIL_CHAOS_EPISODES (default 50) randomized fault
// episodes drawn from VIGIL_CHAOS_SEED (default: from the time, printed;
// VIGIL_CHAOS_KINDS=isolate,partition draws only those kinds) over five
// real nodes with two links each, a lab fence device for every
// node, four vigil:dummy, a vigil:process and a vigil:ip resource, and fails
// on any violation of the promises (see the package doc).
func TestChaos(t *testing.T) {
	seed := envSeed(t)
	n := envInt(t, "VIGIL_CHAOS_EPISODES", 50)
	cfg := runnerConfig{Nodes: 5, Dummies: 4, Process: true, VIP: true}
	gen := GenConfig{Nodes: cfg.Nodes, Links: 2, Resources: cfg.Dummies + 2, Dummies: cfg.Dummies}
	replay := fmt.Sprintf("VIGIL_CHAOS_SEED=%d", seed)
	if only := os.Getenv("VIGIL_CHAOS_KINDS"); only != "" {
		for _, k := range strings.Split(only, ",") {
			if !slices.Contains(Kinds, Kind(k)) {
				t.Fatalf("VIGIL_CHAOS_KINDS: unknown kind %q (have %v)", k, Kinds)
			}
			gen.Only = append(gen.Only, Kind(k))
		}
		replay += " VIGIL_CHAOS_KINDS=" + only
	}
	eps := Generate(seed, n, gen)
	say(t, "chaos: seed %d (replay: %s), %d episodes", seed, replay, n)
	for _, e := range eps {
		t.Logf("chaos: plan: %s", e)
	}
	r := newRunner(t, cfg)
	s := r.run(seed, eps)
	say(t, "\n%s", s.Table())
	if len(s.Violations) > 0 {
		t.Errorf("chaos: %d violation(s); replay with %s", len(s.Violations), replay)
	}
	if s.Episodes < n {
		t.Errorf("chaos: only %d of %d episodes ran", s.Episodes, n)
	}
}

// TestChaosCheckerCatchesUnfencedRecovery: the checker can fail. A binary
// built with the vigil_chaos_nofence tag recovers a lost node's resources
// without fencing it (its NodeState counts a silent node offline at once).
// A node running resources hangs (SIGSTOP: its resources keep running, it
// cannot stop them), then one is isolated: the DC starts their resources
// elsewhere while they still run them, and the never-twice checker must
// report it. (An isolated node alone usually stops its resources itself,
// on quorum loss, before the DC starts them: the hang is the sure split.)
func TestChaosCheckerCatchesUnfencedRecovery(t *testing.T) {
	if lab.NetnsUnavailable() != "" {
		t.Skipf("chaos needs network namespaces: %s", lab.NetnsUnavailable())
	}
	bin := buildBroken(t)
	r := newRunner(t, runnerConfig{Nodes: 3, Binary: bin, Dummies: 3, Process: true})
	eps := []Episode{
		{N: 1, Kind: Pause, Target: Target{Role: "holder", Index: 0}, Hold: 3 * time.Second},
		{N: 2, Kind: Isolate, Target: Target{Role: "holder", Index: 3}, Hold: 3 * time.Second},
	}
	s := r.run(0, eps)
	s.Script = "(hang, then isolate, a node running resources; binary built with vigil_chaos_nofence)"
	say(t, "\n%s", s.Table())
	twice := 0
	for _, v := range s.Violations {
		if v.Kind == VNeverTwice {
			twice++
		}
	}
	if twice == 0 {
		t.Fatalf("the never-twice checker reported nothing against a build that recovers without fencing")
	}
	say(t, "chaos: the broken build (vigil_chaos_nofence) was caught: %d never-twice violation(s)", twice)
}

// buildBroken builds ./cmd/vigil with the vigil_chaos_nofence tag into a
// temporary folder: only this test ever runs that binary.
func buildBroken(t *testing.T) string {
	t.Helper()
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(t.TempDir(), "vigil-broken")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-tags", "vigil_chaos_nofence", "-o", out, "./cmd/vigil")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	began := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("build the broken binary: %v\n%s", err, msg.String())
	}
	t.Logf("chaos: built the broken binary (vigil_chaos_nofence) in %s", time.Since(began).Round(time.Millisecond))
	return out
}

// envSeed reads VIGIL_CHAOS_SEED, or derives a seed from the time.
func envSeed(t *testing.T) uint64 {
	s := os.Getenv("VIGIL_CHAOS_SEED")
	if s == "" {
		return uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("VIGIL_CHAOS_SEED=%q: want a number", s)
	}
	return v
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return v
}

// say logs to the test and prints to stdout, so CI logs show it.
func say(t *testing.T, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	t.Log(s)
	fmt.Println(s)
}

// TestChaosIsolatedDCFencesNoHealthyNode is the regression test of a bug
// the chaos runner found (its notes "powered off (fenced) although the fault
// did not hit it"): a DC cut off from every peer declares them lost one at a
// time (their last heartbeats arrived at different moments) and, while it
// still counted a quorum, started fencing the first ones; it lost quorum a
// few hundred milliseconds later, but the fences ran on and powered off
// healthy nodes of the majority: in a five-node cluster two, which left no
// quorum anywhere. The DC now commits each fence's intent through Raft
// before the device runs (controller.startDeviceFence), which an isolated
// DC cannot do.
func TestChaosIsolatedDCFencesNoHealthyNode(t *testing.T) {
	r := newRunner(t, runnerConfig{Nodes: 5, Dummies: 4, Process: true})
	var eps []Episode
	for i := 1; i <= 3; i++ {
		eps = append(eps, Episode{N: i, Kind: Isolate, Target: Target{Role: "dc"}, Hold: 3 * time.Second})
	}
	s := r.run(0, eps)
	s.Script = "(isolate the DC, three times)"
	say(t, "\n%s", s.Table())
	if len(s.Notes) > 0 {
		t.Errorf("an isolated DC powered off nodes the fault did not hit:\n  %s", strings.Join(s.Notes, "\n  "))
	}
}
