package datastore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestInitAndCheck(t *testing.T) {
	root := t.TempDir()
	if err := Init(bg(), root, testID); err != nil {
		t.Fatal(err)
	}
	if err := Init(bg(), root, testID); err != nil {
		t.Fatalf("Init is not idempotent: %v", err)
	}
	h := Check(bg(), root, testID)
	if !h.OK || !h.Mounted || !h.Writable || h.Err != "" || h.Latency <= 0 {
		t.Fatalf("health %+v", h)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, probeRel)); len(ents) != 0 {
		t.Errorf("probe files left behind: %v", ents)
	}
}

// An unmounted mountpoint is an empty local folder: it must not pass for
// the datastore (every lease in it would look free).
func TestCheckRefusesUnmountedMountpoint(t *testing.T) {
	h := Check(bg(), t.TempDir(), testID)
	if h.OK || h.Mounted || !strings.Contains(h.Err, "not mounted or not initialized") {
		t.Fatalf("health %+v", h)
	}
}

func TestCheckRefusesAnotherClustersDatastore(t *testing.T) {
	root := t.TempDir()
	other := Identity{Cluster: "c2", Datastore: "ds1"}
	if err := Init(bg(), root, other); err != nil {
		t.Fatal(err)
	}
	h := Check(bg(), root, testID)
	if h.OK || h.Mounted || !strings.Contains(h.Err, "c2/ds1") {
		t.Fatalf("health %+v", h)
	}
	if err := Init(bg(), root, testID); !errors.Is(err, ErrForeign) {
		t.Fatalf("Init over another cluster's marker: %v", err)
	}
	if h := Check(bg(), root, other); !h.OK {
		t.Errorf("the other cluster's check: %+v", h)
	}
	// A damaged marker is not overwritten either.
	os.WriteFile(markerPath(root), []byte("junk"), 0o644)
	if err := Init(bg(), root, testID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Init over a damaged marker: %v", err)
	}
}

func TestCheckBadRoots(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, root := range []string{filepath.Join(dir, "missing"), file} {
		if h := Check(bg(), root, testID); h.OK || h.Mounted || h.Err == "" {
			t.Errorf("%s: %+v", root, h)
		}
		if err := Init(bg(), root, testID); err == nil {
			t.Errorf("Init(%s) succeeded", root)
		}
	}
	if h := Check(bg(), dir, Identity{}); h.OK || !strings.Contains(h.Err, "identity") {
		t.Errorf("empty identity: %+v", h)
	}
}

func TestCheckNotWritable(t *testing.T) {
	root := t.TempDir()
	if err := Init(bg(), root, testID); err != nil {
		t.Fatal(err)
	}
	// Tests may run as root, so permissions would not stop the probe: put
	// a file where the probe folder should be.
	probe := filepath.Join(root, probeRel)
	os.Remove(probe)
	os.WriteFile(probe, nil, 0o644)
	h := Check(bg(), root, testID)
	if h.OK || !h.Mounted || h.Writable || !strings.Contains(h.Err, "write probe") {
		t.Fatalf("health %+v", h)
	}
}

// A hung mount (here, a FIFO with no writer where the marker should be:
// opening it blocks, like a read on a dead NFS server) must not hold the
// caller past its deadline.
func TestCheckHungDatastore(t *testing.T) {
	root := t.TempDir()
	if err := Init(bg(), root, testID); err != nil {
		t.Fatal(err)
	}
	marker := markerPath(root)
	os.Remove(marker)
	if err := syscall.Mkfifo(marker, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	t.Cleanup(func() {
		// Unblock the abandoned reader: open the write end, then close it.
		if f, err := os.OpenFile(marker, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		time.Sleep(20 * ms)
	})
	ctx, cancel := context.WithTimeout(bg(), 100*ms)
	defer cancel()
	start := time.Now()
	h := Check(ctx, root, testID)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Check returned after %v", d)
	}
	if h.OK || h.Mounted || !strings.Contains(h.Err, "did not complete in time") || h.Latency < 50*ms {
		t.Fatalf("health %+v", h)
	}
	t.Log(h.Err)

	// Leases and heartbeats on it fail in time too.
	ctx2, cancel2 := context.WithTimeout(bg(), 100*ms)
	defer cancel2()
	if _, err := Acquire(ctx2, root, "vm1", holder("n1"), testOpts()); !errors.Is(err, ErrTimeout) {
		t.Errorf("Acquire on a hung datastore: %v", err)
	}
}
