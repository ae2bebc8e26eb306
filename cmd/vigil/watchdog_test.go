package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/model"
)

func TestSetupWatchdog(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, "cluster", "setup", "prod", "--dir", dir,
		"--node", "n1=127.0.0.1:7101", "--node", "n2=127.0.0.1:7102", "--node", "n3=127.0.0.1:7103",
		"--watchdog", "process", "--watchdog-timeout", "3s"); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(filepath.Join(dir, "n2.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := model.WatchdogConfig{Backend: "process", Timeout: model.Duration(3 * time.Second), Lease: model.Duration(time.Second)}
	if f.Watchdog != want {
		t.Fatalf("watchdog %+v, want %+v", f.Watchdog, want)
	}
	// Without --watchdog nothing is written.
	dir2 := t.TempDir()
	if _, _, err := run(t, "cluster", "setup", "prod", "--dir", dir2, "--node", "n1=127.0.0.1:7101"); err != nil {
		t.Fatal(err)
	}
	if f, err := config.Load(filepath.Join(dir2, "n1.yaml")); err != nil || f.Watchdog.Enabled() {
		t.Fatalf("no --watchdog: %+v %v", f, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--watchdog", "softdog"}, "backend \"softdog\""},
		{[]string{"--watchdog", "device", "--watchdog-timeout", "500ms"}, "at least 1s"},
		{[]string{"--watchdog", "process", "--watchdog-lease", "2s"}, "must not exceed node_timeout"},
	} {
		args := append([]string{"cluster", "setup", "prod", "--dir", t.TempDir(), "--node", "n1=127.0.0.1:7101"}, tt.args...)
		if _, _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}
