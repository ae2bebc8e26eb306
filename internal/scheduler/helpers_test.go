package scheduler_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/scheduler/gen"
)

// sb builds snapshots for table tests: newSnap("n1", "n2:lost").res("web")…
type sb struct{ s model.Snapshot }

func newSnap(nodes ...string) *sb {
	b := &sb{s: model.Snapshot{Now: gen.Epoch}}
	for _, n := range nodes {
		name, state, _ := strings.Cut(n, ":")
		if state == "" {
			state = model.NodeOnline
		}
		ns := model.NodeStatus{Name: name, State: state}
		if state == "witness" {
			ns.State, ns.Witness = model.NodeOnline, true
		}
		b.s.Nodes = append(b.s.Nodes, ns)
		b.s.Config.Nodes = append(b.s.Config.Nodes, model.NodeConfig{Name: name})
	}
	return b
}

func (b *sb) node(name string) *model.NodeConfig {
	for i := range b.s.Config.Nodes {
		if b.s.Config.Nodes[i].Name == name {
			return &b.s.Config.Nodes[i]
		}
	}
	panic("no node " + name)
}

func (b *sb) resource(id string) *model.Resource {
	for i := range b.s.Config.Resources {
		if b.s.Config.Resources[i].ID == id {
			return &b.s.Config.Resources[i]
		}
	}
	panic("no resource " + id)
}

func (b *sb) res(ids ...string) *sb {
	for _, id := range ids {
		b.s.Config.Resources = append(b.s.Config.Resources, model.Resource{ID: id, Agent: "vigil:dummy"})
	}
	return b
}

func (b *sb) meta(id, k, v string) *sb {
	for i := range b.s.Config.Clones {
		if b.s.Config.Clones[i].ID == id {
			if b.s.Config.Clones[i].Meta == nil {
				b.s.Config.Clones[i].Meta = map[string]string{}
			}
			b.s.Config.Clones[i].Meta[k] = v
			return b
		}
	}
	for i := range b.s.Config.Groups {
		if b.s.Config.Groups[i].ID == id {
			if b.s.Config.Groups[i].Meta == nil {
				b.s.Config.Groups[i].Meta = map[string]string{}
			}
			b.s.Config.Groups[i].Meta[k] = v
			return b
		}
	}
	r := b.resource(id)
	if r.Meta == nil {
		r.Meta = map[string]string{}
	}
	r.Meta[k] = v
	return b
}

func (b *sb) util(id, k string, v int64) *sb {
	r := b.resource(id)
	if r.Utilization == nil {
		r.Utilization = map[string]int64{}
	}
	r.Utilization[k] = v
	return b
}

func (b *sb) capacity(node, k string, v int64) *sb {
	n := b.node(node)
	if n.Utilization == nil {
		n.Utilization = map[string]int64{}
	}
	n.Utilization[k] = v
	return b
}

func (b *sb) attr(node, k, v string) *sb {
	n := b.node(node)
	if n.Attributes == nil {
		n.Attributes = map[string]string{}
	}
	n.Attributes[k] = v
	return b
}

func (b *sb) standby(node string) *sb { b.node(node).Standby = true; return b }
func (b *sb) maint(node string) *sb   { b.node(node).Maintenance = true; return b }

func (b *sb) prop(k, v string) *sb {
	if b.s.Config.Properties == nil {
		b.s.Config.Properties = map[string]string{}
	}
	b.s.Config.Properties[k] = v
	return b
}

func (b *sb) group(id string, members ...string) *sb {
	b.res(members...)
	b.s.Config.Groups = append(b.s.Config.Groups, model.Group{ID: id, Resources: members})
	return b
}

func (b *sb) clone(id, of string, max int) *sb {
	b.s.Config.Clones = append(b.s.Config.Clones, model.Clone{ID: id, Of: of, Max: max})
	return b
}

func (b *sb) loc(res, node string, score model.Score) *sb {
	id := fmt.Sprintf("loc-%s-%s", res, node)
	b.s.Config.Locations = append(b.s.Config.Locations, model.Location{ID: id, Resource: res, Node: node, Score: score})
	return b
}

func (b *sb) rule(id, res string, score model.Score, or bool, exprs ...model.Expression) *sb {
	b.s.Config.Locations = append(b.s.Config.Locations, model.Location{ID: id, Resource: res, Score: score,
		Rule: &model.Rule{Or: or, Expressions: exprs}})
	return b
}

func (b *sb) coloc(res, with string, score model.Score) *sb {
	id := fmt.Sprintf("col-%s-%s", res, with)
	b.s.Config.Colocations = append(b.s.Config.Colocations, model.Colocation{ID: id, Resource: res, With: with, Score: score})
	return b
}

