package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// Binary returns the vigil binary to test: $VIGIL_BIN when set, else
// ./cmd/vigil of this module, built once per test binary (CGO_ENABLED=0;
// with $VIGIL_LAB_RACE set, with -race) into a temporary folder that Main
// removes. Node logs are checked for data race reports at cleanup.
func Binary() (string, error) {
	if p := os.Getenv("VIGIL_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("$VIGIL_BIN: %w", err)
		}
		return abs, nil
	}
	buildOnce.Do(func() { buildPath, buildErr = build() })
	return buildPath, buildErr
}

func build() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "vigil-lab-bin-")
	if err != nil {
		return "", err
	}
	buildDir = dir
	out := filepath.Join(dir, "vigil")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", out}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("VIGIL_LAB_RACE") != "" {
		// The race detector needs cgo.
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/vigil")...)
	cmd.Dir = root
	cmd.Env = env
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build ./cmd/vigil (set $VIGIL_BIN to use a built one): %w\n%s", err, msg.String())
	}
	return out, nil
}

// ModuleRoot finds the folder holding go.mod, upwards from the working
// folder (a test runs in its package's folder).
func ModuleRoot() (string, error) { return moduleRoot() }

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working folder")
		}
		dir = parent
	}
}

// Main runs a package's tests with the lab's housekeeping: it removes stale
// namespaces of dead test processes first (CleanupStale) and the built
// binary after. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }
func Main(m *testing.M) int {
	if NetnsUnavailable() == "" {
		if removed, err := CleanupStale(); err != nil {
			fmt.Fprintf(os.Stderr, "lab: cleaning stale namespaces: %v\n", err)
		} else if len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "lab: removed stale namespaces %v\n", removed)
		}
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	return code
}

// Scale stretches a test timeout by $VIGIL_LAB_SCALE (a number, default 1),
// for slow or loaded machines. The lab's waits apply it themselves.
func Scale(d time.Duration) time.Duration {
	s := os.Getenv("VIGIL_LAB_SCALE")
	if s == "" {
		return d
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return d
	}
	return time.Duration(float64(d) * f)
}
