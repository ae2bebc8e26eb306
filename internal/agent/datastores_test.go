package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

func datastoreAgent(t *testing.T) (*Agent, backend) {
	t.Helper()
	a := testAgent(t)
	a.agents = agents.NewRegistry(agents.Options{StateDir: t.TempDir(), Datastores: a.datastoreLookup})
	return a, backend{a}
}

// Create initializes the folder and writes the configuration; list shows
// every node's checks; delete is refused while a VM uses it; bad input
// changes nothing.
func TestDatastoreCreateListDelete(t *testing.T) {
	a, b := datastoreAgent(t)
	ctx := context.Background()
	root := t.TempDir()
	res, err := b.CreateDatastore(ctx, api.CreateDatastoreRequest{Name: "ds1", Path: root})
	if err != nil || len(res.Changes) != 1 {
		t.Fatal(res, err)
	}
	if h := datastore.Check(ctx, root, datastore.Identity{Cluster: "test", Datastore: "ds1"}); !h.OK {
		t.Fatalf("not initialized: %+v", h)
	}
	if again, err := b.CreateDatastore(ctx, api.CreateDatastoreRequest{Name: "ds1", Path: root}); err != nil || !again.Unchanged {
		t.Errorf("same create again: %+v %v", again, err)
	}
	epoch := a.epoch()
	for i, tc := range []struct {
		req  api.CreateDatastoreRequest
		code string
		want string
	}{
		{api.CreateDatastoreRequest{Name: "ds1", Path: t.TempDir()}, api.CodeConflict, "exists already"},
		{api.CreateDatastoreRequest{Name: "ds2", Path: root}, api.CodeConflict, "is at"},
		{api.CreateDatastoreRequest{Name: "ds2", Path: "rel/path"}, api.CodeBadRequest, "not absolute"},
		{api.CreateDatastoreRequest{Name: "ds 2", Path: "/srv/x"}, api.CodeBadRequest, "id"},
		{api.CreateDatastoreRequest{Name: "ds2", Path: filepath.Join(root, "missing")}, api.CodeBadRequest, "not a folder"},
	} {
		_, err := b.CreateDatastore(ctx, tc.req)
		if !api.IsCode(err, tc.code) || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d: %+v: %v, want %s with %q", i, tc.req, err, tc.code, tc.want)
		}
	}
	if a.epoch() != epoch {
		t.Fatalf("a refused create moved the epoch %d → %d", epoch, a.epoch())
	}

	a.checkDatastores(ctx)
	ds, err := b.Datastores(ctx)
	if err != nil || len(ds) != 1 || ds[0].Name != "ds1" || len(ds[0].Health) != 1 || !ds[0].Health[0].OK || ds[0].Health[0].Node != "n1" {
		t.Fatalf("list: %+v %v", ds, err)
	}
	var recorded model.DatastoreHealth
	a.node.Read(func(s *store.State) { recorded = clusterstate.DatastoreHealths(s)["n1"] })
	if c, ok := recorded.Datastores["ds1"]; !ok || !c.OK {
		t.Errorf("health record %+v", recorded)
	}
	var st api.Status
	b.addDatastoreStatus(&st)
	if len(st.Datastores) != 1 || st.Datastores[0].Name != "ds1" || len(st.Warnings) != 0 {
		t.Errorf("status: %+v", st)
	}

	// A VM on it: its datastore resolves; one on an unknown datastore is
	// refused when created.
	if _, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "vm1", Agent: "vigil:vm", Params: map[string]string{"disk": "ds1:vm1.qcow2"}}, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "vm2", Agent: "vigil:vm", Params: map[string]string{"disk": "ds9:vm2.qcow2"}}}); err == nil || !strings.Contains(err.Error(), `datastore "ds9" is not known`) {
		t.Errorf("vm on an unknown datastore: %v", err)
	}
	if _, err := b.DeleteDatastore(ctx, "ds1"); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "used by vm1") {
		t.Errorf("delete while used: %v", err)
	}
	if _, err := b.DeleteResource(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteDatastore(ctx, "ds1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteDatastore(ctx, "ds1"); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, ".vigil", "datastore")); err != nil {
		t.Errorf("delete removed the datastore's files: %v", err)
	}
}

