package executor

import (
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// Instance is one runnable copy of a configured resource: what a node
// probes, monitors and records under status/resources/<node>/<ID>.
//
// Instance ids:
//
//   - a resource that is not cloned (alone or in a group): its own id, "web";
//   - a clone of a resource: "<clone-id>:<n>" for n in 0..max-1, each
//     running the cloned resource's agent and configuration ("web-clone:0");
//   - a clone of a group: every member resource as "<member>:<n>"
//     ("db:0", "web:0", "db:1", ...).
//
// max is the clone's Max, or the number of members that are not witnesses.
// The id is also the agent's OCF_RESOURCE_INSTANCE, so that two instances
// of one clone on one node keep separate state.
//
// TODO(lead): the scheduler must name instances the same way; move this to
// clusterstate or model so that both use one definition.
type Instance struct {
	// ID is the instance id.
	ID string
	// Resource is the configuration the instance runs with (for a clone
	// instance, the cloned resource's).
	Resource model.Resource
	// Clone is the clone the instance belongs to, "" if none.
	Clone string
}

// Instances lists every instance of c, sorted by id, for a cluster whose
// members are runners (members that are not witnesses). References to
// missing resources or groups are skipped (model.Config.Validate refuses
// them).
func Instances(c model.Config, runners int) []Instance {
	res := make(map[string]model.Resource, len(c.Resources))
	for _, r := range c.Resources {
		res[r.ID] = r
	}
	groups := make(map[string]model.Group, len(c.Groups))
	for _, g := range c.Groups {
		groups[g.ID] = g
	}
	cloned := map[string]bool{}
	var out []Instance
	for _, cl := range c.Clones {
		n := cl.Max
		if n <= 0 {
			n = runners
		}
		var members []string
		if g, ok := groups[cl.Of]; ok {
			members = g.Resources
		} else if _, ok := res[cl.Of]; ok {
			members = []string{cl.Of}
		}
		for _, m := range members {
			r, ok := res[m]
			if !ok {
				continue
			}
			cloned[m] = true
			base := m
			if m == cl.Of {
				base = cl.ID // a cloned resource is named after its clone
			}
			for i := range n {
				out = append(out, Instance{ID: base + ":" + strconv.Itoa(i), Resource: r, Clone: cl.ID})
			}
		}
	}
	for _, r := range c.Resources {
		if !cloned[r.ID] {
			out = append(out, Instance{ID: r.ID, Resource: r})
		}
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// runners counts the members that may run resources (not witnesses).
func runners(s *store.State) int {
	n := 0
	for _, m := range s.Members() {
		if m.Role != store.RoleWitness {
			n++
		}
	}
	return n
}

// recurringMonitor returns the first monitor operation with an interval,
// with the default timeout applied.
func recurringMonitor(r model.Resource) (model.Op, bool) {
	for _, op := range r.Ops {
		if op.Name == model.OpMonitor && op.Interval > 0 {
			if op.Timeout == 0 {
				op.Timeout = model.Duration(model.DefaultOpTimeout)
			}
			return op, true
		}
	}
	return model.Op{}, false
}

// probeTimeout is the timeout of a one-shot monitor: that of the monitor
// operation with interval 0 if one is configured, else that of the first
// monitor, else the default.
func probeTimeout(r model.Resource) model.Duration {
	for _, op := range r.Ops {
		if op.Name == model.OpMonitor && op.Interval == 0 && op.Timeout > 0 {
			return op.Timeout
		}
	}
	op, _ := r.Op(model.OpMonitor)
	return op.Timeout
}
