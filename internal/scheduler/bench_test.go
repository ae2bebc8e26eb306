package scheduler_test

import (
	"fmt"
	"testing"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/scheduler/gen"
)

// BenchmarkInitialPlacement: every resource stopped, every node online.
func BenchmarkInitialPlacement(b *testing.B) {
	for _, sz := range [][2]int{{3, 10}, {16, 200}, {32, 1000}, {64, 3000}, {100, 10000}} {
		b.Run(fmt.Sprintf("%dx%d", sz[0], sz[1]), func(b *testing.B) {
			s := gen.Cluster(gen.Params{Nodes: sz[0], Resources: sz[1], Seed: 1})
			b.ReportAllocs()
			for b.Loop() {
				scheduler.Compute(s)
			}
		})
	}
}

// running returns s with every placed instance recorded as started where
// the plan placed it.
func running(s *model.Snapshot) *model.Snapshot {
	p := scheduler.Compute(s)
	r := *s
	r.Resources = nil
	for _, pl := range p.Placements {
		if pl.Node != "" {
			r.Resources = append(r.Resources, model.ResourceRecord{Resource: pl.Resource, Node: pl.Node, State: model.StateStarted})
		}
	}
	return &r
}

// recovery64x3000 is a running 64×3000 cluster whose node n017 has just
// been fenced (offline): its resources are recovered elsewhere, everything
// else stays put (stickiness).
func recovery64x3000(state string) *model.Snapshot {
	s := running(gen.Cluster(gen.Params{Nodes: 64, Resources: 3000, Seed: 1}))
	s.Nodes = append([]model.NodeStatus(nil), s.Nodes...)
	s.Nodes[16].State = state
	return s
}

// BenchmarkRecovery64x3000: one node proven down → the recovery plan.
func BenchmarkRecovery64x3000(b *testing.B) {
	s := recovery64x3000(model.NodeOffline)
	b.ReportAllocs()
	for b.Loop() {
		scheduler.Compute(s)
	}
}

// BenchmarkRecovery64x3000Lost: one node lost, not yet fenced → blocked
// instances and a fence request.
func BenchmarkRecovery64x3000Lost(b *testing.B) {
	s := recovery64x3000(model.NodeLost)
	b.ReportAllocs()
	for b.Loop() {
		scheduler.Compute(s)
	}
}
