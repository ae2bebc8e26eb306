package controller

import (
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// claims is a Releases hook the test sets.
type claims struct {
	mu sync.Mutex
	cl []ReleaseClaim
}

func (c *claims) get() []ReleaseClaim {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.cl)
}

func (c *claims) set(cl ...ReleaseClaim) {
	c.mu.Lock()
	c.cl = cl
	c.mu.Unlock()
}

func (w *world) nodeRecord(n string) model.NodeRecord {
	var r model.NodeRecord
	w.node.Read(func(s *store.State) { r = clusterstate.NodeRecord(s, n) })
	return r
}

// A lost node with no fence device and no watchdog holds its resources
// (nothing proves it down); once it says on the datastore that it stopped
// r1, tied to its current node record, r1 is recovered at once, without
// any proof, and the isolation is recorded. A claim tied to another record
// (stale: written before the node rejoined) or another incarnation
// releases nothing.
func TestIsolationClaimReleases(t *testing.T) {
	cl := &claims{}
	w := newWorld(t, func(c *Config) { c.Releases = cl.get })
	pinned(w)
	w.put(clusterstate.ResourceKey("r2"), dummy("r2"),
		clusterstate.LocationKey("l2"), model.Location{ID: "l2", Resource: "r2", Node: "n2", Score: 100})
	w.waitFor("r2 on n2", func() bool { s := w.startedOn("r2"); return len(s) == 1 && s[0] == "n2" })
	w.setAlive("n2", false)
	rec := w.nodeRecord("n2")

	// Claims that do not hold: an older record of n2, another incarnation.
	cl.set(ReleaseClaim{Node: "n2", BootID: boot, NodeIndex: rec.Index - 1, Resources: []string{"r1"}, Datastore: "ds1"},
		ReleaseClaim{Node: "n2", BootID: boot + 1, NodeIndex: rec.Index, Resources: []string{"r1"}, Datastore: "ds1"})
	w.ctrl.Kick()
	w.never("r1 released on a claim that does not hold", time.Second, func() bool {
		s := w.startedOn("r1")
		return len(s) != 1 || s[0] != "n2"
	})

	// The claim that holds: r1 is recovered elsewhere; r2, not claimed,
	// stays blocked on n2.
	cl.set(ReleaseClaim{Node: "n2", BootID: boot, NodeIndex: rec.Index, Resources: []string{"r1"}, Datastore: "ds1", Beating: true})
	w.ctrl.Kick()
	w.waitFor("r1 recovered on another node", func() bool {
		s := w.startedOn("r1")
		return len(s) == 1 && s[0] != "n2"
	})
	if s := w.startedOn("r2"); len(s) != 1 || s[0] != "n2" {
		t.Fatalf("r2 started on %v: it was not released", s)
	}
	if nr := w.nodeRecord("n2"); nr.Down != nil {
		t.Fatalf("a release proved the whole node down: %+v", nr.Down)
	}
	var ir map[string]model.IsolationRecord
	w.node.Read(func(s *store.State) { ir = clusterstate.Isolations(s) })
	if r := ir["n2"]; r.BootID != boot || r.NodeIndex != rec.Index || !slices.Equal(r.Released, []string{"r1"}) || r.Datastore != "ds1" || !r.Beating {
		t.Fatalf("isolation record %+v", ir["n2"])
	}
}

