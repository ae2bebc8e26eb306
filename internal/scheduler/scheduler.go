// Package scheduler decides where resources run and what to do to get
// there. It is a pure function: Compute reads a model.Snapshot (the
// configuration, the node states, the recorded resource states and the
// orders in flight) and returns a Plan. It does no I/O, reads no clock (only
// Snapshot.Now, for failure-timeout), starts no goroutine, draws no random
// number and never depends on map order: the same snapshot always gives a
// byte-identical plan, whatever the order of its slices.
//
// The stages (see README.md) are reconcile → feasibility → score → place →
// order actions. Every placement and every action carries a reason a
// person can read; `vigil explain` prints Plan.Explain and `vigil
// simulate` prints Plan.String.
package scheduler

import "github.com/vigil-ha/vigil/internal/model"

// Action kinds.
const (
	KindStart   = "start"
	KindStop    = "stop"
	KindMigrate = "migrate" // live move From → Node (migrate_to, then migrate_from)
)

// The same kinds under the names the controller uses.
const (
	ActionStart   = KindStart
	ActionStop    = KindStop
	ActionMigrate = KindMigrate
)

// Plan is what the scheduler decided: a DAG of actions, where every
// instance should be and why, what cannot be acted on, and which nodes must
// be proven down first.
type Plan struct {
	// Actions form a DAG: each action lists the IDs it must wait for, and
	// those are always smaller than its own (IDs are a topological order).
	Actions []Action
	// Placements holds one entry per resource instance, sorted by
	// instance id. A group's members each have one; a clone's instances
	// are "clone:0", "clone:1"… and a cloned group's members
	// "clone:0/member".
	Placements []Placement
	// Blocked lists instances that cannot be acted on this round, and why.
	Blocked []Blocked
	// Fence lists nodes that must be proven down (fenced, or confirmed by
	// an operator) before what they held can be recovered. Sorted by node.
	Fence []FenceRequest
	// Notes are cluster-wide remarks ("cluster is in maintenance mode: no
	// actions").
	Notes []string
	// Nodes says, for each node, whether it may run resources and why not.
	Nodes []NodeInfo
}

// Action is one step for the controller to dispatch.
type Action struct {
	ID       int
	Kind     string // KindStart, KindStop or KindMigrate
	Resource string // instance id
	Node     string // where it runs; for a migrate, the target
	From     string // migrate source
	Reason   string
	After    []int // IDs of the actions that must complete first
}

// Placement says where one instance should be and why.
type Placement struct {
	Resource string // instance id
	// Unit is the group or clone the instance is placed with ("" for a
	// plain resource). Explain accepts it to show every instance.
	Unit    string
	Node    string   // "" = stays stopped (or cannot be known: see Blocked)
	Current []string // nodes it is active on now (including unknown and in-motion)
	Reason  string
	// Scores lists the nodes that have something to say: every eligible
	// node with a non-zero contribution or an exclusion, the chosen node,
	// and the current nodes. An eligible node not listed scored 0 (in an
	// asymmetric cluster: was not allowed). Ineligible nodes are in
	// Plan.Nodes. Sorted by node name. NB: the Reasons slices may be
	// shared between placements; treat them as read-only.
	Scores []NodeScore
}

// NodeScore is one node's score for one instance, with each contribution
// spelled out ("+100 stickiness", "-INFINITY anti-affinity with db2 (on
// n3)", "excluded: fail count 3 ≥ migration-threshold 3").
type NodeScore struct {
	Node    string
	Score   model.Score
	Reasons []string
}

// Blocked is an instance that cannot be acted on.
type Blocked struct {
	Resource string // instance id
	Reason   string // "unknown on n3 (waiting for fencing)"
}

// FenceRequest asks the fencing layer to prove a node down.
type FenceRequest struct {
	Node   string
	Reason string
}

// NodeInfo is one node as the scheduler saw it.
type NodeInfo struct {
	Name     string
	State    string // model.NodeOnline, NodePending, NodeOffline, NodeLost
	Eligible bool   // may new resources be placed here?
	Why      string // when not eligible: "standby", "maintenance", "lost", …
}
