package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-ha/vigil/internal/config"
)

// run executes the CLI in-process with args and returns stdout, stderr and
// the error, as a user would see them.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb)
	root.SetArgs(normalizeArgs(args))
	err := root.Execute()
	return out.String(), errb.String(), err
}

func TestSetupWritesLoadableConfigs(t *testing.T) {
	dir := t.TempDir()
	_, _, err := run(t, "cluster", "setup", "prod", "--dir", dir,
		"--node", "n1=127.0.0.1:7101,127.0.0.2:7101",
		"--node", "n2=127.0.0.1:7102,127.0.0.2:7102",
		"--witness", "w1=127.0.0.1:7103,127.0.0.2:7103",
		"--heartbeat", "100ms", "--node-timeout", "700ms")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	for i, n := range []string{"n1", "n2", "w1"} {
		f, err := config.Load(filepath.Join(dir, n+".yaml"))
		if err != nil {
			t.Fatalf("#%d %s: %v", i, n, err)
		}
		if f.Node != n || len(f.Nodes) != 3 || !f.Initial || len(f.Self().Links) != 2 {
			t.Fatalf("#%d %s: %+v", i, n, f)
		}
		if f.Timing.NodeTimeout.String() != "700ms" {
			t.Fatalf("#%d: timing not carried: %+v", i, f.Timing)
		}
		if want := filepath.Join(dir, "data", n); f.DataPath() != want {
			t.Fatalf("#%d: data dir %s, want %s", i, f.DataPath(), want)
		}
	}
	if w, _ := config.Load(filepath.Join(dir, "w1.yaml")); !w.Self().IsWitness() {
		t.Fatal("w1 is not a witness")
	}
	// A second setup into the same folder must not replace the key.
	if _, _, err := run(t, "cluster", "setup", "prod", "--dir", dir, "--node", "n1=127.0.0.1:7101"); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second setup: %v", err)
	}
}

func TestBadInputIsRefusedAndWritesNothing(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "setup", "prod"}, "no nodes"},
		{[]string{"cluster", "setup", "prod", "--node", "n1"}, "want NAME=HOST:PORT"},
		{[]string{"cluster", "setup", "prod", "--node", "n1=127.0.0.1"}, "want host:port"},
		{[]string{"cluster", "setup", "prod", "--node", "n1=127.0.0.1:1", "--node", "n1=127.0.0.1:2"}, "name used twice"},
		{[]string{"cluster", "setup", "Bad Name", "--node", "n1=127.0.0.1:1"}, "cluster: name"},
		{[]string{"cluster", "setup", "prod", "--node", "n1=127.0.0.1:1", "--heartbeat", "1s"}, "at least three heartbeats"},
		{[]string{"cluster", "setup", "prod", "--node", "n1=127.0.0.1:1", "--heartbeat", "soon"}, "invalid argument"},
		{[]string{"cluster", "join", "garbage", "--name", "n4", "--link", "127.0.0.1:1"}, "join token"},
		{[]string{"status", "--output", "yaml"}, "want text or json"},
		{[]string{"property", "set", "novalue"}, "want key=value"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for i, tt := range tests {
		dir := t.TempDir()
		args := append([]string{}, tt.args...)
		if args[0] == "cluster" && args[1] == "setup" {
			args = append(args, "--dir", dir)
		}
		_, _, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("#%d %v: error %v, want it to contain %q", i, tt.args, err, tt.want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("#%d %v: wrote %d files despite the error", i, tt.args, len(ents))
		}
	}
}

func TestCLIWithoutReachableNodeSaysSo(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, "cluster", "setup", "prod", "--dir", dir, "--node", "n1=127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	_, _, err := run(t, "--config", filepath.Join(dir, "n1.yaml"), "status")
	if err == nil || !strings.Contains(err.Error(), "no node answered") {
		t.Fatalf("status with no agent: %v", err)
	}
}

func TestSingleDashDev(t *testing.T) {
	got := normalizeArgs([]string{"agent", "-dev"})
	if got[1] != "--dev" {
		t.Fatalf("normalizeArgs: %v", got)
	}
}
