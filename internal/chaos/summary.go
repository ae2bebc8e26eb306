package chaos

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary is what a run did and found.
type Summary struct {
	Seed uint64
	// Script, when set, names a scripted run (no seed to replay).
	Script   string
	Nodes    int
	Episodes int
	Elapsed  time.Duration
	// Faults counts the episodes by fault kind.
	Faults map[Kind]int
	// Ops counts the operator actions by kind, and the acknowledged ones.
	Ops, OpsAcked map[OpKind]int
	Violations    []Violation
	// Recovery is, per episode, the time from the heal until every
	// resource that should run ran once with the status agreeing.
	Recovery []time.Duration
	// Failover is, per episode that made the cluster recover resources
	// (a node lost, a monitor failed), the time from the fault until they
	// all ran again, possibly before the heal.
	Failover []time.Duration
	// Samples counts the ground-truth samples taken.
	Samples int
	// Notes are findings no checker judges (such as a node fenced that the
	// fault did not hit), printed after the violations.
	Notes []string
}

// Percentile returns the q-quantile (0..1) of ds by the nearest-rank
// method; 0 for none.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Table renders the summary for the log:
//
//	chaos: seed 42 (replay: VIGIL_CHAOS_SEED=42), 50 episodes over 5 nodes in 6m40s, 4000 samples
//	fault         episodes
//	kill          8
//	...
func (s Summary) Table() string {
	var b strings.Builder
	run := fmt.Sprintf("seed %d (replay: VIGIL_CHAOS_SEED=%d)", s.Seed, s.Seed)
	if s.Script != "" {
		run = "scripted run " + s.Script
	}
	fmt.Fprintf(&b, "chaos: %s, %d episodes over %d nodes in %s, %d ground-truth samples\n",
		run, s.Episodes, s.Nodes, s.Elapsed.Round(time.Second), s.Samples)
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "fault\tepisodes\t")
	for _, k := range Kinds {
		fmt.Fprintf(w, "%s\t%d\t\n", k, s.Faults[k])
	}
	fmt.Fprintln(w, "\t\t")
	fmt.Fprintln(w, "operator action\tdone\tacknowledged")
	for _, k := range OpKinds {
		fmt.Fprintf(w, "%s\t%d\t%d\n", k, s.Ops[k], s.OpsAcked[k])
	}
	fmt.Fprintln(w, "\t\t")
	fmt.Fprintln(w, "violation\tcount\t")
	byKind := map[string]int{}
	for _, v := range s.Violations {
		byKind[v.Kind]++
	}
	for _, k := range ViolationKinds {
		fmt.Fprintf(w, "%s\t%d\t\n", k, byKind[k])
	}
	fmt.Fprintln(w, "\t\t")
	fmt.Fprintln(w, "time (s)\tn\tp50\tp99\tmax")
	for _, row := range []struct {
		name string
		ds   []time.Duration
	}{
		{"heal->recovered", s.Recovery},
		{"fault->all running", s.Failover},
	} {
		fmt.Fprintf(w, "%s\t%d\t%.2f\t%.2f\t%.2f\n", row.name, len(row.ds),
			Percentile(row.ds, 0.5).Seconds(), Percentile(row.ds, 0.99).Seconds(), Percentile(row.ds, 1).Seconds())
	}
	w.Flush()
	b.WriteString("heal->recovered: from the heal until every resource that should run runs once (ground truth) and the status agrees\n")
	b.WriteString("fault->all running: from the fault until every resource ran once again (ground truth), in episodes where some stopped\n")
	if len(s.Violations) > 0 {
		fmt.Fprintf(&b, "VIOLATIONS (%d):\n", len(s.Violations))
		for _, v := range s.Violations {
			fmt.Fprintf(&b, "  %s\n", v)
		}
	} else {
		b.WriteString("no violations\n")
	}
	if len(s.Notes) > 0 {
		fmt.Fprintf(&b, "notes (not violations of the checked promises) (%d):\n", len(s.Notes))
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	return b.String()
}
