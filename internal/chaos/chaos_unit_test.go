package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

var genCfg = GenConfig{Nodes: 5, Links: 2, Resources: 6, Dummies: 4}

// A seed replays the same episodes; another seed gives others.
func TestGenerateIsSeeded(t *testing.T) {
	a := Generate(42, 50, genCfg)
	b := Generate(42, 50, genCfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 42 gave two different sequences")
	}
	c := Generate(43, 50, genCfg)
	if reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same sequence")
	}
	if len(a) != 50 {
		t.Fatalf("got %d episodes, want 50", len(a))
	}
}

// Every kind shows up over enough episodes, and every episode is well
// formed: numbered, held a while, targets in range, a strict minority, ops
// within the hold and in order, only property changes when no node fails.
func TestGenerateWellFormed(t *testing.T) {
	seen := map[Kind]int{}
	ops := map[OpKind]int{}
	for seed := uint64(1); seed <= 20; seed++ {
		for i, e := range Generate(seed, 50, genCfg) {
			seen[e.Kind]++
			if e.N != i+1 {
				t.Errorf("seed %d #%d: N=%d", seed, i, e.N)
			}
			if e.Hold < 300*time.Millisecond || e.Hold > 5*time.Second {
				t.Errorf("seed %d %s: hold out of range", seed, e)
			}
			if e.Target.Index < 0 || (e.Target.Role == "node" && e.Target.Index >= genCfg.Nodes) ||
				(e.Target.Role == "holder" && e.Target.Index >= genCfg.Resources) ||
				(e.Target.Role == "dummy" && e.Target.Index >= genCfg.Dummies) {
				t.Errorf("seed %d %s: target out of range", seed, e)
			}
			if e.Kind == Partition && (len(e.Minority) == 0 || 2*len(e.Minority) >= genCfg.Nodes) {
				t.Errorf("seed %d %s: not a strict minority", seed, e)
			}
			if e.Kind == Loss && (e.LossPct < 1 || e.LossPct > 50) {
				t.Errorf("seed %d %s: loss rate", seed, e)
			}
			var last time.Duration
			for _, o := range e.Ops {
				ops[o.Kind]++
				if o.At < last || o.At > e.Hold {
					t.Errorf("seed %d %s: op times out of order or past the hold", seed, e)
				}
				last = o.At
				if e.Kind.NoFailure() && o.Kind != OpProperty {
					t.Errorf("seed %d %s: a %s in an episode without failure", seed, e, o.Kind)
				}
			}
		}
	}
	for _, k := range Kinds {
		if seen[k] == 0 {
			t.Errorf("kind %s never drawn in 1000 episodes", k)
		}
	}
	for _, k := range OpKinds {
		if ops[k] == 0 {
			t.Errorf("op %s never drawn in 1000 episodes", k)
		}
	}
	// One link: no cut-link (it would be an isolation).
	for _, e := range Generate(7, 200, GenConfig{Nodes: 3, Links: 1, Resources: 2, Dummies: 1}) {
		if e.Kind == CutLink {
			t.Fatalf("%s drawn with one link", e)
		}
	}
}

