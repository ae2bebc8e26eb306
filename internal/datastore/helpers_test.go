package datastore

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(helperProcess(dir))
	}
	goleak.VerifyTestMain(m)
}

const ms = time.Millisecond

var testID = Identity{Cluster: "c1", Datastore: "ds1"}

// testOpts are small lease timings: L=400ms, R=50ms, M=150ms (H=250ms),
// Settle=100ms (writes must complete within 75ms). The margin and settle
// time leave room for a loaded test machine: the margin is what absorbs a
// holder's scheduling delay between its lease lapsing and its reaction.
func testOpts() Options {
	return Options{LeaseTime: 400 * ms, Renew: 50 * ms, Margin: 150 * ms, Poll: 10 * ms, Settle: 100 * ms}
}

// newDatastore returns an initialized datastore root, on tmpfs when there
// is one: the tests are about the protocol, and a disk's fsync latency
// tail (over 100 ms on a busy machine) would only add ErrSlow outcomes.
// TestMutualExclusionProcesses uses the disk.
func newDatastore(t testing.TB) string {
	t.Helper()
	root := tmpfsDir(t)
	if err := Init(context.Background(), root, testID); err != nil {
		t.Fatal(err)
	}
	// Abandoned writes must land before the folder is removed.
	t.Cleanup(writes.idle)
	return root
}

func tmpfsDir(t testing.TB) string {
	dir, err := os.MkdirTemp("/dev/shm", "vigil-datastore-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newDiskDatastore is newDatastore on the test's temporary folder.
func newDiskDatastore(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	if err := Init(context.Background(), root, testID); err != nil {
		t.Fatal(err)
	}
	// Abandoned writes must land before the folder is removed.
	t.Cleanup(writes.idle)
	return root
}

func holder(node string) Holder { return Holder{Node: node, Incarnation: "boot-" + node} }

// writeLease puts a record in place as if its holder had written it.
func writeLease(t testing.TB, root string, r Record) {
	t.Helper()
	data, err := encodeLease(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := (OSFS{}).WriteFile(leasePath(root, r.Resource), data); err != nil {
		t.Fatal(err)
	}
}

// faultFS is OSFS with injectable failures for paths containing match:
// errors, delays, or hangs until unblocked.
type faultFS struct {
	OSFS
	match string

	mu        sync.Mutex
	readErr   error
	writeErr  error
	delay     time.Duration // added to writes
	readDelay time.Duration // added to reads
	hang      chan struct{} // non-nil: reads and writes block until closed
	started   chan string   // non-nil: gets "read" or "write" as IO begins, if a receiver waits
}

func newFaultFS(match string) *faultFS { return &faultFS{match: match} }

func (f *faultFS) hook(name string, write bool) error {
	if !strings.Contains(name, f.match) {
		return nil
	}
	f.mu.Lock()
	hang, delay, started := f.hang, f.readDelay, f.started
	err := f.readErr
	if write {
		err, delay = f.writeErr, f.delay
	}
	f.mu.Unlock()
	if started != nil {
		what := "read"
		if write {
			what = "write"
		}
		select {
		case started <- what:
		default:
		}
	}
	if hang != nil {
		<-hang
	}
	time.Sleep(delay)
	return err
}

func (f *faultFS) ReadFile(name string) ([]byte, error) {
	if err := f.hook(name, false); err != nil {
		return nil, err
	}
	return f.OSFS.ReadFile(name)
}

func (f *faultFS) WriteFile(name string, data []byte) error {
	if err := f.hook(name, true); err != nil {
		return err
	}
	return f.OSFS.WriteFile(name, data)
}

func (f *faultFS) fail(read, write error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readErr, f.writeErr = read, write
}

func (f *faultFS) setDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

func (f *faultFS) setDelays(read, write time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readDelay, f.delay = read, write
}

// notify makes IO report its start on the returned channel (when someone
// is receiving).
func (f *faultFS) notify() <-chan string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = make(chan string)
	return f.started
}

// block makes IO hang until the returned function (also registered as a
// cleanup) is called.
func (f *faultFS) block(t testing.TB) func() {
	ch := make(chan struct{})
	f.mu.Lock()
	f.hang = ch
	f.mu.Unlock()
	var once sync.Once
	unblock := func() {
		once.Do(func() {
			f.mu.Lock()
			f.hang = nil
			f.mu.Unlock()
			close(ch)
		})
	}
	t.Cleanup(func() {
		unblock()
		time.Sleep(20 * ms) // let abandoned IO goroutines finish before goleak looks
	})
	return unblock
}

var errInjected = errors.New("injected IO error")
