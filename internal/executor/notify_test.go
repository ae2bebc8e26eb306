package executor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// fakeVM is an agent like vigil:vm as the executor sees it: it notifies
// between monitors, and its monitor can report a stop by the guest.
type fakeVM struct {
	mu           sync.Mutex
	running      map[string]bool
	guestStopped map[string]bool
	notify       func(string)
}

func (f *fakeVM) SetNotify(fn func(string)) {
	f.mu.Lock()
	f.notify = fn
	f.mu.Unlock()
}

func (f *fakeVM) Metadata(context.Context) (*agents.Metadata, error) {
	return &agents.Metadata{Name: "fakevm"}, nil
}

func (f *fakeVM) Exec(_ context.Context, req agents.Request) agents.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch req.Action {
	case agents.ActionStart:
		f.running[req.Resource] = true
		delete(f.guestStopped, req.Resource)
	case agents.ActionStop:
		f.running[req.Resource] = false
	case agents.ActionMonitor:
		switch {
		case f.running[req.Resource]:
		case f.guestStopped[req.Resource]:
			return agents.Result{Code: agents.CodeNotRunning, StoppedByGuest: true, Output: "the guest shut itself down"}
		default:
			return agents.Result{Code: agents.CodeNotRunning}
		}
	}
	return agents.Result{Code: agents.CodeOK}
}

// event is what the agent hears from QEMU: the resource stops running,
// by the guest's wish or not, and the executor is told.
func (f *fakeVM) event(res string, byGuest bool) {
	f.mu.Lock()
	f.running[res] = false
	f.guestStopped[res] = byGuest
	fn := f.notify
	f.mu.Unlock()
	fn(res)
}

// fakeVMAgents serves "vigil:fakevm" and delegates the rest; like the
// registry it is itself a Notifier.
type fakeVMAgents struct {
	Agents
	vm *fakeVM
}

func (a fakeVMAgents) Get(spec string) (agents.Agent, error) {
	if spec == "vigil:fakevm" {
		return a.vm, nil
	}
	return a.Agents.Get(spec)
}

func (a fakeVMAgents) SetNotify(fn func(string)) { a.vm.SetNotify(fn) }

// startVM starts vm1 (monitor every hour: only a notification can bring
// a run within the test) and waits for its monitor.
func startVM(t *testing.T) (*harness, *fakeVM, *runner, model.Resource) {
	h := newHarness(t)
	f := &fakeVM{running: map[string]bool{}, guestStopped: map[string]bool{}}
	r := model.Resource{ID: "vm1", Agent: "vigil:fakevm", Ops: []model.Op{{Name: model.OpMonitor, Interval: model.Duration(time.Hour)}}}
	h.resource(r)
	ex := h.start(func(c *Config) { c.Agents = fakeVMAgents{h.reg, f} })
	h.waitProbed(ex)
	h.task("t0001", model.ActStart, r, 1)
	if res := h.waitResult("t0001"); !res.OK {
		t.Fatalf("start: %+v", res)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ex.ex.mu.Lock()
		in := ex.ex.insts["vm1"]
		has := in != nil && in.mon != nil
		ex.ex.mu.Unlock()
		if has {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no recurring monitor")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return h, f, ex, r
}

// A crash the agent hears of is recorded failed at once, not at the next
// interval (an hour here).
func TestNotifyRunsMonitorAtOnce(t *testing.T) {
	h, f, _, _ := startVM(t)
	f.event("vm1", false)
	h.waitFor("vm1 failed", func(s *store.State) bool { return recordState(s, "vm1") == model.StateFailed })
	if rec := h.mustRecord("vm1"); rec.FailCount != 1 || rec.LastOp != model.OpMonitor {
		t.Errorf("record %+v", rec)
	}
}

// A guest that shuts itself down stays down: recorded stopped without a
// failure, and the resource's target-role set to Stopped in the same
// transaction.
func TestGuestStopStaysDown(t *testing.T) {
	h, f, _, _ := startVM(t)
	f.event("vm1", true)
	h.waitFor("vm1 stopped", func(s *store.State) bool { return recordState(s, "vm1") == model.StateStopped })
	rec := h.mustRecord("vm1")
	if rec.FailCount != 0 || !rec.LastFailure.IsZero() || rec.LastRC != int(agents.CodeNotRunning) || rec.Output != "the guest shut itself down" {
		t.Errorf("record %+v", rec)
	}
	var cfg model.Resource
	h.node.Read(func(s *store.State) {
		it, _ := s.Get(clusterstate.ResourceKey("vm1"))
		if err := decode("", it.Value, &cfg); err != nil {
			t.Error(err)
		}
	})
	if cfg.Enabled() || cfg.Meta[model.MetaTargetRole] != model.RoleStopped || len(cfg.Ops) != 1 {
		t.Errorf("configuration after the guest's stop: %+v", cfg)
	}
}

// Without a recorded start there is nothing to record: a guest stop seen
// by a probe leaves the configuration alone.
func TestGuestStopNeedsStartedRecord(t *testing.T) {
	h, f, ex, r := startVM(t)
	h.task("t0002", model.ActStop, r, 1)
	if res := h.waitResult("t0002"); !res.OK {
		t.Fatalf("stop: %+v", res)
	}
	if ex.ex.recordGuestStop(context.Background(), "vm1", agents.Result{Code: agents.CodeNotRunning, StoppedByGuest: true}) {
		t.Error("recorded a guest stop of a stopped instance")
	}
	_ = f
	var cfg model.Resource
	h.node.Read(func(s *store.State) {
		it, _ := s.Get(clusterstate.ResourceKey("vm1"))
		_ = decode("", it.Value, &cfg)
	})
	if !cfg.Enabled() {
		t.Errorf("configuration changed: %+v", cfg)
	}
}

// recordState reads an instance's recorded state inside a store Read.
func recordState(s *store.State, inst string) string {
	var r model.ResourceRecord
	if it, ok := s.Get(clusterstate.RecordKey(self, inst)); ok && decode("", it.Value, &r) == nil {
		return r.State
	}
	return ""
}
