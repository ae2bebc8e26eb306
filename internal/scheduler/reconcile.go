package scheduler

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/model"
)

// DefaultStickiness is Vigil's resource-stickiness when neither the
// resource's meta nor the default-resource-stickiness property sets one.
// Pacemaker's default is 0, which lets a resource bounce back to a node that
// returns; an HA operator expects it to stay put, so Vigil's is 100.
const DefaultStickiness model.Score = 100

// Kinds of placed units.
const (
	kindPrimitive = iota
	kindGroup
	kindClone
)

// Frozen kinds: why an instance is left exactly as it is this round.
const (
	frNone      = iota
	frMaintMode // cluster maintenance-mode
	frUnmanaged // is-managed=false
	frNodeMaint // active on a node in maintenance
	frUnknown   // recorded on a lost node: waiting for fencing
	frStopFail  // a stop failed: needs fencing or cleanup
	frPending   // an order is in flight
	frProbing   // active on a node that has not finished probing
)

// node is one cluster node, indexed by position in name order.
type node struct {
	name     string
	state    string
	witness  bool
	standby  bool
	maint    bool
	eligible bool
	why      string // why not eligible
	attrs    map[string]string
	capacity []int64 // per dimension; -1 = not declared (unlimited)
	hasCap   bool
	free     int64   // normalized free capacity (see freeNorm), kept current
	used     []int64 // utilization of the instances placed here
	reserved []int64 // utilization held for running instances not yet placed
	count    int     // member instances placed here
	// shared explanation when a resource is active on this ineligible node
	inelig []string
	// dsDown maps each datastore whose latest check here failed to what
	// the check said (nil: none failed, or the node has not reported).
	dsDown map[string]string
}

// unit is what gets placed as one: a primitive, a group or a clone.
type unit struct {
	id       string
	kind     int
	res      []*model.Resource // members (one for a primitive)
	group    *model.Group
	clone    *model.Clone
	prio     int64
	eff      int64 // priority raised to that of its dependents
	runnable int   // members before the first with target-role Stopped
	stopWhy  string
	managed  bool
	mem      []memCfg  // per member
	locs     []*locC   // on the unit itself
	colocs   []*colocC // this unit is the Resource
	ordIn    []*ordC   // this unit is Then
	ordOut   []*ordC   // this unit is First
	insts    []*uinst
	want     int    // clones: instances wanted
	on       []bool // clones: nodes with an instance placed
	placed   bool
	// action pass
	motion  string // non-empty: an instance is in motion/unknown: dependents wait
	held    bool
	heldWhy string
	hasActs bool
	// placement order
	indeg int
	deg   int
	next  []*unit
	topo  int
	done  bool
}

// memCfg is the per-member configuration a unit needs while placing.
type memCfg struct {
	stick    model.Score
	thresh   int64
	ftimeout time.Duration
	migrate  bool
	util     []int64 // per dimension (nil when none)
	mlocs    []*locC // location constraints naming the member
	// ds are the datastores a vigil:vm member's files live on; set only
	// when some node reports a failed check (else nothing can refuse it).
	ds []string
}

// uinst is one instance of a unit: the primitive, the group, or one clone
// instance (which may itself be a group).
type uinst struct {
	u        *unit
	id       string
	n        int // clone instance number
	members  []*minst
	target   int // chosen node, -1 = none
	nplaced  int // members placed (a prefix)
	extra    bool
	frozen   int
	frozenAt int
	frozenW  string
	sticky   []stickC
	resNode  int // node whose capacity is reserved for it, -1 = none
	resUtil  []int64
	reason   string
	scores   []NodeScore
}

// minst is one member instance: what the executor runs.
type minst struct {
	id         string
	ui         *uinst
	j          int
	active     []int // started or failed here (node online or pending)
	failed     []int
	unknown    []int
	stopFailed []int
	pending    []*model.Pending
	gone       []int // was running on a node now offline (proven down)
	bans       []banC
	failInfo   []failC // effective fail counts > 0
	lastOp     map[int]string
	target     int
	stops      []*act
	start      *act // start or migrate
}

type stickC struct {
	node  int
	score model.Score
}

type banC struct {
	node int
	text string
}

type failC struct {
	node  int
	count int64
}

type locC struct {
	id    string
	score model.Score
	node  int    // -1 for a rule
	match []bool // a rule: per node
	text  string
}

func (l *locC) on(n int) bool {
	if l.match != nil {
		return l.match[n]
	}
	return l.node == n
}

type colocC struct {
	id    string
	score model.Score
	rsc   *unit
	with  *unit
}

