package datastore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A write abandoned at its deadline keeps going; the same writer's next
// write must land after it, or (say) a renewal cut short by Close would
// land after a later record of ours. Without the queue the file ends up
// with the first, older content.
func TestWriteQueueKeepsOrder(t *testing.T) {
	dir := tmpfsDir(t)
	path := filepath.Join(dir, "f")
	slow := newFaultFS("f")
	slow.setDelay(150 * ms)
	ctx, cancel := context.WithTimeout(bg(), 20*ms)
	defer cancel()
	if err := writes.write(ctx, slow, "k", path, []byte("first")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("slow write: %v", err)
	}
	// The second write waits for the first, then lands.
	if err := writes.write(bg(), OSFS{}, "k", path, []byte("second")); err != nil {
		t.Fatal(err)
	}
	writes.idle()
	if got, _ := os.ReadFile(path); string(got) != "second" {
		t.Fatalf("file holds %q: the abandoned write landed last", got)
	}
	// Another writer does not wait.
	slow.setDelay(150 * ms)
	go writes.write(bg(), slow, "k", path, []byte("third"))
	time.Sleep(10 * ms)
	start := time.Now()
	if err := writes.write(bg(), OSFS{}, "other", path+"2", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*ms {
		t.Errorf("another writer waited %v", d)
	}
	// A queued write gives up at its own deadline.
	ctx2, cancel2 := context.WithTimeout(bg(), 20*ms)
	defer cancel2()
	if err := writes.write(ctx2, OSFS{}, "k", path, []byte("fourth")); !errors.Is(err, ErrTimeout) {
		t.Errorf("queued write: %v", err)
	}
	writes.idle()
}

func TestDoTimesOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(bg(), 10*ms)
	defer cancel()
	release := make(chan struct{})
	defer close(release)
	_, err := do(ctx, func() (int, error) { <-release; return 1, nil })
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	ctx3, cancel3 := context.WithCancel(bg())
	cancel3()
	if _, err := do(ctx3, func() (int, error) { return 1, nil }); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("canceled: %v", err)
	}
}