func (b *sb) order(first, then, kind string, symmetrical ...bool) *sb {
	o := model.Order{ID: fmt.Sprintf("ord-%s-%s", first, then), First: first, Then: then, Kind: kind}
	if len(symmetrical) > 0 {
		o.Symmetrical = &symmetrical[0]
	}
	b.s.Config.Orders = append(b.s.Config.Orders, o)
	return b
}

// rec records an instance's state on a node; fail is the fail count.
func (b *sb) rec(res, node, state string, fail ...int64) *sb {
	r := model.ResourceRecord{Resource: res, Node: node, State: state}
	if len(fail) > 0 {
		r.FailCount = fail[0]
		r.LastFailure = gen.Epoch.Add(-60e9) // a minute ago
		r.LastOp = model.OpMonitor
	}
	b.s.Resources = append(b.s.Resources, r)
	return b
}

func (b *sb) pending(res, node, action string) *sb {
	b.s.Pending = append(b.s.Pending, model.Pending{Resource: res, Node: node, Action: action})
	return b
}

func (b *sb) snap() *model.Snapshot { return &b.s }

// short renders an action as "start web@n2" / "migrate vm1 n1→n2".
func short(a scheduler.Action) string {
	if a.Kind == scheduler.KindMigrate {
		return "migrate " + a.Resource + " " + a.From + "→" + a.Node
	}
	return a.Kind + " " + a.Resource + "@" + a.Node
}

func shorts(p *scheduler.Plan) []string {
	var out []string
	for _, a := range p.Actions {
		out = append(out, short(a))
	}
	slices.Sort(out)
	return out
}

// dependsOn reports whether action "later" waits (transitively) for
// "earlier", both in short form.
func dependsOn(p *scheduler.Plan, later, earlier string) bool {
	byID := map[int]scheduler.Action{}
	var start []int
	for _, a := range p.Actions {
		byID[a.ID] = a
		if short(a) == later {
			start = append(start, a.ID)
		}
	}
	seen := map[int]bool{}
	for len(start) > 0 {
		id := start[len(start)-1]
		start = start[:len(start)-1]
		for _, d := range byID[id].After {
			if seen[d] {
				continue
			}
			seen[d] = true
			if short(byID[d]) == earlier {
				return true
			}
			start = append(start, d)
		}
	}
	return false
}

func placement(p *scheduler.Plan, id string) (scheduler.Placement, bool) {
	i, ok := slices.BinarySearchFunc(p.Placements, id, func(pl scheduler.Placement, id string) int { return strings.Compare(pl.Resource, id) })
	if !ok {
		return scheduler.Placement{}, false
	}
	return p.Placements[i], true
}

// ruleCase is one table case: a snapshot and what the plan must hold.
type ruleCase struct {
	name    string
	snap    *model.Snapshot
	actions []string          // exactly these actions (short form), nil = no check, {} = none
	deps    [][2]string       // {later, earlier}: later waits for earlier
	place   map[string]string // instance → node ("" = stopped)
	reason  map[string]string // instance → substring of its placement reason
	blocked []string          // substrings "instance: reason"
	fence   []string          // nodes
	notes   []string          // substrings
}

func runRules(t *testing.T, cases []ruleCase) {
	t.Helper()
	for i, tc := range cases {
		p := scheduler.Compute(tc.snap)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Errorf("case %d (%s): %s\n%s", i, tc.name, fmt.Sprintf(format, args...), p)
		}
		if err := checkInvariants(tc.snap, p); err != nil {
			fail("invariant: %v", err)
		}
		if tc.actions != nil {
			want := slices.Clone(tc.actions)
			slices.Sort(want)
			if got := shorts(p); !slices.Equal(got, want) {
				fail("actions = %q, want %q", got, want)
			}
		}
		for _, d := range tc.deps {
			if !dependsOn(p, d[0], d[1]) {
				fail("%q does not wait for %q", d[0], d[1])
			}
		}
		for id, node := range tc.place {
			pl, ok := placement(p, id)
			if !ok {
				fail("no placement for %s", id)
				continue
			}
			if pl.Node != node {
				fail("%s placed on %q, want %q (%s)", id, pl.Node, node, pl.Reason)
			}
		}
		for id, sub := range tc.reason {
			pl, _ := placement(p, id)
			if !strings.Contains(pl.Reason, sub) {
				fail("%s reason %q does not contain %q", id, pl.Reason, sub)
			}
		}
		var blocked []string
		for _, x := range p.Blocked {
			blocked = append(blocked, x.Resource+": "+x.Reason)
		}
		for _, want := range tc.blocked {
			if !slices.ContainsFunc(blocked, func(s string) bool { return strings.Contains(s, want) }) {
				fail("blocked %q missing from %q", want, blocked)
			}
		}
		var fence []string
		for _, f := range p.Fence {
			fence = append(fence, f.Node)
		}
		if tc.fence != nil && !slices.Equal(fence, tc.fence) {
			fail("fence = %q, want %q", fence, tc.fence)
		}
		for _, want := range tc.notes {
			if !slices.ContainsFunc(p.Notes, func(s string) bool { return strings.Contains(s, want) }) {
				fail("note %q missing from %q", want, p.Notes)
			}
		}
	}
}

