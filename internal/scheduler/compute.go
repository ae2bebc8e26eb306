package scheduler

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-ha/vigil/internal/model"
)

// Compute decides the plan for a snapshot. It never fails: what cannot be
// done is reported in Blocked, Fence and Notes. It does not validate the
// configuration (model.Config.Validate does, before a configuration is
// accepted) but stays deterministic and terminates on any input.
func Compute(s *model.Snapshot) *Plan {
	c := newCtx(s) // reconcile: index, derive states, freeze what must not be touched
	c.placementOrder()
	c.place()       // feasibility, score, place
	c.actionsPass() // transitions, restarts, holds
	c.edges()       // order actions
	return c.assemble()
}

func (c *ctx) assemble() *Plan {
	p := &Plan{}
	if c.maintMode {
		p.Notes = append(p.Notes, "cluster is in maintenance mode: no actions")
	}
	p.Notes = append(p.Notes, c.notes...)
	p.Actions = c.number()
	if c.maintMode {
		p.Actions = nil
	}
	for n, nd := range c.nodes {
		p.Nodes = append(p.Nodes, NodeInfo{Name: nd.name, State: nd.state, Eligible: nd.eligible, Why: nd.why})
		if len(c.fence[n]) > 0 && !c.maintMode {
			p.Fence = append(p.Fence, FenceRequest{Node: nd.name, Reason: fenceWhy(nd, c.fence[n])})
		}
	}
	n := len(c.orphans)
	for _, u := range c.units {
		for _, ui := range u.insts {
			n += len(ui.members)
		}
	}
	p.Placements = make([]Placement, 0, n)
	for _, u := range c.units {
		unitName := ""
		if u.kind != kindPrimitive {
			unitName = u.id
		}
		for _, ui := range u.insts {
			for _, mi := range ui.members {
				pl := Placement{Resource: mi.id, Unit: unitName, Reason: ui.reason, Scores: ui.scores}
				if ui.frozen == frNone {
					if mi.target >= 0 {
						pl.Node = c.nodes[mi.target].name
					}
					if u.held {
						pl.Reason = u.heldWhy + "; then: " + ui.reason
					}
				} else if ui.frozenAt >= 0 && ui.frozen != frUnknown && ui.frozen != frStopFail &&
					(slices.Contains(mi.active, ui.frozenAt) || len(mi.pending) > 0) {
					pl.Node = c.nodes[ui.frozenAt].name
				}
				if mi.j >= ui.nplaced && ui.frozen == frNone && ui.target >= 0 {
					pl.Reason = mi.id + " stays stopped: " + ui.reason
				}
				pl.Current = c.current(mi)
				p.Placements = append(p.Placements, pl)
			}
		}
	}
	p.Placements = append(p.Placements, c.orphans...)
	slices.SortStableFunc(p.Placements, func(a, b Placement) int { return cmp.Compare(a.Resource, b.Resource) })
	if !c.maintMode {
		p.Blocked = c.blocked
		slices.SortStableFunc(p.Blocked, func(a, b Blocked) int {
			return cmp.Or(cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Reason, b.Reason))
		})
		p.Blocked = slices.Compact(p.Blocked)
	}
	return p
}

func fenceWhy(nd *node, what []string) string {
	slices.Sort(what)
	what = slices.Compact(what)
	var head string
	if nd.state == model.NodeLost {
		head = "lost and not proven down: "
	} else {
		head = "a stop failed: "
	}
	return head + joinMax(what, 5)
}

// current lists the nodes an instance is active on now: started, failed,
// stop failed, unknown (lost node) or in motion.
func (c *ctx) current(mi *minst) []string {
	var ns []int
	for _, n := range mi.active {
		ns = appendNode(ns, n)
	}
	for _, n := range mi.stopFailed {
		ns = appendNode(ns, n)
	}
	for _, n := range mi.unknown {
		ns = appendNode(ns, n)
	}
	for _, p := range mi.pending {
		if n, ok := c.nodeIdx[p.Node]; ok {
			ns = appendNode(ns, n)
		}
	}
	if len(ns) == 0 {
		return nil
	}
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = c.nodes[n].name
	}
	return out
}

