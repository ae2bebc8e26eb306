package datastore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// ErrTimeout means a datastore operation did not finish before its
// deadline: the datastore is slow or hung (an NFS server gone away blocks
// reads and writes in the kernel, uninterruptibly). The operation may still
// complete later, in a goroutine nobody waits for.
var ErrTimeout = errors.New("datastore: IO did not complete in time")

// FS is the file IO the package does on a datastore. OSFS is the real one;
// tests and simulations swap it to inject errors and hangs. Paths are
// slash-or-OS paths as built by filepath.Join. An FS may block: callers
// bound every call with a deadline (see do), so an implementation need
// not honour one.
type FS interface {
	// ReadFile returns the whole content of name; an absent file is an
	// error satisfying errors.Is(err, fs.ErrNotExist).
	ReadFile(name string) ([]byte, error)
	// WriteFile replaces name with data atomically and durably: a reader
	// sees the old content or the new, never a mix, and the new content
	// survives a crash once WriteFile returned nil.
	WriteFile(name string, data []byte) error
	// ReadDir lists the names in directory name.
	ReadDir(name string) ([]string, error)
}

// OSFS is FS on the local filesystem (which may be an NFS or cluster
// filesystem mount).
type OSFS struct{}

// ReadFile implements FS.
func (OSFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// WriteFile implements FS by writing a temporary file in the same folder,
// syncing it, renaming it over name and syncing the folder. Rename is
// atomic on local filesystems and on NFS (the server renames). The
// temporary name starts with a dot, which no record name does.
func (OSFS) WriteFile(name string, data []byte) (err error) {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, name); err != nil {
		return err
	}
	return syncDir(dir)
}

// ReadDir implements FS.
func (OSFS) ReadDir(name string) ([]string, error) {
	ents, err := os.ReadDir(name)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

// syncDir makes a rename in dir durable. Some filesystems cannot sync a
// directory (EINVAL); the rename is then as durable as they make it.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// do runs f in its own goroutine and waits for it or for ctx, whichever
// comes first. On a datastore that hangs, f stays blocked in the kernel and
// its goroutine outlives the call; nothing else can be done about it, but
// the caller is not held. A deadline becomes ErrTimeout (wrapping
// ctx.Err()); a cancellation is returned as is.
func do[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, ctxErr(err)
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctxErr(ctx.Err())
	}
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return err
}

// sleep waits for d or ctx.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Layout of the Vigil folder inside a datastore root.
const (
	vigilDir  = ".vigil"
	markerRel = ".vigil/datastore"
	hbRel     = ".vigil/hb"
	leasesRel = ".vigil/leases"
	probeRel  = ".vigil/probe"
)

func markerPath(root string) string { return filepath.Join(root, markerRel) }
func hbDir(root string) string      { return filepath.Join(root, hbRel) }
func leaseDir(root string) string   { return filepath.Join(root, leasesRel) }

func hbPath(root, node string) string        { return filepath.Join(root, hbRel, node) }
func leasePath(root, resource string) string { return filepath.Join(root, leasesRel, resource) }

// writeQueue serializes this process's writes to one file on behalf of
// one writer. A write abandoned at its deadline keeps running in its
// goroutine and may land later; a later write of the same writer must not
// overtake it, or, say, a renewal cut short by Release would land after
// the Released record and quietly take the lease back. Different writers
// (nodes, or simulated nodes in one test process) do not wait for each
// other: the lease protocol orders them.
type writeQueue struct {
	mu   sync.Mutex
	busy map[string]chan struct{} // key → closed when its write ends
}

var writes = writeQueue{busy: map[string]chan struct{}{}}

// write waits (bounded by ctx) for the previous write under key to end,
// then writes data to path, bounded by ctx. Like do, it returns ErrTimeout
// at ctx's deadline while the write may go on.
func (q *writeQueue) write(ctx context.Context, fsys FS, key, path string, data []byte) error {
	var ch chan struct{}
	for {
		q.mu.Lock()
		prev, busy := q.busy[key]
		if !busy {
			ch = make(chan struct{})
			q.busy[key] = ch
			q.mu.Unlock()
			break
		}
		q.mu.Unlock()
		select {
		case <-prev:
		case <-ctx.Done():
			return fmt.Errorf("an earlier write is still pending: %w", ctxErr(ctx.Err()))
		}
	}
	done := make(chan error, 1)
	go func() {
		err := fsys.WriteFile(path, data)
		q.mu.Lock()
		delete(q.busy, key)
		q.mu.Unlock()
		close(ch)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctxErr(ctx.Err())
	}
}

// idle waits until no write is pending (for tests).
func (q *writeQueue) idle() {
	for {
		q.mu.Lock()
		var ch chan struct{}
		for _, c := range q.busy {
			ch = c
			break
		}
		q.mu.Unlock()
		if ch == nil {
			return
		}
		<-ch
	}
}