func TestEpisodeString(t *testing.T) {
	e := Episode{N: 3, Kind: Partition, Minority: []int{1, 4}, Target: Target{Role: "dc"}, Hold: 2500 * time.Millisecond,
		Ops: []Op{{Kind: OpMove, At: time.Second, Via: 0, Node: 2, Resource: 1}}}
	want := "episode 3: partition minority [n2 n5] with the dc hold 2.5s; move@1s via n1 r1->n3"
	if got := e.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	e = Episode{N: 1, Kind: Loss, Target: Target{Role: "holder", Index: 2}, Link: 1, LossPct: 20, Hold: 3 * time.Second}
	if got, want := e.String(), "episode 1: loss holder(r2) link 1 20% hold 3s"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func TestNeverTwice(t *testing.T) {
	samples := []Sample{
		{At: at(0), Episode: 1, Active: map[string][]string{"a": {"n1"}, "b": {"n2"}}},
		{At: at(100), Episode: 1, Active: map[string][]string{"a": {"n1", "n3"}, "b": {"n2"}}},
		{At: at(200), Episode: 1, Active: map[string][]string{"a": {"n1", "n3"}, "b": {"n2", "n4"}}},
		{At: at(300), Episode: 1, Active: map[string][]string{"a": {"n3"}, "b": {"n2", "n4"}}},
		{At: at(400), Episode: 2, Active: map[string][]string{"a": {"n3"}}},
		{At: at(500), Episode: 2, Active: map[string][]string{"a": {"n2", "n3"}}},
	}
	got := NeverTwice(samples)
	want := []string{
		"never-twice (episode 1 at 12:00:00.100): a active on n1+n3 in 2 sample(s) over 100ms",
		"never-twice (episode 1 at 12:00:00.200): b active on n2+n4 in 2 sample(s) over 100ms",
		"never-twice (episode 2 at 12:00:00.500): a active on n2+n3 in 1 sample(s) over 0s",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d violations %v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("violation %d:\n got  %s\n want %s", i, got[i], want[i])
		}
	}
	if v := NeverTwice(samples[:1]); len(v) != 0 {
		t.Errorf("clean samples: %v", v)
	}
}

func TestRecovered(t *testing.T) {
	tests := []struct {
		truth   map[string][]string
		started map[string]string
		ok      bool
		why     string
	}{
		{map[string][]string{"a": {"n1"}, "b": {"n2"}}, map[string]string{"a": "n1", "b": "n2"}, true, ""},
		{map[string][]string{"a": {"n1"}}, map[string]string{"a": "n1"}, false, "b active on []"},
		{map[string][]string{"a": {"n1", "n2"}, "b": {"n2"}}, map[string]string{"a": "n1", "b": "n2"}, false, "a active on [n1 n2]"},
		{map[string][]string{"a": {"n1"}, "b": {"n2"}}, map[string]string{"a": "n3"}, false, "a active on n1, status: n3; b active on n2, status: not started"},
	}
	for i, tt := range tests {
		ok, why := Recovered([]string{"a", "b"}, tt.truth, tt.started)
		if ok != tt.ok || why != tt.why {
			t.Errorf("%d: got (%v, %q), want (%v, %q)", i, ok, why, tt.ok, tt.why)
		}
	}
}

