package clusterstate

import (
	"testing"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

func apply(t *testing.T, s *store.State, ops []store.Op) {
	t.Helper()
	if _, err := s.Apply(s.Index()+1, store.Txn{Ops: ops}); err != nil {
		t.Fatal(err)
	}
}

// A configuration written as ops and read back is the same configuration,
// and a second diff against it is empty: config apply is idempotent.
func TestConfigRoundTrip(t *testing.T) {
	c := model.Config{
		Resources: []model.Resource{
			{ID: "db", Agent: "ocf:heartbeat:Dummy", Params: map[string]string{"fake": "1"},
				Ops: []model.Op{{Name: "monitor", Interval: model.Duration(10e9)}}},
			{ID: "web", Agent: "vigil:dummy"},
		},
		Groups:      []model.Group{{ID: "g", Resources: []string{"db", "web"}}},
		Locations:   []model.Location{{ID: "l1", Resource: "g", Node: "n1", Score: 50}},
		Colocations: []model.Colocation{{ID: "c1", Resource: "web", With: "db", Score: model.Infinity}},
		Nodes:       []model.NodeConfig{{Name: "n1", Standby: true}},
		Properties:  map[string]string{"maintenance-mode": "false"},
		Datastores:  []model.Datastore{{Name: "ds1", Path: "/srv/ds1"}, {Name: "ds2", Path: "/srv/ds2"}},
	}
	s := store.NewState()
	apply(t, s, ConfigOps(model.Config{}, c))
	got, err := LoadConfig(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(Encode(got)) != string(Encode(c)) {
		t.Fatalf("round trip:\n got %s\nwant %s", Encode(got), Encode(c))
	}
	if ops := ConfigOps(got, c); len(ops) != 0 {
		t.Fatalf("diff of equal configs: %v", ops)
	}
	// Removing a resource deletes exactly its key.
	c2 := got
	c2.Resources = c2.Resources[:1]
	ops := ConfigOps(got, c2)
	if len(ops) != 1 || !ops[0].Delete || ops[0].Key != ResourceKey("web") {
		t.Fatalf("delete diff: %+v", ops)
	}
	// Datastores are a section like the others, under their own keys
	// (those CreateDatastore writes and LoadDatastores reads).
	if ds, err := LoadDatastores(s); err != nil || len(ds) != 2 || ds[1] != c.Datastores[1] {
		t.Fatalf("LoadDatastores: %+v %v", ds, err)
	}
	c3 := got
	c3.Datastores = []model.Datastore{{Name: "ds1", Path: "/srv/ds1-new"}}
	ops = ConfigOps(got, c3)
	if len(ops) != 2 || ops[0].Key != DatastoreKey("ds1") || ops[0].Delete || ops[1].Key != DatastoreKey("ds2") || !ops[1].Delete {
		t.Fatalf("datastore diff: %+v", ops)
	}
}

func TestStatusRecords(t *testing.T) {
	s := store.NewState()
	rec := model.ResourceRecord{V: FormatVersion, Resource: "web", Node: "n1", State: model.StateStarted}
	task := model.Task{V: FormatVersion, ID: "o1", Term: 3, Node: "n2", Action: model.ActStart, Resource: "web"}
	apply(t, s, []store.Op{
		{Key: RecordKey("n1", "web"), Value: Encode(rec)},
		{Key: TaskKey("n2", "o1"), Value: Encode(task)},
		{Key: KeyDC, Value: Encode(DCRecord{V: 1, Name: "n1", Term: 3})},
	})
	if rs, err := Records(s, "n1"); err != nil || len(rs) != 1 || rs[0].State != model.StateStarted {
		t.Fatalf("records: %+v %v", rs, err)
	}
	if rs, _ := Records(s, "n2"); len(rs) != 0 {
		t.Fatalf("records of n2: %+v", rs)
	}
	if ts, err := Tasks(s, "n2"); err != nil || len(ts) != 1 || ts[0].Term != 3 {
		t.Fatalf("tasks: %+v %v", ts, err)
	}
	if dc := DC(s); dc.Name != "n1" || dc.Term != 3 {
		t.Fatalf("dc: %+v", dc)
	}
	if s.Epoch() != 0 {
		t.Fatalf("status writes bumped the epoch to %d", s.Epoch())
	}
}
