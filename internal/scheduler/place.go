package scheduler

import (
	"cmp"
	"container/heap"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-ha/vigil/internal/model"
)

// placementOrder sorts units so that a colocation's With (and a mandatory
// order's First) comes before its dependents, higher priority first among
// the units that are ready, then by id. A unit's effective priority is
// raised to its dependents' so that a high-priority resource pulls what it
// depends on forward.
func (c *ctx) placementOrder() {
	// Plain topological order (Kahn, by id) to propagate priorities.
	for _, u := range c.units {
		u.deg = u.indeg
		u.eff = u.prio
	}
	var topo []*unit
	var q []*unit
	for _, u := range c.units {
		if u.indeg == 0 {
			q = append(q, u)
		}
	}
	for len(q) > 0 {
		u := q[0]
		q = q[1:]
		u.topo = len(topo)
		topo = append(topo, u)
		for _, v := range u.next {
			v.deg--
			if v.deg == 0 {
				q = append(q, v)
			}
		}
	}
	if len(topo) < len(c.units) {
		var loop []string
		for _, u := range c.units {
			if u.deg > 0 {
				u.topo = len(topo)
				topo = append(topo, u)
				loop = append(loop, u.id)
			}
		}
		c.notes = append(c.notes, "colocation and order constraints form a loop among "+joinMax(loop, 5)+": placed by id where they conflict")
	}
	for i := len(topo) - 1; i >= 0; i-- {
		u := topo[i]
		for _, v := range u.next {
			if v.topo > u.topo && v.eff > u.eff {
				u.eff = v.eff
			}
		}
	}
	// Priority-first Kahn.
	h := &unitHeap{}
	for _, u := range c.units {
		u.deg = u.indeg
		if u.indeg == 0 {
			*h = append(*h, u)
		}
	}
	heap.Init(h)
	c.order = make([]*unit, 0, len(c.units))
	for len(c.order) < len(c.units) {
		var u *unit
		if h.Len() > 0 {
			u = heap.Pop(h).(*unit)
			if u.done {
				continue
			}
		} else {
			// A loop: take the best remaining unit.
			for _, v := range c.units {
				if !v.done && (u == nil || unitLess(v, u)) {
					u = v
				}
			}
		}
		u.done = true
		c.order = append(c.order, u)
		for _, v := range u.next {
			v.deg--
			if v.deg == 0 && !v.done {
				heap.Push(h, v)
			}
		}
	}
}

func unitLess(a, b *unit) bool {
	if a.eff != b.eff {
		return a.eff > b.eff
	}
	return a.id < b.id
}

type unitHeap []*unit

