// Package gen builds deterministic (seeded) snapshots for the scheduler's
// benchmarks, property tests and `vigil simulate` experiments. It imports
// only model: the same parameters always give the same snapshot.
package gen

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/vigil-ha/vigil/internal/model"
)

// Params shapes a generated cluster.
type Params struct {
	Nodes     int
	Resources int // primitive resources, group members included
	Seed      uint64
}

// Epoch is the Now of generated snapshots.
var Epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// NodeName is the name of node i (0-based): n001, n002, …
func NodeName(i int) string { return fmt.Sprintf("n%03d", i+1) }

// Cluster builds a configuration shaped like a real one, all nodes online
// and nothing running: about 10% of resources in groups of three, one clone
// per thousand resources, location constraints on 10% of the placed units
// (a fifth of them rules on node attributes), colocations on 5% (mandatory,
// anti-affinity and finite), mandatory orders on 3%, and cpu/memory
// utilization on every resource with node capacity about twice the load.
func Cluster(p Params) *model.Snapshot {
	rng := rand.New(rand.NewPCG(p.Seed, 0x5eed))
	s := &model.Snapshot{Now: Epoch}
	cfg := &s.Config
	var units []string // placeable ids in creation order
	var kinds []string
	addRes := func(id string) {
		cfg.Resources = append(cfg.Resources, model.Resource{
			ID: id, Agent: "vigil:dummy",
			Utilization: map[string]int64{"cpu": 1 + rng.Int64N(2), "memory": 512 * (1 + rng.Int64N(8))},
		})
	}
	left := p.Resources
	ng, nc := 0, 0
	for i := 0; left > 0; i++ {
		switch {
		case left >= 3 && rng.IntN(100) < 4: // 4% of units are groups of 3 → ~10% of resources
			ng++
			gid := fmt.Sprintf("g%04d", ng)
			g := model.Group{ID: gid}
			for m := 1; m <= 3; m++ {
				id := gid + "-m" + strconv.Itoa(m)
				addRes(id)
				g.Resources = append(g.Resources, id)
			}
			cfg.Groups = append(cfg.Groups, g)
			units, kinds = append(units, gid), append(kinds, model.KindGroup)
			left -= 3
		case rng.IntN(1000) == 0:
			nc++
			cid := fmt.Sprintf("c%03d", nc)
			addRes(cid + "-p")
			cfg.Clones = append(cfg.Clones, model.Clone{ID: cid, Of: cid + "-p", Max: []int{0, 2, 3}[rng.IntN(3)]})
			units, kinds = append(units, cid), append(kinds, model.KindClone)
			left--
		default:
			id := fmt.Sprintf("r%05d", i)
			addRes(id)
			units, kinds = append(units, id), append(kinds, model.KindResource)
			left--
		}
	}
	// Nodes, with capacity about twice the average load.
	var cpu, mem int64
	for _, r := range cfg.Resources {
		cpu += r.Utilization["cpu"]
		mem += r.Utilization["memory"]
	}
	capCPU := max(8, 2*cpu/int64(p.Nodes))
	capMem := max(8192, 2*mem/int64(p.Nodes))
	for i := range p.Nodes {
		name := NodeName(i)
		cfg.Nodes = append(cfg.Nodes, model.NodeConfig{
			Name:        name,
			Attributes:  map[string]string{"rack": "r" + strconv.Itoa(i%4), "gen": strconv.Itoa(i % 5)},
			Utilization: map[string]int64{"cpu": capCPU, "memory": capMem},
		})
		if i%3 == 0 {
			cfg.Nodes[i].Attributes["ssd"] = "true"
		}
		s.Nodes = append(s.Nodes, model.NodeStatus{Name: name, State: model.NodeOnline})
	}
	// Constraints.
	pairs := map[[2]int]bool{}
	for i, id := range units {
		switch x := rng.IntN(100); {
		case x < 8:
			sc := model.Score(50)
			if rng.IntN(5) == 0 {
				sc = -model.Infinity
			}
			cfg.Locations = append(cfg.Locations, model.Location{ID: "loc-" + id, Resource: id, Node: NodeName(rng.IntN(p.Nodes)), Score: sc})
		case x < 10:
			rule := &model.Rule{Expressions: []model.Expression{{Attribute: "rack", Op: "eq", Value: "r" + strconv.Itoa(rng.IntN(4))}}}
			if rng.IntN(2) == 0 {
				rule = &model.Rule{Expressions: []model.Expression{{Attribute: "ssd", Op: "defined"}, {Attribute: "gen", Op: "gte", Value: "2"}}}
			}
			cfg.Locations = append(cfg.Locations, model.Location{ID: "rule-" + id, Resource: id, Score: 100, Rule: rule})
		}
		if i > 0 && kinds[i] != model.KindClone && rng.IntN(100) < 5 {
			j := rng.IntN(i)
			if kinds[j] != model.KindClone && !pairs[[2]int{j, i}] {
				pairs[[2]int{j, i}] = true
				sc := []model.Score{model.Infinity, -model.Infinity, 200}[rng.IntN(3)]
				cfg.Colocations = append(cfg.Colocations, model.Colocation{ID: "col-" + id, Resource: id, With: units[j], Score: sc})
			}
		}
		if i > 0 && rng.IntN(100) < 3 {
			j := rng.IntN(i)
			cfg.Orders = append(cfg.Orders, model.Order{ID: "ord-" + id, First: units[j], Then: id})
		}
	}
	return s
}

