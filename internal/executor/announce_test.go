package executor

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/model"
)

// announcing makes every agent an agents.Announcer that records which
// instances it was asked to announce.
type announcing struct {
	Agents
	mu   sync.Mutex
	seen []string
}

func (an *announcing) Get(spec string) (agents.Agent, error) {
	a, err := an.Agents.Get(spec)
	if err != nil {
		return nil, err
	}
	return announcingAgent{a, an}, nil
}

func (an *announcing) announced() []string {
	an.mu.Lock()
	defer an.mu.Unlock()
	out := slices.Clone(an.seen)
	slices.Sort(out)
	return out
}

func (an *announcing) reset() {
	an.mu.Lock()
	an.seen = nil
	an.mu.Unlock()
}

type announcingAgent struct {
	agents.Agent
	an *announcing
}

func (a announcingAgent) Announce(_ context.Context, req agents.Request) error {
	a.an.mu.Lock()
	a.an.seen = append(a.an.seen, req.Resource)
	a.an.mu.Unlock()
	return nil
}

// A healed partition makes the node announce again exactly what it runs:
// not what it stopped, and nothing once it has stopped itself.
func TestReannounceWhatRunsHere(t *testing.T) {
	h := newHarness(t)
	r1, r2 := dummy("r1"), dummy("r2")
	h.resource(r1)
	h.resource(r2)
	an := &announcing{Agents: h.reg}
	ex := h.start(func(c *Config) { c.Agents = an })
	h.waitProbed(ex)
	h.task("t1", model.ActStart, r1, 1)
	h.task("t2", model.ActStart, r2, 1)
	h.waitResult("t1")
	h.waitResult("t2")
	h.task("t3", model.ActStop, r2, 1)
	h.waitResult("t3")

	ex.ex.Reannounce("test")
	eventually(t, "r1 is announced", func() bool { return slices.Equal(an.announced(), []string{"r1"}) })
	time.Sleep(50 * time.Millisecond) // r2 must not follow
	if got := an.announced(); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("announced %v, want [r1]: the stopped r2 must not be announced", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := ex.ex.SelfStop(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	an.reset()
	ex.ex.Reannounce("test")
	time.Sleep(50 * time.Millisecond)
	if got := an.announced(); len(got) != 0 {
		t.Fatalf("a self-stopped node announced %v", got)
	}
}
