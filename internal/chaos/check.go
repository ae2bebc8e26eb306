package chaos

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Sample is where every watched instance was active at one instant: the
// ground truth read from the nodes (lab.Truth), tagged with the episode
// running then (0 between episodes).
type Sample struct {
	At      time.Time
	Episode int
	// Active maps an instance to the running nodes where it is active,
	// sorted; instances active nowhere are absent.
	Active map[string][]string
}

// Violation kinds: the promises the checkers hold the cluster to.
const (
	// VNeverTwice: an instance active on two nodes at one sampled instant.
	VNeverTwice = "never-twice"
	// VRecovered: after the heal, with quorum, an instance that should run
	// did not run once (with the status agreeing) within the bound.
	VRecovered = "recovered"
	// VLostWrite: an acknowledged configuration change is missing at the
	// end (or a refused one is there).
	VLostWrite = "lost-write"
	// VFalseFailover: in an episode in which no node failed, a resource
	// moved or a node was fenced.
	VFalseFailover = "false-failover"
)

// ViolationKinds is every violation kind, in the order of the summary.
var ViolationKinds = []string{VNeverTwice, VRecovered, VLostWrite, VFalseFailover}

// Violation is one broken promise.
type Violation struct {
	Kind    string
	Episode int
	At      time.Time
	Detail  string
}

func (v Violation) String() string {
	at := ""
	if !v.At.IsZero() {
		at = " at " + v.At.Format("15:04:05.000")
	}
	return fmt.Sprintf("%s (episode %d%s): %s", v.Kind, v.Episode, at, v.Detail)
}

// NeverTwice returns a violation for every run of consecutive samples in
// which an instance is active on more than one node (one per instance and
// run, with how many samples and how long it lasted).
func NeverTwice(samples []Sample) []Violation {
	type run struct {
		first, last Sample
		nodes       []string
		count       int
	}
	open := map[string]*run{}
	var out []Violation
	closeRun := func(id string, r *run) {
		out = append(out, Violation{
			Kind: VNeverTwice, Episode: r.first.Episode, At: r.first.At,
			Detail: fmt.Sprintf("%s active on %s in %d sample(s) over %s", id, strings.Join(r.nodes, "+"),
				r.count, r.last.At.Sub(r.first.At).Round(time.Millisecond)),
		})
	}
	for _, s := range samples {
		for _, id := range slices.Sorted(maps.Keys(open)) {
			if len(s.Active[id]) < 2 {
				closeRun(id, open[id])
				delete(open, id)
			}
		}
		for _, id := range slices.Sorted(maps.Keys(s.Active)) {
			nodes := s.Active[id]
			if len(nodes) < 2 {
				continue
			}
			r := open[id]
			if r == nil {
				r = &run{first: s}
				open[id] = r
			}
			r.last = s
			r.count++
			for _, n := range nodes {
				if !slices.Contains(r.nodes, n) {
					r.nodes = append(r.nodes, n)
				}
			}
			slices.Sort(r.nodes)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(open)) {
		closeRun(id, open[id])
	}
	slices.SortStableFunc(out, func(a, b Violation) int { return a.At.Compare(b.At) })
	return out
}

// Recovered reports whether every expected instance is active on exactly
// one node by the ground truth (truth: instance → nodes) and the status
// says it is started there (started: instance → node where the status shows
// it started, absent otherwise). The explanation lists what is not yet so.
func Recovered(expected []string, truth map[string][]string, started map[string]string) (bool, string) {
	var bad []string
	for _, id := range expected {
		on := truth[id]
		switch {
		case len(on) != 1:
			bad = append(bad, fmt.Sprintf("%s active on %v", id, on))
		case started[id] != on[0]:
			st := started[id]
			if st == "" {
				st = "not started"
			}
			bad = append(bad, fmt.Sprintf("%s active on %s, status: %s", id, on[0], st))
		}
	}
	if len(bad) > 0 {
		return false, strings.Join(bad, "; ")
	}
	return true, ""
}

// FalseFailover checks episode ep, in which no node failed: every instance
// of baseline (instance → node before the fault), except the exempt ones,
// must be seen on no other node in the episode's samples and be on its node
// at the end (final: instance → node after the recovery), and no node may
// have been fenced (fenced: the targets of the fencing events recorded
// during the episode).
func FalseFailover(ep int, baseline map[string]string, samples []Sample, final map[string]string, fenced []string, exempt map[string]bool) []Violation {
	var out []Violation
	for _, id := range slices.Sorted(maps.Keys(baseline)) {
		home := baseline[id]
		if exempt[id] || home == "" {
			continue
		}
		for _, s := range samples {
			if s.Episode != ep {
				continue
			}
			if away := slices.DeleteFunc(slices.Clone(s.Active[id]), func(n string) bool { return n == home }); len(away) > 0 {
				out = append(out, Violation{Kind: VFalseFailover, Episode: ep, At: s.At,
					Detail: fmt.Sprintf("%s (on %s before the fault) active on %s", id, home, strings.Join(away, "+"))})
				break
			}
		}
		if f := final[id]; f != home {
			out = append(out, Violation{Kind: VFalseFailover, Episode: ep,
				Detail: fmt.Sprintf("%s was on %s before the fault and is on %q after it", id, home, f)})
		}
	}
	if len(fenced) > 0 {
		out = append(out, Violation{Kind: VFalseFailover, Episode: ep,
			Detail: fmt.Sprintf("node(s) fenced although none failed: %s", strings.Join(fenced, ", "))})
	}
	return out
}

// Outcome is what the CLI said of a configuration change.
type Outcome int

// Outcomes of a write.
const (
	// Acked: the CLI returned success (committed by a quorum).
	Acked Outcome = iota
	// Refused: refused before it was proposed ("no quorum", "no leader"):
	// it must never appear.
	Refused
	// Unknown: it failed otherwise (a timeout, a node gone mid-call): it
	// may or may not have been committed.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acked"
	case Refused:
		return "refused"
	}
	return "unknown"
}

