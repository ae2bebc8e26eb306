package controller

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/fencing"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// View is everything the controller reads from the store in one go.
type View struct {
	Config      model.Config
	Members     []store.Member
	Records     []model.ResourceRecord
	Tasks       []model.Task
	Results     []model.TaskResult
	NodeRecords map[string]model.NodeRecord
	DC          clusterstate.DCRecord
	DCVersion   uint64 // store version of the DC record
	Index       uint64

	Devices       map[string]fencing.Device
	Topology      fencing.Topology
	FenceRequests []model.FenceRequest
	// Restarts are the keys of pending restart requests.
	Restarts []string
	// DeviceHealth is each fence device's last monitor.
	DeviceHealth map[string]model.FenceMonitor
	// HistoryPrune deletes the oldest fencing events so one more fits.
	HistoryPrune []store.Op
	// Migrations are the live migrations in progress (migrate.go).
	Migrations []Migration
	// DatastoreHealth is each node's latest datastore checks, by node
	// (nodes that have not reported yet have none).
	DatastoreHealth map[string]model.DatastoreHealth
}

// ReadView reads a consistent View from the applied state.
func ReadView(s *store.State) (View, error) {
	var v View
	var err error
	if v.Config, err = clusterstate.LoadConfig(s); err != nil {
		return v, err
	}
	if v.Records, err = clusterstate.Records(s, ""); err != nil {
		return v, err
	}
	if v.Tasks, err = clusterstate.Tasks(s, ""); err != nil {
		return v, err
	}
	if v.Results, err = clusterstate.Results(s, ""); err != nil {
		return v, err
	}
	if v.NodeRecords, err = clusterstate.NodeRecords(s); err != nil {
		return v, err
	}
	v.Members = s.Members()
	v.DC = clusterstate.DC(s)
	if it, ok := s.Get(clusterstate.KeyDC); ok {
		v.DCVersion = it.Version
	}
	v.Index = s.Index()
	if v.Devices, v.Topology, err = clusterstate.LoadFencing(s); err != nil {
		return v, err
	}
	if v.FenceRequests, err = clusterstate.FenceRequests(s); err != nil {
		return v, err
	}
	v.HistoryPrune = clusterstate.PruneFenceHistory(s, clusterstate.FenceHistoryKeep)
	s.Range(clusterstate.PrefixRestart, func(k string, _ store.Item) bool {
		v.Restarts = append(v.Restarts, k)
		return true
	})
	if v.DeviceHealth, err = clusterstate.FenceMonitors(s); err != nil {
		return v, err
	}
	if v.Migrations, err = readMigrations(s); err != nil {
		return v, err
	}
	v.DatastoreHealth = clusterstate.DatastoreHealths(s)
	return v, nil
}

