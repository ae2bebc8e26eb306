package controller

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
)

// A stop that failed on the DC's own node asks for that node to be fenced;
// the DC never fences itself, so it hands its role over (another node's DC
// will fence it), not more often than handOverEvery.
func TestDCHandsOverWhenItsNodeMustBeFenced(t *testing.T) {
	var mu sync.Mutex
	var whys []string
	w := newWorld(t, func(c *Config) {
		c.Fencer = &fakeFencer{ok: true}
		c.HandOver = func(_ context.Context, why string, avoid []string) bool {
			mu.Lock()
			whys = append(whys, why)
			mu.Unlock()
			return true
		}
	})
	withDevice(w)
	w.put(clusterstate.ResourceKey("r1"), dummy("r1"),
		clusterstate.LocationKey("l"), model.Location{ID: "l", Resource: "r1", Node: "n1", Score: model.Infinity})
	w.waitFor("r1 on n1", func() bool { s := w.startedOn("r1"); return len(s) == 1 && s[0] == "n1" })
	w.put(clusterstate.RecordKey("n1", "r1"), model.ResourceRecord{V: 1, Node: "n1", Resource: "r1", State: model.StateStopFailed})
	w.waitFor("the DC to hand its role over", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(whys) > 0
	})
	mu.Lock()
	why := whys[0]
	mu.Unlock()
	if !strings.Contains(why, "must be fenced") {
		t.Errorf("hand-over reason %q", why)
	}
	time.Sleep(200 * time.Millisecond) // many rounds
	mu.Lock()
	n := len(whys)
	mu.Unlock()
	if n != 1 {
		t.Errorf("%d hand-overs within 200 ms, want 1 (at most one per %s)", n, handOverEvery)
	}
}
