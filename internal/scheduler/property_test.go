package scheduler_test

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/scheduler/gen"
)

// shuffled returns a copy of s with every order-free slice shuffled: the
// plan must not change.
func shuffled(s *model.Snapshot, seed uint64) *model.Snapshot {
	rng := rand.New(rand.NewPCG(seed, 7))
	c := *s
	cfg := s.Config
	shuf := func(n int, swap func(i, j int)) { rng.Shuffle(n, swap) }
	cfg.Resources = append([]model.Resource(nil), cfg.Resources...)
	shuf(len(cfg.Resources), func(i, j int) { cfg.Resources[i], cfg.Resources[j] = cfg.Resources[j], cfg.Resources[i] })
	cfg.Groups = append([]model.Group(nil), cfg.Groups...)
	shuf(len(cfg.Groups), func(i, j int) { cfg.Groups[i], cfg.Groups[j] = cfg.Groups[j], cfg.Groups[i] })
	cfg.Clones = append([]model.Clone(nil), cfg.Clones...)
	shuf(len(cfg.Clones), func(i, j int) { cfg.Clones[i], cfg.Clones[j] = cfg.Clones[j], cfg.Clones[i] })
	cfg.Locations = append([]model.Location(nil), cfg.Locations...)
	shuf(len(cfg.Locations), func(i, j int) { cfg.Locations[i], cfg.Locations[j] = cfg.Locations[j], cfg.Locations[i] })
	cfg.Colocations = append([]model.Colocation(nil), cfg.Colocations...)
	shuf(len(cfg.Colocations), func(i, j int) { cfg.Colocations[i], cfg.Colocations[j] = cfg.Colocations[j], cfg.Colocations[i] })
	cfg.Orders = append([]model.Order(nil), cfg.Orders...)
	shuf(len(cfg.Orders), func(i, j int) { cfg.Orders[i], cfg.Orders[j] = cfg.Orders[j], cfg.Orders[i] })
	cfg.Nodes = append([]model.NodeConfig(nil), cfg.Nodes...)
	shuf(len(cfg.Nodes), func(i, j int) { cfg.Nodes[i], cfg.Nodes[j] = cfg.Nodes[j], cfg.Nodes[i] })
	c.Config = cfg
	c.Nodes = append([]model.NodeStatus(nil), s.Nodes...)
	shuf(len(c.Nodes), func(i, j int) { c.Nodes[i], c.Nodes[j] = c.Nodes[j], c.Nodes[i] })
	c.Resources = append([]model.ResourceRecord(nil), s.Resources...)
	shuf(len(c.Resources), func(i, j int) { c.Resources[i], c.Resources[j] = c.Resources[j], c.Resources[i] })
	c.Pending = append([]model.Pending(nil), s.Pending...)
	shuf(len(c.Pending), func(i, j int) { c.Pending[i], c.Pending[j] = c.Pending[j], c.Pending[i] })
	c.DatastoreHealth = append([]model.DatastoreHealth(nil), s.DatastoreHealth...)
	shuf(len(c.DatastoreHealth), func(i, j int) {
		c.DatastoreHealth[i], c.DatastoreHealth[j] = c.DatastoreHealth[j], c.DatastoreHealth[i]
	})
	return &c
}

// Determinism: the same snapshot, in any slice order, gives the same plan,
// byte for byte.
func TestDeterminism(t *testing.T) {
	snaps := []*model.Snapshot{
		gen.Cluster(gen.Params{Nodes: 16, Resources: 200, Seed: 3}),
		recovery64x3000(model.NodeOffline),
		recovery64x3000(model.NodeLost),
	}
	for i := range uint64(50) {
		snaps = append(snaps, gen.Random(i))
	}
	for i, s := range snaps {
		a := scheduler.Compute(s)
		b := scheduler.Compute(shuffled(s, uint64(i)))
		if a.String() != b.String() {
			t.Fatalf("case %d: plans differ after shuffling the input:\n%s\n---\n%s", i, a, b)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("case %d: plans differ after shuffling the input (placements, scores or reasons)", i)
		}
		if c := scheduler.Compute(s); !reflect.DeepEqual(a, c) {
			t.Fatalf("case %d: two runs on the same snapshot differ", i)
		}
	}
}

// Never twice, over random snapshots: no plan starts an instance on a node
// while it is active, unknown or in motion anywhere else unless the plan
// stops it there first and the start waits for that stop; nothing starts
// on a node that is not eligible; every plan is a DAG in ID order.
func TestPropertyNeverTwice(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	for seed := range uint64(n) {
		s := gen.Random(seed)
		var names []string
		for _, nd := range s.Nodes {
			names = append(names, nd.Name)
		}
		if err := s.Config.Validate(names); err != nil {
			t.Fatalf("seed %d: generator made an invalid config: %v", seed, err)
		}
		p := scheduler.Compute(s)
		if err := checkInvariants(s, p); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, p)
		}
		// Applying the plan and planning again must not find more to do
		// for instances that were acted on (the plan converges).
	}
}

// Every instance gets exactly one placement with a reason.
func TestPlacementsHaveReasons(t *testing.T) {
	for seed := range uint64(300) {
		s := gen.Random(seed)
		p := scheduler.Compute(s)
		for i, pl := range p.Placements {
			if pl.Reason == "" {
				t.Fatalf("seed %d: %s has no reason", seed, pl.Resource)
			}
			if i > 0 && p.Placements[i-1].Resource >= pl.Resource {
				t.Fatalf("seed %d: placements not sorted or duplicated at %s", seed, pl.Resource)
			}
		}
		if p.Explain("r0") == "" {
			t.Fatalf("seed %d: empty explanation", seed)
		}
	}
}
