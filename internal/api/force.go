package api

import (
	"context"
	"net/http"
	"time"
)

// Forced actions: an operator runs a resource agent's action directly on
// one node, outside the cluster (Pacemaker's `crm_resource --force-start`),
// to debug an agent or a resource. The cluster neither schedules nor
// records it. The node named runs it itself: the CLI sends the request to
// that node's own API (no node relays for another), so that a node that
// is down or cut off fails the call instead of another node guessing.

// ForceStartRequest asks the answering node to run the start action of a
// resource instance. Without Yes the node refuses: the start runs outside
// the cluster, which keeps no record of it.
type ForceStartRequest struct {
	// Node is the node that must run it: the answering node refuses a
	// request meant for another, so a misrouted call starts nothing.
	Node string `json:"node"`
	Yes  bool   `json:"yes"`
}

// ForceResult is the outcome of a forced agent action, as the agent
// returned it. A failed action is a result, not an API error: RC, RCName
// and Error say how it failed.
type ForceResult struct {
	// Resource is the instance the action ran on.
	Resource string `json:"resource"`
	Agent    string `json:"agent"`
	Node     string `json:"node"`
	Action   string `json:"action"`
	// RC is the agent's exit code (an OCF code, or one of Vigil's: 1000
	// timeout, 1001 canceled, 1002 agent not found); RCName its name.
	RC     int    `json:"rc"`
	RCName string `json:"rc_name"`
	// Output is the tail of what the agent wrote.
	Output string `json:"output,omitempty"`
	// Error is the agent's own account of a failure (for vigil:vm, a disk
	// lease held by another node names that node).
	Error    string        `json:"error,omitempty"`
	Timeout  time.Duration `json:"timeout_ns"`
	Duration time.Duration `json:"duration_ns"`
}

// OK reports whether the action succeeded.
func (r ForceResult) OK() bool { return r.RC == 0 }

// ForceBackend runs forced agent actions. It is optional: a Backend
// without it answers 404.
type ForceBackend interface {
	ForceStart(ctx context.Context, id string, req ForceStartRequest) (ForceResult, error)
}

func (s *server) routeForce(mux *http.ServeMux) {
	fb, ok := s.b.(ForceBackend)
	if !ok {
		return
	}
	mux.HandleFunc("POST /v1/resources/{id}/force-start", onPathBody(s, "id", fb.ForceStart))
}

// ForceStart asks the node the client reaches (see WithEndpoints) to run
// the start action of resource instance id itself. The call lasts as long
// as the agent's start (its start timeout bounds it on the node): only
// ctx bounds the wait, not the client's usual per-request timeout.
func (c *Client) ForceStart(ctx context.Context, id string, req ForceStartRequest) (ForceResult, error) {
	return call[ForceResult](ctx, c.untimed(), http.MethodPost, resourcePath(id, "force-start"), req)
}

// untimed returns a copy of c whose requests only their context bounds,
// for calls that last as long as an agent action.
func (c *Client) untimed() *Client {
	cp := *c
	hc := *c.hc
	hc.Timeout = 0
	cp.hc = &hc
	return &cp
}