type ordC struct {
	id         string
	first      *unit
	then       *unit
	fm, tm     int // member index, -1 = the whole unit
	mandatory  bool
	symmetric  bool
	interleave bool // clone then clone: instance to instance on each node
	text       string
	firstName  string
}

// ctx is one Compute run.
type ctx struct {
	s         *model.Snapshot
	nodes     []*node
	nodeIdx   map[string]int
	elig      []int
	dims      []string
	dimMax    []int64 // largest capacity per dimension
	symmetric bool
	maintMode bool
	dsDown    bool // some node reports a failed datastore check
	defStick  model.Score
	units     []*unit
	unitByID  map[string]*unit
	ref       map[string]refT // constraint target id → unit (+member)
	insts     map[string]*minst
	recs      []*model.ResourceRecord // sorted
	recIdx    map[string][]*model.ResourceRecord
	pend      map[string][]*model.Pending
	orders    []*ordC
	order     []*unit // placement order
	need      []int64
	nextSeq   int
	actions   []*act
	notes     []string
	blocked   []Blocked
	fence     [][]string // per node
	orphans   []Placement
	ex        explain
	scratch   []int
	uslab     []uinst
	mslab     []minst
}

type refT struct {
	u *unit
	j int // member index, -1 = whole unit
}

func newCtx(s *model.Snapshot) *ctx {
	nr := len(s.Config.Resources)
	c := &ctx{s: s, nodeIdx: map[string]int{}, unitByID: make(map[string]*unit, nr), ref: make(map[string]refT, nr),
		insts: make(map[string]*minst, nr)}
	cfg := &s.Config
	c.symmetric = boolProp(cfg.Properties, model.PropSymmetricCluster, true)
	c.maintMode = boolProp(cfg.Properties, model.PropMaintenanceMode, false)
	c.defStick = DefaultStickiness
	if v, ok := cfg.Properties[model.PropStickiness]; ok {
		if sc, err := model.ParseScore(v); err == nil {
			c.defStick = sc
		}
	}
	c.buildNodes()
	c.buildUnits()
	c.datastoreNotes()
	c.indexStatus()
	c.buildConstraints()
	c.buildInstances()
	return c
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func boolProp(p map[string]string, k string, def bool) bool {
	if v, ok := p[k]; ok {
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
	}
	return def
}

func (c *ctx) buildNodes() {
	st := slices.Clone(c.s.Nodes)
	slices.SortStableFunc(st, func(a, b model.NodeStatus) int { return cmp.Compare(a.Name, b.Name) })
	st = slices.CompactFunc(st, func(a, b model.NodeStatus) bool { return a.Name == b.Name })
	// Nodes named by records but unknown to membership are treated as
	// lost: what they ran is unknown. Never guess.
	extra := map[string]bool{}
	for i := range c.s.Resources {
		extra[c.s.Resources[i].Node] = true
	}
	for i := range c.s.Pending {
		extra[c.s.Pending[i].Node] = true
	}
	for _, n := range st {
		delete(extra, n.Name)
	}
	var unknownNodes []string
	for n := range extra {
		unknownNodes = append(unknownNodes, n)
	}
	slices.Sort(unknownNodes)
	for _, n := range unknownNodes {
		st = append(st, model.NodeStatus{Name: n, State: model.NodeLost})
		c.notes = append(c.notes, "node "+n+" is not a member but holds resource records: treated as lost")
	}
	slices.SortStableFunc(st, func(a, b model.NodeStatus) int { return cmp.Compare(a.Name, b.Name) })

	cfgNodes := map[string]*model.NodeConfig{}
	for i := range c.s.Config.Nodes {
		nc := &c.s.Config.Nodes[i]
		if _, dup := cfgNodes[nc.Name]; !dup {
			cfgNodes[nc.Name] = nc
		}
	}
	dimSet := map[string]bool{}
	for _, nc := range cfgNodes {
		for k := range nc.Utilization {
			dimSet[k] = true
		}
	}
	for k := range dimSet {
		c.dims = append(c.dims, k)
	}
	slices.Sort(c.dims)
	c.need = make([]int64, len(c.dims))

	for i, ns := range st {
		nd := &node{name: ns.Name, state: ns.State, witness: ns.Witness}
		if nc := cfgNodes[ns.Name]; nc != nil {
			nd.standby, nd.maint, nd.attrs = nc.Standby, nc.Maintenance, nc.Attributes
			nd.capacity = make([]int64, len(c.dims))
			for d, k := range c.dims {
				if v, ok := nc.Utilization[k]; ok {
					nd.capacity[d] = v
					nd.hasCap = true
				} else {
					nd.capacity[d] = -1
				}
			}
		}
		nd.used = make([]int64, len(c.dims))
		nd.reserved = make([]int64, len(c.dims))
		switch {
		case ns.State == model.NodeLost:
			nd.why = "lost"
		case ns.State == model.NodeOffline:
			nd.why = "offline"
		case ns.State == model.NodePending:
			nd.why = "pending (still probing)"
		case ns.State != model.NodeOnline:
			nd.why = "state " + strconv.Quote(ns.State)
		case ns.Witness:
			nd.why = "witness"
		case nd.maint:
			nd.why = "maintenance"
		case nd.standby:
			nd.why = "standby"
		default:
			nd.eligible = true
			c.elig = append(c.elig, i)
		}
		if !nd.eligible {
			nd.inelig = []string{"-INFINITY " + nd.why}
		}
		c.nodeIdx[ns.Name] = i
		c.nodes = append(c.nodes, nd)
		c.fence = append(c.fence, nil)
	}
	for _, nd := range c.nodes {
		if nd.maint && nd.state != model.NodeOffline {
			c.notes = append(c.notes, "node "+nd.name+" is in maintenance: its resources are left exactly as they are")
		}
	}
	for _, h := range c.s.DatastoreHealth {
		n, ok := c.nodeIdx[h.Node]
		if !ok {
			continue
		}
		nd := c.nodes[n]
		for name, chk := range h.Datastores {
			if chk.OK {
				continue
			}
			if nd.dsDown == nil {
				nd.dsDown = map[string]string{}
				c.dsDown = true
			}
			why := chk.Error
			if why == "" {
				why = "check failed"
			}
			// Two records for one node (not written so; a hand-made
			// snapshot): the smaller text wins, whatever their order.
			if old, dup := nd.dsDown[name]; !dup || why < old {
				nd.dsDown[name] = why
			}
		}
	}
	if len(c.elig) == 0 {
		c.notes = append(c.notes, "no node is eligible to run resources")
	}
}

// datastoreNotes says, once per eligible node and datastore, that a
// datastore the VMs use is not usable there (the placements say it per VM).
func (c *ctx) datastoreNotes() {
	if !c.dsDown {
		return
	}
	used := map[string]bool{}
	for _, u := range c.units {
		for _, m := range u.mem {
			for _, name := range m.ds {
				used[name] = true
			}
		}
	}
	for _, nd := range c.nodes {
		if !nd.eligible {
			continue // nothing is placed there anyway
		}
		for _, name := range sortedKeys(nd.dsDown) {
			if used[name] {
				c.notes = append(c.notes, "datastore "+name+" is not usable on "+nd.name+": VMs on it are not started there")
			}
		}
	}
}

// metaOf looks a meta attribute up on the member, then its group, then its
// clone (Pacemaker's inheritance).
func (u *unit) metaOf(j int, k string) (string, bool) {
	if j >= 0 && j < len(u.res) {
		if v, ok := u.res[j].Meta[k]; ok {
			return v, true
		}
	}
	if u.group != nil {
		if v, ok := u.group.Meta[k]; ok {
			return v, true
		}
	}
	if u.clone != nil {
		if v, ok := u.clone.Meta[k]; ok {
			return v, true
		}
	}
	return "", false
}

func (c *ctx) buildUnits() {
	cfg := &c.s.Config
	resByID := make(map[string]*model.Resource, len(cfg.Resources))
	for i := range cfg.Resources {
		r := &cfg.Resources[i]
		if _, dup := resByID[r.ID]; !dup {
			resByID[r.ID] = r
		}
	}
	groups := map[string]*model.Group{}
	inGroup := map[string]bool{}
	for i := range cfg.Groups {
		g := &cfg.Groups[i]
		if _, dup := groups[g.ID]; dup {
			continue
		}
		groups[g.ID] = g
		for _, m := range g.Resources {
			inGroup[m] = true
		}
	}
	cloned := map[string]*model.Clone{}
	for i := range cfg.Clones {
		cl := &cfg.Clones[i]
		if _, dup := cloned[cl.Of]; !dup {
			cloned[cl.Of] = cl
		}
	}
	slab := make([]unit, 0, len(resByID)+len(groups)+len(cloned))
	c.units = make([]*unit, 0, cap(slab))
	newUnit := func(id string, kind int, g *model.Group, cl *model.Clone, members []*model.Resource) *unit {
		slab = append(slab, unit{id: id, kind: kind, group: g, clone: cl, res: members})
		u := &slab[len(slab)-1]
		c.units = append(c.units, u)
		c.unitByID[id] = u
		c.ref[id] = refT{u, -1}
		return u
	}
	groupMembers := func(g *model.Group) []*model.Resource {
		var ms []*model.Resource
		for _, m := range g.Resources {
			if r := resByID[m]; r != nil {
				ms = append(ms, r)
			}
		}
		return ms
	}
	for i := range cfg.Resources {
		r := &cfg.Resources[i]
		if resByID[r.ID] != r || inGroup[r.ID] || cloned[r.ID] != nil {
			continue // NB: with duplicate ids (invalid) the first one wins
		}
		newUnit(r.ID, kindPrimitive, nil, nil, []*model.Resource{r})
	}
	for _, id := range sortedKeys(groups) {
		g := groups[id]
		if cloned[id] != nil {
			continue
		}
		u := newUnit(id, kindGroup, g, nil, groupMembers(g))
		for j, r := range u.res {
			c.ref[r.ID] = refT{u, j}
		}
	}
	for _, of := range sortedKeys(cloned) {
		cl := cloned[of]
		var u *unit
		if g := groups[of]; g != nil {
			u = newUnit(cl.ID, kindClone, g, cl, groupMembers(g))
			c.ref[of] = refT{u, -1}
			for j, r := range u.res {
				c.ref[r.ID] = refT{u, j}
			}
		} else if r := resByID[of]; r != nil {
			u = newUnit(cl.ID, kindClone, nil, cl, []*model.Resource{r})
			c.ref[of] = refT{u, -1}
		}
	}
	slices.SortFunc(c.units, func(a, b *unit) int { return cmp.Compare(a.id, b.id) })

	nm := 0
	for _, u := range c.units {
		nm += len(u.res)
	}
	memSlab := make([]memCfg, nm)
	var utilSlab []int64
	for _, u := range c.units {
		m := len(u.res)
		u.mem = memSlab[:m:m]
		memSlab = memSlab[m:]
		u.runnable = m
		u.managed = true
		if v, ok := u.metaOf(-1, model.MetaTargetRole); ok && v == model.RoleStopped {
			u.runnable = 0
			u.stopWhy = "target-role Stopped"
		}
		if v, ok := u.metaOf(-1, model.MetaIsManaged); ok {
			if b, err := strconv.ParseBool(v); err == nil && !b {
				u.managed = false
			}
		}
		prioSet := false
		if v, ok := u.metaOf(-1, model.MetaPriority); ok {
			if p, err := strconv.ParseInt(v, 10, 64); err == nil {
				u.prio, prioSet = p, true
			}
		}
		for j, r := range u.res {
			if r.MetaValue(model.MetaTargetRole, model.RoleStarted) == model.RoleStopped && j < u.runnable {
				u.runnable = j
				if j == 0 {
					u.stopWhy = "target-role Stopped"
				} else {
					u.stopWhy = r.ID + " has target-role Stopped"
				}
			}
			if !r.Managed() {
				u.managed = false
			}
			if !prioSet {
				u.prio = max(u.prio, r.Priority())
			}
			u.mem[j].stick = c.defStick
			if v, ok := u.metaOf(j, model.MetaStickiness); ok {
				if sc, err := model.ParseScore(v); err == nil {
					u.mem[j].stick = sc
				}
			}
			u.mem[j].thresh = model.DefaultMigrationThreshold
			if v, ok := u.metaOf(j, model.MetaMigrationThreshold); ok {
				if sc, err := model.ParseScore(v); err == nil {
					u.mem[j].thresh = int64(sc)
				}
			}
			if v, ok := u.metaOf(j, model.MetaFailureTimeout); ok {
				if d, err := model.ParseDuration(v); err == nil {
					u.mem[j].ftimeout = d
				}
			}
			if v, ok := u.metaOf(j, model.MetaAllowMigrate); ok {
				u.mem[j].migrate, _ = strconv.ParseBool(v)
			}
			var ut []int64
			for d, k := range c.dims {
				if v := r.Utilization[k]; v > 0 {
					if ut == nil {
						if len(utilSlab) < len(c.dims) {
							utilSlab = make([]int64, min(1024, len(cfg.Resources))*len(c.dims))
						}
						ut = utilSlab[:len(c.dims):len(c.dims)]
						utilSlab = utilSlab[len(c.dims):]
					}
					ut[d] = v
				}
			}
			u.mem[j].util = ut
			if c.dsDown {
				u.mem[j].ds = r.Datastores()
			}
		}
		if u.kind == kindClone {
			u.on = make([]bool, len(c.nodes))
		}
	}
}

func (c *ctx) indexStatus() {
	c.recs = make([]*model.ResourceRecord, len(c.s.Resources))
	for i := range c.s.Resources {
		c.recs[i] = &c.s.Resources[i]
	}
	slices.SortStableFunc(c.recs, func(a, b *model.ResourceRecord) int {
		return cmp.Or(cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Node, b.Node),
			cmp.Compare(a.State, b.State), cmp.Compare(a.FailCount, b.FailCount), a.LastFailure.Compare(b.LastFailure),
			cmp.Compare(a.LastOp, b.LastOp))
	})
	c.recIdx = make(map[string][]*model.ResourceRecord, len(c.recs))
	for i := 0; i < len(c.recs); {
		j := i + 1
		for j < len(c.recs) && c.recs[j].Resource == c.recs[i].Resource {
			j++
		}
		c.recIdx[c.recs[i].Resource] = c.recs[i:j:j]
		i = j
	}
	c.pend = map[string][]*model.Pending{}
	ps := make([]*model.Pending, len(c.s.Pending))
	for i := range c.s.Pending {
		ps[i] = &c.s.Pending[i]
	}
	slices.SortStableFunc(ps, func(a, b *model.Pending) int {
		return cmp.Or(cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Action, b.Action))
	})
	for _, p := range ps {
		c.pend[p.Resource] = append(c.pend[p.Resource], p)
	}
}

