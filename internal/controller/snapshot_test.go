package controller

import (
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// The nodes' datastore checks reach the scheduler through the snapshot:
// a VM is not placed where its datastore's latest check failed, and the
// store key names the node whatever the record says.
func TestSnapshotCarriesDatastoreHealth(t *testing.T) {
	s := store.NewState()
	health := func(node string, ok bool) store.Op {
		rec := model.DatastoreHealth{V: clusterstate.FormatVersion, Node: "someone-else",
			Datastores: map[string]model.DatastoreCheck{"ds1": {OK: ok, Error: map[bool]string{false: "no marker"}[ok]}}}
		return store.Op{Key: clusterstate.DatastoreHealthKey(node), Value: clusterstate.Encode(rec)}
	}
	vm := model.Resource{ID: "vm1", Agent: model.AgentVM, Params: map[string]string{"disk": "ds1:vm1.qcow2"}}
	loc := model.Location{ID: "prefer-n1", Resource: "vm1", Node: "n1", Score: 50}
	ops := clusterstate.ConfigOps(model.Config{}, model.Config{Resources: []model.Resource{vm}, Locations: []model.Location{loc}})
	ops = append(ops, health("n2", true), health("n1", false))
	if _, err := s.Apply(s.Index()+1, store.Txn{Ops: ops}); err != nil {
		t.Fatal(err)
	}
	v, err := ReadView(s)
	if err != nil {
		t.Fatal(err)
	}
	v.Members = []store.Member{{Name: "n1"}, {Name: "n2"}}
	v.NodeRecords = map[string]model.NodeRecord{"n1": {Name: "n1", BootID: 1, Probed: 1}, "n2": {Name: "n2", BootID: 1, Probed: 1}}
	snap := v.Snapshot(func(string) bool { return true }, time.Time{})
	if len(snap.DatastoreHealth) != 2 || snap.DatastoreHealth[0].Node != "n1" || snap.DatastoreHealth[1].Node != "n2" {
		t.Fatalf("snapshot health: %+v", snap.DatastoreHealth)
	}
	p := scheduler.Compute(snap)
	if len(p.Actions) != 1 || p.Actions[0].Kind != scheduler.KindStart || p.Actions[0].Node != "n2" {
		t.Fatalf("want vm1 started on n2, not on n1 whose check failed:\n%s", p)
	}
}
