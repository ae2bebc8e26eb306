package scheduler

import (
	"cmp"
	"container/heap"
	"slices"
	"strconv"

	"github.com/vigil-ha/vigil/internal/model"
)

// act is an action under construction.
type act struct {
	seq     int
	kind    string
	mi      *minst
	orphan  string
	node    int
	from    int
	reason  string
	after   []*act
	id      int
	dropped bool
	indeg   int
	next    []*act
}

func (a *act) resource() string {
	if a.mi != nil {
		return a.mi.id
	}
	return a.orphan
}

func (c *ctx) addAct(a *act) *act {
	a.seq = c.nextSeq
	c.nextSeq++
	c.actions = append(c.actions, a)
	return a
}

func (mi *minst) stopAt(n int) *act {
	for _, a := range mi.stops {
		if a.node == n {
			return a
		}
	}
	return nil
}

// actionsPass turns placements into actions, unit by unit in placement
// order (so a First's and a With's actions are known before their
// dependents').
func (c *ctx) actionsPass() {
	if c.maintMode {
		return
	}
	for _, u := range c.order {
		for _, ui := range u.insts {
			if ui.frozen != frNone {
				if ui.frozen >= frUnknown && (u.kind != kindClone || ui.frozen >= frPending) && u.motion == "" {
					u.motion = ui.frozenW
				}
				continue
			}
			for _, mi := range ui.members {
				c.transition(ui, mi)
			}
		}
		c.restarts(u)
		c.hold(u)
	}
}

// transition adds the stops and the start (or migrate) that bring one
// member instance from where it is active to its target.
func (c *ctx) transition(ui *uinst, mi *minst) {
	u := ui.u
	t := -1
	if ui.target >= 0 && mi.j < ui.nplaced {
		t = ui.target
	}
	mi.target = t
	restart := t >= 0 && slices.Contains(mi.failed, t)
	for _, n := range mi.active {
		if n == t && !restart {
			continue
		}
		c.addStop(mi, n, c.stopWhy(ui, mi, n, t))
	}
	if t < 0 || (!restart && slices.Contains(mi.active, t)) {
		return
	}
	// A healthy move between two online nodes of a resource that allows
	// it is one live migration.
	if !restart && u.mem[mi.j].migrate && len(mi.active) == 1 && len(mi.failed) == 0 {
		src := mi.active[0]
		if nd := c.nodes[src]; nd.state == model.NodeOnline && !nd.maint && c.nodes[t].eligible {
			s := mi.stops[0]
			s.dropped = true
			mi.stops = nil
			mi.start = c.addAct(&act{kind: KindMigrate, mi: mi, node: t, from: src, reason: ui.reason})
			return
		}
	}
	why := ui.reason
	if restart {
		why = c.failWhy(ui, mi, t) + ": restart in place"
	}
	mi.start = c.addAct(&act{kind: KindStart, mi: mi, node: t, from: -1, reason: why})
}

func (c *ctx) addStop(mi *minst, n int, why string) {
	mi.stops = append(mi.stops, c.addAct(&act{kind: KindStop, mi: mi, node: n, from: -1, reason: why}))
}

func (c *ctx) failWhy(ui *uinst, mi *minst, n int) string {
	op := "monitor"
	if o := mi.lastOp[n]; o != "" && o != model.OpMonitor {
		op = o
	}
	cnt := mi.failCount(n)
	th := ui.u.mem[mi.j].thresh
	s := op + " failed (fail count " + strconv.FormatInt(cnt, 10)
	switch {
	case th <= 0:
		s += ")"
	case cnt >= th:
		s += " ≥ migration-threshold " + strconv.FormatInt(th, 10) + ")"
	default:
		s += " of " + strconv.FormatInt(th, 10) + ")"
	}
	return s
}

func (c *ctx) stopWhy(ui *uinst, mi *minst, n, t int) string {
	switch {
	case slices.Contains(mi.failed, n) && t == n:
		return c.failWhy(ui, mi, n)
	case slices.Contains(mi.failed, n) && t >= 0:
		return c.failWhy(ui, mi, n) + ": moving to " + c.nodes[t].name
	case slices.Contains(mi.failed, n):
		return c.failWhy(ui, mi, n) + ": " + ui.reason
	case len(mi.active) > 1:
		if t >= 0 && slices.Contains(mi.active, t) {
			return "active on " + c.nodeList(mi.active) + ": keeping " + c.nodes[t].name
		}
		return "active on " + c.nodeList(mi.active)
	case t >= 0:
		return "moving to " + c.nodes[t].name + ": " + ui.reason
	}
	return ui.reason
}