func (c *ctx) buildConstraints() {
	cfg := &c.s.Config
	// Locations, sorted by id; rules evaluated once per distinct rule.
	locs := make([]*model.Location, len(cfg.Locations))
	for i := range cfg.Locations {
		locs[i] = &cfg.Locations[i]
	}
	slices.SortStableFunc(locs, func(a, b *model.Location) int { return cmp.Compare(a.ID, b.ID) })
	ruleCache := map[string][]bool{}
	for _, l := range locs {
		r, ok := c.ref[l.Resource]
		if !ok {
			continue
		}
		lc := &locC{id: l.ID, score: l.Score, node: -1, text: "location " + l.ID}
		switch {
		case l.Rule != nil:
			key := ruleKey(l.Rule)
			m, ok := ruleCache[key]
			if !ok {
				m = make([]bool, len(c.nodes))
				for i, nd := range c.nodes {
					m[i] = evalRule(nd, l.Rule)
				}
				ruleCache[key] = m
			}
			lc.match = m
		default:
			n, ok := c.nodeIdx[l.Node]
			if !ok {
				continue
			}
			lc.node = n
		}
		if r.j < 0 {
			r.u.locs = append(r.u.locs, lc)
		} else {
			r.u.mem[r.j].mlocs = append(r.u.mem[r.j].mlocs, lc)
		}
	}
	cos := make([]*model.Colocation, len(cfg.Colocations))
	for i := range cfg.Colocations {
		cos[i] = &cfg.Colocations[i]
	}
	slices.SortStableFunc(cos, func(a, b *model.Colocation) int { return cmp.Compare(a.ID, b.ID) })
	for _, co := range cos {
		r, ok1 := c.ref[co.Resource]
		w, ok2 := c.ref[co.With]
		if !ok1 || !ok2 || r.u == w.u || co.Score == 0 {
			continue
		}
		cc := &colocC{id: co.ID, score: co.Score, rsc: r.u, with: w.u}
		r.u.colocs = append(r.u.colocs, cc)
		w.u.next = append(w.u.next, r.u)
		r.u.indeg++
	}
	ords := make([]*model.Order, len(cfg.Orders))
	for i := range cfg.Orders {
		ords[i] = &cfg.Orders[i]
	}
	slices.SortStableFunc(ords, func(a, b *model.Order) int { return cmp.Compare(a.ID, b.ID) })
	for _, o := range ords {
		f, ok1 := c.ref[o.First]
		t, ok2 := c.ref[o.Then]
		if !ok1 || !ok2 || f.u == t.u {
			continue
		}
		oc := &ordC{id: o.ID, first: f.u, then: t.u, fm: f.j, tm: t.j, mandatory: o.IsMandatory(),
			symmetric: o.IsSymmetrical(), text: "order " + o.First + " then " + o.Then, firstName: o.First}
		oc.interleave = f.u.kind == kindClone && t.u.kind == kindClone
		c.orders = append(c.orders, oc)
		f.u.ordOut = append(f.u.ordOut, oc)
		t.u.ordIn = append(t.u.ordIn, oc)
		if oc.mandatory {
			f.u.next = append(f.u.next, t.u)
			t.u.indeg++
		}
	}
}

