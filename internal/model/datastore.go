package model

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Datastore is a shared folder that every node mounts at the same path
// (NFS, a cluster filesystem, or in labs a plain folder all nodes see),
// where VM disk images live and disk leases and heartbeats are kept. It is
// cluster-wide configuration (config/datastores/<name>); vigil:vm names
// images on it as NAME:relative/path.
type Datastore struct {
	// Name identifies the datastore (ValidID).
	Name string `json:"name"`
	// Path is where every node mounts it: absolute and clean, not "/".
	Path string `json:"path"`
}

// Validate checks the name and the path.
func (d Datastore) Validate() error {
	if err := ValidID(d.Name); err != nil {
		return fmt.Errorf("datastore %s", err)
	}
	switch {
	case !filepath.IsAbs(d.Path):
		return fmt.Errorf("datastore %s: path %q is not absolute", d.Name, d.Path)
	case filepath.Clean(d.Path) != d.Path:
		return fmt.Errorf("datastore %s: path %q is not clean (want %q)", d.Name, d.Path, filepath.Clean(d.Path))
	case d.Path == "/":
		return fmt.Errorf("datastore %s: path / is not a datastore", d.Name)
	case strings.ContainsAny(d.Path, "\x00\n,"):
		return fmt.Errorf("datastore %s: path %q contains a NUL, newline or comma", d.Name, d.Path)
	}
	return nil
}

// DatastoreHealth is one node's latest checks of the datastores
// (status/datastores/<node>), written by that node when a verdict changes
// and once a minute besides, for `vigil status` and for the DC.
type DatastoreHealth struct {
	V    int    `json:"v"`
	Node string `json:"node"`
	// Datastores maps a datastore's name to its latest check.
	Datastores map[string]DatastoreCheck `json:"datastores"`
}

// DatastoreCheck is one check of one datastore from one node.
type DatastoreCheck struct {
	// OK: mounted (the marker names this datastore of this cluster) and
	// writable.
	OK bool `json:"ok"`
	// Latency is how long the check's IO took.
	Latency Duration `json:"latency"`
	// Error says what failed; empty when OK.
	Error string `json:"error,omitempty"`
	// At is the checker's wall clock, for display.
	At time.Time `json:"at"`
}