// A datastore that is not mounted (no marker) shows failed in the checks.
func TestDatastoreCheckFailure(t *testing.T) {
	a, b := datastoreAgent(t)
	ctx := context.Background()
	root := t.TempDir()
	if _, err := b.CreateDatastore(ctx, api.CreateDatastoreRequest{Name: "ds1", Path: root}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, ".vigil")); err != nil { // "unmounted"
		t.Fatal(err)
	}
	a.checkDatastores(ctx)
	ds, _ := b.Datastores(ctx)
	if len(ds) != 1 || len(ds[0].Health) != 1 || ds[0].Health[0].OK || ds[0].Health[0].Error == "" {
		t.Fatalf("health %+v", ds)
	}
	var st api.Status
	b.addDatastoreStatus(&st)
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "datastore ds1 is not usable on n1") {
		t.Errorf("status warnings %q", st.Warnings)
	}
}

func TestCreateImage(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	_, b := datastoreAgent(t)
	ctx := context.Background()
	root := t.TempDir()
	if _, err := b.CreateDatastore(ctx, api.CreateDatastoreRequest{Name: "ds1", Path: root}); err != nil {
		t.Fatal(err)
	}
	out, err := b.CreateImage(ctx, "ds1", api.CreateImageRequest{Path: "vms/vm1.qcow2", Size: "1G"})
	if err != nil || !out.Created || out.Path != filepath.Join(root, "vms/vm1.qcow2") {
		t.Fatalf("create: %+v %v", out, err)
	}
	info, err := exec.Command("qemu-img", "info", out.Path).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "file format: qcow2") || !strings.Contains(string(info), "virtual size: 1 GiB") {
		t.Errorf("qemu-img info: %v\n%s", err, info)
	}
	if _, err := b.CreateImage(ctx, "ds1", api.CreateImageRequest{Path: "vms/vm1.qcow2", Size: "1G"}); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "--existing") {
		t.Errorf("existing image: %v", err)
	}
	if out, err := b.CreateImage(ctx, "ds1", api.CreateImageRequest{Path: "vms/vm1.qcow2", Size: "1G", Existing: true}); err != nil || out.Created {
		t.Errorf("existing accepted: %+v %v", out, err)
	}
	for i, req := range []api.CreateImageRequest{
		{Path: "../escape.qcow2", Size: "1G"},
		{Path: ".vigil/leases/x", Size: "1G"},
		{Path: "/abs.qcow2", Size: "1G"},
		{Path: "a.qcow2", Size: "lots"},
		{Path: "a.qcow2", Size: "1G", Format: "vmdk"},
	} {
		if _, err := b.CreateImage(ctx, "ds1", req); !api.IsCode(err, api.CodeBadRequest) {
			t.Errorf("%d: %+v: %v", i, req, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "a.qcow2")); err == nil {
		t.Error("a refused request left an image")
	}
	if _, err := b.CreateImage(ctx, "ds9", api.CreateImageRequest{Path: "a.qcow2", Size: "1G"}); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("unknown datastore: %v", err)
	}
}

func TestDatastoreUsers(t *testing.T) {
	c := model.Config{Resources: []model.Resource{
		{ID: "vm1", Agent: "vigil:vm", Params: map[string]string{"disk": "ds1:a.qcow2,ds2:b.raw"}},
		{ID: "vm2", Agent: "vigil:vm", Params: map[string]string{"disk": "/srv/ds1/c.qcow2", "kernel": "ds1:vmlinux"}},
		{ID: "vm3", Agent: "vigil:vm", Params: map[string]string{"disk": "/ds1:x.qcow2"}},
		{ID: "p", Agent: "vigil:process", Params: map[string]string{"command": "ds1:x"}},
	}}
	if got := datastoreUsers(c, "ds1"); strings.Join(got, ",") != "vm1,vm2" {
		t.Errorf("users of ds1: %v", got)
	}
	if got := datastoreUsers(c, "ds2"); strings.Join(got, ",") != "vm1" {
		t.Errorf("users of ds2: %v", got)
	}
}