func ruleKey(r *model.Rule) string {
	var b strings.Builder
	if r.Or {
		b.WriteString("or")
	}
	for _, e := range r.Expressions {
		b.WriteByte(0)
		b.WriteString(e.Attribute)
		b.WriteByte(1)
		b.WriteString(e.Op)
		b.WriteByte(1)
		b.WriteString(e.Value)
	}
	return b.String()
}

func evalRule(nd *node, r *model.Rule) bool {
	if len(r.Expressions) == 0 {
		return false
	}
	for _, e := range r.Expressions {
		ok := evalExpr(nd, e)
		if r.Or && ok {
			return true
		}
		if !r.Or && !ok {
			return false
		}
	}
	return !r.Or
}

// evalExpr compares a node attribute: numerically when both sides are
// integers, as text otherwise. An undefined attribute matches only ne and
// not_defined.
func evalExpr(nd *node, e model.Expression) bool {
	var v string
	var ok bool
	if e.Attribute == "#uname" {
		v, ok = nd.name, true
	} else {
		v, ok = nd.attrs[e.Attribute]
	}
	switch e.Op {
	case "defined":
		return ok
	case "not_defined":
		return !ok
	}
	if !ok {
		return e.Op == "ne"
	}
	var c int
	a, errA := strconv.ParseInt(v, 10, 64)
	b, errB := strconv.ParseInt(e.Value, 10, 64)
	if errA == nil && errB == nil {
		c = cmp.Compare(a, b)
	} else {
		c = strings.Compare(v, e.Value)
	}
	switch e.Op {
	case "eq":
		return c == 0
	case "ne":
		return c != 0
	case "lt":
		return c < 0
	case "lte":
		return c <= 0
	case "gt":
		return c > 0
	case "gte":
		return c >= 0
	}
	return false
}