func (h unitHeap) Len() int           { return len(h) }
func (h unitHeap) Less(i, j int) bool { return unitLess(h[i], h[j]) }
func (h unitHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *unitHeap) Push(x any)        { *h = append(*h, x.(*unit)) }
func (h *unitHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// place decides a node for every instance, in placement order.
func (c *ctx) place() {
	c.dimMax = make([]int64, len(c.dims))
	for _, nd := range c.nodes {
		for d, cp := range nd.capacity {
			c.dimMax[d] = max(c.dimMax[d], cp)
		}
	}
	for _, nd := range c.nodes {
		c.refresh(nd)
	}
	// Frozen instances stay where they are: account for them first.
	for _, u := range c.units {
		for _, ui := range u.insts {
			if ui.frozen == frNone {
				continue
			}
			ui.target = ui.frozenAt
			ui.nplaced = len(ui.members)
			if n := ui.frozenAt; n >= 0 {
				if u.on != nil {
					u.on[n] = true
				}
				nd := c.nodes[n]
				for _, mi := range ui.members {
					if slices.Contains(mi.active, n) || slices.Contains(mi.stopFailed, n) || len(mi.pending) > 0 {
						addUtil(nd.used, u.mem[mi.j].util)
						nd.count++
					}
				}
				c.refresh(nd)
			}
		}
	}
	// Reservations: an instance healthy on an eligible node keeps its
	// capacity there against instances of lower or equal (effective)
	// priority placed before it, so that placing new resources does not
	// push running ones away.
	var running []*uinst
	for _, u := range c.order {
		for _, ui := range u.insts {
			if ui.frozen != frNone || ui.extra || len(c.dims) == 0 || u.runnable == 0 {
				continue
			}
			n := -1
			for _, mi := range ui.members {
				if mi.j < u.runnable && len(mi.active) == 1 && len(mi.failed) == 0 && c.nodes[mi.active[0]].eligible &&
					!slices.ContainsFunc(mi.bans, func(b banC) bool { return b.node == mi.active[0] }) {
					if n < 0 {
						n = mi.active[0]
					}
					if mi.active[0] == n && u.mem[mi.j].util != nil {
						if ui.resUtil == nil {
							ui.resUtil = make([]int64, len(c.dims))
						}
						addUtil(ui.resUtil, u.mem[mi.j].util)
					}
				}
			}
			if n >= 0 && ui.resUtil != nil && c.nodes[n].hasCap {
				ui.resNode = n
				running = append(running, ui)
			}
		}
	}
	slices.SortStableFunc(running, func(a, b *uinst) int { return cmp.Compare(b.u.eff, a.u.eff) })
	next := 0
	for _, u := range c.order {
		for next < len(running) && running[next].u.eff >= u.eff {
			ui := running[next]
			addUtil(c.nodes[ui.resNode].reserved, ui.resUtil)
			c.refresh(c.nodes[ui.resNode])
			next++
		}
		c.placeUnit(u)
		u.placed = true
	}
}

func addUtil(dst, v []int64) {
	for d, x := range v {
		dst[d] += x
	}
}

func subUtil(dst, v []int64) {
	for d, x := range v {
		dst[d] -= x
	}
}

func (c *ctx) placeUnit(u *unit) {
	// Clone instances keeping their node go first (the slice is already
	// ranked: frozen, running on an eligible node, then the rest).
	for _, ui := range u.insts {
		if ui.frozen != frNone {
			ui.reason = ui.id + ": " + ui.frozenW
			continue
		}
		if ui.resNode >= 0 {
			subUtil(c.nodes[ui.resNode].reserved, ui.resUtil)
			c.refresh(c.nodes[ui.resNode])
			ui.resNode = -1
		}
		c.placeInst(ui)
		if ui.target >= 0 {
			nd := c.nodes[ui.target]
			for j := 0; j < ui.nplaced; j++ {
				addUtil(nd.used, u.mem[j].util)
				nd.count++
			}
			c.refresh(nd)
			if u.on != nil {
				u.on[ui.target] = true
			}
		}
	}
}

// runsOn reports whether the unit has an instance placed on n.
func (u *unit) runsOn(n int) bool {
	if u.on != nil {
		return u.on[n]
	}
	return len(u.insts) > 0 && u.insts[0].target == n
}

// runs reports whether a unit (member j, or any member when j < 0) will
// run somewhere. A unit not yet placed (only in a constraint loop) and a
// frozen one count as running.
func (u *unit) runs(j int) bool {
	if !u.placed {
		return true
	}
	for _, ui := range u.insts {
		if ui.frozen != frNone {
			return true
		}
		if ui.target >= 0 && (j < 0 || j < ui.nplaced) {
			return true
		}
	}
	return false
}

// explain collects the contributions to one node's score in readable form.
type explain struct {
	reasons []string
	excl    string // the first exclusion, short
}

func (e *explain) add(s model.Score, text string) { e.addShort(s, text, text) }

// addShort adds a contribution whose exclusion reads short in a sentence.
func (e *explain) addShort(s model.Score, text, short string) {
	e.reasons = append(e.reasons, signed(s)+" "+text)
	if s <= -model.Infinity && e.excl == "" {
		e.excl = short
	}
}

func (e *explain) exclude(text string) { e.excludeShort(text, text) }

// excludeShort records an exclusion whose full text (with details, for the
// node's score line) reads too long in the placement's sentence.
func (e *explain) excludeShort(text, short string) {
	e.reasons = append(e.reasons, "excluded: "+text)
	if e.excl == "" {
		e.excl = short
	}
}

func signed(s model.Score) string {
	if s > 0 {
		return "+" + s.String()
	}
	return s.String()
}

// eval scores node n (eligible) for instance ui. It returns the score, the
// number of members that can run there (-1: none; the instance is
// excluded) and how many contributions it found. With ex set it also
// spells each contribution out. Feasibility and score are one pass so that
// the explanation can never disagree with the decision.
func (c *ctx) eval(ui *uinst, n int, ex *explain) (model.Score, int, int) {
	u := ui.u
	nd := c.nodes[n]
	var sc, locSum model.Score
	nr := 0
	for _, l := range u.locs {
		if l.on(n) {
			sc = sc.Add(l.score)
			locSum = locSum.Add(l.score)
			nr++
			if ex != nil {
				ex.add(l.score, l.text)
			}
		}
	}
	for _, st := range ui.sticky {
		if st.node == n && st.score != 0 {
			sc = sc.Add(st.score)
			nr++
			if ex != nil {
				ex.add(st.score, "stickiness")
			}
		}
	}
	excluded := false
	for _, co := range u.colocs {
		on := co.with.runsOn(n)
		switch {
		case co.score >= model.Infinity:
			if !on {
				excluded = true // quiet: summarised in the placement's reason
				if ex != nil {
					ex.exclude("must run with " + co.with.id)
				}
			} else {
				nr++
				if ex != nil {
					ex.reasons = append(ex.reasons, "with "+co.with.id+" (colocation "+co.id+")")
				}
			}
		case co.score <= -model.Infinity:
			if on {
				sc = -model.Infinity
				nr++
				if ex != nil {
					ex.addShort(co.score, "anti-affinity with "+co.with.id+" (on "+nd.name+")", "anti-affinity with "+co.with.id)
				}
			}
		default:
			if on {
				sc = sc.Add(co.score)
				nr++
				if ex != nil {
					ex.add(co.score, "colocation with "+co.with.id+" (on "+nd.name+")")
				}
			}
		}
	}
	if u.kind == kindClone && u.on[n] {
		excluded = true // quiet
		if ex != nil {
			ex.exclude("another instance of " + u.id + " runs here")
		}
	}
	if excluded {
		return -model.Infinity, -1, nr
	}
	prefix := -1
	need := c.need
	clear(need)
	for j := 0; j < u.runnable; j++ {
		ms := sc
		mi := ui.members[j]
		for _, l := range u.mem[j].mlocs {
			if l.on(n) {
				ms = ms.Add(l.score)
				locSum = locSum.Add(l.score)
				nr++
				if ex != nil {
					ex.add(l.score, l.text+c.memberOf(ui, j))
				}
			}
		}
		for _, b := range mi.bans {
			if b.node == n {
				ms = -model.Infinity
				nr++
				if ex != nil {
					ex.exclude(b.text + c.memberOf(ui, j))
				}
			}
		}
		for _, name := range u.mem[j].ds {
			why, down := nd.dsDown[name]
			if !down {
				continue
			}
			nr++
			if slices.Contains(mi.active, n) && !slices.Contains(mi.failed, n) {
				// Running here already: a failed check does not stop it.
				// Its disk lease guards it (the VM stops itself if the
				// lease cannot be renewed); stopping it here would turn a
				// storage hiccup seen by one node into a failover.
				if ex != nil {
					ex.reasons = append(ex.reasons, "datastore "+name+" is not usable here, but it runs here: left running (its disk lease guards it)"+c.memberOf(ui, j))
				}
				continue
			}
			// The agent would refuse the start (ERR_INSTALLED) after a
			// failed try and a fail count: refuse the node here instead,
			// with the reason `vigil explain` shows.
			ms = -model.Infinity
			if ex != nil {
				ex.excludeShort("datastore "+name+" is not usable here ("+why+")"+c.memberOf(ui, j),
					"datastore "+name+" is not usable"+c.memberOf(ui, j))
			}
		}
		if ms <= -model.Infinity {
			break
		}
		if ut := u.mem[j].util; ut != nil && nd.hasCap {
			fits := true
			for d, v := range ut {
				need[d] += v
				if cp := nd.capacity[d]; cp >= 0 && nd.used[d]+nd.reserved[d]+need[d] > cp {
					if fits && ex != nil {
						free := max(cp-nd.used[d]-nd.reserved[d], 0)
						ex.exclude("needs " + c.dims[d] + " " + strconv.FormatInt(need[d], 10) + ", " + strconv.FormatInt(free, 10) + " free" + c.memberOf(ui, j))
					}
					fits = false
				}
			}
			if !fits {
				nr++
				break
			}
		}
		sc = ms
		prefix = j
	}
	if !c.symmetric && locSum <= 0 {
		if ex != nil {
			ex.exclude("symmetric-cluster=false and no positive location score")
		}
		return -model.Infinity, -1, nr
	}
	if prefix < 0 {
		return -model.Infinity, -1, nr
	}
	return sc, prefix, nr
}

func (c *ctx) memberOf(ui *uinst, j int) string {
	if ui.u.kind == kindGroup || ui.u.group != nil {
		return " (member " + ui.u.res[j].ID + ")"
	}
	return ""
}

// freeNorm is a node's free capacity, normalized so that dimensions with
// different units add up: the sum over the node's declared dimensions of
// free / (the largest capacity of that dimension in the cluster), in
// millionths (integers keep it exact on every platform). A node with twice
// the free memory of another scores twice as much.
func (c *ctx) freeNorm(nd *node) int64 { return nd.free }

// refresh recomputes a node's cached free capacity after a change.
func (c *ctx) refresh(nd *node) {
	nd.free = c.computeFree(nd)
}

func (c *ctx) computeFree(nd *node) int64 {
	var f int64
	for d, cp := range nd.capacity {
		if cp > 0 {
			free := max(cp-nd.used[d]-nd.reserved[d], 0)
			f += free * 1_000_000 / c.dimMax[d]
		}
	}
	return f
}

// placeInst chooses a node for one instance: the node where most members
// can run, then the highest score, then (Vigil's balanced default) the most
// free capacity, then the fewest instances, then the name.
func (c *ctx) placeInst(ui *uinst) {
	u := ui.u
	ui.target, ui.nplaced = -1, 0
	switch {
	case ui.extra:
		ui.reason = ui.id + " stays stopped: " + u.id + " wants " + strconv.Itoa(u.want) + " instances" + cloneMaxWhy(u)
		return
	case u.runnable == 0:
		ui.reason = ui.id + " stays stopped: " + u.stopWhy
		return
	}
	for _, o := range u.ordIn {
		if o.mandatory && (o.tm < 0 || o.tm == 0) && !o.first.runs(o.fm) {
			ui.reason = ui.id + " stays stopped: " + o.firstName + " is not running (" + o.text + ")"
			return
		}
	}
	best, bestPre := -1, -1
	var bestSc model.Score
	var bestFree int64
	bestCount := 0
	tieScore, tieFree, tieCount := 0, 0, 0
	feasible := 0
	interesting := c.scratch[:0]
	for _, n := range c.elig {
		sc, pre, nr := c.eval(ui, n, nil)
		if nr > 0 {
			interesting = append(interesting, n)
		}
		if pre < 0 {
			continue
		}
		feasible++
		nd := c.nodes[n]
		if best < 0 || pre > bestPre || (pre == bestPre && sc > bestSc) {
			best, bestPre, bestSc = n, pre, sc
			bestFree, bestCount = -1, nd.count
			if len(c.dims) > 0 {
				bestFree = c.freeNorm(nd)
			}
			tieScore, tieFree, tieCount = 1, 1, 1
			continue
		}
		if pre < bestPre || sc < bestSc {
			continue
		}
		tieScore++
		free := int64(-1)
		if len(c.dims) > 0 {
			free = c.freeNorm(nd)
		}
		switch {
		case free > bestFree:
			best, bestFree, bestCount = n, free, nd.count
			tieFree, tieCount = 1, 1
		case free < bestFree:
		default:
			tieFree++
			switch {
			case nd.count < bestCount:
				best, bestCount = n, nd.count
				tieCount = 1
			case nd.count == bestCount:
				tieCount++
			}
		}
	}
	c.scratch = interesting
	if best >= 0 {
		ui.target, ui.nplaced = best, bestPre+1
	}
	c.describe(ui, interesting, feasible, bestSc, tieScore, tieFree, tieCount)
}

func cloneMaxWhy(u *unit) string {
	if u.clone.Max == 0 {
		return " (one per eligible node)"
	}
	return " (clone-max)"
}

// describe fills the instance's Scores and Reason.
func (c *ctx) describe(ui *uinst, interesting []int, feasible int, bestSc model.Score, tieScore, tieFree, tieCount int) {
	u := ui.u
	// Current nodes (for the "why it moved" part).
	var cur []int
	for _, mi := range ui.members {
		for _, n := range mi.active {
			cur = appendNode(cur, n)
		}
	}
	listed := slices.Clone(interesting)
	if ui.target >= 0 {
		listed = appendNode(listed, ui.target)
	}
	for _, n := range cur {
		listed = appendNode(listed, n)
	}
	slices.Sort(listed)
	listed = slices.Compact(listed)
	ui.scores = make([]NodeScore, 0, len(listed))
	exWhy := map[int]string{}
	for _, n := range listed {
		nd := c.nodes[n]
		if !nd.eligible {
			ui.scores = append(ui.scores, NodeScore{Node: nd.name, Score: -model.Infinity, Reasons: nd.inelig})
			continue
		}
		c.ex = explain{}
		sc, pre, _ := c.eval(ui, n, &c.ex)
		if pre < 0 {
			sc = -model.Infinity
			exWhy[n] = c.ex.excl
		}
		ui.scores = append(ui.scores, NodeScore{Node: nd.name, Score: sc, Reasons: slices.Clip(c.ex.reasons)})
	}

	var parts []string
	if ui.target < 0 {
		if len(c.elig) == 0 {
			parts = append(parts, "no node is eligible")
		} else {
			parts = c.exclusions(parts, ui, exWhy, -1)
		}
		ui.reason = ui.id + " cannot run: " + strings.Join(parts, "; ")
		return
	}
	T := ui.target
	tn := c.nodes[T].name
	head := ui.id + " on " + tn
	if slices.Contains(cur, T) && len(cur) == 1 && !ui.anyFailedAt(T) {
		head = ui.id + " stays on " + tn
	}
	// Why it leaves where it is.
	for _, mi := range ui.members {
		for _, n := range mi.gone {
			if !slices.Contains(cur, n) {
				parts = append(parts, c.nodes[n].name+" is offline")
				cur = append(cur, n) // once
			}
		}
	}
	cur = ui.currentNodes()
	for _, n := range cur {
		if n == T {
			continue
		}
		nd := c.nodes[n]
		switch {
		case !nd.eligible:
			parts = append(parts, nd.name+" is "+nd.why)
		case exWhy[n] != "":
			parts = append(parts, nd.name+" excluded ("+exWhy[n]+")")
		default:
			parts = append(parts, nd.name+" scores less")
		}
	}
	if len(cur) > 1 {
		parts = append(parts, "active on "+c.nodeList(cur))
	}
	if slices.Contains(cur, T) && ui.anyFailedAt(T) {
		parts = append(parts, "restart in place")
	}
	parts = c.exclusions(parts, ui, exWhy, T)
	// Why this node.
	switch {
	case feasible == 1 && len(c.elig) > 1:
		parts = append(parts, tn+" is the only node that can run it")
	case tieScore == 1 && bestSc != 0:
		parts = append(parts, tn+" has the highest score ("+bestSc.String()+")")
	case tieScore == 1:
		parts = append(parts, tn+" has the highest score")
	case tieFree == 1:
		parts = append(parts, tn+" has the most free "+c.dimWord(c.nodes[T]))
	case tieCount == 1:
		parts = append(parts, tn+" runs the fewest resources")
	default:
		parts = append(parts, tn+" is first by name among "+strconv.Itoa(tieCount)+" equal nodes")
	}
	if ui.nplaced < len(ui.members) {
		if ui.nplaced < u.runnable {
			parts = append(parts, u.res[ui.nplaced].ID+" and the members after it cannot run there")
		} else {
			parts = append(parts, u.res[ui.nplaced].ID+" and the members after it stay stopped ("+u.stopWhy+")")
		}
	}
	ui.reason = head + ": " + strings.Join(parts, "; ")
}

func (ui *uinst) anyFailedAt(n int) bool {
	for _, mi := range ui.members {
		if slices.Contains(mi.failed, n) {
			return true
		}
	}
	return false
}

// exclusions adds up to three excluded nodes (other than skip and the
// current ones) and the quiet exclusions (mandatory colocation, one
// instance per node).
func (c *ctx) exclusions(parts []string, ui *uinst, exWhy map[int]string, skip int) []string {
	var ns []int
	cur := ui.currentNodes()
	for n := range exWhy {
		if n != skip && !slices.Contains(cur, n) {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	for i, n := range ns {
		if i == 3 {
			parts = append(parts, "+"+strconv.Itoa(len(ns)-3)+" more excluded")
			break
		}
		parts = append(parts, c.nodes[n].name+" excluded ("+exWhy[n]+")")
	}
	for _, co := range ui.u.colocs {
		if co.score >= model.Infinity {
			if co.with.runs(-1) {
				parts = append(parts, "must run with "+co.with.id)
			} else {
				parts = append(parts, "must run with "+co.with.id+", which is not running")
			}
		}
	}
	if skip < 0 && len(parts) == 0 {
		if ui.u.kind == kindClone {
			parts = append(parts, "every node it may use already has an instance of "+ui.u.id)
		} else {
			parts = append(parts, "no eligible node can run it")
		}
	}
	return parts
}

func (ui *uinst) currentNodes() []int {
	var cur []int
	for _, mi := range ui.members {
		for _, n := range mi.active {
			cur = appendNode(cur, n)
		}
	}
	return cur
}

func (c *ctx) dimWord(nd *node) string {
	var ds []string
	for d, cp := range nd.capacity {
		if cp > 0 {
			ds = append(ds, c.dims[d])
		}
	}
	if len(ds) == 1 {
		return ds[0]
	}
	return "capacity"
}

func (c *ctx) nodeList(ns []int) string {
	names := make([]string, len(ns))
	for i, n := range ns {
		names[i] = c.nodes[n].name
	}
	return joinAnd(names)
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

func joinMax(s []string, k int) string {
	if len(s) <= k {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:k], ", ") + " (+" + strconv.Itoa(len(s)-k) + " more)"
}