// restarts applies order-dependent restarts: when First stops (restart,
// move or stop) and a symmetrical mandatory Then stays where it runs, Then
// restarts too (it stops before First and starts after it). A group's
// members are ordered the same way.
func (c *ctx) restarts(u *unit) {
	for _, ui := range u.insts {
		if ui.frozen != frNone {
			continue
		}
		for j, mi := range ui.members {
			t := mi.target
			if t < 0 || !slices.Contains(mi.active, t) || mi.stopAt(t) != nil {
				continue
			}
			why := ""
			if j > 0 {
				if prev := ui.members[j-1]; prev.stopAt(t) != nil {
					why = "restart: " + prev.id + " restarts (group " + u.id + ")"
				}
			}
			for _, o := range u.ordIn {
				if why != "" {
					break
				}
				if !o.mandatory || !o.symmetric || (o.tm >= 0 && o.tm != j) {
					continue
				}
				if o.first.stopsAny(o.fm, t, o.interleave) {
					why = "restart: " + o.firstName + " restarts (" + o.text + ")"
				} else if o.first.startsFresh(o.fm, t, o.interleave) {
					// First ran nowhere (its node failed or was fenced) and
					// starts again: what must run after it starts after it
					// again, as Pacemaker does.
					why = "restart: " + o.firstName + " starts again (" + o.text + ")"
				}
			}
			if why == "" {
				continue
			}
			c.addStop(mi, t, why)
			mi.start = c.addAct(&act{kind: KindStart, mi: mi, node: t, from: -1, reason: why})
		}
	}
}

// startsFresh reports whether the unit (member j, or any when j < 0) starts
// in the plan while active nowhere (on node n only, when interleaved).
func (u *unit) startsFresh(j, n int, interleave bool) bool {
	for _, ui := range u.insts {
		for _, mi := range ui.members {
			if j >= 0 && mi.j != j {
				continue
			}
			if mi.start != nil && mi.start.kind == KindStart && len(mi.active) == 0 && (!interleave || mi.start.node == n) {
				return true
			}
		}
	}
	return false
}

// stopsAny reports whether the unit (member j, or any when j < 0) has a
// stop in the plan (on node n only, when interleaved).
func (u *unit) stopsAny(j, n int, interleave bool) bool {
	for _, ui := range u.insts {
		for _, mi := range ui.members {
			if j >= 0 && mi.j != j {
				continue
			}
			for _, a := range mi.stops {
				if !interleave || a.node == n {
					return true
				}
			}
		}
	}
	return false
}

// hold drops a unit's actions while something it depends on (a With, a
// mandatory First) is in motion, unknown, or itself held: it waits for the
// next round.
func (c *ctx) hold(u *unit) {
	has := false
	for _, ui := range u.insts {
		for _, mi := range ui.members {
			if len(mi.stops) > 0 || mi.start != nil {
				has = true
			}
		}
	}
	u.hasActs = has
	if !has {
		return
	}
	why := ""
	for _, co := range u.colocs {
		if w := co.with; w.motion != "" || w.held {
			why = "waiting for " + w.id + " (colocated with " + w.id + ")"
			break
		}
	}
	if why == "" {
		for _, o := range u.ordIn {
			if f := o.first; o.mandatory && (f.motion != "" || f.held) {
				why = "waiting for " + o.firstName + " (" + o.text + ")"
				break
			}
		}
	}
	if why == "" {
		return
	}
	u.held, u.heldWhy = true, why
	for _, ui := range u.insts {
		for _, mi := range ui.members {
			if len(mi.stops) == 0 && mi.start == nil {
				continue
			}
			for _, a := range mi.stops {
				a.dropped = true
			}
			if mi.start != nil {
				mi.start.dropped = true
			}
			mi.stops, mi.start = nil, nil
			c.blocked = append(c.blocked, Blocked{mi.id, why})
		}
	}
}

// startsOf returns the start/migrate actions of a unit (member j or all),
// on node n only when n >= 0.
func (u *unit) startsOf(j, n int) []*act {
	var out []*act
	for _, ui := range u.insts {
		for _, mi := range ui.members {
			if (j < 0 || mi.j == j) && mi.start != nil && (n < 0 || mi.start.node == n) {
				out = append(out, mi.start)
			}
		}
	}
	return out
}

