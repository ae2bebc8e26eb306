package chaos

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Kind is a kind of fault.
type Kind string

// The faults of an episode.
const (
	// Kill SIGKILLs a node; at heal it starts again as after a reboot (its
	// run dir emptied).
	Kill Kind = "kill"
	// Pause SIGSTOPs a node (a hang) and SIGCONTs it at heal; if it was
	// fenced meanwhile it starts again as after a reboot.
	Pause Kind = "pause"
	// CutLink sets one link of a node down (of two: the node stays a
	// member over the other).
	CutLink Kind = "cut-link"
	// Isolate drops every packet of a node on every link.
	Isolate Kind = "isolate"
	// Partition cuts a minority of the nodes off from the majority.
	Partition Kind = "partition"
	// Loss drops a share of the packets on one link of a node at random.
	Loss Kind = "loss"
	// DCRestart stops the DC cleanly (SIGTERM) and starts it again at heal.
	DCRestart Kind = "dc-restart"
	// MonitorFail makes a resource's monitor fail: a vigil:dummy's state
	// file is deleted on its node.
	MonitorFail Kind = "monitor-fail"
)

// Kinds is every fault kind, in the order of the summary.
var Kinds = []Kind{Kill, Pause, CutLink, Isolate, Partition, Loss, DCRestart, MonitorFail}

// NoFailure reports whether the fault leaves every node alive and a member:
// packet loss, or one link of two cut. Such an episode must not move a
// resource or fence a node (checked by FalseFailover).
func (k Kind) NoFailure() bool { return k == Loss || k == CutLink }

// OpKind is an operator action done in the middle of a fault.
type OpKind string

// The operator actions.
const (
	// OpProperty sets a fresh cluster property (a configuration change).
	OpProperty OpKind = "property"
	// OpMove moves a resource to a node (`resource move`); the episode's
	// end clears it (`resource clear`).
	OpMove OpKind = "move"
	// OpStandby puts a node in standby; the episode's end takes it out.
	OpStandby OpKind = "standby"
	// OpCreate creates a new vigil:dummy resource, which must run from then
	// on.
	OpCreate OpKind = "create"
)

// OpKinds is every operator action, in the order of the summary.
var OpKinds = []OpKind{OpProperty, OpMove, OpStandby, OpCreate}

// Target names the node a fault hits by its role, resolved when the episode
// runs (which node is the DC, or runs a resource, is only known then).
type Target struct {
	// Role is "dc", "holder" (the node running resource Index of the
	// runner's initial resources), "dummy" (the node running dummy Index:
	// MonitorFail) or "node" (node Index, 0-based).
	Role  string
	Index int
}

func (t Target) String() string {
	switch t.Role {
	case "dc":
		return "dc"
	case "holder":
		return fmt.Sprintf("holder(r%d)", t.Index)
	case "dummy":
		return fmt.Sprintf("dummy(%d)", t.Index)
	}
	return fmt.Sprintf("n%d", t.Index+1)
}

// Op is one operator action of an episode.
type Op struct {
	Kind OpKind
	// At is when it happens, counted from the fault.
	At time.Duration
	// Via is the index of the node the CLI call goes to (the next one
	// that can answer if it is down or hung): it may be a node without
	// quorum, which must refuse.
	Via int
	// Node is the index of the node of a move or a standby.
	Node int
	// Resource is the index (into the runner's initial resources) of the
	// resource to move.
	Resource int
	// Value is a property's value.
	Value string
}

func (o Op) String() string {
	s := fmt.Sprintf("%s@%s via n%d", o.Kind, o.At.Round(10*time.Millisecond), o.Via+1)
	switch o.Kind {
	case OpMove:
		s += fmt.Sprintf(" r%d->n%d", o.Resource, o.Node+1)
	case OpStandby:
		s += fmt.Sprintf(" n%d", o.Node+1)
	}
	return s
}

// Episode is one fault, held for a while, with operator actions in the
// middle; then everything is healed and the cluster must recover.
type Episode struct {
	// N numbers the episodes from 1.
	N      int
	Kind   Kind
	Target Target
	// Minority is the indexes of the nodes cut off by a Partition (the
	// DC among them when Target.Role is "dc": the runner swaps it in).
	Minority []int
	// Link is the link of CutLink and Loss.
	Link int
	// LossPct is Loss's drop rate in percent.
	LossPct int
	// Hold is how long the fault lasts before the heal.
	Hold time.Duration
	Ops  []Op
}

func (e Episode) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "episode %d: %s", e.N, e.Kind)
	switch e.Kind {
	case Partition:
		var ns []string
		for _, i := range e.Minority {
			ns = append(ns, fmt.Sprintf("n%d", i+1))
		}
		fmt.Fprintf(&b, " minority [%s]", strings.Join(ns, " "))
		if e.Target.Role == "dc" {
			b.WriteString(" with the dc")
		}
	case DCRestart:
	default:
		fmt.Fprintf(&b, " %s", e.Target)
	}
	switch e.Kind {
	case CutLink:
		fmt.Fprintf(&b, " link %d", e.Link)
	case Loss:
		fmt.Fprintf(&b, " link %d %d%%", e.Link, e.LossPct)
	}
	fmt.Fprintf(&b, " hold %s", e.Hold.Round(10*time.Millisecond))
	for _, o := range e.Ops {
		fmt.Fprintf(&b, "; %s", o)
	}
	return b.String()
}

