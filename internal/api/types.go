// Package api is Vigil's HTTPS API: the server half mounted by every agent and
// the Client that the CLI, scripts and tests use as their only door to a
// cluster. The JSON types here are the API's contract; every payload carries
// no internal type, so the CLI never imports the layers below.
package api

import "time"

// Version is the API's path prefix; a breaking change gets a new one.
const Version = "v1"

// Status is what `vigil status` shows: the cluster as seen by one node.
type Status struct {
	Cluster string `json:"cluster"`
	// Node is the node that answered.
	Node string `json:"node"`
	// DC is the designated coordinator (the Raft leader of the quorate
	// partition) as this node knows it; empty when it knows none.
	DC string `json:"dc"`
	// Term is the Raft term this node is in.
	Term uint64 `json:"term"`
	// Epoch counts committed configuration changes.
	Epoch uint64 `json:"epoch"`
	// Applied is the Raft index this node has applied.
	Applied uint64       `json:"applied"`
	Quorum  QuorumStatus `json:"quorum"`
	Nodes   []NodeStatus `json:"nodes"`
	// Warnings are conditions an operator should know about (an unsafe
	// quorum mode, a link down).
	Warnings []string `json:"warnings,omitempty"`
	// Counters are the answering node's event counts, such as heartbeats
	// dropped for failing authentication.
	Counters map[string]uint64 `json:"counters,omitempty"`

	// Resources is every resource instance with its state and node, as
	// the DC would see it from this node's copy of the store.
	Resources []ResourceStatus `json:"resources,omitempty"`
	// Failures are the records with a failure or a fail count.
	Failures []Record `json:"failures,omitempty"`
	// Blocked are the instances the scheduler cannot place or recover.
	Blocked []Blocked `json:"blocked,omitempty"`
	// Pending are the tasks issued and not yet answered.
	Pending []PendingTask `json:"pending,omitempty"`
	// ResourceError is set when the resource part could not be built.
	ResourceError string `json:"resource_error,omitempty"`
	// FenceRequests are the operators' fence requests the DC has not
	// carried out yet.
	FenceRequests []FenceRequest `json:"fence_requests,omitempty"`
	// Datastores are the configured datastores with every node's latest
	// check.
	Datastores []Datastore `json:"datastores,omitempty"`
	// Heartbeats are the datastore heartbeats as the answering node, when
	// it is the DC, last read them, and the answering node's own failing
	// heartbeat writes.
	Heartbeats []DatastoreHeartbeat `json:"heartbeats,omitempty"`
}

// QuorumStatus is the answering node's quorum view.
type QuorumStatus struct {
	Quorate  bool   `json:"quorate"`
	Votes    int    `json:"votes"`
	Expected int    `json:"expected"`
	Needed   int    `json:"needed"`
	Reason   string `json:"reason"`
}

// Node states as the answering node sees them.
const (
	NodeMember  = "member"
	NodeSuspect = "suspect"
	NodeLost    = "lost"
	NodeUnknown = "unknown"
)

// Raft roles of a node.
const (
	RaftVoter   = "voter"
	RaftLearner = "learner"
)

// NodeStatus is one node in Status.
type NodeStatus struct {
	Name string `json:"name"`
	ID   uint64 `json:"id"`
	// Self marks the answering node.
	Self bool `json:"self,omitempty"`
	// State is member, suspect, lost or unknown (never heard from).
	State string `json:"state"`
	// Role is "node" or "witness".
	Role string `json:"role"`
	// Raft is voter or learner.
	Raft  string       `json:"raft"`
	DC    bool         `json:"dc,omitempty"`
	Links []LinkStatus `json:"links"`
	// Protection says what proves the node down if it is lost: "fence:
	// ipmi1 (level 1), pdu (level 2)", "watchdog (process 2s)", both
	// (joined by "; "), or "none". Empty for witnesses (they run nothing).
	Protection string `json:"protection,omitempty"`
	// Fencing lists the node's fence levels in order ("ipmi1 (level 1)").
	Fencing []string `json:"fencing,omitempty"`
	// Isolation is set while the node, not a member, is known isolated
	// from the cluster but alive on a datastore: "isolated (beating on
	// ds1): released vm1".
	Isolation string `json:"isolation,omitempty"`
}

// LinkStatus is the answering node's view of one link to a peer.
type LinkStatus struct {
	Index int    `json:"index"`
	Addr  string `json:"addr"`
	Up    bool   `json:"up"`
	// RTT is the last measured round-trip time.
	RTT time.Duration `json:"rtt_ns"`
	// Loss is the fraction of heartbeats lost recently, 0 to 1.
	Loss float64 `json:"loss"`
}

// Property is one cluster property: a configuration key and value.
type Property struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// WriteResult acknowledges a committed configuration change.
type WriteResult struct {
	// Epoch is the configuration epoch after the change.
	Epoch uint64 `json:"epoch"`
	// Unchanged is set when the request asked for what was already so:
	// nothing was written and the epoch is the current one.
	Unchanged bool `json:"unchanged,omitempty"`
	// Changes lists the configuration keys written, for the resource
	// manager's changes: "+ key" added, "- key" removed, "~ key" changed.
	// A change can remove more than it names (deleting a resource removes
	// the constraints that name it).
	Changes []string `json:"changes,omitempty"`
}

// JoinRequest asks the cluster to admit a new node.
type JoinRequest struct {
	Name  string   `json:"name"`
	Links []string `json:"links"`
	Role  string   `json:"role,omitempty"`
}

// JoinResponse tells a joining node what it needs to start.
type JoinResponse struct {
	ID      uint64 `json:"id"`
	Cluster []byte `json:"cluster"` // the cluster layout as YAML, self included
	Epoch   uint64 `json:"epoch"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	// Code is a stable word for scripts: unauthorized, no_quorum, no_leader,
	// bad_request, not_found, timeout, internal.
	Code    string `json:"code"`
	Message string `json:"message"`
}