// checkInvariants checks what every plan must hold, whatever the input:
//   - actions form a DAG numbered in topological order;
//   - never twice: a start (or migrate) of an instance happens only where
//     the snapshot allows it to run, and only after stops of every other
//     copy that may be active (started, failed, stop failed, unknown, in
//     motion); copies that cannot be stopped (unknown, stop failed, in
//     motion) forbid any start;
//   - starts and migrations target eligible nodes only;
//   - maintenance: no actions in maintenance mode, none on a node in
//     maintenance.
func checkInvariants(s *model.Snapshot, p *scheduler.Plan) error {
	state := map[string]model.NodeStatus{}
	for _, n := range s.Nodes {
		state[n.Name] = n
	}
	cfgNode := map[string]model.NodeConfig{}
	for _, n := range s.Config.Nodes {
		cfgNode[n.Name] = n
	}
	eligible := func(n string) bool {
		st, ok := state[n]
		c := cfgNode[n]
		return ok && st.State == model.NodeOnline && !st.Witness && !c.Standby && !c.Maintenance
	}
	type where struct{ node, how string }
	live := map[string][]where{} // instance → nodes where it may be active
	for _, r := range s.Resources {
		st, ok := state[r.Node]
		if ok && st.State == model.NodeOffline {
			continue
		}
		switch r.State {
		case model.StateStarted, model.StateFailed:
			how := "active"
			if !ok || st.State == model.NodeLost {
				how = "unknown"
			}
			live[r.Resource] = append(live[r.Resource], where{r.Node, how})
		case model.StateStopFailed:
			live[r.Resource] = append(live[r.Resource], where{r.Node, "stop_failed"})
		}
	}
	for _, pd := range s.Pending {
		live[pd.Resource] = append(live[pd.Resource], where{pd.Node, "pending"})
	}
	maintMode := s.Config.Properties[model.PropMaintenanceMode] == "true"
	if maintMode && len(p.Actions) > 0 {
		return fmt.Errorf("maintenance mode but %d actions", len(p.Actions))
	}
	byID := map[int]scheduler.Action{}
	starts := map[string]int{}
	for i, a := range p.Actions {
		if a.ID != i+1 {
			return fmt.Errorf("action %d has ID %d", i+1, a.ID)
		}
		for _, d := range a.After {
			if d >= a.ID || d < 1 {
				return fmt.Errorf("action %d waits for %d: not a DAG in ID order", a.ID, d)
			}
		}
		byID[a.ID] = a
		if c := cfgNode[a.Node]; c.Maintenance || (a.From != "" && cfgNode[a.From].Maintenance) {
			return fmt.Errorf("action %s touches a node in maintenance", short(a))
		}
		if a.Kind == scheduler.KindStop {
			ok := slices.ContainsFunc(live[a.Resource], func(w where) bool { return w.node == a.Node && w.how == "active" })
			if !ok {
				return fmt.Errorf("%s: not active there (or cannot be stopped)", short(a))
			}
			continue
		}
		starts[a.Resource]++
		if starts[a.Resource] > 1 {
			return fmt.Errorf("%s: instance started twice in one plan", short(a))
		}
		if !eligible(a.Node) {
			return fmt.Errorf("%s: node not eligible", short(a))
		}
	}
	reach := func(from, to int) bool { // does action from wait (transitively) for to?
		stack, seen := []int{from}, map[int]bool{}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, d := range byID[x].After {
				if d == to {
					return true
				}
				if !seen[d] {
					seen[d] = true
					stack = append(stack, d)
				}
			}
		}
		return false
	}
	for _, a := range p.Actions {
		if a.Kind == scheduler.KindStop {
			continue
		}
		for _, w := range live[a.Resource] {
			if w.how != "active" {
				return fmt.Errorf("%s while %s on %s", short(a), w.how, w.node)
			}
			if a.Kind == scheduler.KindMigrate {
				if w.node != a.From || len(live[a.Resource]) != 1 {
					return fmt.Errorf("%s while active on %v", short(a), live[a.Resource])
				}
				continue
			}
			stopped := false
			for _, b := range p.Actions {
				if b.Kind == scheduler.KindStop && b.Resource == a.Resource && b.Node == w.node && reach(a.ID, b.ID) {
					stopped = true
				}
			}
			if !stopped {
				return fmt.Errorf("%s while active on %s, without waiting for a stop there", short(a), w.node)
			}
		}
	}
	return nil
}