func TestFalseFailover(t *testing.T) {
	base := map[string]string{"a": "n1", "b": "n2", "vip": "n3"}
	samples := []Sample{
		{At: at(0), Episode: 4, Active: map[string][]string{"a": {"n1"}, "b": {"n2"}}},
		{At: at(100), Episode: 3, Active: map[string][]string{"a": {"n5"}}}, // another episode
		{At: at(200), Episode: 4, Active: map[string][]string{"b": {"n2"}, "vip": {"n4"}}},
	}
	final := map[string]string{"a": "n1", "b": "n2", "vip": "n4"}
	if v := FalseFailover(4, base, samples, final, nil, map[string]bool{"vip": true}); len(v) != 0 {
		t.Errorf("exempt vip, nothing moved: %v", v)
	}
	v := FalseFailover(4, base, samples, final, []string{"n2"}, nil)
	var got []string
	for _, x := range v {
		got = append(got, x.Detail)
	}
	want := []string{
		"vip (on n3 before the fault) active on n4",
		`vip was on n3 before the fault and is on "n4" after it`,
		"node(s) fenced although none failed: n2",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestLostWrites(t *testing.T) {
	writes := []Write{
		{Episode: 1, Key: "property/p1", Value: "x", Outcome: Acked, Cmd: "property set p1=x"},
		{Episode: 2, Key: "property/p2", Value: "y", Outcome: Refused, Cmd: "property set p2=y"},
		{Episode: 3, Key: "standby/n2", Value: "on", Outcome: Acked, Cmd: "node standby n2"},
		{Episode: 3, Key: "standby/n2", Value: "", Outcome: Unknown, Cmd: "node unstandby n2"},
		{Episode: 4, Key: "resource/c4", Value: "present", Outcome: Unknown, Cmd: "resource create c4"},
		{Episode: 5, Key: "location/cli-prefer-a", Value: "n3", Outcome: Acked, Cmd: "resource move a n3"},
		{Episode: 5, Key: "location/cli-prefer-a", Value: "", Outcome: Acked, Cmd: "resource clear a"},
	}
	good := []map[string]string{
		{"property/p1": "x", "standby/n2": "on"},
		{"property/p1": "x", "resource/c4": "present"},
	}
	for i, f := range good {
		if v := LostWrites(writes, f); len(v) != 0 {
			t.Errorf("good %d: %v", i, v)
		}
	}
	v := LostWrites(writes, map[string]string{"property/p2": "y", "location/cli-prefer-a": "n3"})
	var got []string
	for _, x := range v {
		got = append(got, x.String())
	}
	want := []string{
		"lost-write (episode 5): location/cli-prefer-a is \"n3\" at the end; the acknowledged `resource clear a` (episode 5) set \"\"",
		"lost-write (episode 1): property/p1 is \"\" at the end; the acknowledged `property set p1=x` (episode 1) set \"x\"",
		"lost-write (episode 2): property/p2 is \"y\" at the end, but no write of it was acknowledged: `property set p2=y` (refused)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFailoverTime(t *testing.T) {
	exp := []string{"a", "b"}
	samples := []Sample{
		{At: at(0), Episode: 1, Active: map[string][]string{"a": {"n1"}, "b": {"n2"}}},
		{At: at(100), Episode: 2, Active: map[string][]string{"a": {"n1"}, "b": {"n2"}}},
		{At: at(200), Episode: 2, Active: map[string][]string{"a": {"n1"}}},
		{At: at(300), Episode: 2, Active: map[string][]string{"a": {"n1"}}},
		{At: at(1400), Episode: 2, Active: map[string][]string{"a": {"n1"}, "b": {"n3"}}},
	}
	d, ok := FailoverTime(samples, 2, at(100), exp)
	if !ok || d != 1300*time.Millisecond {
		t.Errorf("got %s %v, want 1.3s true", d, ok)
	}
	if _, ok := FailoverTime(samples, 1, at(0), exp); ok {
		t.Errorf("episode 1 had no failover")
	}
	if _, ok := FailoverTime(samples[:4], 2, at(100), exp); ok {
		t.Errorf("never back: no figure")
	}
}

func TestPercentileAndTable(t *testing.T) {
	ds := []time.Duration{5, 1, 3, 2, 4}
	if p := Percentile(ds, 0.5); p != 3 {
		t.Errorf("p50 %d", p)
	}
	if p := Percentile(ds, 0.99); p != 5 {
		t.Errorf("p99 %d", p)
	}
	if p := Percentile(nil, 0.5); p != 0 {
		t.Errorf("p50 of none %d", p)
	}
	s := Summary{Seed: 9, Nodes: 5, Episodes: 2, Elapsed: time.Minute, Faults: map[Kind]int{Kill: 1, Loss: 1},
		Ops: map[OpKind]int{OpMove: 1}, OpsAcked: map[OpKind]int{OpMove: 1},
		Recovery: []time.Duration{time.Second, 2 * time.Second}, Failover: []time.Duration{1500 * time.Millisecond},
		Violations: []Violation{{Kind: VLostWrite, Episode: 2, Detail: "gone"}}}
	tab := s.Table()
	for _, want := range []string{"VIGIL_CHAOS_SEED=9", "kill", "lost-write", "heal->recovered", "p99", "VIOLATIONS (1)", "gone"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	t.Logf("\n%s", tab)
}
