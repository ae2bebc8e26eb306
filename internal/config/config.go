// Package config reads and writes a node's configuration file: which cluster
// and node this agent is, where its key and data live, and the cluster layout
// used the first time the cluster starts.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/vigil-ha/vigil/internal/model"
)

// DefaultPath is where `vigil` looks for the node's configuration when
// neither --config nor VIGIL_CONFIG says otherwise.
const DefaultPath = "/etc/vigil/vigil.yaml"

// File is the node configuration file. Relative paths in it are relative to
// the file's own folder, so a folder written by `vigil cluster setup` can be
// moved as a whole.
type File struct {
	model.Cluster `json:",inline"`

	// Node is the name of this node; it must be one of Nodes, unless Join is set.
	Node string `json:"node"`
	// KeyFile holds the cluster key (base64, mode 0600).
	KeyFile string `json:"key_file"`
	// DataDir holds the Raft log, snapshots and local state.
	DataDir string `json:"data_dir"`
	// RunDir holds volatile resource state (OCF state files, pid files of
	// vigil:process). It must not survive a reboot, so the default is on
	// /run (a tmpfs): /run/vigil/<cluster>-<node>.
	RunDir string `json:"run_dir,omitempty"`
	// Initial marks a node of the cluster's first set: with an empty data
	// folder it bootstraps from Nodes. A joining node has Initial false and
	// receives the state from the cluster instead.
	Initial bool `json:"initial,omitempty"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string `json:"log_level,omitempty"`

	// dir is the folder the file was read from.
	dir string `json:"-"`
}

// Load reads, defaults and validates a configuration file. An unknown field
// is an error: a typo must not silently fall back to a default.
func Load(path string) (*File, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	f, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	f.dir = abs
	return f, nil
}

// Parse decodes and validates configuration text.
func Parse(raw []byte) (*File, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate checks the file: the cluster layout, and that this node is in it.
func (f *File) Validate() error {
	if err := f.Cluster.Validate(); err != nil {
		return err
	}
	if _, ok := f.Cluster.Node(f.Node); !ok {
		return fmt.Errorf("node %q is not among the configured nodes", f.Node)
	}
	if f.KeyFile == "" {
		return errors.New("key_file is required")
	}
	if f.DataDir == "" {
		return errors.New("data_dir is required")
	}
	switch f.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", f.LogLevel)
	}
	return nil
}

// Self returns this node's entry.
func (f *File) Self() model.Node {
	n, _ := f.Cluster.Node(f.Node)
	return n
}

// Resolve makes p absolute relative to the file's folder.
func (f *File) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || f.dir == "" {
		return p
	}
	return filepath.Join(f.dir, p)
}

// KeyPath is the absolute path of the key file.
func (f *File) KeyPath() string { return f.Resolve(f.KeyFile) }

// DataPath is the absolute path of the data folder.
func (f *File) DataPath() string { return f.Resolve(f.DataDir) }

// RunPath is the absolute path of the run folder.
func (f *File) RunPath() string {
	if f.RunDir == "" {
		return filepath.Join("/run/vigil", f.Name+"-"+f.Node)
	}
	return f.Resolve(f.RunDir)
}

// Marshal renders the file as YAML.
func (f *File) Marshal() ([]byte, error) {
	return yaml.Marshal(f)
}

// Write writes the file as YAML with mode 0644 (the key is in its own file).
func (f *File) Write(path string) error {
	b, err := f.Marshal()
	if err != nil {
		return fmt.Errorf("render config: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}
