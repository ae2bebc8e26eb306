package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// The datastore part of the API: shared folders declared in the cluster
// configuration, their health as every node sees it, and disk images on
// them (what `vigil vm create` makes before the resource).

// Datastore is a datastore as the API shows it.
type Datastore struct {
	Name string `json:"name"`
	// Path is where every node mounts it.
	Path string `json:"path"`
	// Health is each node's latest check, sorted by node.
	Health []DatastoreNodeHealth `json:"health,omitempty"`
}

// DatastoreNodeHealth is one node's latest check of a datastore.
type DatastoreNodeHealth struct {
	Node string `json:"node"`
	// OK: mounted (it carries this datastore's marker) and writable.
	OK      bool          `json:"ok"`
	Latency time.Duration `json:"latency_ns"`
	Error   string        `json:"error,omitempty"`
	// At is when the node checked, on its own clock.
	At time.Time `json:"at"`
}

// CreateDatastoreRequest declares a datastore. The answering node must have
// it mounted at Path: it initializes it (writes Vigil's marker naming the
// cluster and the datastore) before the configuration is written.
type CreateDatastoreRequest struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// CreateImageRequest creates a disk image on a datastore, on the answering
// node (which must have it mounted).
type CreateImageRequest struct {
	// Path is relative to the datastore ("vm1.qcow2").
	Path string `json:"path"`
	// Size is the virtual size for qemu-img ("10G").
	Size string `json:"size"`
	// Format is qcow2 (default) or raw.
	Format string `json:"format,omitempty"`
	// Existing accepts an image that exists already (it is then left as
	// it is) instead of refusing.
	Existing bool `json:"existing,omitempty"`
}

// CreateImageResult says what was done.
type CreateImageResult struct {
	// Path is the image's absolute path on the nodes.
	Path string `json:"path"`
	// Created is false when an existing image was accepted.
	Created bool `json:"created"`
	// Node is the node that created it.
	Node string `json:"node"`
}

// DatastoreBackend is the datastore part of a Backend. It is optional: a
// Backend without it answers not found on these routes.
type DatastoreBackend interface {
	Datastores(ctx context.Context) ([]Datastore, error)
	CreateDatastore(ctx context.Context, req CreateDatastoreRequest) (WriteResult, error)
	// DeleteDatastore removes a datastore from the configuration (its
	// files stay); refused while a resource uses it.
	DeleteDatastore(ctx context.Context, name string) (WriteResult, error)
	CreateImage(ctx context.Context, datastore string, req CreateImageRequest) (CreateImageResult, error)
}

func (s *server) routeDatastores(mux *http.ServeMux) {
	db, ok := s.b.(DatastoreBackend)
	if !ok {
		return
	}
	mux.HandleFunc("GET /v1/datastores", onPlain(s, db.Datastores))
	mux.HandleFunc("POST /v1/datastores", onBody(s, db.CreateDatastore))
	mux.HandleFunc("DELETE /v1/datastores/{name}", onPath(s, "name", db.DeleteDatastore))
	mux.HandleFunc("POST /v1/datastores/{name}/images", onPathBody(s, "name", db.CreateImage))
}

func datastorePath(parts ...string) string {
	p := "/v1/datastores"
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// Datastores lists the datastores with every node's latest check.
func (c *Client) Datastores(ctx context.Context) ([]Datastore, error) {
	return call[[]Datastore](ctx, c, http.MethodGet, datastorePath(), nil)
}

// CreateDatastore declares a datastore, initialized by the answering node.
func (c *Client) CreateDatastore(ctx context.Context, req CreateDatastoreRequest) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPost, datastorePath(), req)
}

// DeleteDatastore removes a datastore from the configuration.
func (c *Client) DeleteDatastore(ctx context.Context, name string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodDelete, datastorePath(name), nil)
}

// CreateImage creates a disk image on a datastore.
func (c *Client) CreateImage(ctx context.Context, datastore string, req CreateImageRequest) (CreateImageResult, error) {
	return call[CreateImageResult](ctx, c, http.MethodPost, datastorePath(datastore, "images"), req)
}

// DatastoreHeartbeat is one node's heartbeat on one datastore as the
// answering node (the DC) last read it, or this node's own failing write.
type DatastoreHeartbeat struct {
	Datastore string `json:"datastore"`
	Node      string `json:"node"`
	// State is what the node says: alive, or isolated (it lost quorum and
	// stops its resources).
	State string `json:"state,omitempty"`
	// Released lists what the isolated node stopped and let go.
	Released []string `json:"released,omitempty"`
	// Beating: the node's counter moved recently on the reader's clock.
	Beating bool `json:"beating"`
	// Silence is how long ago the counter last moved.
	Silence string `json:"silence,omitempty"`
	// WriteError is set on the answering node's own slot when its
	// heartbeat cannot be written.
	WriteError string `json:"write_error,omitempty"`
}
