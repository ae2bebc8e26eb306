package sim

import (
	"fmt"
	"maps"
	"slices"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// The operator changes the configuration the way the agent's API does
// (internal/agent/resources.go, changeConfig): on a quorate node, read the
// View, change a copy of the configuration, validate it whole, and commit
// clusterstate.ConfigOps guarded by the epoch it was read at. A change is
// acknowledged when its Result comes back without error on that node.

func primitive(id string) model.Resource {
	return model.Resource{ID: id, Agent: "vigil:dummy", Ops: []model.Op{
		{Name: model.OpMonitor, Interval: model.Duration(monitorInterval)},
	}}
}

// initialConfig: three primitives, a group of two and a clone of two; the
// datastore ds1.
func initialConfig(c *model.Config) {
	for i := 1; i <= 3; i++ {
		c.Resources = append(c.Resources, primitive(fmt.Sprintf("r%d", i)))
	}
	c.Resources = append(c.Resources, primitive("ga"), primitive("gb"), primitive("cr"))
	c.Groups = append(c.Groups, model.Group{ID: "g", Resources: []string{"ga", "gb"}})
	c.Clones = append(c.Clones, model.Clone{ID: "c", Of: "cr", Max: 2})
	c.Datastores = append(c.Datastores, model.Datastore{Name: dsName, Path: dsPath})
}

func cloneConfig(c model.Config) model.Config {
	c.Resources = slices.Clone(c.Resources)
	c.Groups = slices.Clone(c.Groups)
	c.Clones = slices.Clone(c.Clones)
	c.Locations = slices.Clone(c.Locations)
	c.Colocations = slices.Clone(c.Colocations)
	c.Orders = slices.Clone(c.Orders)
	c.Nodes = slices.Clone(c.Nodes)
	c.Properties = maps.Clone(c.Properties)
	c.Datastores = slices.Clone(c.Datastores)
	return c
}

// configure writes the initial configuration (until acknowledged, or
// found committed).
func (s *system) configure() {
	s.writeConfig("initial configuration", func(cfg *model.Config, _ controller.View) bool {
		if len(cfg.Resources) > 0 {
			s.configured = true // committed, though not acknowledged
			return false
		}
		initialConfig(cfg)
		return true
	}, func() { s.configured = true })
}

// operate makes one random configuration change: add a resource, move one
// (a +INFINITY location, as `vigil resource move`), or put a node in or out
// of standby (at most a minority in standby).
func (s *system) operate() {
	c := s.c
	switch k := c.rng.IntN(5); {
	case k < 1:
		s.writeConfig("add resource", func(cfg *model.Config, _ controller.View) bool {
			if len(cfg.Resources) >= 10 {
				return false
			}
			id := fmt.Sprintf("r%d", len(cfg.Resources)-2)
			cfg.Resources = append(cfg.Resources, primitive(id))
			return true
		}, nil)
	case k < 3:
		s.writeConfig("move", func(cfg *model.Config, v controller.View) bool {
			var prims []string
			for _, r := range cfg.Resources {
				if r.ID[0] == 'r' {
					prims = append(prims, r.ID)
				}
			}
			if len(prims) == 0 {
				return false
			}
			res := prims[c.rng.IntN(len(prims))]
			node := v.NodeNames()[c.rng.IntN(len(v.Members))]
			loc := model.Location{ID: "cli-prefer-" + res, Resource: res, Node: node, Score: model.Infinity}
			i := slices.IndexFunc(cfg.Locations, func(l model.Location) bool { return l.ID == loc.ID })
			if i >= 0 {
				cfg.Locations[i] = loc
			} else {
				cfg.Locations = append(cfg.Locations, loc)
			}
			return true
		}, nil)
	default:
		s.writeConfig("standby", func(cfg *model.Config, v controller.View) bool {
			names := v.NodeNames()
			node := names[c.rng.IntN(len(names))]
			standby := 0
			for _, nc := range cfg.Nodes {
				if nc.Standby {
					standby++
				}
			}
			i := slices.IndexFunc(cfg.Nodes, func(nc model.NodeConfig) bool { return nc.Name == node })
			if i < 0 {
				cfg.Nodes = append(cfg.Nodes, model.NodeConfig{Name: node})
				i = len(cfg.Nodes) - 1
			}
			on := !cfg.Nodes[i].Standby
			if on && standby >= (len(names)-1)/2 {
				return false
			}
			cfg.Nodes[i].Standby = on
			return true
		}, nil)
	}
}

// writeConfig applies mutate on a random quorate node and proposes the
// result; acked runs when it is acknowledged.
func (s *system) writeConfig(what string, mutate func(*model.Config, controller.View) bool, acked func()) {
	c := s.c
	var cands []*node
	for _, n := range c.n {
		if n.up && n.quorate {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return
	}
	n := cands[c.rng.IntN(len(cands))]
	var v controller.View
	var epoch uint64
	var err error
	n.core.Read(func(st *store.State) {
		v, err = controller.ReadView(st)
		epoch = st.Epoch()
	})
	if err != nil {
		c.violate(InvCrash, "operator on %s: read: %v", n.name, err)
		return
	}
	next := cloneConfig(v.Config)
	if !mutate(&next, v) {
		return
	}
	if err := next.Validate(v.NodeNames()); err != nil {
		c.violate(InvCrash, "operator on %s: %s refused: %v", n.name, what, err)
		return
	}
	ops := clusterstate.ConfigOps(v.Config, next)
	if len(ops) == 0 {
		return
	}
	for _, op := range ops {
		if s.cfgValues[op.Key] == nil {
			s.cfgValues[op.Key] = map[uint64]bool{}
		}
		s.cfgValues[op.Key][valueHash(op.Value)] = true
	}
	c.rep.OpProposed++
	_, err = c.proposeFn(n, store.Txn{Ops: ops, IfEpoch: epoch}, func(r store.Result) {
		if r.Err != nil {
			c.rep.OpRefused++
			c.tracef("operator: %s on %s refused at index %d: %v", what, n.name, r.Index, r.Err)
			return
		}
		c.rep.OpAcked++
		s.cfgAcked = append(s.cfgAcked, ackedTxn{index: r.Index, ops: ops})
		c.tracef("operator: %s acknowledged on %s at index %d", what, n.name, r.Index)
		if acked != nil {
			acked()
		}
	})
	if err != nil {
		c.rep.OpRefused++
		return
	}
	c.tracef("operator: %s proposed on %s", what, n.name)
}
