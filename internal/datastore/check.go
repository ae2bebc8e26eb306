package datastore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Identity names a datastore: the cluster it belongs to and its name in
// that cluster's configuration. Init writes it into the datastore's marker
// and Check compares it, so that a node never heartbeats into, or takes
// leases on, a folder that is not the datastore it means: an unmounted
// mountpoint (an empty local folder) or another cluster's datastore.
type Identity struct {
	Cluster   string `json:"cluster"`
	Datastore string `json:"datastore"`
}

// String is "cluster/datastore".
func (id Identity) String() string { return id.Cluster + "/" + id.Datastore }

func (id Identity) check() error {
	if id.Cluster == "" || id.Datastore == "" {
		return fmt.Errorf("%w: identity %q needs a cluster and a datastore name", ErrName, id)
	}
	return nil
}

// ErrNotInitialized means the root has no Vigil marker: the share is not
// mounted (the mountpoint is an empty local folder) or Init was never run.
// Both look the same from here, and both must stop a node from using it.
var ErrNotInitialized = errors.New("datastore: not mounted or not initialized")

// ErrForeign means the root's marker names another cluster or datastore.
var ErrForeign = errors.New("datastore: belongs to another cluster or datastore")

const (
	markerKind    = "datastore"
	markerVersion = 1
)

type marker struct {
	Identity
	Created time.Time `json:"created"` // the initializer's wall clock, for display
}

// DefaultCheckTimeout bounds Check and Init when ctx has no deadline: a hung
// NFS mount must not hang the caller forever.
const DefaultCheckTimeout = 10 * time.Second

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultCheckTimeout)
}

// Init prepares root as the datastore id: it creates Vigil's folders and
// writes the marker. It is idempotent, and refuses a root whose marker
// names another identity or cannot be read: Vigil never takes over a
// folder some other cluster may be using.
func Init(ctx context.Context, root string, id Identity) error {
	if err := id.check(); err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	_, err := do(ctx, func() (struct{}, error) { return struct{}{}, initRoot(root, id) })
	if err != nil {
		return fmt.Errorf("initialize datastore %s at %s: %w", id, root, err)
	}
	return nil
}

func initRoot(root string, id Identity) error {
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", root)
	}
	got, merr := readMarker(OSFS{}, root)
	switch {
	case merr == nil && got.Identity == id:
		// Already ours; make sure the folders are there.
	case merr == nil:
		return fmt.Errorf("%w: the marker names %s", ErrForeign, got.Identity)
	case !errors.Is(merr, ErrNotInitialized):
		return fmt.Errorf("refusing to overwrite an unreadable marker: %w", merr)
	}
	for _, d := range []string{vigilDir, hbRel, leasesRel, probeRel} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if merr == nil {
		return nil
	}
	data, err := encodeFrame(markerKind, markerVersion, marker{Identity: id, Created: time.Now()})
	if err != nil {
		return err
	}
	return OSFS{}.WriteFile(markerPath(root), data)
}

// readMarker reads root's marker; an absent one is ErrNotInitialized.
func readMarker(fsys FS, root string) (marker, error) {
	var m marker
	data, err := fsys.ReadFile(markerPath(root))
	if errors.Is(err, fs.ErrNotExist) {
		return m, fmt.Errorf("%w: no %s in %s", ErrNotInitialized, markerRel, root)
	}
	if err != nil {
		return m, err
	}
	if _, err := decodeFrame(data, markerKind, markerVersion, &m); err != nil {
		return m, fmt.Errorf("marker %s: %w", markerPath(root), err)
	}
	return m, nil
}

// requireMarker fails unless root carries a readable marker: it keeps
// lease and heartbeat code from reading an unmounted mountpoint's missing
// files as "free".
func requireMarker(ctx context.Context, fsys FS, root string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	_, err := do(ctx, func() (marker, error) { return readMarker(fsys, root) })
	return err
}

// Health is the result of one Check.
type Health struct {
	// OK: mounted and writable; the datastore may be used.
	OK bool
	// Mounted: the root is a folder carrying this datastore's marker.
	Mounted bool
	// Writable: a probe file was written, synced and read back intact.
	Writable bool
	// Latency is how long the check's IO took (up to the deadline if it
	// hung).
	Latency time.Duration
	// Err says what failed, for display; empty when OK.
	Err string
}

// Check tells whether root is the datastore want, mounted and writable:
// the folder exists, its marker names want, and a probe file can be
// written, synced and read back. It never blocks past ctx's deadline (or
// DefaultCheckTimeout without one): the IO runs in a goroutine that is
// abandoned if the datastore hangs, and the result then reports a timeout
// with whatever the check had established by then.
func Check(ctx context.Context, root string, want Identity) Health {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	start := time.Now()
	var (
		mu sync.Mutex
		h  Health // progress, shared with the IO goroutine
	)
	set := func(f func(*Health)) {
		mu.Lock()
		f(&h)
		mu.Unlock()
	}
	_, err := do(ctx, func() (struct{}, error) { return struct{}{}, check(root, want, set) })
	mu.Lock()
	res := h
	mu.Unlock()
	res.Latency = time.Since(start)
	if err != nil {
		if errors.Is(err, ErrTimeout) {
			err = fmt.Errorf("%w after %v (hung mount?)", ErrTimeout, res.Latency.Round(time.Millisecond))
		}
		res.Err = fmt.Sprintf("datastore %s at %s: %v", want, root, err)
		res.OK = false
		return res
	}
	res.OK = res.Mounted && res.Writable
	return res
}

func check(root string, want Identity, set func(func(*Health))) error {
	if err := want.check(); err != nil {
		return err
	}
	st, err := os.Stat(root)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", root)
	}
	m, err := readMarker(OSFS{}, root)
	if err != nil {
		return err
	}
	if m.Identity != want {
		return fmt.Errorf("%w: the marker names %s", ErrForeign, m.Identity)
	}
	set(func(h *Health) { h.Mounted = true })
	if err := probe(root); err != nil {
		return fmt.Errorf("write probe: %w", err)
	}
	set(func(h *Health) { h.Writable = true })
	return nil
}

// probe writes a random file in the probe folder, syncs it, reads it back
// and removes it. Each check uses a fresh name, so that checks of several
// nodes never collide and a stale page cache cannot fake a read-back.
func probe(root string) error {
	var nonce [16]byte
	rand.Read(nonce[:])
	name := filepath.Join(root, probeRel, hex.EncodeToString(nonce[:]))
	want := []byte("vigil probe " + hex.EncodeToString(nonce[:]) + "\n")
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(name)
	if _, err := f.Write(want); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	got, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("probe read back differs from what was written")
	}
	return os.Remove(name)
}
