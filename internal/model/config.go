package model

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Kinds of placeable items: what constraints may name.
const (
	KindResource = "resource"
	KindGroup    = "group"
	KindClone    = "clone"
)

// Kind returns what id names in c ("" if nothing).
func (c *Config) Kind(id string) string {
	for _, r := range c.Resources {
		if r.ID == id {
			return KindResource
		}
	}
	for _, g := range c.Groups {
		if g.ID == id {
			return KindGroup
		}
	}
	for _, cl := range c.Clones {
		if cl.ID == id {
			return KindClone
		}
	}
	return ""
}

// Resource returns the resource with that id.
func (c *Config) Resource(id string) (Resource, bool) {
	for _, r := range c.Resources {
		if r.ID == id {
			return r, true
		}
	}
	return Resource{}, false
}

// NodeConfig returns the per-node configuration of name (zero if unset).
func (c *Config) NodeConfig(name string) NodeConfig {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return NodeConfig{Name: name}
}

// Validate checks the whole configuration: ids, references, and
// constraints that cannot all hold. nodes are the cluster's node names
// (constraints and node settings must name one of them). It changes nothing;
// a configuration that fails is refused whole.
func (c *Config) Validate(nodes []string) error {
	ids := map[string]string{}
	claim := func(kind, id string) error {
		if err := ValidID(id); err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		if other, ok := ids[id]; ok {
			return fmt.Errorf("%s %s: id already used by a %s", kind, id, other)
		}
		ids[id] = kind
		return nil
	}
	for _, r := range c.Resources {
		if err := r.Validate(); err != nil {
			return err
		}
		if err := claim(KindResource, r.ID); err != nil {
			return err
		}
	}
	inGroup := map[string]string{}
	for _, g := range c.Groups {
		if err := claim(KindGroup, g.ID); err != nil {
			return err
		}
		if len(g.Resources) == 0 {
			return fmt.Errorf("group %s: has no resources", g.ID)
		}
		if err := validateMeta("group "+g.ID, g.Meta); err != nil {
			return err
		}
		for _, m := range g.Resources {
			if c.Kind(m) != KindResource {
				return fmt.Errorf("group %s: %q is not a resource", g.ID, m)
			}
			if other, ok := inGroup[m]; ok {
				return fmt.Errorf("group %s: resource %s is already in group %s", g.ID, m, other)
			}
			inGroup[m] = g.ID
		}
	}
	cloned := map[string]string{}
	for _, cl := range c.Clones {
		if err := claim(KindClone, cl.ID); err != nil {
			return err
		}
		switch c.Kind(cl.Of) {
		case KindResource:
			if g, ok := inGroup[cl.Of]; ok {
				return fmt.Errorf("clone %s: resource %s is in group %s: clone the group instead", cl.ID, cl.Of, g)
			}
		case KindGroup:
		default:
			return fmt.Errorf("clone %s: %q is not a resource or group", cl.ID, cl.Of)
		}
		if other, ok := cloned[cl.Of]; ok {
			return fmt.Errorf("clone %s: %s is already cloned by %s", cl.ID, cl.Of, other)
		}
		cloned[cl.Of] = cl.ID
		if cl.Max < 0 {
			return fmt.Errorf("clone %s: max must not be negative", cl.ID)
		}
		if err := validateMeta("clone "+cl.ID, cl.Meta); err != nil {
			return err
		}
	}
	known := func(n string) bool { return slices.Contains(nodes, n) }
	ref := func(owner, id string) error {
		if c.Kind(id) == "" {
			return fmt.Errorf("%s: no resource, group or clone named %q", owner, id)
		}
		return nil
	}
	cids := map[string]bool{}
	cid := func(kind, id string) error {
		if err := ValidID(id); err != nil {
			return fmt.Errorf("%s constraint: %w", kind, err)
		}
		if cids[id] {
			return fmt.Errorf("%s constraint %s: id used twice", kind, id)
		}
		cids[id] = true
		return nil
	}
	absolute := map[string]Score{} // resource|node → the absolute location score seen
	for _, l := range c.Locations {
		owner := "location " + l.ID
		if err := cid("location", l.ID); err != nil {
			return err
		}
		if err := ref(owner, l.Resource); err != nil {
			return err
		}
		switch {
		case l.Node != "" && l.Rule != nil:
			return fmt.Errorf("%s: give a node or a rule, not both", owner)
		case l.Node == "" && l.Rule == nil:
			return fmt.Errorf("%s: give a node or a rule", owner)
		case l.Node != "" && !known(l.Node):
			return fmt.Errorf("%s: unknown node %q", owner, l.Node)
		case l.Rule != nil:
			if err := l.Rule.validate(owner); err != nil {
				return err
			}
		}
		if l.Node != "" && (l.Score >= Infinity || l.Score <= -Infinity) {
			key := l.Resource + "|" + l.Node
			if prev, ok := absolute[key]; ok && prev != l.Score {
				return fmt.Errorf("%s: contradicts another location constraint: %s must both run and never run on %s", owner, l.Resource, l.Node)
			}
			absolute[key] = l.Score
		}
	}
	pairs := map[[2]string]Score{}
	for _, co := range c.Colocations {
		owner := "colocation " + co.ID
		if err := cid("colocation", co.ID); err != nil {
			return err
		}
		if err := ref(owner, co.Resource); err != nil {
			return err
		}
		if err := ref(owner, co.With); err != nil {
			return err
		}
		if co.Resource == co.With {
			return fmt.Errorf("%s: a resource cannot be colocated with itself", owner)
		}
		key := [2]string{min(co.Resource, co.With), max(co.Resource, co.With)}
		if prev, ok := pairs[key]; ok && (prev >= Infinity && co.Score <= -Infinity || prev <= -Infinity && co.Score >= Infinity) {
			return fmt.Errorf("%s: contradicts another colocation: %s and %s must both be together and apart", owner, co.Resource, co.With)
		}
		pairs[key] = co.Score
	}
	for _, o := range c.Orders {
		owner := "order " + o.ID
		if err := cid("order", o.ID); err != nil {
			return err
		}
		if err := ref(owner, o.First); err != nil {
			return err
		}
		if err := ref(owner, o.Then); err != nil {
			return err
		}
		if o.First == o.Then {
			return fmt.Errorf("%s: a resource cannot be ordered after itself", owner)
		}
		if o.Kind != "" && o.Kind != OrderMandatory && o.Kind != OrderOptional {
			return fmt.Errorf("%s: kind %q: want Mandatory or Optional", owner, o.Kind)
		}
	}
	if loop := c.orderLoop(); loop != nil {
		return fmt.Errorf("order constraints form a loop: %s", strings.Join(loop, " → "))
	}
	if loop := c.colocationLoop(); loop != nil {
		return fmt.Errorf("colocation constraints form a loop: %s", strings.Join(loop, " → "))
	}
	seenNode := map[string]bool{}
	for _, n := range c.Nodes {
		if !known(n.Name) {
			return fmt.Errorf("node settings: unknown node %q", n.Name)
		}
		if seenNode[n.Name] {
			return fmt.Errorf("node settings: %s given twice", n.Name)
		}
		seenNode[n.Name] = true
		for k, v := range n.Utilization {
			if v < 0 {
				return fmt.Errorf("node %s: capacity %s must not be negative", n.Name, k)
			}
		}
	}
	for k, v := range c.Properties {
		if err := ValidateProperty(k, v); err != nil {
			return err
		}
	}
	dsNames, dsPaths := map[string]bool{}, map[string]string{}
	for _, d := range c.Datastores {
		if err := d.Validate(); err != nil {
			return err
		}
		if dsNames[d.Name] {
			return fmt.Errorf("datastore %s: given twice", d.Name)
		}
		dsNames[d.Name] = true
		// Two names for one folder would give two disk leases for one
		// disk: the lease would guard nothing.
		if other, ok := dsPaths[d.Path]; ok {
			return fmt.Errorf("datastore %s: path %s is datastore %s already", d.Name, d.Path, other)
		}
		dsPaths[d.Path] = d.Name
	}
	return nil
}

