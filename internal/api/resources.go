package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// The resource manager's part of the API: resources, constraints, node
// settings, the configuration as a document, explain, simulate and fence
// confirm. Scores travel as text ("100", "INFINITY", "-INFINITY") and
// durations as text ("10s"; a bare number is seconds, as pcs reads it): the
// server parses and validates everything, so every client gets the same
// words for the same mistake.

// Op is one operation of a resource.
type Op struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Timeout  string `json:"timeout,omitempty"`
	OnFail   string `json:"on_fail,omitempty"`
}

// Resource is a resource's configuration.
type Resource struct {
	ID string `json:"id"`
	// Agent is class:provider:type (ocf:heartbeat:IPaddr2) or class:type
	// (vigil:dummy).
	Agent  string            `json:"agent"`
	Params map[string]string `json:"params,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
	Ops    []Op              `json:"ops,omitempty"`
	// Utilization is what the resource needs of a node (integers as text).
	Utilization map[string]string `json:"utilization,omitempty"`
}

// CreateResourceRequest creates one resource.
type CreateResourceRequest struct {
	Resource Resource `json:"resource"`
	// Group, when set, appends the resource to that group (created if it
	// does not exist).
	Group string `json:"group,omitempty"`
	// Disabled creates it with target-role Stopped.
	Disabled bool `json:"disabled,omitempty"`
}

// UpdateResourceRequest changes parts of a resource. In Params, Meta and
// Utilization an empty value removes the key. Each op given replaces every
// configured op of the same name.
type UpdateResourceRequest struct {
	Params      map[string]string `json:"params,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Utilization map[string]string `json:"utilization,omitempty"`
	Ops         []Op              `json:"ops,omitempty"`
}

// Resource instance states, beyond the recorded ones (started, stopped,
// failed, stop_failed) and the derived unknown.
const (
	StateStarting = "starting"
	StateStopping = "stopping"
)

// ResourceStatus is one resource instance as `vigil status` shows it: where
// it is active (or that it is not) and why, crm_mon style.
type ResourceStatus struct {
	// Instance is the instance id: the resource id, or "<clone>:<n>" and
	// "<member>:<n>" for clones.
	Instance string `json:"instance"`
	// Resource is the configured resource the instance runs.
	Resource string `json:"resource"`
	Agent    string `json:"agent"`
	Group    string `json:"group,omitempty"`
	Clone    string `json:"clone,omitempty"`
	// State is started, stopped, failed, stop_failed, unknown, starting or
	// stopping.
	State string `json:"state"`
	// Node is where it is in that state; empty when stopped everywhere.
	Node string `json:"node,omitempty"`
	// Note says why, when that matters: "disabled", "waiting for
	// fencing", "unmanaged", "blocked: ...".
	Note string `json:"note,omitempty"`
}

// Record is one instance's recorded state on one node.
type Record struct {
	Instance    string    `json:"instance"`
	Node        string    `json:"node"`
	State       string    `json:"state"`
	FailCount   int64     `json:"fail_count,omitempty"`
	LastFailure time.Time `json:"last_failure,omitzero"`
	// FailureReason is the last failure's operation and output, kept
	// until a cleanup.
	FailureReason string    `json:"failure_reason,omitempty"`
	LastOp        string    `json:"last_op,omitempty"`
	LastRC        int       `json:"last_rc"`
	Output        string    `json:"output,omitempty"`
	Changed       time.Time `json:"changed,omitzero"`
}

// Blocked is an instance the scheduler cannot place or recover, and why.
type Blocked struct {
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
}

// PendingTask is a task the DC issued that no executor has answered yet.
type PendingTask struct {
	ID       string    `json:"id"`
	Instance string    `json:"instance"`
	Node     string    `json:"node"`
	Action   string    `json:"action"`
	Reason   string    `json:"reason,omitempty"`
	Issued   time.Time `json:"issued,omitzero"`
}

