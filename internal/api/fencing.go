package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The fencing part of the API: fence devices, the fencing topology (levels
// per node), the fencing history and operators' fence requests. Like the
// resource API, options travel as text (pcs-style key=value pairs) and the
// server maps, parses and validates them, so every client gets the same
// words for the same mistake.

// FenceDevice is a fence device's configuration as the API shows it.
type FenceDevice struct {
	Name string `json:"name"`
	// Health is the device's last monitor, as the DC ran it.
	Health string `json:"health,omitempty"`
	Agent  string `json:"agent"`
	// Params are the agent's own options (key=value lines on its stdin).
	// They may hold passwords.
	Params map[string]string `json:"params,omitempty"`
	// HostList (pcmk_host_list) names the nodes it fences, the plug being
	// the node's name.
	HostList []string `json:"host_list,omitempty"`
	// HostMap (pcmk_host_map) maps a node to its plug on the device.
	HostMap map[string]string `json:"host_map,omitempty"`
	// Delay (pcmk_delay_base) and DelayMax (pcmk_delay_max, a random
	// part) are waited before fencing; "" when none.
	Delay    string `json:"delay,omitempty"`
	DelayMax string `json:"delay_max,omitempty"`
	// Timeout bounds one agent invocation, with the default applied.
	Timeout string `json:"timeout"`
	// Retries is how often a failed off is retried, with the default
	// applied.
	Retries int `json:"retries"`
	// MonitorInterval is how often the device's health is checked; "" for
	// never.
	MonitorInterval string `json:"monitor_interval,omitempty"`
	// Levels are the topology levels that use the device ("n1 level 1").
	Levels []string `json:"levels,omitempty"`
}

// CreateFenceDeviceRequest creates a fence device. Options are the pcs-style
// key=value pairs: pcmk_host_list (n1,n2), pcmk_host_map (n1:plug1;n2:plug2),
// pcmk_delay_base, pcmk_delay_max, timeout, retries and monitor_interval set
// the device's own fields; every other key is a parameter of the agent.
type CreateFenceDeviceRequest struct {
	Name    string            `json:"name"`
	Agent   string            `json:"agent"`
	Options map[string]string `json:"options,omitempty"`
}

// UpdateFenceDeviceRequest changes a fence device's options (the keys of
// CreateFenceDeviceRequest.Options); an empty value removes a parameter or
// resets a field to its default.
type UpdateFenceDeviceRequest struct {
	Options map[string]string `json:"options"`
}

// FenceLevel is one level of a node's fencing topology: level 1 is tried
// first; every device of a level must succeed.
type FenceLevel struct {
	Node    string   `json:"node"`
	Level   int      `json:"level"`
	Devices []string `json:"devices"`
	// Default marks the levels Vigil derives for a node without configured
	// levels: one per device that can fence it, in name order.
	Default bool `json:"default,omitempty"`
}

// FenceLevelRequest sets one level of a node's topology. Adding a level
// that exists with other devices is refused unless Replace is set.
type FenceLevelRequest struct {
	Devices []string `json:"devices"`
	Replace bool     `json:"replace,omitempty"`
}

// FenceEvent is one entry of the replicated fencing history.
type FenceEvent struct {
	ID     string `json:"id"`
	Target string `json:"target"`
	// By says who asked: "dc n1" or "operator via n2".
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	// How is "device" (fence agents) or "watchdog".
	How       string        `json:"how"`
	OK        bool          `json:"ok"`
	Level     int           `json:"level,omitempty"`
	Devices   []string      `json:"devices,omitempty"`
	Confirmed string        `json:"confirmed,omitempty"`
	Error     string        `json:"error,omitempty"`
	Attempts  []string      `json:"attempts,omitempty"`
	Started   time.Time     `json:"started"`
	Duration  time.Duration `json:"duration_ns"`
}

// FenceRequest is an operator's fence request not yet carried out by the DC.
type FenceRequest struct {
	Target string    `json:"target"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// FenceHistory is the fencing history (oldest first) and the requests in
// flight.
type FenceHistory struct {
	Events   []FenceEvent   `json:"events"`
	Requests []FenceRequest `json:"requests"`
}

// FenceNodeRequest asks the DC to fence a node (`vigil fence NODE`).
type FenceNodeRequest struct {
	Reason string `json:"reason,omitempty"`
}

// FenceNodeResult acknowledges a queued fence request.
type FenceNodeResult struct {
	Request FenceRequest `json:"request"`
	// Replaced is set when a request for the node was already queued.
	Replaced bool `json:"replaced,omitempty"`
	// Plan is what the DC will try, in order ("level 1: ipmi1"), or the
	// watchdog.
	Plan []string `json:"plan,omitempty"`
	// DC is the coordinator that will carry it out, as the answering node
	// knows it.
	DC string `json:"dc,omitempty"`
}

// FencingBackend is the fencing part of Backend.
type FencingBackend interface {
	FenceDevices(ctx context.Context) ([]FenceDevice, error)
	FenceDevice(ctx context.Context, name string) (FenceDevice, error)
	CreateFenceDevice(ctx context.Context, req CreateFenceDeviceRequest) (WriteResult, error)
	UpdateFenceDevice(ctx context.Context, name string, req UpdateFenceDeviceRequest) (WriteResult, error)
	DeleteFenceDevice(ctx context.Context, name string) (WriteResult, error)

	// FenceLevels lists the levels of node, or of every node when node is
	// "".
	FenceLevels(ctx context.Context, node string) ([]FenceLevel, error)
	SetFenceLevel(ctx context.Context, node string, level int, req FenceLevelRequest) (WriteResult, error)
	// RemoveFenceLevel removes one level of node, or all of them when
	// level is 0.
	RemoveFenceLevel(ctx context.Context, node string, level int) (WriteResult, error)

	// FenceHistory returns the history, of one target when node is not "".
	FenceHistory(ctx context.Context, node string) (FenceHistory, error)
	RequestFence(ctx context.Context, node string, req FenceNodeRequest) (FenceNodeResult, error)
}

func (s *server) routeFencing(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/fencing/devices", onPlain(s, s.b.FenceDevices))
	mux.HandleFunc("POST /v1/fencing/devices", onBody(s, s.b.CreateFenceDevice))
	mux.HandleFunc("GET /v1/fencing/devices/{name}", onPath(s, "name", s.b.FenceDevice))
	mux.HandleFunc("PATCH /v1/fencing/devices/{name}", onPathBody(s, "name", s.b.UpdateFenceDevice))
	mux.HandleFunc("DELETE /v1/fencing/devices/{name}", onPath(s, "name", s.b.DeleteFenceDevice))

	mux.HandleFunc("GET /v1/fencing/levels", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.FenceLevels(r.Context(), "")
		s.reply(w, r, v, err)
	})
	mux.HandleFunc("GET /v1/fencing/levels/{node}", onPath(s, "node", s.b.FenceLevels))
	mux.HandleFunc("PUT /v1/fencing/levels/{node}/{level}", func(w http.ResponseWriter, r *http.Request) {
		level, ok := s.levelParam(w, r)
		if !ok {
			return
		}
		var req FenceLevelRequest
		if !s.decode(w, r, &req) {
			return
		}
		v, err := s.b.SetFenceLevel(r.Context(), r.PathValue("node"), level, req)
		s.reply(w, r, v, err)
	})
	mux.HandleFunc("DELETE /v1/fencing/levels/{node}", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.RemoveFenceLevel(r.Context(), r.PathValue("node"), 0)
		s.reply(w, r, v, err)
	})
	mux.HandleFunc("DELETE /v1/fencing/levels/{node}/{level}", func(w http.ResponseWriter, r *http.Request) {
		level, ok := s.levelParam(w, r)
		if !ok {
			return
		}
		v, err := s.b.RemoveFenceLevel(r.Context(), r.PathValue("node"), level)
		s.reply(w, r, v, err)
	})

	mux.HandleFunc("GET /v1/fencing/history", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.b.FenceHistory(r.Context(), r.URL.Query().Get("node"))
		s.reply(w, r, v, err)
	})
	mux.HandleFunc("POST /v1/fencing/requests/{node}", onPathBody(s, "node", s.b.RequestFence))
}

// levelParam reads the {level} path segment: a number 1 to 9.
func (s *server) levelParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	raw := r.PathValue("level")
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > MaxFenceLevel {
		s.reply(w, r, nil, Errorf(CodeBadRequest, "fence level %q: want a number from 1 to %d", raw, MaxFenceLevel))
		return 0, false
	}
	return n, true
}

// MaxFenceLevel is the highest topology level (fencing.MaxLevels).
const MaxFenceLevel = 9

func fencingPath(parts ...string) string {
	p := "/v1/fencing"
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// FenceDevices lists the fence devices.
func (c *Client) FenceDevices(ctx context.Context) ([]FenceDevice, error) {
	return call[[]FenceDevice](ctx, c, http.MethodGet, fencingPath("devices"), nil)
}

// FenceDevice returns one fence device.
func (c *Client) FenceDevice(ctx context.Context, name string) (FenceDevice, error) {
	return call[FenceDevice](ctx, c, http.MethodGet, fencingPath("devices", name), nil)
}

// CreateFenceDevice creates a fence device, validated against its agent's
// metadata on the answering node.
func (c *Client) CreateFenceDevice(ctx context.Context, req CreateFenceDeviceRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, fencingPath("devices"), req)
}

// UpdateFenceDevice changes a fence device's options.
func (c *Client) UpdateFenceDevice(ctx context.Context, name string, req UpdateFenceDeviceRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPatch, fencingPath("devices", name), req)
}

// DeleteFenceDevice deletes a fence device that no level uses.
func (c *Client) DeleteFenceDevice(ctx context.Context, name string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodDelete, fencingPath("devices", name), nil)
}

// FenceLevels lists the topology levels of node, or of every node when
// node is "" (with the default levels of nodes that have none configured).
func (c *Client) FenceLevels(ctx context.Context, node string) ([]FenceLevel, error) {
	var out []FenceLevel
	p := fencingPath("levels")
	if node != "" {
		p = fencingPath("levels", node)
	}
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}

// SetFenceLevel adds (or, with Replace, replaces) one level of a node's
// topology.
func (c *Client) SetFenceLevel(ctx context.Context, node string, level int, req FenceLevelRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPut, fencingPath("levels", node, strconv.Itoa(level)), req)
}

// RemoveFenceLevel removes one level of a node's topology, or every level
// when level is 0.
func (c *Client) RemoveFenceLevel(ctx context.Context, node string, level int) (WriteResult, error) {
	var out WriteResult
	p := fencingPath("levels", node)
	if level != 0 {
		p = fencingPath("levels", node, strconv.Itoa(level))
	}
	err := c.do(ctx, http.MethodDelete, p, nil, &out)
	return out, err
}

// FenceHistory returns the fencing history and the requests in flight, of
// one target when node is not "".
func (c *Client) FenceHistory(ctx context.Context, node string) (FenceHistory, error) {
	var out FenceHistory
	p := fencingPath("history")
	if node != "" {
		p += "?node=" + url.QueryEscape(node)
	}
	err := c.do(ctx, http.MethodGet, p, nil, &out)
	return out, err
}

// RequestFence asks the DC to fence a node (it powers the node off, even a
// running one). It returns once the request is committed; the outcome
// appears in the history.
func (c *Client) RequestFence(ctx context.Context, node string, req FenceNodeRequest) (FenceNodeResult, error) {
	return call[FenceNodeResult](ctx, c, http.MethodPost, fencingPath("requests", node), req)
}