// String prints the plan for `vigil simulate`: fencing, then the actions in
// dependency order with their reasons, what is blocked, the placements that
// change, and the notes.
func (p *Plan) String() string {
	var b strings.Builder
	b.WriteString("Plan: " + plural(len(p.Actions), "action") + ", " + plural(len(p.Blocked), "blocked instance") +
		", " + plural(len(p.Fence), "fence request") + "\n")
	if len(p.Notes) > 0 {
		b.WriteString("Notes:\n")
		for _, n := range p.Notes {
			b.WriteString("  " + n + "\n")
		}
	}
	if len(p.Fence) > 0 {
		b.WriteString("Fence:\n")
		for _, f := range p.Fence {
			b.WriteString("  " + f.Node + ": " + f.Reason + "\n")
		}
	}
	if len(p.Actions) > 0 {
		b.WriteString("Actions:\n")
		for _, a := range p.Actions {
			b.WriteString("  " + a.String() + "\n")
		}
	}
	if len(p.Blocked) > 0 {
		b.WriteString("Blocked:\n")
		for _, x := range p.Blocked {
			b.WriteString("  " + x.Resource + ": " + x.Reason + "\n")
		}
	}
	changed := false
	for _, pl := range p.Placements {
		if pl.changes() {
			if !changed {
				b.WriteString("Placements that change:\n")
				changed = true
			}
			b.WriteString("  " + pl.Resource + " " + strings.Join(pl.Current, ",") + " → " + orDash(pl.Node) + ": " + pl.Reason + "\n")
		}
	}
	return b.String()
}

func (pl *Placement) changes() bool {
	if pl.Node == "" {
		return len(pl.Current) > 0
	}
	return len(pl.Current) != 1 || pl.Current[0] != pl.Node
}

func orDash(s string) string {
	if s == "" {
		return "(stopped)"
	}
	return s
}

// String prints one action: "3. start web on n2 after 1, 2: reason".
func (a Action) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(a.ID) + ". " + a.Kind + " " + a.Resource)
	if a.Kind == KindMigrate {
		b.WriteString(" " + a.From + " → " + a.Node)
	} else {
		b.WriteString(" on " + a.Node)
	}
	if len(a.After) > 0 {
		b.WriteString(" after ")
		for i, x := range a.After {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strconv.Itoa(x))
		}
	}
	if a.Reason != "" {
		b.WriteString(": " + a.Reason)
	}
	return b.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// Explain prints why a resource is where it is, for `vigil explain`. It
// accepts an instance id ("web", "ip-clone:1", "db:0"), a group or clone id
// (every instance), or a cloned member's resource id ("db": every "db:n").
func (p *Plan) Explain(resource string) string {
	var b strings.Builder
	found := false
	for i := range p.Placements {
		pl := &p.Placements[i]
		if pl.Resource != resource && pl.Unit != resource && !isInstanceOf(pl.Resource, resource) {
			continue
		}
		found = true
		p.explainOne(&b, pl)
	}
	if !found {
		return resource + ": no such resource in the plan\n"
	}
	return b.String()
}

func (p *Plan) explainOne(b *strings.Builder, pl *Placement) {
	b.WriteString(pl.Resource)
	if pl.Unit != "" {
		b.WriteString(" (in " + pl.Unit + ")")
	}
	b.WriteString(": ")
	if pl.Node == "" {
		b.WriteString("not running")
	} else {
		b.WriteString("on " + pl.Node)
	}
	if len(pl.Current) > 0 {
		b.WriteString(" (now active on " + strings.Join(pl.Current, ", ") + ")")
	}
	b.WriteString("\n  why: " + pl.Reason + "\n")
	if len(pl.Scores) > 0 {
		b.WriteString("  scores:\n")
		ss := slices.Clone(pl.Scores)
		slices.SortStableFunc(ss, func(x, y NodeScore) int { return cmp.Compare(y.Score, x.Score) })
		w := 0
		for _, s := range ss {
			w = max(w, len(s.Node))
		}
		for _, s := range ss {
			why := strings.Join(s.Reasons, ", ")
			if why == "" {
				why = "(no preference)"
			}
			b.WriteString("    " + s.Node + strings.Repeat(" ", w-len(s.Node)) + "  " + pad(s.Score.String(), 9) + "  " + why + "\n")
		}
	}
	var inelig, others []string
	listed := map[string]bool{}
	for _, s := range pl.Scores {
		listed[s.Node] = true
	}
	for _, n := range p.Nodes {
		switch {
		case !n.Eligible:
			inelig = append(inelig, n.Name+" ("+n.Why+")")
		case !listed[n.Name]:
			others = append(others, n.Name)
		}
	}
	if len(others) > 0 {
		b.WriteString("  other eligible nodes (score 0 or not allowed): " + joinMax(others, 8) + "\n")
	}
	if len(inelig) > 0 {
		b.WriteString("  not eligible: " + joinMax(inelig, 8) + "\n")
	}
	for _, a := range p.Actions {
		if a.Resource == pl.Resource {
			b.WriteString("  action: " + a.String() + "\n")
		}
	}
	for _, x := range p.Blocked {
		if x.Resource == pl.Resource {
			b.WriteString("  blocked: " + x.Reason + "\n")
		}
	}
}

func pad(s string, w int) string {
	if len(s) >= w {
		return s
	}
	return strings.Repeat(" ", w-len(s)) + s
}

// isInstanceOf reports whether inst is "<resource>:<n>".
func isInstanceOf(inst, resource string) bool {
	n, ok := strings.CutPrefix(inst, resource+":")
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