// NodeNames returns the names of the members that can run resources and
// of every member (constraints may name witnesses too).
func (v View) NodeNames() []string {
	out := make([]string, 0, len(v.Members))
	for _, m := range v.Members {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

// NodeState derives a node's scheduling state from membership (alive: a
// member in this node's view) and its record. The rules are the heart of
// "never twice": a node that is not alive is offline only with proof —
// fenced or confirmed down in its last known incarnation, or left cleanly
// with nothing still active — and lost otherwise.
//
// An alive node that is leaving (Left, after a SIGTERM) stays online: the
// snapshot puts it in standby, so its resources are stopped there and
// started elsewhere by ordinary tasks.
func NodeState(name string, alive bool, rec model.NodeRecord, records []model.ResourceRecord) string {
	// A proof for the current incarnation wins over a membership view that
	// still hears the node for a moment after it was powered off.
	if rec.Down != nil && rec.Down.BootID == rec.BootID && rec.BootID != 0 {
		return model.NodeOffline
	}
	if alive {
		if rec.BootID != 0 && rec.Probed == rec.BootID {
			return model.NodeOnline
		}
		return model.NodePending
	}
	if unsafeSkipFencing { // NB: false unless built with the chaos test's vigil_chaos_nofence tag
		return model.NodeOffline
	}
	if rec.Down != nil && rec.Down.BootID == rec.BootID {
		return model.NodeOffline
	}
	if rec.Left && !hasActive(name, records) {
		return model.NodeOffline
	}
	return model.NodeLost
}

func hasActive(node string, records []model.ResourceRecord) bool {
	for _, r := range records {
		if r.Node == node && r.State != model.StateStopped {
			return true
		}
	}
	return false
}

// Snapshot builds the scheduler's input from a View. alive says which
// nodes this DC currently sees as members (itself included).
func (v View) Snapshot(alive func(string) bool, now time.Time) *model.Snapshot {
	s := &model.Snapshot{Config: v.Config, Now: now}
	leaving := map[string]bool{}
	for _, m := range v.Members {
		rec := v.NodeRecords[m.Name]
		up := alive(m.Name)
		s.Nodes = append(s.Nodes, model.NodeStatus{
			Name:    m.Name,
			State:   NodeState(m.Name, up, rec, v.Records),
			Witness: m.Role == store.RoleWitness,
		})
		if up && rec.Left {
			leaving[m.Name] = true
		}
	}
	if len(leaving) > 0 {
		// A leaving node is drained like a node in standby. The config is
		// copied: the View's stays as stored.
		nodes := make([]model.NodeConfig, 0, len(s.Config.Nodes)+len(leaving))
		for _, n := range s.Config.Nodes {
			if leaving[n.Name] {
				n.Standby = true
				delete(leaving, n.Name)
			}
			nodes = append(nodes, n)
		}
		for n := range leaving {
			nodes = append(nodes, model.NodeConfig{Name: n, Standby: true})
		}
		slices.SortFunc(nodes, func(a, b model.NodeConfig) int { return strings.Compare(a.Name, b.Name) })
		s.Config.Nodes = nodes
	}
	s.Resources = v.Records
	answered := map[string]bool{}
	for _, r := range v.Results {
		answered[r.Node+"/"+r.ID] = true
	}
	for _, t := range v.Tasks {
		if !answered[t.Node+"/"+t.ID] {
			s.Pending = append(s.Pending, model.Pending{Resource: t.Resource, Node: t.Node, Action: t.Action})
		}
	}
	// A live migration holds its instance out of the plan from its first
	// step to its last, results and all (between two steps no task is
	// pending): the scheduler sees it in motion, and plans nothing for it.
	for _, m := range v.Migrations {
		s.Pending = append(s.Pending, model.Pending{Resource: m.Resource, Node: m.Source, Action: pendingMigrate})
	}
	// Each node's datastore checks, so that a VM is not started where its
	// datastore is not usable (the node's agent would refuse it anyway,
	// after a failed start and a fail count). The store key names the
	// node: it is trusted over the record's own field.
	for _, node := range slices.Sorted(maps.Keys(v.DatastoreHealth)) {
		h := v.DatastoreHealth[node]
		h.Node = node
		s.DatastoreHealth = append(s.DatastoreHealth, h)
	}
	return s
}

// InstanceConfig returns the configuration an instance runs with: a plain
// resource is itself; a clone instance "X:n" runs X's resource (X being the
// clone, the cloned resource, or a member of a cloned group).
func InstanceConfig(c *model.Config, inst string) (model.Resource, error) {
	if r, ok := c.Resource(inst); ok {
		return r, nil
	}
	base, n, ok := strings.Cut(inst, ":")
	if ok {
		if _, err := strconv.Atoi(n); err == nil {
			if r, ok := c.Resource(base); ok {
				return r, nil
			}
			for _, cl := range c.Clones {
				if cl.ID == base {
					if r, ok := c.Resource(cl.Of); ok {
						return r, nil
					}
				}
			}
		}
	}
	return model.Resource{}, fmt.Errorf("controller: no resource configuration for instance %q", inst)
}
