package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `
cluster: prod
node: n1
key_file: cluster.key
data_dir: data/n1
initial: true
nodes:
- name: n1
  id: 1
  links: ["127.0.0.1:7101"]
- name: n2
  id: 2
  links: ["127.0.0.1:7102"]
- name: n3
  id: 3
  links: ["127.0.0.1:7103"]
timing:
  heartbeat: 100ms
  node_timeout: 600ms
`

func TestParseGood(t *testing.T) {
	f, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "prod" || f.Node != "n1" || len(f.Nodes) != 3 || !f.Initial {
		t.Fatalf("parsed wrongly: %+v", f)
	}
	if got := f.Timing.NodeTimeout.String(); got != "600ms" {
		t.Fatalf("node_timeout = %s", got)
	}
	if self := f.Self(); self.ID != 1 {
		t.Fatalf("Self() = %+v", self)
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name, old, new, want string
	}{
		{"unknown field", "data_dir: data/n1", "data_dir: data/n1\nhearbeat: 1s", "unknown field"},
		{"node not in cluster", "node: n1", "node: n9", "not among the configured nodes"},
		{"missing key file", "key_file: cluster.key", `key_file: ""`, "key_file is required"},
		{"missing data dir", "data_dir: data/n1", `data_dir: ""`, "data_dir is required"},
		{"bare number duration", "heartbeat: 100ms", "heartbeat: 100", "duration"},
		{"bad yaml", "nodes:", "nodes: [", "parse"},
		{"bad log level", "initial: true", "initial: true\nlog_level: loud", "log_level"},
		{"invalid cluster", "id: 2", "id: 1", "id 1 already used"},
	}
	for i, tt := range tests {
		text := strings.Replace(good, tt.old, tt.new, 1)
		if text == good {
			t.Fatalf("#%d %s: edit did not apply", i, tt.name)
		}
		_, err := Parse([]byte(text))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("#%d %s: error %v, want it to contain %q", i, tt.name, err, tt.want)
		}
	}
}

func TestRelativePathsFollowTheFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "n1.yaml")
	if err := os.WriteFile(p, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.KeyPath() != filepath.Join(dir, "cluster.key") || f.DataPath() != filepath.Join(dir, "data/n1") {
		t.Fatalf("paths: key %s data %s", f.KeyPath(), f.DataPath())
	}
	// Round trip: what Write renders loads back the same.
	out := filepath.Join(dir, "again.yaml")
	if err := f.Write(out); err != nil {
		t.Fatal(err)
	}
	g, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := f.Marshal()
	b, _ := g.Marshal()
	if string(a) != string(b) {
		t.Fatalf("round trip differs:\n%s\n---\n%s", a, b)
	}
}