func (u *unit) stopsOf(j, n int) []*act {
	var out []*act
	for _, ui := range u.insts {
		for _, mi := range ui.members {
			if j >= 0 && mi.j != j {
				continue
			}
			for _, a := range mi.stops {
				if n < 0 || a.node == n {
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// edges adds the dependencies between actions.
func (c *ctx) edges() {
	stopsOn := make([][]*act, len(c.nodes))
	for _, u := range c.units {
		if !u.hasActs || u.held {
			continue
		}
		for _, ui := range u.insts {
			for j, mi := range ui.members {
				// never twice: a start waits for every stop of the instance
				if mi.start != nil {
					mi.start.after = append(mi.start.after, mi.stops...)
				}
				for _, s := range mi.stops {
					stopsOn[s.node] = append(stopsOn[s.node], s)
				}
				if j == 0 {
					continue
				}
				prev := ui.members[j-1]
				// a group starts in order and stops in reverse
				if mi.start != nil && prev.start != nil {
					mi.start.after = append(mi.start.after, prev.start)
				}
				for _, s := range prev.stops {
					if t := mi.stopAt(s.node); t != nil {
						s.after = append(s.after, t)
					}
				}
			}
		}
	}
	for _, o := range c.orders {
		if o.first.held || o.then.held {
			continue
		}
		for _, ts := range o.then.startsOf(o.tm, -1) {
			n := -1
			if o.interleave {
				n = ts.node
			}
			ts.after = append(ts.after, o.first.startsOf(o.fm, n)...)
		}
		if o.symmetric {
			for _, fs := range o.first.stopsOf(o.fm, -1) {
				n := -1
				if o.interleave {
					n = fs.node
				}
				fs.after = append(fs.after, o.then.stopsOf(o.tm, n)...)
			}
		}
	}
	// Capacity: a start on a node with declared capacity waits for the
	// stops there that free what it needs.
	if len(c.dims) > 0 {
		for _, a := range c.actions {
			if a.dropped || a.mi == nil || (a.kind != KindStart && a.kind != KindMigrate) {
				continue
			}
			nd := c.nodes[a.node]
			ut := a.mi.ui.u.mem[a.mi.j].util
			if !nd.hasCap || ut == nil {
				continue
			}
			for _, s := range stopsOn[a.node] {
				if s.mi != nil && s.mi != a.mi && sharesDim(ut, s.mi.ui.u.mem[s.mi.j].util, nd.capacity) {
					a.after = append(a.after, s)
				}
			}
		}
	}
}

func sharesDim(a, b, capacity []int64) bool {
	if b == nil {
		return false
	}
	for d := range a {
		if a[d] > 0 && b[d] > 0 && capacity[d] >= 0 {
			return true
		}
	}
	return false
}

// number sorts the actions topologically (earliest generated first among
// the ready ones) and numbers them from 1, so every dependency has a
// smaller ID.
func (c *ctx) number() []Action {
	var live []*act
	for _, a := range c.actions {
		if !a.dropped {
			live = append(live, a)
		}
	}
	for _, a := range live {
		a.after = slices.DeleteFunc(a.after, func(b *act) bool { return b.dropped || b == a })
		slices.SortFunc(a.after, func(x, y *act) int { return cmp.Compare(x.seq, y.seq) })
		a.after = slices.Compact(a.after)
		a.indeg = len(a.after)
		for _, b := range a.after {
			b.next = append(b.next, a)
		}
	}
	h := &actHeap{}
	for _, a := range live {
		if a.indeg == 0 {
			heap.Push(h, a)
		}
	}
	out := make([]Action, 0, len(live))
	for h.Len() > 0 {
		a := heap.Pop(h).(*act)
		a.id = len(out) + 1
		out = append(out, c.toAction(a))
		for _, b := range a.next {
			b.indeg--
			if b.indeg == 0 {
				heap.Push(h, b)
			}
		}
	}
	if len(out) < len(live) {
		// Cannot happen with acyclic constraints; never emit a cycle.
		c.notes = append(c.notes, "internal: "+strconv.Itoa(len(live)-len(out))+" actions dropped (dependency loop)")
	}
	return out
}

func (c *ctx) toAction(a *act) Action {
	x := Action{ID: a.id, Kind: a.kind, Resource: a.resource(), Node: c.nodes[a.node].name, Reason: a.reason}
	if a.from >= 0 {
		x.From = c.nodes[a.from].name
	}
	if len(a.after) > 0 {
		x.After = make([]int, len(a.after))
		for i, b := range a.after {
			x.After[i] = b.id
		}
		slices.Sort(x.After)
	}
	return x
}

type actHeap []*act

func (h actHeap) Len() int           { return len(h) }
func (h actHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h actHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *actHeap) Push(x any)        { *h = append(*h, x.(*act)) }
func (h *actHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