func (r *Rule) validate(owner string) error {
	if len(r.Expressions) == 0 {
		return fmt.Errorf("%s: rule has no expressions", owner)
	}
	for _, e := range r.Expressions {
		if e.Attribute == "" {
			return fmt.Errorf("%s: rule expression without an attribute", owner)
		}
		switch e.Op {
		case "eq", "ne", "lt", "lte", "gt", "gte":
		case "defined", "not_defined":
			if e.Value != "" {
				return fmt.Errorf("%s: %s takes no value", owner, e.Op)
			}
		default:
			return fmt.Errorf("%s: rule operator %q: want eq, ne, lt, lte, gt, gte, defined or not_defined", owner, e.Op)
		}
	}
	return nil
}

// orderLoop returns a cycle among mandatory orders (including the implicit
// order inside groups), or nil.
func (c *Config) orderLoop() []string {
	edges := map[string][]string{}
	for _, o := range c.Orders {
		if o.IsMandatory() {
			edges[o.First] = append(edges[o.First], o.Then)
		}
	}
	for _, g := range c.Groups {
		for i := 1; i < len(g.Resources); i++ {
			edges[g.Resources[i-1]] = append(edges[g.Resources[i-1]], g.Resources[i])
		}
	}
	return findCycle(edges)
}

// colocationLoop returns a cycle among colocations, or nil: "A with B" and
// "B with A" leave no item to place first.
func (c *Config) colocationLoop() []string {
	edges := map[string][]string{}
	for _, co := range c.Colocations {
		edges[co.Resource] = append(edges[co.Resource], co.With)
	}
	return findCycle(edges)
}

// findCycle does a depth-first search in sorted order (deterministic
// messages) and returns the first cycle found.
func findCycle(edges map[string][]string) []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var cycle []string
	var visit func(n string) bool
	visit = func(n string) bool {
		color[n] = grey
		stack = append(stack, n)
		next := slices.Clone(edges[n])
		sort.Strings(next)
		for _, m := range next {
			switch color[m] {
			case grey:
				i := slices.Index(stack, m)
				cycle = append(slices.Clone(stack[i:]), m)
				return true
			case white:
				if visit(m) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return false
	}
	keys := make([]string, 0, len(edges))
	for k := range edges {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if color[k] == white && visit(k) {
			return cycle
		}
	}
	return nil
}
