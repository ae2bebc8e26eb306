package model

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// AgentVM is the agent of QEMU virtual machines, the resources whose files
// live on datastores.
const AgentVM = "vigil:vm"

// vmFileParams are vigil:vm's parameters that name files: each a
// comma-separated list of DATASTORE:path or absolute paths (a disk may end
// in ":qcow2" or ":raw", which does not change its datastore).
var vmFileParams = []string{"disk", "kernel", "initrd"}

// Datastores returns the datastores a vigil:vm resource's files live on,
// sorted and without repeats: the VM cannot start on a node that cannot
// use one of them (its disks, and its kernel and initrd, must be read
// there). Other resources, and files given as absolute paths, name none.
// The syntax is checked by the agent, not here: a malformed item names no
// datastore.
func (r Resource) Datastores() []string {
	if r.Agent != AgentVM {
		return nil
	}
	var out []string
	for _, p := range vmFileParams {
		for _, item := range strings.Split(r.Params[p], ",") {
			item = strings.TrimSpace(item)
			if item == "" || filepath.IsAbs(item) {
				continue
			}
			if name, _, ok := strings.Cut(item, ":"); ok && name != "" {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

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

// IsolationRecord is the DC's account of a node that said on a datastore
// that it is isolated (status/isolation/<node>): written with the release
// of the resources the node stopped, for `vigil status` and the history.
type IsolationRecord struct {
	V      int    `json:"v"`
	Node   string `json:"node"`
	BootID uint64 `json:"boot_id"`
	// NodeIndex is the store index of the node record the claims were tied
	// to: the record describes the node only while its record is that one
	// (its rejoin writes a new one).
	NodeIndex uint64 `json:"node_index"`
	// Datastore is where the claim was read; Beating whether the node's
	// heartbeat there was still moving (isolated, not dead).
	Datastore string `json:"datastore"`
	Beating   bool   `json:"beating"`
	// Released are the instances recovered on the node's word, so far in
	// this isolation (the same node record).
	Released []string  `json:"released"`
	At       time.Time `json:"at"`
}