// cloneIndexes returns the instance numbers recorded or pending for clone
// id (from "id:3" and "id:3/member").
func (c *ctx) cloneIndexes(id string) []int {
	prefix := id + ":"
	var out []int
	add := func(s string) {
		rest, ok := strings.CutPrefix(s, prefix)
		if !ok {
			return
		}
		if k := strings.IndexByte(rest, '/'); k >= 0 {
			rest = rest[:k]
		}
		if n, err := strconv.Atoi(rest); err == nil && n >= 0 && strconv.Itoa(n) == rest {
			out = append(out, n)
		}
	}
	// Records are sorted by resource id: binary search the prefix.
	i, _ := slices.BinarySearchFunc(c.recs, prefix, func(r *model.ResourceRecord, p string) int { return cmp.Compare(r.Resource, p) })
	for ; i < len(c.recs) && strings.HasPrefix(c.recs[i].Resource, prefix); i++ {
		add(c.recs[i].Resource)
	}
	for _, p := range c.s.Pending {
		add(p.Resource)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (c *ctx) buildInstances() {
	// Instance numbers per clone first, to size the slabs exactly.
	idxs := make(map[*unit][]int)
	ni, nm := 0, 0
	for _, u := range c.units {
		k := 1
		if u.kind == kindClone {
			u.want = u.clone.Max
			if u.want == 0 {
				u.want = len(c.elig)
			}
			idx := c.cloneIndexes(u.id)
			for i := 0; i < u.want; i++ {
				idx = append(idx, i)
			}
			slices.Sort(idx)
			idx = slices.Compact(idx)
			idxs[u] = idx
			k = len(idx)
		}
		ni += k
		nm += k * len(u.res)
	}
	c.uslab = make([]uinst, ni)
	c.mslab = make([]minst, nm)
	for _, u := range c.units {
		switch u.kind {
		case kindPrimitive, kindGroup:
			c.newInst(u, u.id, 0)
		case kindClone:
			for _, n := range idxs[u] {
				c.newInst(u, u.id+":"+strconv.Itoa(n), n)
			}
			// Keep the instances that cannot or need not move: frozen
			// first, then those running on an eligible node, then by
			// number. The rest beyond the wanted count stop.
			rank := func(ui *uinst) int {
				switch {
				case ui.frozen != frNone:
					return 0
				case ui.runsOnEligible(c):
					return 1
				}
				return 2
			}
			slices.SortStableFunc(u.insts, func(a, b *uinst) int { return cmp.Compare(rank(a), rank(b)) })
			kept := 0
			for _, ui := range u.insts {
				if ui.frozen != frNone {
					// A frozen instance may be running: it counts against
					// clone-max. With one per eligible node, only one on an
					// eligible node takes a slot.
					if u.clone.Max > 0 || (ui.frozenAt >= 0 && c.nodes[ui.frozenAt].eligible) {
						kept++
					}
					continue
				}
				if kept >= u.want {
					ui.extra = true
					continue
				}
				kept++
			}
		}
	}
	// Orphans: records of instances no longer configured.
	for i := 0; i < len(c.recs); {
		id := c.recs[i].Resource
		j := i + 1
		for j < len(c.recs) && c.recs[j].Resource == id {
			j++
		}
		if c.insts[id] == nil {
			c.orphan(id, c.recs[i:j])
		}
		i = j
	}
}

func (ui *uinst) runsOnEligible(c *ctx) bool {
	for _, mi := range ui.members {
		for _, n := range mi.active {
			if c.nodes[n].eligible {
				return true
			}
		}
	}
	return false
}

func (c *ctx) newInst(u *unit, id string, n int) *uinst {
	ui := &c.uslab[0]
	c.uslab = c.uslab[1:]
	*ui = uinst{u: u, id: id, n: n, target: -1, frozenAt: -1, resNode: -1}
	ms := c.mslab[:len(u.res):len(u.res)]
	c.mslab = c.mslab[len(u.res):]
	ui.members = make([]*minst, 0, len(u.res))
	for j, r := range u.res {
		mid := id
		switch {
		case u.kind == kindGroup:
			mid = r.ID
		case u.kind == kindClone && u.group != nil:
			// Each member of a cloned group is "<member>:<n>": one id
			// form for executor, controller and agents (no '/', which
			// would break store keys and OCF state file names).
			mid = r.ID + ":" + strconv.Itoa(n)
		}
		mi := &ms[j]
		*mi = minst{id: mid, ui: ui, j: j, target: -1}
		c.insts[mid] = mi
		c.status(u, mi)
		ui.members = append(ui.members, mi)
	}
	u.insts = append(u.insts, ui)
	c.freeze(ui)
	// stickiness: members started (or failed) on a node
	for j, mi := range ui.members {
		for _, n := range mi.active {
			k := slices.IndexFunc(ui.sticky, func(s stickC) bool { return s.node == n })
			if k < 0 {
				ui.sticky = append(ui.sticky, stickC{node: n})
				k = len(ui.sticky) - 1
			}
			ui.sticky[k].score = ui.sticky[k].score.Add(u.mem[j].stick)
		}
	}
	return ui
}

// status derives one member instance's state from its records.
func (c *ctx) status(u *unit, mi *minst) {
	for _, r := range c.recIdx[mi.id] {
		n, ok := c.nodeIdx[r.Node]
		if !ok {
			continue
		}
		nd := c.nodes[n]
		if nd.state == model.NodeOffline {
			if r.State == model.StateStarted || r.State == model.StateFailed || r.State == model.StateMigrating {
				mi.gone = appendNode(mi.gone, n) // for the reasons only
			}
			continue // proven down or left cleanly: nothing runs there
		}
		live := r.State == model.StateStarted || r.State == model.StateFailed || r.State == model.StateStopFailed || r.State == model.StateMigrating
		if nd.state == model.NodeLost {
			if live {
				mi.unknown = appendNode(mi.unknown, n)
			}
			continue
		}
		switch r.State {
		case model.StateStarted:
			mi.active = appendNode(mi.active, n)
		case model.StateFailed, model.StateMigrating:
			// A live migration's prepared target is not a running copy,
			// but the controller holds the instance out of the plan while
			// the migration runs (a pending migrate); one left over after
			// it may hold part of the instance: stopped like a failure.
			mi.active = appendNode(mi.active, n)
			mi.failed = appendNode(mi.failed, n)
		case model.StateStopFailed:
			mi.stopFailed = appendNode(mi.stopFailed, n)
		}
		cnt := r.FailCount
		if ft := u.mem[mi.j].ftimeout; ft > 0 && !r.LastFailure.IsZero() && c.s.Now.Sub(r.LastFailure) > ft {
			cnt = 0
		}
		if cnt > 0 {
			mi.failInfo = append(mi.failInfo, failC{n, cnt})
			if th := u.mem[mi.j].thresh; th > 0 && cnt >= th {
				mi.bans = append(mi.bans, banC{n, "fail count " + strconv.FormatInt(cnt, 10) + " ≥ migration-threshold " + strconv.FormatInt(th, 10)})
			}
		}
		if r.LastOp != "" {
			if mi.lastOp == nil {
				mi.lastOp = map[int]string{}
			}
			mi.lastOp[n] = r.LastOp
		}
	}
	mi.pending = c.pend[mi.id]
}

func appendNode(s []int, n int) []int {
	if slices.Contains(s, n) {
		return s
	}
	s = append(s, n)
	slices.Sort(s)
	return s
}

func (mi *minst) failCount(n int) int64 {
	for _, f := range mi.failInfo {
		if f.node == n {
			return f.count
		}
	}
	return 0
}

// freeze decides whether an instance is left exactly as it is, and
// records what blocks it.
func (c *ctx) freeze(ui *uinst) {
	u := ui.u
	set := func(kind, at int, why string) {
		if ui.frozen == frNone {
			ui.frozen, ui.frozenAt, ui.frozenW = kind, at, why
		}
	}
	firstActive := func() int {
		for _, mi := range ui.members {
			if len(mi.active) > 0 {
				return mi.active[0]
			}
		}
		return -1
	}
	if c.maintMode {
		set(frMaintMode, firstActive(), "cluster is in maintenance mode")
		return
	}
	if !u.managed {
		set(frUnmanaged, firstActive(), "unmanaged")
		return
	}
	for _, mi := range ui.members {
		for _, n := range slices.Concat(mi.active, mi.stopFailed) {
			if c.nodes[n].maint {
				set(frNodeMaint, n, "node "+c.nodes[n].name+" is in maintenance: left as it is")
			}
		}
		for _, p := range mi.pending {
			if n, ok := c.nodeIdx[p.Node]; ok && c.nodes[n].maint {
				set(frNodeMaint, n, "node "+c.nodes[n].name+" is in maintenance: left as it is")
			}
		}
	}
	if ui.frozen != frNone {
		return
	}
	for _, mi := range ui.members {
		for _, n := range mi.unknown {
			nm := c.nodes[n].name
			why := "unknown on " + nm + " (waiting for fencing)"
			set(frUnknown, n, why)
			c.blocked = append(c.blocked, Blocked{mi.id, why})
			c.fence[n] = append(c.fence[n], mi.id+" unknown")
		}
	}
	for _, mi := range ui.members {
		for _, n := range mi.stopFailed {
			nm := c.nodes[n].name
			why := "stop failed on " + nm + ": needs fencing or cleanup"
			set(frStopFail, n, why)
			c.blocked = append(c.blocked, Blocked{mi.id, why})
			c.fence[n] = append(c.fence[n], "stop of "+mi.id+" failed")
		}
	}
	if ui.frozen != frNone {
		return
	}
	for _, mi := range ui.members {
		for _, p := range mi.pending {
			n := -1
			if k, ok := c.nodeIdx[p.Node]; ok {
				n = k
			}
			why := "in motion (" + p.Action + " pending on " + p.Node + ")"
			set(frPending, n, why)
			c.blocked = append(c.blocked, Blocked{mi.id, why})
		}
	}
	if ui.frozen != frNone {
		return
	}
	for _, mi := range ui.members {
		for _, n := range mi.active {
			if c.nodes[n].state == model.NodePending {
				why := "active on " + c.nodes[n].name + ", which is still probing"
				set(frProbing, n, why)
				c.blocked = append(c.blocked, Blocked{mi.id, why})
			}
		}
	}
}

// orphan handles records of an instance that is no longer configured: it
// is stopped wherever it is active (unless that node is lost, in
// maintenance, or the instance is in motion).
func (c *ctx) orphan(id string, recs []*model.ResourceRecord) {
	var cur []string
	pl := Placement{Resource: id, Reason: id + " is not in the configuration: stopped"}
	if c.maintMode {
		pl.Reason = id + " is not in the configuration; cluster is in maintenance mode"
	}
	inMotion := len(c.pend[id]) > 0
	for _, r := range recs {
		n, ok := c.nodeIdx[r.Node]
		if !ok {
			continue
		}
		nd := c.nodes[n]
		live := r.State == model.StateStarted || r.State == model.StateFailed || r.State == model.StateStopFailed || r.State == model.StateMigrating
		if !live || nd.state == model.NodeOffline {
			continue
		}
		cur = append(cur, nd.name)
		if c.maintMode {
			continue
		}
		switch {
		case nd.state == model.NodeLost:
			c.blocked = append(c.blocked, Blocked{id, "unknown on " + nd.name + " (waiting for fencing)"})
			c.fence[n] = append(c.fence[n], id+" unknown")
		case nd.maint:
		case r.State == model.StateStopFailed:
			c.blocked = append(c.blocked, Blocked{id, "stop failed on " + nd.name + ": needs fencing or cleanup"})
			c.fence[n] = append(c.fence[n], "stop of "+id+" failed")
		case inMotion:
		default:
			c.addAct(&act{kind: KindStop, orphan: id, node: n, from: -1, reason: "not in the configuration"})
		}
	}
	if len(cur) == 0 && !inMotion {
		return
	}
	if inMotion {
		c.blocked = append(c.blocked, Blocked{id, "in motion (not in the configuration)"})
	}
	pl.Current = cur
	c.orphans = append(c.orphans, pl)
}