// ResourceSummary is one configured resource in `vigil resource list`.
type ResourceSummary struct {
	ID    string `json:"id"`
	Agent string `json:"agent"`
	Group string `json:"group,omitempty"`
	Clone string `json:"clone,omitempty"`
	// Instances are its instances' states (one for a resource that is not
	// cloned).
	Instances []ResourceStatus `json:"instances"`
}

// ResourceDetail is `vigil resource show`: the configuration, the state of
// every instance on every node with fail counts, and the constraints that
// name it.
type ResourceDetail struct {
	Config      Resource         `json:"config"`
	Group       string           `json:"group,omitempty"`
	Clone       string           `json:"clone,omitempty"`
	Instances   []ResourceStatus `json:"instances"`
	Records     []Record         `json:"records"`
	Constraints Constraints      `json:"constraints"`
}

// NodeTarget names a node, for move and ban.
type NodeTarget struct {
	Node string `json:"node"`
}

// GroupRequest adds resources to a group (created if new), in order. A
// resource in another group is moved out of it.
type GroupRequest struct {
	Resources []string `json:"resources"`
}

// CloneRequest clones a resource or group.
type CloneRequest struct {
	// ID is the clone's id; default "<of>-clone".
	ID string `json:"id,omitempty"`
	// Max is the number of instances; 0 = one per node.
	Max int `json:"max,omitempty"`
}

// RequestResult answers restart and cleanup: the status keys written, one
// per node and instance. They are status, not configuration: the epoch does
// not move.
type RequestResult struct {
	Requests []string `json:"requests"`
}

// Location is a location constraint: a node and a score, or a rule.
type Location struct {
	ID       string `json:"id"`
	Resource string `json:"resource"`
	Node     string `json:"node,omitempty"`
	Score    string `json:"score"`
	Rule     *Rule  `json:"rule,omitempty"`
}

// Rule matches nodes by attribute: all expressions, or any when Or.
type Rule struct {
	Or          bool         `json:"or,omitempty"`
	Expressions []Expression `json:"expressions"`
}

// Expression compares a node attribute: eq, ne, lt, lte, gt, gte, defined,
// not_defined. "#uname" is the node's name.
type Expression struct {
	Attribute string `json:"attribute"`
	Op        string `json:"op"`
	Value     string `json:"value,omitempty"`
}

// Colocation keeps Resource with (positive score) or away from (negative)
// With.
type Colocation struct {
	ID       string `json:"id"`
	Resource string `json:"resource"`
	With     string `json:"with"`
	Score    string `json:"score"`
}

// Order starts Then after First.
type Order struct {
	ID    string `json:"id"`
	First string `json:"first"`
	Then  string `json:"then"`
	// Kind is Mandatory (default) or Optional.
	Kind string `json:"kind,omitempty"`
	// Symmetrical defaults to true.
	Symmetrical *bool `json:"symmetrical,omitempty"`
}

// Constraints lists constraints of all three kinds.
type Constraints struct {
	Locations   []Location   `json:"locations"`
	Colocations []Colocation `json:"colocations"`
	Orders      []Order      `json:"orders"`
}