// GenConfig describes the cluster the episodes are drawn for.
type GenConfig struct {
	// Nodes is the number of nodes (at least 3).
	Nodes int
	// Links is the number of links per node; CutLink and Loss need 2.
	Links int
	// Resources is the number of initial resources ("holder" targets).
	Resources int
	// Dummies is the number of initial vigil:dummy resources (MonitorFail).
	Dummies int
	// Only, when set, restricts the faults to these kinds (to study one).
	Only []Kind
}

// weights of the fault kinds: node failures most, then network faults.
var kindWeights = map[Kind]int{
	Kill: 3, Pause: 2, CutLink: 2, Isolate: 2, Partition: 2, Loss: 2, DCRestart: 1, MonitorFail: 2,
}

// Generate draws n episodes from seed. The same seed and configuration give
// the same episodes: a run is replayed by its seed.
func Generate(seed uint64, n int, c GenConfig) []Episode {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed_c4a05))
	kinds := slices.Clone(Kinds)
	if c.Links < 2 {
		// One cut link of one would be an isolation; keep Loss (on the
		// only link, lighter).
		kinds = slices.DeleteFunc(kinds, func(k Kind) bool { return k == CutLink })
	}
	if c.Dummies == 0 {
		kinds = slices.DeleteFunc(kinds, func(k Kind) bool { return k == MonitorFail })
	}
	if len(c.Only) > 0 {
		kinds = slices.DeleteFunc(kinds, func(k Kind) bool { return !slices.Contains(c.Only, k) })
	}
	total := 0
	for _, k := range kinds {
		total += kindWeights[k]
	}
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
	}
	eps := make([]Episode, 0, n)
	for i := 1; i <= n; i++ {
		e := Episode{N: i}
		w := r.IntN(total)
		for _, k := range kinds {
			if w -= kindWeights[k]; w < 0 {
				e.Kind = k
				break
			}
		}
		e.Target = pickTarget(r, c)
		switch e.Kind {
		case Kill:
			e.Hold = between(1500*time.Millisecond, 3500*time.Millisecond)
		case Pause:
			// Short: resumed before the node is lost (it must simply carry
			// on). Long: lost, fenced, recovered elsewhere.
			if r.IntN(2) == 0 {
				e.Hold = between(300*time.Millisecond, 700*time.Millisecond)
			} else {
				e.Hold = between(2*time.Second, 3500*time.Millisecond)
			}
		case CutLink:
			e.Link = r.IntN(c.Links)
			e.Hold = between(2*time.Second, 4*time.Second)
		case Isolate:
			e.Hold = between(2*time.Second, 3500*time.Millisecond)
		case Partition:
			size := 1 + r.IntN((c.Nodes-1)/2) // a strict minority
			e.Minority = r.Perm(c.Nodes)[:size]
			slices.Sort(e.Minority)
			if r.IntN(2) == 0 {
				e.Target = Target{Role: "dc"}
			} else {
				e.Target = Target{Role: "node", Index: e.Minority[0]}
			}
			e.Hold = between(2*time.Second, 3500*time.Millisecond)
		case Loss:
			e.Link = r.IntN(c.Links)
			if c.Links >= 2 {
				e.LossPct = 10 + r.IntN(31) // 10..40%
			} else {
				e.LossPct = 5 + r.IntN(6) // 5..10%
			}
			e.Hold = between(3*time.Second, 5*time.Second)
		case DCRestart:
			e.Target = Target{Role: "dc"}
			e.Hold = between(1*time.Second, 2*time.Second)
		case MonitorFail:
			e.Target = Target{Role: "dummy", Index: r.IntN(c.Dummies)}
			e.Hold = between(1500*time.Millisecond, 2500*time.Millisecond)
		}
		e.Ops = pickOps(r, c, e)
		eps = append(eps, e)
	}
	return eps
}

func pickTarget(r *rand.Rand, c GenConfig) Target {
	switch x := r.IntN(4); {
	case x == 0:
		return Target{Role: "dc"}
	case x == 1 || c.Resources == 0:
		return Target{Role: "node", Index: r.IntN(c.Nodes)}
	default:
		return Target{Role: "holder", Index: r.IntN(c.Resources)}
	}
}

// pickOps draws the episode's operator actions: none (half of the
// episodes), one, or two. An episode in which no node fails gets only
// property changes: a move or a standby would move resources on purpose.
func pickOps(r *rand.Rand, c GenConfig, e Episode) []Op {
	var count int
	switch x := r.IntN(10); {
	case x < 5:
		count = 0
	case x < 9:
		count = 1
	default:
		count = 2
	}
	var ops []Op
	for range count {
		o := Op{
			At:       time.Duration(float64(e.Hold) * (0.2 + 0.6*r.Float64())),
			Via:      r.IntN(c.Nodes),
			Node:     r.IntN(c.Nodes),
			Resource: r.IntN(max(1, c.Resources)),
			Value:    fmt.Sprintf("v%d", r.IntN(1_000_000)),
		}
		switch x := r.IntN(8); {
		case e.Kind.NoFailure() || x < 3 || c.Resources == 0:
			o.Kind = OpProperty
		case x < 5:
			o.Kind = OpMove
		case x < 7:
			o.Kind = OpStandby
		default:
			o.Kind = OpCreate
		}
		ops = append(ops, o)
	}
	slices.SortStableFunc(ops, func(a, b Op) int { return cmp.Compare(a.At, b.At) })
	return ops
}
