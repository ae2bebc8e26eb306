package agent

// Datastores in the configuration document: `vigil config apply` creates,
// moves and removes them with the resources, in the same guarded
// transaction. The model validates names and paths
// (model.Config.Validate); what needs the cluster's state or this node's
// folders is checked here.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/model"
)

// datastoreLookupIn resolves datastore names through a configuration's
// datastores (for validating a change against what it declares).
func datastoreLookupIn(ds []model.Datastore) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for _, d := range ds {
			if d.Name == name {
				return d.Path, true
			}
		}
		return "", false
	}
}

// checkDatastoreChanges refuses removing a datastore that a vigil:vm
// resource of the new configuration still names (its disks would be
// unreachable: DeleteDatastore's rule), and moving one while a VM that
// names it is active (its QEMU holds files, and its disk lease, under the
// old path). records are the resources' recorded states.
func checkDatastoreChanges(old, next model.Config, records []model.ResourceRecord) error {
	now := map[string]string{}
	for _, d := range next.Datastores {
		now[d.Name] = d.Path
	}
	for _, d := range old.Datastores {
		path, kept := now[d.Name]
		switch {
		case !kept:
			if users := datastoreUsers(next, d.Name); len(users) > 0 {
				return api.Errorf(api.CodeConflict, "datastore %s cannot be removed: %s still use it (remove them or change their disks in the same document)", d.Name, strings.Join(users, ", "))
			}
		case path != d.Path:
			users := slices.Concat(datastoreUsers(old, d.Name), datastoreUsers(next, d.Name))
			var active []string
			for _, r := range records {
				if slices.Contains(users, instanceBase(r.Resource)) && r.State != model.StateStopped && !slices.Contains(active, r.Resource+" on "+r.Node) {
					active = append(active, r.Resource+" on "+r.Node)
				}
			}
			if len(active) > 0 {
				slices.Sort(active)
				return api.Errorf(api.CodeConflict, "datastore %s cannot move from %s to %s while VMs on it are active (%s): stop them first (vigil resource disable)", d.Name, d.Path, path, strings.Join(active, ", "))
			}
		}
	}
	return nil
}

// instanceBase is the resource id of an instance id ("vm1:0" → "vm1").
func instanceBase(inst string) string {
	base, _, _ := strings.Cut(inst, ":")
	return base
}

// readyDatastores prepares on this node the datastores that next adds or
// moves, as CreateDatastore does: each must be a folder here (the answering
// node must have it mounted), and is initialized (its marker written, so
// that every node's check can tell it is mounted). With init false (a dry
// run) it only checks that each is a folder. Initializing is idempotent, so
// a refused or retried apply leaves nothing that matters.
func (a *Agent) readyDatastores(ctx context.Context, old, next []model.Datastore, init bool) error {
	for _, d := range next {
		if slices.Contains(old, d) {
			continue
		}
		if fi, err := os.Stat(d.Path); err != nil || !fi.IsDir() {
			if err == nil {
				err = fmt.Errorf("not a folder")
			}
			return badRequest("datastore %s: %s is not a folder on %s (mount it on every node first): %v", d.Name, d.Path, a.cfg.Node, err)
		}
		if !init {
			continue
		}
		if err := datastore.Init(ctx, d.Path, a.identity(d.Name)); err != nil {
			return badRequest("datastore %s: initialize on %s: %v", d.Name, a.cfg.Node, err)
		}
		a.log.Info("datastore initialized for a configuration change", "datastore", d.Name, "path", d.Path)
	}
	return nil
}