// Random builds a small snapshot with random node states and resource
// records (started, failed, stop_failed, unknown via lost nodes, pending
// orders, fail counts, orphans) for property tests. The configuration
// itself is valid (it passes model.Config.Validate).
func Random(seed uint64) *model.Snapshot {
	rng := rand.New(rand.NewPCG(seed, 0xc0ffee))
	s := &model.Snapshot{Now: Epoch}
	cfg := &s.Config
	nn := 2 + rng.IntN(5)
	states := []string{model.NodeOnline, model.NodeOnline, model.NodeOnline, model.NodeOnline, model.NodePending, model.NodeOffline, model.NodeLost}
	for i := range nn {
		name := NodeName(i)
		st := model.NodeStatus{Name: name, State: states[rng.IntN(len(states))], Witness: rng.IntN(12) == 0}
		s.Nodes = append(s.Nodes, st)
		nc := model.NodeConfig{Name: name, Standby: rng.IntN(8) == 0, Maintenance: rng.IntN(12) == 0,
			Attributes: map[string]string{"rack": strconv.Itoa(i % 2)}}
		if rng.IntN(2) == 0 {
			nc.Utilization = map[string]int64{"memory": 2048 + 1024*rng.Int64N(4)}
		}
		cfg.Nodes = append(cfg.Nodes, nc)
	}
	if rng.IntN(10) == 0 {
		cfg.Properties = map[string]string{model.PropSymmetricCluster: "false"}
	}
	if rng.IntN(25) == 0 {
		cfg.Properties = map[string]string{model.PropMaintenanceMode: "true"}
	}
	meta := func() map[string]string {
		m := map[string]string{}
		if rng.IntN(4) == 0 {
			m[model.MetaAllowMigrate] = "true"
		}
		if rng.IntN(10) == 0 {
			m[model.MetaTargetRole] = model.RoleStopped
		}
		if rng.IntN(15) == 0 {
			m[model.MetaIsManaged] = "false"
		}
		if rng.IntN(5) == 0 {
			m[model.MetaMigrationThreshold] = strconv.Itoa(1 + rng.IntN(3))
		}
		if rng.IntN(5) == 0 {
			m[model.MetaPriority] = strconv.Itoa(rng.IntN(3))
		}
		return m
	}
	var units []string
	var insts []string // instance ids that records may name
	nu := 1 + rng.IntN(8)
	for i := range nu {
		util := map[string]int64{"memory": 512 * (1 + rng.Int64N(4))}
		switch rng.IntN(6) {
		case 0: // group
			gid := "g" + strconv.Itoa(i)
			g := model.Group{ID: gid}
			for m := range 1 + rng.IntN(3) {
				id := gid + "m" + strconv.Itoa(m)
				cfg.Resources = append(cfg.Resources, model.Resource{ID: id, Agent: "vigil:dummy", Meta: meta(), Utilization: util})
				g.Resources = append(g.Resources, id)
				insts = append(insts, id)
			}
			cfg.Groups = append(cfg.Groups, g)
			units = append(units, gid)
		case 1: // clone
			cid := "c" + strconv.Itoa(i)
			cfg.Resources = append(cfg.Resources, model.Resource{ID: cid + "p", Agent: "vigil:dummy", Meta: meta(), Utilization: util})
			cfg.Clones = append(cfg.Clones, model.Clone{ID: cid, Of: cid + "p", Max: rng.IntN(3)})
			for k := range nn + 1 {
				insts = append(insts, cid+":"+strconv.Itoa(k))
			}
			units = append(units, cid)
		default:
			id := "r" + strconv.Itoa(i)
			cfg.Resources = append(cfg.Resources, model.Resource{ID: id, Agent: "vigil:dummy", Meta: meta(), Utilization: util})
			insts = append(insts, id)
			units = append(units, id)
		}
	}
	insts = append(insts, "orphan")
	for i, id := range units {
		if rng.IntN(3) == 0 {
			sc := []model.Score{50, -model.Infinity, model.Infinity, 200}[rng.IntN(4)]
			cfg.Locations = append(cfg.Locations, model.Location{ID: "l" + strconv.Itoa(i), Resource: id, Node: NodeName(rng.IntN(nn)), Score: sc})
		}
		if i > 0 && rng.IntN(3) == 0 {
			j := rng.IntN(i)
			sc := []model.Score{model.Infinity, -model.Infinity, 100}[rng.IntN(3)]
			cfg.Colocations = append(cfg.Colocations, model.Colocation{ID: "co" + strconv.Itoa(i), Resource: id, With: units[j], Score: sc})
		}
		if i > 0 && rng.IntN(3) == 0 {
			j := rng.IntN(i)
			o := model.Order{ID: "o" + strconv.Itoa(i), First: units[j], Then: id}
			if rng.IntN(3) == 0 {
				o.Kind = model.OrderOptional
			}
			if rng.IntN(4) == 0 {
				f := false
				o.Symmetrical = &f
			}
			cfg.Orders = append(cfg.Orders, o)
		}
	}
	recStates := []string{model.StateStarted, model.StateStarted, model.StateStarted, model.StateStopped, model.StateFailed, model.StateStopFailed}
	for _, id := range insts {
		for i := range nn {
			if rng.IntN(3) != 0 {
				continue
			}
			r := model.ResourceRecord{Resource: id, Node: NodeName(i), State: recStates[rng.IntN(len(recStates))]}
			if r.State == model.StateFailed || rng.IntN(6) == 0 {
				r.FailCount = 1 + rng.Int64N(3)
				r.LastFailure = Epoch.Add(-time.Duration(rng.IntN(600)) * time.Second)
				r.LastOp = model.OpMonitor
			}
			s.Resources = append(s.Resources, r)
		}
		if rng.IntN(12) == 0 {
			s.Pending = append(s.Pending, model.Pending{Resource: id, Node: NodeName(rng.IntN(nn)), Action: model.ActStart})
		}
	}
	return s
}
