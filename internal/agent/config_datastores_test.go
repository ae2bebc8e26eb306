package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// Datastores are a section of the configuration document: export writes
// them, apply creates (initializing the folder), moves and removes them
// with the resources that use them, and a bad one changes nothing.
func TestConfigDatastoresExportApply(t *testing.T) {
	a, b := datastoreAgent(t)
	ctx := context.Background()
	root1, root2 := t.TempDir(), t.TempDir()
	if _, err := b.CreateDatastore(ctx, api.CreateDatastoreRequest{Name: "ds1", Path: root1}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "vm1", Agent: "vigil:vm",
		Params: map[string]string{"disk": "ds1:vm1.qcow2"}}, Disabled: true}); err != nil {
		t.Fatal(err)
	}

	doc, err := b.ExportConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(doc.YAML, "datastores:\n- name: ds1\n  path: "+root1+"\n") {
		t.Fatalf("export lacks the datastore:\n%s", doc.YAML)
	}
	if res, err := b.ApplyConfig(ctx, api.ApplyConfigRequest{YAML: doc.YAML}); err != nil || len(res.Changes) != 0 || res.Epoch != doc.Epoch {
		t.Fatalf("re-apply of the export: %+v %v", res, err)
	}
	var c model.Config
	if err := yaml.UnmarshalStrict([]byte(doc.YAML), &c); err != nil {
		t.Fatal(err)
	}
	apply := func(c model.Config, dry bool) (api.ApplyConfigResult, error) {
		t.Helper()
		raw, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b.ApplyConfig(ctx, api.ApplyConfigRequest{YAML: string(raw), DryRun: dry})
	}
	ds2 := datastore.Identity{Cluster: "test", Datastore: "ds2"}

	// A new datastore and a VM on it, in one document.
	add := c
	add.Datastores = append(slices.Clone(c.Datastores), model.Datastore{Name: "ds2", Path: root2})
	add.Resources = append(slices.Clone(c.Resources), model.Resource{ID: "vm2", Agent: "vigil:vm",
		Params: map[string]string{"disk": "ds2:vm2.qcow2"}, Meta: map[string]string{model.MetaTargetRole: model.RoleStopped}})
	want := []string{"+ config/datastores/ds2", "+ config/resources/vm2"}
	res, err := apply(add, true)
	if err != nil || !slices.Equal(res.Changes, want) || a.epoch() != doc.Epoch {
		t.Fatalf("dry run: %+v %v (epoch %d)", res, err, a.epoch())
	}
	if h := datastore.Check(ctx, root2, ds2); h.OK {
		t.Fatal("a dry run initialized the datastore")
	}
	res, err = apply(add, false)
	if err != nil || !slices.Equal(res.Changes, want) || res.Epoch != doc.Epoch+1 {
		t.Fatalf("apply: %+v %v, want changes %q", res, err, want)
	}
	if h := datastore.Check(ctx, root2, ds2); !h.OK {
		t.Fatalf("ds2 not initialized by apply: %s", h.Err)
	}
	if p, ok := a.datastoreLookup("ds2"); !ok || p != root2 {
		t.Fatalf("ds2 not in the configuration: %q %v", p, ok)
	}

	// Refused documents change nothing.
	epoch := a.epoch()
	missing := filepath.Join(root2, "missing")
	for i, tc := range []struct {
		name string
		ds   []model.Datastore
		code string
		want string
	}{
		{"bad name", []model.Datastore{{Name: "ds1", Path: root1}, {Name: "ds2", Path: root2}, {Name: "ds 3", Path: "/srv/ds3"}}, api.CodeBadRequest, `datastore id "ds 3"`},
		{"relative path", []model.Datastore{{Name: "ds1", Path: root1}, {Name: "ds2", Path: root2}, {Name: "ds3", Path: "srv/ds3"}}, api.CodeBadRequest, `path "srv/ds3" is not absolute`},
		{"unclean path", []model.Datastore{{Name: "ds1", Path: root1}, {Name: "ds2", Path: root2 + "/"}}, api.CodeBadRequest, "is not clean"},
		{"name twice", []model.Datastore{{Name: "ds1", Path: root1}, {Name: "ds2", Path: root2}, {Name: "ds2", Path: "/srv/x"}}, api.CodeBadRequest, "ds2: given twice"},
		{"path twice", []model.Datastore{{Name: "ds1", Path: root1}, {Name: "ds2", Path: root2}, {Name: "ds3", Path: root1}}, api.CodeBadRequest, "is datastore ds1 already"},
		{"not a folder here", []model.Datastore{{Name: "ds1", Path: root1}, {Name: "ds2", Path: root2}, {Name: "ds3", Path: missing}}, api.CodeBadRequest, "is not a folder on n1"},
		{"removed while used", []model.Datastore{{Name: "ds2", Path: root2}}, api.CodeConflict, "datastore ds1 cannot be removed: vm1 still use it"},
	} {
		bad := add
		bad.Datastores = tc.ds
		for _, dry := range []bool{true, false} {
			_, err := apply(bad, dry)
			if !api.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("#%d %s (dry run %v): %v, want %s with %q", i, tc.name, dry, err, tc.code, tc.want)
			}
		}
		if got := a.epoch(); got != epoch {
			t.Fatalf("#%d %s: epoch moved from %d to %d", i, tc.name, epoch, got)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("a refused apply created a folder")
	}

	// A move while a VM on it is active is refused; once it is stopped,
	// the new path is initialized and recorded.
	root3 := t.TempDir()
	moved := add
	moved.Datastores = []model.Datastore{{Name: "ds1", Path: root1}, {Name: "ds2", Path: root3}}
	rec := model.ResourceRecord{V: clusterstate.FormatVersion, Resource: "vm2", Node: "n2", State: model.StateStarted}
	if _, err := a.node.Propose(ctx, store.Txn{Ops: []store.Op{{Key: clusterstate.RecordKey("n2", "vm2"), Value: clusterstate.Encode(rec)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(moved, false); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "while VMs on it are active (vm2 on n2)") {
		t.Fatalf("move while active: %v", err)
	}
	rec.State = model.StateStopped
	if _, err := a.node.Propose(ctx, store.Txn{Ops: []store.Op{{Key: clusterstate.RecordKey("n2", "vm2"), Value: clusterstate.Encode(rec)}}}); err != nil {
		t.Fatal(err)
	}
	res, err = apply(moved, false)
	if err != nil || !slices.Equal(res.Changes, []string{"~ config/datastores/ds2"}) {
		t.Fatalf("move: %+v %v", res, err)
	}
	if h := datastore.Check(ctx, root3, ds2); !h.OK {
		t.Fatalf("moved ds2 not initialized: %s", h.Err)
	}

	// Removed with the VM that used it, in one document.
	res, err = apply(c, false)
	if err != nil || !slices.Equal(res.Changes, []string{"- config/datastores/ds2", "- config/resources/vm2"}) {
		t.Fatalf("remove: %+v %v", res, err)
	}
	if _, ok := a.datastoreLookup("ds2"); ok {
		t.Fatal("ds2 still configured")
	}
}