// Write is one configuration change, seen as a register: Key (such as
// "property/k", "resource/id", "standby/n3") set to Value ("" removes it).
// Writes are listed in the order they were issued, one at a time.
type Write struct {
	Episode int
	Key     string
	Value   string
	Outcome Outcome
	// Cmd is the CLI call, for the report.
	Cmd string
}

// LostWrites checks the configuration read back at the end (final: key →
// value, absent keys removed) against the writes: a key must hold the value
// of its last acknowledged write or of an unknown one (whose proposal may
// still have been committed later, even after a later acknowledged write);
// a key never acknowledged must be absent or hold an unknown write's value.
// A key that shows a refused write's value (and no other write's) breaks
// the rule too.
func LostWrites(writes []Write, final map[string]string) []Violation {
	byKey := map[string][]Write{}
	for _, w := range writes {
		byKey[w.Key] = append(byKey[w.Key], w)
	}
	var out []Violation
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		ws := byKey[key]
		var last *Write
		unknown := map[string]bool{}
		for i := range ws {
			switch ws[i].Outcome {
			case Acked:
				last = &ws[i]
			case Unknown:
				unknown[ws[i].Value] = true
			}
		}
		allowed := maps.Clone(unknown)
		if last != nil {
			allowed[last.Value] = true
		} else {
			allowed[""] = true
		}
		got := final[key]
		if allowed[got] {
			continue
		}
		v := Violation{Kind: VLostWrite}
		switch {
		case last != nil:
			v.Episode = last.Episode
			v.Detail = fmt.Sprintf("%s is %q at the end; the acknowledged `%s` (episode %d) set %q", key, got, last.Cmd, last.Episode, last.Value)
		default:
			v.Episode = ws[len(ws)-1].Episode
			var cmds []string
			for _, w := range ws {
				cmds = append(cmds, fmt.Sprintf("`%s` (%s)", w.Cmd, w.Outcome))
			}
			v.Detail = fmt.Sprintf("%s is %q at the end, but no write of it was acknowledged: %s", key, got, strings.Join(cmds, ", "))
		}
		out = append(out, v)
	}
	return out
}

// FailoverTime measures, from episode ep's samples, how long after the
// fault (at) every expected instance was active on exactly one node again,
// for an episode in which some instance stopped running (a node lost, a
// monitor failed): the failover figure, by the ground truth alone. ok is
// false when no instance stopped, or when none of the samples shows them
// all back.
func FailoverTime(samples []Sample, ep int, at time.Time, expected []string) (d time.Duration, ok bool) {
	down := false
	for _, s := range samples {
		if s.Episode != ep || s.At.Before(at) {
			continue
		}
		all := true
		for _, id := range expected {
			if len(s.Active[id]) != 1 {
				all = false
				break
			}
		}
		if !all {
			down = true
			continue
		}
		if down {
			return s.At.Sub(at), true
		}
	}
	return 0, false
}