// NodeUpdate changes a node's settings. Nil fields are left alone; in
// Attributes and Utilization an empty value removes the key.
type NodeUpdate struct {
	Standby     *bool             `json:"standby,omitempty"`
	Maintenance *bool             `json:"maintenance,omitempty"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	Utilization map[string]string `json:"utilization,omitempty"`
}

// Explanation is the scheduler's account of where a resource is or would
// be, and why.
type Explanation struct {
	Resource string `json:"resource"`
	Text     string `json:"text"`
}

// SimulateRequest asks what the scheduler would do after hypothetical
// failures. Nothing changes.
type SimulateRequest struct {
	// NodeFail: these nodes fail and are fenced (offline with proof); what
	// they ran is gone.
	NodeFail []string `json:"node_fail,omitempty"`
	// ResourceFail: these resources (or instances) fail where they run.
	ResourceFail []string `json:"resource_fail,omitempty"`
	// From, when set, is a YAML or JSON document to start from instead of
	// the current state: a whole snapshot (config, nodes, resources,
	// pending) or a configuration, simulated against the current nodes and
	// status.
	From string `json:"from,omitempty"`
}

// SimulateResult is the simulated plan.
type SimulateResult struct {
	// Notes say what was assumed ("n2 failed and was fenced").
	Notes []string `json:"notes,omitempty"`
	// Plan is the scheduler's plan, as text, with reasons.
	Plan string `json:"plan"`
}

// ConfigDocument is the resource configuration as YAML.
type ConfigDocument struct {
	Epoch uint64 `json:"epoch"`
	YAML  string `json:"yaml"`
}

// ApplyConfigRequest replaces the resource configuration with a YAML
// document (as `vigil config export` writes it).
type ApplyConfigRequest struct {
	YAML   string `json:"yaml"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// ApplyConfigResult is what an apply changed, or would change.
type ApplyConfigResult struct {
	DryRun bool `json:"dry_run,omitempty"`
	// Changes are store keys: "+ key" added, "- key" removed, "~ key"
	// changed.
	Changes []string `json:"changes"`
	// Plan is what the scheduler would do with the new configuration (dry
	// run only).
	Plan string `json:"plan,omitempty"`
	// Epoch is the configuration epoch after the change (or now, on a dry
	// run or when nothing changed).
	Epoch uint64 `json:"epoch"`
}

// FenceConfirmRequest confirms that a node is down. Without Yes nothing is
// written: the answer says what would be released.
type FenceConfirmRequest struct {
	Yes bool `json:"yes"`
}

// FenceConfirmResult says what a confirmation released.
type FenceConfirmResult struct {
	Node string `json:"node"`
	// Confirmed is false when the request was only a check (Yes unset).
	Confirmed bool `json:"confirmed"`
	// Released are the resource records dropped ("web (started)").
	Released []string `json:"released"`
	// Tasks are the unanswered tasks dropped.
	Tasks []string `json:"tasks"`
}

// ResourceBackend is the resource manager's part of Backend.
type ResourceBackend interface {
	Resources(ctx context.Context) ([]ResourceSummary, error)
	Resource(ctx context.Context, id string) (ResourceDetail, error)
	CreateResource(ctx context.Context, req CreateResourceRequest) (WriteResult, error)
	UpdateResource(ctx context.Context, id string, req UpdateResourceRequest) (WriteResult, error)
	DeleteResource(ctx context.Context, id string) (WriteResult, error)
	MoveResource(ctx context.Context, id, node string) (WriteResult, error)
	BanResource(ctx context.Context, id, node string) (WriteResult, error)
	ClearResource(ctx context.Context, id string) (WriteResult, error)
	RestartResource(ctx context.Context, id string) (RequestResult, error)
	CleanupResource(ctx context.Context, id string) (RequestResult, error)
	AddToGroup(ctx context.Context, group string, req GroupRequest) (WriteResult, error)
	CloneResource(ctx context.Context, of string, req CloneRequest) (WriteResult, error)

	Constraints(ctx context.Context) (Constraints, error)
	AddLocation(ctx context.Context, c Location) (WriteResult, error)
	AddColocation(ctx context.Context, c Colocation) (WriteResult, error)
	AddOrder(ctx context.Context, c Order) (WriteResult, error)
	RemoveConstraint(ctx context.Context, id string) (WriteResult, error)

	UpdateNode(ctx context.Context, name string, req NodeUpdate) (WriteResult, error)

	Explain(ctx context.Context, resource string) (Explanation, error)
	Simulate(ctx context.Context, req SimulateRequest) (SimulateResult, error)
	ExportConfig(ctx context.Context) (ConfigDocument, error)
	ApplyConfig(ctx context.Context, req ApplyConfigRequest) (ApplyConfigResult, error)
	FenceConfirm(ctx context.Context, node string, req FenceConfirmRequest) (FenceConfirmResult, error)
}

func (s *server) routeResources(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/resources", onPlain(s, s.b.Resources))
	mux.HandleFunc("POST /v1/resources", onBody(s, s.b.CreateResource))
	mux.HandleFunc("GET /v1/resources/{id}", onPath(s, "id", s.b.Resource))
	mux.HandleFunc("PATCH /v1/resources/{id}", onPathBody(s, "id", s.b.UpdateResource))
	mux.HandleFunc("DELETE /v1/resources/{id}", onPath(s, "id", s.b.DeleteResource))
	mux.HandleFunc("POST /v1/resources/{id}/move", func(w http.ResponseWriter, r *http.Request) {
		var req NodeTarget
		if !s.decode(w, r, &req) {
			return
		}
		v, err := s.b.MoveResource(r.Context(), r.PathValue("id"), req.Node)
		s.reply(w, r, v, err)
	})
	mux.HandleFunc("POST /v1/resources/{id}/ban", func(w http.ResponseWriter, r *http.Request) {
		var req NodeTarget
		if !s.decode(w, r, &req) {
			return
		}
		v, err := s.b.BanResource(r.Context(), r.PathValue("id"), req.Node)
		s.reply(w, r, v, err)
	})
	mux.HandleFunc("POST /v1/resources/{id}/clear", onPath(s, "id", s.b.ClearResource))
	mux.HandleFunc("POST /v1/resources/{id}/restart", onPath(s, "id", s.b.RestartResource))
	mux.HandleFunc("POST /v1/resources/{id}/cleanup", onPath(s, "id", s.b.CleanupResource))
	mux.HandleFunc("POST /v1/resources/{id}/clone", onPathBody(s, "id", s.b.CloneResource))
	mux.HandleFunc("POST /v1/groups/{id}", onPathBody(s, "id", s.b.AddToGroup))

	mux.HandleFunc("GET /v1/constraints", onPlain(s, s.b.Constraints))
	mux.HandleFunc("POST /v1/constraints/location", onBody(s, s.b.AddLocation))
	mux.HandleFunc("POST /v1/constraints/colocation", onBody(s, s.b.AddColocation))
	mux.HandleFunc("POST /v1/constraints/order", onBody(s, s.b.AddOrder))
	mux.HandleFunc("DELETE /v1/constraints/{id}", onPath(s, "id", s.b.RemoveConstraint))

	mux.HandleFunc("PATCH /v1/nodes/{name}", onPathBody(s, "name", s.b.UpdateNode))
	mux.HandleFunc("POST /v1/nodes/{name}/fence-confirm", onPathBody(s, "name", s.b.FenceConfirm))

	mux.HandleFunc("GET /v1/explain/{id}", onPath(s, "id", s.b.Explain))
	mux.HandleFunc("POST /v1/simulate", onBody(s, s.b.Simulate))
	mux.HandleFunc("GET /v1/config", onPlain(s, s.b.ExportConfig))
	mux.HandleFunc("POST /v1/config", onBody(s, s.b.ApplyConfig))
}

// decode reads the request body into v, answering the error itself when
// it cannot.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := decode(r, v); err != nil {
		s.reply(w, r, nil, err)
		return false
	}
	return true
}

