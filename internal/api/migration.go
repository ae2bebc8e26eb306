package api

import (
	"context"
	"net/http"
	"time"
)

// MigrationProgress is a live migration's progress as the source node's
// vigil:vm agent last wrote it (every 100 ms while it runs, once more when
// it ends).
type MigrationProgress struct {
	URI     string    `json:"uri"`
	Target  string    `json:"target,omitempty"`
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
	// Status is QEMU's: setup, active, completed, failed, cancelled...
	Status string `json:"status"`
	// Done: the migration has ended (see Status and Error).
	Done             bool          `json:"done,omitempty"`
	TotalBytes       uint64        `json:"total_bytes"`
	TransferredBytes uint64        `json:"transferred_bytes"`
	RemainingBytes   uint64        `json:"remaining_bytes"`
	DirtyPagesRate   uint64        `json:"dirty_pages_rate"`
	Passes           uint64        `json:"passes"`
	ThroughputMbps   float64       `json:"throughput_mbps"`
	ExpectedDowntime time.Duration `json:"expected_downtime_ns,omitempty"`
	Downtime         time.Duration `json:"downtime_ns,omitempty"`
	TotalTime        time.Duration `json:"total_time_ns,omitempty"`
	Error            string        `json:"error,omitempty"`
}

// MigrationStatus answers GET /v1/resources/{id}/migration: the DC's
// record of a live migration in progress (replicated: any node answers
// it) and the answering node's own progress file (only the source's is
// meaningful: ask the node named Source, at SourceAPI).
type MigrationStatus struct {
	Resource string `json:"resource"`
	// Node is the node that answered.
	Node string `json:"node"`
	// Active: a live migration of the resource is in progress.
	Active  bool      `json:"active"`
	Source  string    `json:"source,omitempty"`
	Target  string    `json:"target,omitempty"`
	Step    string    `json:"step,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// Error says why an aborting migration failed.
	Error string `json:"error,omitempty"`
	// SourceAPI is the source node's API endpoints (its links).
	SourceAPI []string `json:"source_api,omitempty"`
	// Progress is this node's last progress file for the resource, if it
	// has one (from this migration or an earlier one: see Started).
	Progress *MigrationProgress `json:"progress,omitempty"`
}

// MigrationBackend serves live-migration progress. It is optional: a
// Backend without it answers 404.
type MigrationBackend interface {
	Migration(ctx context.Context, id string) (MigrationStatus, error)
}

func (s *server) routeMigration(mux *http.ServeMux) {
	mb, ok := s.b.(MigrationBackend)
	if !ok {
		return
	}
	mux.HandleFunc("GET /v1/resources/{id}/migration", onPath(s, "id", mb.Migration))
}

// Migration returns the live migration of resource id as the answering
// node knows it.
func (c *Client) Migration(ctx context.Context, id string) (MigrationStatus, error) {
	return call[MigrationStatus](ctx, c, http.MethodGet, resourcePath(id, "migration"), nil)
}

// WithEndpoints returns a client for other endpoints (another node's
// links) with the same credentials, to ask a given node.
func (c *Client) WithEndpoints(endpoints []string) *Client {
	cp := *c
	cp.endpoints = endpoints
	return &cp
}