func TestReleaseOps(t *testing.T) {
	base := func() View {
		return View{
			NodeRecords: map[string]model.NodeRecord{"n2": {Name: "n2", BootID: 9, Probed: 9, Version: 3, Index: 40}},
			Records: []model.ResourceRecord{
				{Node: "n2", Resource: "vm1", State: model.StateStarted},
				{Node: "n2", Resource: "vm2", State: model.StateStarted},
				{Node: "n2", Resource: "vm3", State: model.StateStopped},
				{Node: "n3", Resource: "vm1", State: model.StateFailed},
			},
			Tasks:    []model.Task{{Node: "n2", ID: "t1", Resource: "vm2"}, {Node: "n2", ID: "t2", Resource: "vm4"}},
			Restarts: []string{clusterstate.RestartKey("n2", "vm1"), clusterstate.RestartKey("n2", "vm4")},
		}
	}
	claim := ReleaseClaim{Node: "n2", BootID: 9, NodeIndex: 40, Resources: []string{"vm1", "vm2", "vm3"}}
	keys := func(ops []store.Op) []string {
		var out []string
		for _, o := range ops {
			if !o.Delete {
				t.Errorf("op %s is not a delete", o.Key)
			}
			out = append(out, o.Key)
		}
		slices.Sort(out)
		return out
	}

	ops, guard, rel := ReleaseOps(base(), claim)
	want := []string{clusterstate.RecordKey("n2", "vm1"), clusterstate.RecordKey("n2", "vm2"),
		clusterstate.RestartKey("n2", "vm1"), clusterstate.TaskKey("n2", "t1")}
	slices.Sort(want)
	if got := keys(ops); !slices.Equal(got, want) {
		t.Errorf("ops %v, want %v", got, want)
	}
	if !slices.Equal(rel, []string{"vm1", "vm2"}) {
		t.Errorf("released %v", rel)
	}
	if len(guard) != 1 || guard[0].Key != clusterstate.NodeKey("n2") || guard[0].Version != 3 {
		t.Errorf("guard %+v: want the node record at the version read", guard)
	}

	for i, tc := range []struct {
		name string
		mod  func(*View, *ReleaseClaim)
	}{
		{"record written since (rejoined)", func(v *View, c *ReleaseClaim) { c.NodeIndex = 39 }},
		{"another incarnation", func(v *View, c *ReleaseClaim) { c.BootID = 8 }},
		{"no claim index", func(v *View, c *ReleaseClaim) { c.NodeIndex = 0 }},
		{"unknown node", func(v *View, c *ReleaseClaim) { c.Node = "n7" }},
		{"already proven down", func(v *View, c *ReleaseClaim) {
			r := v.NodeRecords["n2"]
			r.Down = &model.DownProof{How: "fenced", BootID: 9}
			v.NodeRecords["n2"] = r
		}},
		{"nothing running claimed", func(v *View, c *ReleaseClaim) { c.Resources = []string{"vm3", "vm9"} }},
		{"in a live migration", func(v *View, c *ReleaseClaim) {
			c.Resources = []string{"vm1"}
			v.Migrations = []Migration{{Resource: "vm1", Source: "n2", Target: "n3"}}
		}},
	} {
		v, c := base(), claim
		tc.mod(&v, &c)
		if ops, guard, rel := ReleaseOps(v, c); ops != nil || guard != nil || rel != nil {
			t.Errorf("%d %s: released %v with %d ops", i, tc.name, rel, len(ops))
		}
	}
}

// The isolation record adds to the releases of the same isolation (the
// same node record) only: an earlier isolation of the node, rejoined
// since, is not carried into it.
func TestReleaseTxnIsolationRecord(t *testing.T) {
	v := View{
		NodeRecords: map[string]model.NodeRecord{"n2": {Name: "n2", BootID: 9, Version: 3, Index: 40}},
		Records:     []model.ResourceRecord{{Node: "n2", Resource: "vm2", State: model.StateStarted}},
	}
	cl := ReleaseClaim{Node: "n2", BootID: 9, NodeIndex: 40, Resources: []string{"vm2"}, Datastore: "ds1"}
	record := func(prior map[string]model.IsolationRecord) model.IsolationRecord {
		txn, _, ok := ReleaseTxn(v, cl, prior, time.Unix(0, 0))
		if !ok {
			t.Fatal("the claim released nothing")
		}
		for _, op := range txn.Ops {
			if op.Key == clusterstate.IsolationKey("n2") {
				var r model.IsolationRecord
				if err := json.Unmarshal(op.Value, &r); err != nil {
					t.Fatal(err)
				}
				return r
			}
		}
		t.Fatal("no isolation record in the transaction")
		return model.IsolationRecord{}
	}
	same := map[string]model.IsolationRecord{"n2": {Node: "n2", BootID: 9, NodeIndex: 40, Released: []string{"vm1"}}}
	if r := record(same); !slices.Equal(r.Released, []string{"vm1", "vm2"}) || r.NodeIndex != 40 {
		t.Errorf("same isolation: %+v, want vm1 and vm2 at index 40", r)
	}
	earlier := map[string]model.IsolationRecord{"n2": {Node: "n2", BootID: 9, NodeIndex: 31, Released: []string{"vm1"}}}
	if r := record(earlier); !slices.Equal(r.Released, []string{"vm2"}) {
		t.Errorf("after an earlier isolation: %+v, want vm2 alone", r)
	}
}