func resourcePath(id string, rest ...string) string {
	p := "/v1/resources/" + url.PathEscape(id)
	for _, s := range rest {
		p += "/" + s
	}
	return p
}

// Resources lists the configured resources with their instances' states.
func (c *Client) Resources(ctx context.Context) ([]ResourceSummary, error) {
	return call[[]ResourceSummary](ctx, c, http.MethodGet, "/v1/resources", nil)
}

// Resource returns one resource's configuration and state.
func (c *Client) Resource(ctx context.Context, id string) (ResourceDetail, error) {
	return call[ResourceDetail](ctx, c, http.MethodGet, resourcePath(id), nil)
}

// CreateResource creates a resource; it returns once a quorum has
// committed it.
func (c *Client) CreateResource(ctx context.Context, req CreateResourceRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, "/v1/resources", req)
}

// UpdateResource changes a resource.
func (c *Client) UpdateResource(ctx context.Context, id string, req UpdateResourceRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPatch, resourcePath(id), req)
}

// DeleteResource deletes a stopped, disabled resource and the constraints
// that name it.
func (c *Client) DeleteResource(ctx context.Context, id string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodDelete, resourcePath(id), nil)
}

// MoveResource adds the location constraint cli-prefer-<id>: +INFINITY on
// node.
func (c *Client) MoveResource(ctx context.Context, id, node string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, resourcePath(id, "move"), NodeTarget{Node: node})
}

