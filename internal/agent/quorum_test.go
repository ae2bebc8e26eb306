package agent

import (
	"fmt"
	"testing"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

func nodes(n, witnesses int) []model.Node {
	var out []model.Node
	for i := 1; i <= n+witnesses; i++ {
		nd := model.Node{Name: fmt.Sprintf("n%d", i), ID: uint64(i), Links: []string{fmt.Sprintf("127.0.0.1:%d", 7000+i)}}
		if i > n {
			nd.Role = model.RoleWitness
		}
		out = append(out, nd)
	}
	return out
}

// The first Raft layout keeps 3 or 5 voters however many nodes there are,
// and witnesses always vote: a 64-node cluster must not run 64-way consensus.
func TestBootstrapMembersVoterTarget(t *testing.T) {
	tests := []struct {
		nodes, witnesses  int
		voters, witnessed int
	}{
		{1, 0, 1, 0},
		{2, 0, 2, 0},
		{2, 1, 2, 1},
		{3, 0, 3, 0},
		{4, 0, 3, 0},
		{5, 0, 5, 0},
		{8, 0, 5, 0},
		{64, 0, 5, 0},
		{4, 1, 4, 1},
	}
	for i, tt := range tests {
		ms := bootstrapMembers(nodes(tt.nodes, tt.witnesses))
		var v, w, l int
		for _, m := range ms {
			switch m.Role {
			case store.RoleVoter:
				v++
			case store.RoleWitness:
				w++
			case store.RoleLearner:
				l++
			}
		}
		if v != tt.voters || w != tt.witnessed || v+w+l != tt.nodes+tt.witnesses {
			t.Errorf("#%d %d nodes + %d witnesses: %d voters, %d witnesses, %d learners; want %d voters, %d witnesses",
				i, tt.nodes, tt.witnesses, v, w, l, tt.voters, tt.witnessed)
		}
		if got := v + w; got != store.TargetVoters(tt.nodes+tt.witnesses) {
			t.Errorf("#%d: %d raft voters, want the target %d", i, got, store.TargetVoters(tt.nodes+tt.witnesses))
		}
	}
}
