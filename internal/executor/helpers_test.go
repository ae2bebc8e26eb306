package executor

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const self = "n1"

// harness is a real single-node store (leader of its own quorum) with the
// real built-in agents, and the test acting as the DC.
type harness struct {
	t    *testing.T
	node *store.Node
	dir  string // the agents' StateDir
	reg  *agents.Registry
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	disk := store.NewMemDisk()
	if err := store.Bootstrap(disk, []store.Member{{Name: self, ID: 1, Role: store.RoleVoter}}); err != nil {
		t.Fatal(err)
	}
	net := store.NewLocalNetwork()
	n, err := store.StartNode(store.NodeConfig{
		Core:         store.Config{ID: 1, Name: self, Log: slog.New(slog.DiscardHandler)},
		Disk:         disk,
		Transport:    net.Transport(1),
		TickInterval: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	net.Attach(1, n)
	t.Cleanup(func() {
		net.Detach(1)
		if err := n.Stop(); err != nil {
			t.Errorf("store stop: %v", err)
		}
		_ = disk.Close()
		net.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for n.Status().Lead != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the single node did not become leader")
		}
		n.Campaign(context.Background())
		time.Sleep(10 * time.Millisecond)
	}
	dir := t.TempDir()
	h := &harness{t: t, node: n, dir: dir, reg: agents.NewRegistry(agents.Options{StateDir: dir})}
	h.put(clusterstate.KeyDC, clusterstate.DCRecord{V: 1, Name: self, Term: 1})
	return h
}

// put writes key/value pairs in one transaction; a value is encoded
// unless it is a string.
func (h *harness) put(kv ...any) {
	h.t.Helper()
	var ops []store.Op
	for i := 0; i < len(kv); i += 2 {
		op := store.Op{Key: kv[i].(string)}
		switch v := kv[i+1].(type) {
		case string:
			op.Value = []byte(v)
		default:
			op.Value = clusterstate.Encode(v)
		}
		ops = append(ops, op)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.node.Propose(ctx, store.Txn{Ops: ops}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) resource(r model.Resource) { h.t.Helper(); h.put(clusterstate.ResourceKey(r.ID), r) }

// task writes one task, as the DC does.
func (h *harness) task(id, action string, r model.Resource, term uint64) {
	h.t.Helper()
	h.put(clusterstate.TaskKey(self, id), model.Task{V: 1, ID: id, Term: term, Node: self, Action: action, Resource: r.ID, Config: r})
}

type runner struct {
	ex     *Executor
	cancel context.CancelFunc
	done   chan error
}

// start runs an executor until the test ends.
func (h *harness) start(mod func(*Config)) *runner {
	h.t.Helper()
	cfg := Config{Node: self, BootID: 100, Store: h.node, Agents: h.reg, Log: testLog(h.t)}
	if mod != nil {
		mod(&cfg)
	}
	ex := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{ex: ex, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- ex.Run(ctx) }()
	h.t.Cleanup(r.stop)
	return r
}

func (r *runner) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // let stop be called again
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitFor waits until cond holds on the applied state (checked at every
// change, and every few milliseconds for conditions outside the store).
func (h *harness) waitFor(what string, cond func(s *store.State) bool) {
	h.t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		w := h.node.Watch()
		var ok bool
		h.node.Read(func(s *store.State) { ok = cond(s) })
		if ok {
			return
		}
		select {
		case <-w:
		case <-tick.C:
		case <-deadline.C:
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitResult waits for a task's result.
func (h *harness) waitResult(id string) model.TaskResult {
	h.t.Helper()
	var r model.TaskResult
	h.waitFor("result of "+id, func(s *store.State) bool {
		var ok bool
		r, ok = clusterstate.Result(s, self, id)
		return ok
	})
	return r
}

func (h *harness) record(inst string) (model.ResourceRecord, bool) {
	var r model.ResourceRecord
	var ok bool
	h.node.Read(func(s *store.State) {
		it, found := s.Get(clusterstate.RecordKey(self, inst))
		if found {
			ok = decode("", it.Value, &r) == nil
		}
	})
	return r, ok
}

func (h *harness) mustRecord(inst string) model.ResourceRecord {
	h.t.Helper()
	r, ok := h.record(inst)
	if !ok {
		h.t.Fatalf("no record of %s", inst)
	}
	return r
}

func (h *harness) nodeRecord() model.NodeRecord {
	var r model.NodeRecord
	h.node.Read(func(s *store.State) { r = clusterstate.NodeRecord(s, self) })
	return r
}

// waitProbed waits until the executor has recorded its probes.
func (h *harness) waitProbed(r *runner) {
	h.t.Helper()
	h.waitFor("probed", func(s *store.State) bool {
		return clusterstate.NodeRecord(s, self).Probed == r.ex.cfg.BootID && r.ex.Probed()
	})
}

// stateFile is vigil:dummy's state file of an instance.
func (h *harness) stateFile(inst string) string { return filepath.Join(h.dir, "dummy", inst+".state") }

func (h *harness) runs(inst string) bool {
	_, err := os.Stat(h.stateFile(inst))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		h.t.Fatal(err)
	}
	return err == nil
}

// tracker wraps the agents to see every action: which ran, and whether two
// ever overlapped on one instance.
type tracker struct {
	Agents
	mu       sync.Mutex
	inflight map[string]int
	total    int // actions in flight, all instances
	maxTotal int
	overlaps []string
	actions  map[string][]string // instance → actions in start order
	all      []string            // "instance action", all instances, in start order
	// selfStops counts the stops marked Request.SelfStop.
	selfStops atomic.Int64
}

func newTracker(a Agents) *tracker {
	return &tracker{Agents: a, inflight: map[string]int{}, actions: map[string][]string{}}
}

func (tr *tracker) Get(spec string) (agents.Agent, error) {
	a, err := tr.Agents.Get(spec)
	if err != nil {
		return nil, err
	}
	return trackedAgent{a, tr}, nil
}

func (tr *tracker) history(inst string) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.actions[inst]...)
}

func (tr *tracker) sequence() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.all)
}

type trackedAgent struct {
	agents.Agent
	tr *tracker
}

func (a trackedAgent) Exec(ctx context.Context, req agents.Request) agents.Result {
	tr := a.tr
	tr.mu.Lock()
	tr.inflight[req.Resource]++
	tr.total++
	tr.maxTotal = max(tr.maxTotal, tr.total)
	if tr.inflight[req.Resource] > 1 {
		tr.overlaps = append(tr.overlaps, req.Resource+" "+req.Action)
	}
	act := req.Action
	if req.Action == agents.ActionMonitor && req.Interval > 0 {
		act = "recurring-monitor"
	}
	tr.actions[req.Resource] = append(tr.actions[req.Resource], act)
	tr.all = append(tr.all, req.Resource+" "+act)
	if req.Action == agents.ActionStop && req.SelfStop {
		tr.selfStops.Add(1)
	}
	tr.mu.Unlock()
	defer func() {
		tr.mu.Lock()
		tr.inflight[req.Resource]--
		tr.total--
		tr.mu.Unlock()
	}()
	return a.Agent.Exec(ctx, req)
}

// flaky is a store that can lose its quorum: while down, every proposal
// fails as it does on a node that knows no leader.
type flaky struct {
	*store.Node
	down     atomic.Bool
	refusals atomic.Int64
}

func (f *flaky) Propose(ctx context.Context, cmd store.Command) (store.Result, error) {
	if f.down.Load() {
		f.refusals.Add(1)
		return store.Result{}, store.ErrNoLeader
	}
	return f.Node.Propose(ctx, cmd)
}