// BanResource adds the location constraint cli-ban-<id>-on-<node>:
// -INFINITY on node.
func (c *Client) BanResource(ctx context.Context, id, node string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, resourcePath(id, "ban"), NodeTarget{Node: node})
}

// ClearResource removes the cli-* constraints of a resource.
func (c *Client) ClearResource(ctx context.Context, id string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, resourcePath(id, "clear"), nil)
}

// RestartResource asks the nodes running the resource to restart it.
func (c *Client) RestartResource(ctx context.Context, id string) (RequestResult, error) {
	return call[RequestResult](ctx, c, http.MethodPost, resourcePath(id, "restart"), nil)
}

// CleanupResource asks every node with a record of the resource to probe
// it again and reset its fail count.
func (c *Client) CleanupResource(ctx context.Context, id string) (RequestResult, error) {
	return call[RequestResult](ctx, c, http.MethodPost, resourcePath(id, "cleanup"), nil)
}

// AddToGroup adds resources to a group, creating it if needed.
func (c *Client) AddToGroup(ctx context.Context, group string, req GroupRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, "/v1/groups/"+url.PathEscape(group), req)
}

// CloneResource clones a resource or group.
func (c *Client) CloneResource(ctx context.Context, of string, req CloneRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, resourcePath(of, "clone"), req)
}

// Constraints lists every constraint.
func (c *Client) Constraints(ctx context.Context) (Constraints, error) {
	return call[Constraints](ctx, c, http.MethodGet, "/v1/constraints", nil)
}

// AddLocation adds a location constraint.
func (c *Client) AddLocation(ctx context.Context, l Location) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, "/v1/constraints/location", l)
}

// AddColocation adds a colocation constraint.
func (c *Client) AddColocation(ctx context.Context, co Colocation) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, "/v1/constraints/colocation", co)
}

// AddOrder adds an order constraint.
func (c *Client) AddOrder(ctx context.Context, o Order) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, "/v1/constraints/order", o)
}

// RemoveConstraint removes a constraint of any kind by id.
func (c *Client) RemoveConstraint(ctx context.Context, id string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodDelete, "/v1/constraints/"+url.PathEscape(id), nil)
}

// UpdateNode changes a node's settings (standby, maintenance, attributes,
// utilization).
func (c *Client) UpdateNode(ctx context.Context, name string, req NodeUpdate) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPatch, "/v1/nodes/"+url.PathEscape(name), req)
}

// FenceConfirm records an operator's proof that a node is down (with Yes),
// or says what it would release (without).
func (c *Client) FenceConfirm(ctx context.Context, node string, req FenceConfirmRequest) (FenceConfirmResult, error) {
	return call[FenceConfirmResult](ctx, c, http.MethodPost, "/v1/nodes/"+url.PathEscape(node)+"/fence-confirm", req)
}

// Explain returns the scheduler's reasons for a resource's placement.
func (c *Client) Explain(ctx context.Context, resource string) (Explanation, error) {
	return call[Explanation](ctx, c, http.MethodGet, "/v1/explain/"+url.PathEscape(resource), nil)
}

// Simulate runs the scheduler on hypothetical failures; nothing changes.
func (c *Client) Simulate(ctx context.Context, req SimulateRequest) (SimulateResult, error) {
	return call[SimulateResult](ctx, c, http.MethodPost, "/v1/simulate", req)
}

// ExportConfig returns the resource configuration as YAML.
func (c *Client) ExportConfig(ctx context.Context) (ConfigDocument, error) {
	return call[ConfigDocument](ctx, c, http.MethodGet, "/v1/config", nil)
}

// ApplyConfig replaces the resource configuration (or, with DryRun, says
// what that would change and do).
func (c *Client) ApplyConfig(ctx context.Context, req ApplyConfigRequest) (ApplyConfigResult, error) {
	return call[ApplyConfigResult](ctx, c, http.MethodPost, "/v1/config", req)
}
