package agent

// The resource manager's API: resources, groups, clones, constraints, node
// settings, the configuration as a document, status, explain, simulate and
// fence confirm.
//
// Every configuration change goes through changeConfig: read the
// configuration, the epoch and the members in one store Read, apply a
// mutation to a copy, validate the whole result (model.Config.Validate, then
// the agents' meta-data for new or changed resources), turn the difference
// into store operations (clusterstate.ConfigOps) and commit them as one
// transaction guarded by the epoch that was validated. A refused change
// writes nothing, so the epoch stays.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// Operator requests to one node's executor live in clusterstate
// (PrefixRestart, PrefixCleanup); their value is a requestRecord.

// requestRecord is the value of a restart or cleanup request.
type requestRecord struct {
	V  int       `json:"v"`
	By string    `json:"by"` // the node whose API took the request
	At time.Time `json:"at"`
}

// Prefixes of the location constraints that move, ban and clear manage.
const (
	cliPrefer = "cli-prefer-"
	cliBan    = "cli-ban-"
)

func preferID(id string) string    { return cliPrefer + id }
func banID(id, node string) string { return cliBan + id + "-on-" + node }

// configRetries bounds the retries of a change that lost a race with
// another change (the epoch moved between read and commit).
const configRetries = 3

// metadataTimeout bounds reading an agent's meta-data.
const metadataTimeout = 10 * time.Second

func badRequest(format string, args ...any) error {
	return api.Errorf(api.CodeBadRequest, format, args...)
}

func notFound(format string, args ...any) error {
	return api.Errorf(api.CodeNotFound, format, args...)
}

// asAPIError keeps an *api.Error and turns anything else into a bad request
// (mutations and validation report the caller's mistakes).
func asAPIError(err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return err
	}
	return badRequest("%v", err)
}

// mutation changes a copy of the configuration. v is the state it was read
// from (for checks against records and tasks); extra are status operations
// to commit in the same transaction.
type mutation func(c *model.Config, v *controller.View) (extra []store.Op, err error)

// prepared is a validated change, ready to commit.
type prepared struct {
	view  controller.View
	epoch uint64
	next  model.Config
	ops   []store.Op
}

// prepare reads the state, applies m to a copy of the configuration and
// validates the result whole. It writes nothing.
func (a *Agent) prepare(ctx context.Context, m mutation) (prepared, error) {
	var p prepared
	var err error
	a.node.Read(func(s *store.State) {
		p.view, err = controller.ReadView(s)
		p.epoch = s.Epoch()
	})
	if err != nil {
		return p, fmt.Errorf("read configuration: %w", err)
	}
	p.next = cloneConfig(p.view.Config)
	extra, err := m(&p.next, &p.view)
	if err != nil {
		return p, asAPIError(err)
	}
	if err := p.next.Validate(p.view.NodeNames()); err != nil {
		return p, badRequest("refused: %v", err)
	}
	if err := checkDatastoreChanges(p.view.Config, p.next, p.view.Records); err != nil {
		return p, err
	}
	if err := a.validateAgents(ctx, p.view.Config, p.next); err != nil {
		return p, err
	}
	p.ops = append(clusterstate.ConfigOps(p.view.Config, p.next), extra...)
	return p, nil
}

// changeConfig applies m and commits the result guarded by the epoch it was
// validated against, retrying when another change won the race.
func (a *Agent) changeConfig(ctx context.Context, m mutation) (api.WriteResult, error) {
	for attempt := 0; ; attempt++ {
		p, err := a.prepare(ctx, m)
		if err != nil {
			return api.WriteResult{}, err
		}
		if len(p.ops) == 0 {
			return api.WriteResult{Epoch: p.epoch, Unchanged: true}, nil
		}
		res, err := a.write(ctx, store.Txn{Ops: p.ops, IfEpoch: p.epoch})
		// For a Txn the only conflict is an epoch mismatch: someone else
		// changed the configuration since we read it. Validate again.
		if api.IsCode(err, api.CodeConflict) && attempt < configRetries {
			continue
		}
		if err == nil {
			res.Changes = diffLines(p.view.Config, p.ops)
		}
		return res, err
	}
}

// validateAgents checks the agent and parameters of every resource that is
// new or whose agent or parameters changed, with the agent's meta-data:
// an unknown agent, a missing required or an unknown parameter is refused.
func (a *Agent) validateAgents(ctx context.Context, old, next model.Config) error {
	// A VM is checked against the datastores of the configuration it will
	// run in, which may declare its datastore in the same change.
	ctx = agents.WithDatastores(ctx, datastoreLookupIn(next.Datastores))
	for _, r := range next.Resources {
		if o, ok := old.Resource(r.ID); ok && o.Agent == r.Agent && mapsEqual(o.Params, r.Params) {
			continue
		}
		if err := a.validateAgent(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) validateAgent(ctx context.Context, r model.Resource) error {
	if a.agents == nil {
		// Not wired (a test): the spec's form was checked by Validate.
		return nil
	}
	ag, err := a.agents.Get(r.Agent)
	if err != nil {
		return badRequest("resource %s: %v", r.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	md, err := ag.Metadata(ctx)
	if err != nil {
		return badRequest("resource %s: cannot read the meta-data of %s on %s: %v", r.ID, r.Agent, a.cfg.Node, err)
	}
	if err := md.Validate(r.Params); err != nil {
		return badRequest("resource %s: %v", r.ID, err)
	}
	// Agents that know more than their meta-data says (vigil:ip parses
	// the address and looks up the interface on this node) check it now,
	// so a bad address is refused here rather than failing every start.
	if pv, ok := ag.(agents.ParamValidator); ok {
		if err := pv.ValidateParams(ctx, r.Params); err != nil {
			return badRequest("resource %s: %v (checked on %s)", r.ID, err, a.cfg.Node)
		}
	}
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// cloneConfig deep-copies a configuration.
func cloneConfig(c model.Config) model.Config {
	var out model.Config
	if err := json.Unmarshal(clusterstate.Encode(c), &out); err != nil {
		panic(fmt.Sprintf("agent: copy configuration: %v", err)) // the types round-trip
	}
	return out
}

// --- conversions between the API's and the model's types ---

func toModelOp(o api.Op) (model.Op, error) {
	op := model.Op{Name: o.Name, OnFail: o.OnFail}
	if o.Name == "" {
		return op, errors.New("operation without a name")
	}
	if o.Interval != "" {
		d, err := model.ParseDuration(o.Interval)
		if err != nil {
			return op, fmt.Errorf("operation %s: interval %w", o.Name, err)
		}
		op.Interval = model.Duration(d)
	}
	if o.Timeout != "" {
		d, err := model.ParseDuration(o.Timeout)
		if err != nil {
			return op, fmt.Errorf("operation %s: timeout %w", o.Name, err)
		}
		op.Timeout = model.Duration(d)
	}
	return op, nil
}

func fromModelOp(op model.Op) api.Op {
	o := api.Op{Name: op.Name, OnFail: op.OnFail}
	if op.Interval != 0 {
		o.Interval = op.Interval.String()
	}
	if op.Timeout != 0 {
		o.Timeout = op.Timeout.String()
	}
	return o
}

func fromModelResource(r model.Resource) api.Resource {
	out := api.Resource{ID: r.ID, Agent: r.Agent, Params: r.Params, Meta: r.Meta}
	for _, op := range r.Ops {
		out.Ops = append(out.Ops, fromModelOp(op))
	}
	if len(r.Utilization) > 0 {
		out.Utilization = map[string]string{}
		for k, v := range r.Utilization {
			out.Utilization[k] = strconv.FormatInt(v, 10)
		}
	}
	return out
}

// setStrings applies changes to m: an empty value removes the key.
func setStrings(m map[string]string, changes map[string]string) map[string]string {
	for k, v := range changes {
		if v == "" {
			delete(m, k)
			continue
		}
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// setInts applies changes to m: an empty value removes the key, others must
// be integers.
func setInts(what string, m map[string]int64, changes map[string]string) (map[string]int64, error) {
	for _, k := range sortedKeys(changes) {
		v := changes[k]
		if v == "" {
			delete(m, k)
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s %s=%q: want an integer", what, k, v)
		}
		if m == nil {
			m = map[string]int64{}
		}
		m[k] = n
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// changeResource applies parameter, meta, utilization and operation
// changes. Each op given replaces every op of the same name.
func changeResource(r *model.Resource, params, meta, util map[string]string, ops []api.Op) error {
	r.Params = setStrings(r.Params, params)
	r.Meta = setStrings(r.Meta, meta)
	var err error
	if r.Utilization, err = setInts("resource "+r.ID+": utilization", r.Utilization, util); err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	var add []model.Op
	names := map[string]bool{}
	for _, o := range ops {
		op, err := toModelOp(o)
		if err != nil {
			return fmt.Errorf("resource %s: %w", r.ID, err)
		}
		add = append(add, op)
		names[op.Name] = true
	}
	r.Ops = slices.DeleteFunc(r.Ops, func(op model.Op) bool { return names[op.Name] })
	r.Ops = append(r.Ops, add...)
	return nil
}

// --- mutations: pure functions on a configuration ---

// createResource adds a resource (to a group, when asked).
func createResource(c *model.Config, req api.CreateResourceRequest) error {
	in := req.Resource
	if err := model.ValidID(in.ID); err != nil {
		return badRequest("resource: %v", err)
	}
	if k := c.Kind(in.ID); k != "" {
		return api.Errorf(api.CodeConflict, "resource %s: the id is already used by a %s", in.ID, k)
	}
	if in.Agent == "" {
		return badRequest("resource %s: no agent given", in.ID)
	}
	r := model.Resource{ID: in.ID, Agent: in.Agent}
	if err := changeResource(&r, in.Params, in.Meta, in.Utilization, in.Ops); err != nil {
		return err
	}
	if req.Disabled {
		r.Meta = setStrings(r.Meta, map[string]string{model.MetaTargetRole: model.RoleStopped})
	}
	c.Resources = append(c.Resources, r)
	if req.Group != "" {
		return addToGroup(c, req.Group, []string{in.ID})
	}
	return nil
}

// updateResource changes a resource. A group or clone takes meta
// attributes only (so enable and disable work on them too).
func updateResource(c *model.Config, id string, req api.UpdateResourceRequest) error {
	switch c.Kind(id) {
	case model.KindResource:
		i := slices.IndexFunc(c.Resources, func(r model.Resource) bool { return r.ID == id })
		return changeResource(&c.Resources[i], req.Params, req.Meta, req.Utilization, req.Ops)
	case model.KindGroup, model.KindClone:
		if len(req.Params)+len(req.Utilization)+len(req.Ops) > 0 {
			return badRequest("%s is a %s: only meta attributes can be set on it; update its resources for the rest", id, c.Kind(id))
		}
		for i := range c.Groups {
			if c.Groups[i].ID == id {
				c.Groups[i].Meta = setStrings(c.Groups[i].Meta, req.Meta)
			}
		}
		for i := range c.Clones {
			if c.Clones[i].ID == id {
				c.Clones[i].Meta = setStrings(c.Clones[i].Meta, req.Meta)
			}
		}
		return nil
	}
	return notFound("no resource, group or clone named %q", id)
}

// groupOf returns the group holding resource id, or "".
func groupOf(c *model.Config, id string) string {
	for _, g := range c.Groups {
		if slices.Contains(g.Resources, id) {
			return g.ID
		}
	}
	return ""
}

// cloneOf returns the clone of resource id (directly or through its
// group), or "".
func cloneOf(c *model.Config, id string) string {
	g := groupOf(c, id)
	for _, cl := range c.Clones {
		if cl.Of == id || (g != "" && cl.Of == g) {
			return cl.ID
		}
	}
	return ""
}

// members expands a resource, group or clone id into resource ids.
func members(c *model.Config, id string) []string {
	switch c.Kind(id) {
	case model.KindResource:
		return []string{id}
	case model.KindGroup:
		for _, g := range c.Groups {
			if g.ID == id {
				return slices.Clone(g.Resources)
			}
		}
	case model.KindClone:
		for _, cl := range c.Clones {
			if cl.ID == id {
				return members(c, cl.Of)
			}
		}
	}
	return nil
}

// instanceOf returns the configured resource an instance runs and the
// clone it belongs to. Instance ids: "web" (not cloned), "<clone>:<n>" (a
// cloned resource), "<member>:<n>" or "<clone>:<n>/<member>" (a member of
// a cloned group).
func instanceOf(c *model.Config, inst string) (res, clone string, ok bool) {
	if _, ok := c.Resource(inst); ok {
		return inst, cloneOf(c, inst), true
	}
	base, rest, found := strings.Cut(inst, ":")
	if !found {
		return "", "", false
	}
	n, member, _ := strings.Cut(rest, "/")
	if _, err := strconv.Atoi(n); err != nil {
		return "", "", false
	}
	if member != "" {
		return member, base, c.Kind(member) == model.KindResource
	}
	for _, cl := range c.Clones {
		if cl.ID == base && c.Kind(cl.Of) == model.KindResource {
			return cl.Of, cl.ID, true
		}
	}
	if c.Kind(base) == model.KindResource {
		return base, cloneOf(c, base), true
	}
	return "", "", false
}

// effectiveRole is the target role that applies to a resource: its own
// meta attribute, else its group's, else its clone's. Stopped anywhere wins.
func effectiveRole(c *model.Config, id string) string {
	r, _ := c.Resource(id)
	roles := []string{r.MetaValue(model.MetaTargetRole, "")}
	g := groupOf(c, id)
	for _, gr := range c.Groups {
		if gr.ID == g {
			roles = append(roles, gr.Meta[model.MetaTargetRole])
		}
	}
	if cl := cloneOf(c, id); cl != "" {
		for _, x := range c.Clones {
			if x.ID == cl {
				roles = append(roles, x.Meta[model.MetaTargetRole])
			}
		}
	}
	if slices.Contains(roles, model.RoleStopped) {
		return model.RoleStopped
	}
	return model.RoleStarted
}

// deleteResource removes a resource that is disabled and stopped
// everywhere, with the constraints that name it; it leaves its group (a
// group left empty goes, and its clone). Its (stopped) records are removed
// in the same transaction.
func deleteResource(c *model.Config, v *controller.View, id string) ([]store.Op, error) {
	switch c.Kind(id) {
	case model.KindResource:
	case model.KindGroup:
		return nil, badRequest("%s is a group: delete its resources (the group goes with its last one)", id)
	case model.KindClone:
		return nil, badRequest("%s is a clone: delete the resources it clones (the clone goes with them)", id)
	default:
		return nil, notFound("no resource named %q", id)
	}
	if effectiveRole(c, id) != model.RoleStopped {
		return nil, api.Errorf(api.CodeConflict, "resource %s is enabled: run `vigil resource disable %s` first and wait until it is stopped everywhere (or `vigil resource delete --force %s` to do both)", id, id, id)
	}
	var extra []store.Op
	for _, rec := range v.Records {
		if r, _, ok := instanceOf(c, rec.Resource); !ok || r != id {
			continue
		}
		if rec.State != model.StateStopped {
			return nil, api.Errorf(api.CodeConflict, "resource %s is still %s on %s: wait until it is stopped everywhere (a node that is lost must be proven down first: vigil fence confirm)", id, rec.State, rec.Node)
		}
		extra = append(extra, store.Op{Key: clusterstate.RecordKey(rec.Node, rec.Resource), Delete: true})
	}
	answered := map[string]bool{}
	for _, r := range v.Results {
		answered[r.Node+"/"+r.ID] = true
	}
	for _, t := range v.Tasks {
		if r, _, ok := instanceOf(c, t.Resource); ok && r == id && !answered[t.Node+"/"+t.ID] {
			return nil, api.Errorf(api.CodeConflict, "resource %s has a %s pending on %s: try again when it is done", id, t.Action, t.Node)
		}
	}
	c.Resources = slices.DeleteFunc(c.Resources, func(r model.Resource) bool { return r.ID == id })
	for i := range c.Groups {
		c.Groups[i].Resources = slices.DeleteFunc(c.Groups[i].Resources, func(m string) bool { return m == id })
	}
	prune(c)
	return extra, nil
}

// prune removes what lost its referent: empty groups, clones of nothing,
// and constraints naming an id that no longer exists.
func prune(c *model.Config) {
	c.Groups = slices.DeleteFunc(c.Groups, func(g model.Group) bool { return len(g.Resources) == 0 })
	c.Clones = slices.DeleteFunc(c.Clones, func(cl model.Clone) bool { return c.Kind(cl.Of) == "" })
	gone := func(id string) bool { return c.Kind(id) == "" }
	c.Locations = slices.DeleteFunc(c.Locations, func(l model.Location) bool { return gone(l.Resource) })
	c.Colocations = slices.DeleteFunc(c.Colocations, func(co model.Colocation) bool { return gone(co.Resource) || gone(co.With) })
	c.Orders = slices.DeleteFunc(c.Orders, func(o model.Order) bool { return gone(o.First) || gone(o.Then) })
}

func checkNode(nodes []string, node string) error {
	if !slices.Contains(nodes, node) {
		return notFound("unknown node %q (nodes: %s)", node, strings.Join(nodes, ", "))
	}
	return nil
}

func checkPlaceable(c *model.Config, id string) error {
	if c.Kind(id) == "" {
		return notFound("no resource, group or clone named %q", id)
	}
	return nil
}

// setLocation replaces the location constraint with l's id, or adds l.
func setLocation(c *model.Config, l model.Location) {
	if i := slices.IndexFunc(c.Locations, func(x model.Location) bool { return x.ID == l.ID }); i >= 0 {
		c.Locations[i] = l
		return
	}
	c.Locations = append(c.Locations, l)
}

// moveResource prefers node with +INFINITY (cli-prefer-<id>), replacing an
// earlier move and lifting a ban from that node.
func moveResource(c *model.Config, nodes []string, id, node string) error {
	if err := checkPlaceable(c, id); err != nil {
		return err
	}
	if err := checkNode(nodes, node); err != nil {
		return err
	}
	c.Locations = slices.DeleteFunc(c.Locations, func(l model.Location) bool { return l.ID == banID(id, node) })
	setLocation(c, model.Location{ID: preferID(id), Resource: id, Node: node, Score: model.Infinity})
	return nil
}

// banResource keeps id off node with -INFINITY (cli-ban-<id>-on-<node>),
// dropping a move to that node.
func banResource(c *model.Config, nodes []string, id, node string) error {
	if err := checkPlaceable(c, id); err != nil {
		return err
	}
	if err := checkNode(nodes, node); err != nil {
		return err
	}
	c.Locations = slices.DeleteFunc(c.Locations, func(l model.Location) bool { return l.ID == preferID(id) && l.Node == node })
	setLocation(c, model.Location{ID: banID(id, node), Resource: id, Node: node, Score: -model.Infinity})
	return nil
}

// clearResource removes the move and ban constraints of id.
func clearResource(c *model.Config, id string) error {
	if err := checkPlaceable(c, id); err != nil {
		return err
	}
	c.Locations = slices.DeleteFunc(c.Locations, func(l model.Location) bool {
		return l.Resource == id && (l.ID == preferID(id) || strings.HasPrefix(l.ID, cliBan+id+"-on-"))
	})
	return nil
}

// addToGroup appends resources to a group, creating it; a resource in
// another group leaves that one.
func addToGroup(c *model.Config, gid string, ids []string) error {
	if len(ids) == 0 {
		return badRequest("group %s: name at least one resource", gid)
	}
	switch k := c.Kind(gid); k {
	case "":
		if err := model.ValidID(gid); err != nil {
			return badRequest("group: %v", err)
		}
		c.Groups = append(c.Groups, model.Group{ID: gid})
	case model.KindGroup:
	default:
		return api.Errorf(api.CodeConflict, "%s is a %s, not a group", gid, k)
	}
	gi := slices.IndexFunc(c.Groups, func(g model.Group) bool { return g.ID == gid })
	seen := map[string]bool{}
	for _, id := range ids {
		if c.Kind(id) != model.KindResource {
			if c.Kind(id) == "" {
				return notFound("group %s: no resource named %q", gid, id)
			}
			return badRequest("group %s: %s is a %s; a group holds resources", gid, id, c.Kind(id))
		}
		if seen[id] {
			return badRequest("group %s: %s given twice", gid, id)
		}
		seen[id] = true
		if slices.Contains(c.Groups[gi].Resources, id) {
			return badRequest("group %s: %s is already in it", gid, id)
		}
		for i := range c.Groups {
			c.Groups[i].Resources = slices.DeleteFunc(c.Groups[i].Resources, func(m string) bool { return m == id })
		}
		c.Groups[gi].Resources = append(c.Groups[gi].Resources, id)
	}
	prune(c)
	return nil
}

// cloneResource clones a resource or group.
func cloneResource(c *model.Config, of string, req api.CloneRequest) error {
	switch c.Kind(of) {
	case model.KindResource, model.KindGroup:
	case model.KindClone:
		return badRequest("%s is already a clone", of)
	default:
		return notFound("no resource or group named %q", of)
	}
	id := req.ID
	if id == "" {
		id = of + "-clone"
	}
	if k := c.Kind(id); k != "" {
		return api.Errorf(api.CodeConflict, "clone %s: the id is already used by a %s", id, k)
	}
	c.Clones = append(c.Clones, model.Clone{ID: id, Of: of, Max: req.Max})
	return nil
}

// constraintKind says which kind of constraint has id ("" if none).
func constraintKind(c *model.Config, id string) string {
	switch {
	case slices.ContainsFunc(c.Locations, func(l model.Location) bool { return l.ID == id }):
		return "location"
	case slices.ContainsFunc(c.Colocations, func(l model.Colocation) bool { return l.ID == id }):
		return "colocation"
	case slices.ContainsFunc(c.Orders, func(l model.Order) bool { return l.ID == id }):
		return "order"
	}
	return ""
}

func newConstraintID(c *model.Config, id string) error {
	if err := model.ValidID(id); err != nil {
		return badRequest("constraint: %v", err)
	}
	if k := constraintKind(c, id); k != "" {
		return api.Errorf(api.CodeConflict, "constraint %s: the id is already used by a %s constraint", id, k)
	}
	return nil
}

func parseScore(s string, def model.Score) (model.Score, error) {
	if s == "" {
		return def, nil
	}
	return model.ParseScore(s)
}

func addLocation(c *model.Config, nodes []string, in api.Location) error {
	if err := newConstraintID(c, in.ID); err != nil {
		return err
	}
	if err := checkPlaceable(c, in.Resource); err != nil {
		return err
	}
	if in.Node != "" {
		if err := checkNode(nodes, in.Node); err != nil {
			return err
		}
	}
	score, err := parseScore(in.Score, model.Infinity)
	if err != nil {
		return badRequest("location %s: %v", in.ID, err)
	}
	l := model.Location{ID: in.ID, Resource: in.Resource, Node: in.Node, Score: score}
	if in.Rule != nil {
		l.Rule = &model.Rule{Or: in.Rule.Or}
		for _, e := range in.Rule.Expressions {
			l.Rule.Expressions = append(l.Rule.Expressions, model.Expression(e))
		}
	}
	c.Locations = append(c.Locations, l)
	return nil
}

func addColocation(c *model.Config, in api.Colocation) error {
	if err := newConstraintID(c, in.ID); err != nil {
		return err
	}
	for _, id := range []string{in.Resource, in.With} {
		if err := checkPlaceable(c, id); err != nil {
			return err
		}
	}
	score, err := parseScore(in.Score, model.Infinity)
	if err != nil {
		return badRequest("colocation %s: %v", in.ID, err)
	}
	c.Colocations = append(c.Colocations, model.Colocation{ID: in.ID, Resource: in.Resource, With: in.With, Score: score})
	return nil
}

func addOrder(c *model.Config, in api.Order) error {
	if err := newConstraintID(c, in.ID); err != nil {
		return err
	}
	for _, id := range []string{in.First, in.Then} {
		if err := checkPlaceable(c, id); err != nil {
			return err
		}
	}
	kind := in.Kind
	switch strings.ToLower(kind) {
	case "mandatory":
		kind = model.OrderMandatory
	case "optional":
		kind = model.OrderOptional
	}
	o := model.Order{ID: in.ID, First: in.First, Then: in.Then, Kind: kind}
	if in.Symmetrical != nil && !*in.Symmetrical {
		f := false
		o.Symmetrical = &f
	}
	c.Orders = append(c.Orders, o)
	return nil
}

func removeConstraint(c *model.Config, id string) error {
	if constraintKind(c, id) == "" {
		return notFound("no constraint named %q", id)
	}
	c.Locations = slices.DeleteFunc(c.Locations, func(l model.Location) bool { return l.ID == id })
	c.Colocations = slices.DeleteFunc(c.Colocations, func(l model.Colocation) bool { return l.ID == id })
	c.Orders = slices.DeleteFunc(c.Orders, func(l model.Order) bool { return l.ID == id })
	return nil
}

// updateNode changes a node's settings; settings back to the defaults are
// removed from the configuration.
func updateNode(c *model.Config, nodes []string, name string, req api.NodeUpdate) error {
	if err := checkNode(nodes, name); err != nil {
		return err
	}
	i := slices.IndexFunc(c.Nodes, func(n model.NodeConfig) bool { return n.Name == name })
	if i < 0 {
		c.Nodes = append(c.Nodes, model.NodeConfig{Name: name})
		i = len(c.Nodes) - 1
	}
	n := &c.Nodes[i]
	if req.Standby != nil {
		n.Standby = *req.Standby
	}
	if req.Maintenance != nil {
		n.Maintenance = *req.Maintenance
	}
	n.Attributes = setStrings(n.Attributes, req.Attributes)
	var err error
	if n.Utilization, err = setInts("node "+name+": utilization", n.Utilization, req.Utilization); err != nil {
		return err
	}
	if !n.Standby && !n.Maintenance && n.Attributes == nil && n.Utilization == nil {
		c.Nodes = slices.Delete(c.Nodes, i, i+1)
	}
	return nil
}

// --- the Backend methods ---

func (b backend) CreateResource(ctx context.Context, req api.CreateResourceRequest) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, createResource(c, req)
	})
}

func (b backend) UpdateResource(ctx context.Context, id string, req api.UpdateResourceRequest) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, updateResource(c, id, req)
	})
}

func (b backend) DeleteResource(ctx context.Context, id string) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, v *controller.View) ([]store.Op, error) {
		return deleteResource(c, v, id)
	})
}

func (b backend) MoveResource(ctx context.Context, id, node string) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, v *controller.View) ([]store.Op, error) {
		return nil, moveResource(c, v.NodeNames(), id, node)
	})
}

func (b backend) BanResource(ctx context.Context, id, node string) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, v *controller.View) ([]store.Op, error) {
		return nil, banResource(c, v.NodeNames(), id, node)
	})
}

func (b backend) ClearResource(ctx context.Context, id string) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, clearResource(c, id)
	})
}

func (b backend) AddToGroup(ctx context.Context, group string, req api.GroupRequest) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, addToGroup(c, group, req.Resources)
	})
}

func (b backend) CloneResource(ctx context.Context, of string, req api.CloneRequest) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, cloneResource(c, of, req)
	})
}

func (b backend) AddLocation(ctx context.Context, l api.Location) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, v *controller.View) ([]store.Op, error) {
		return nil, addLocation(c, v.NodeNames(), l)
	})
}

func (b backend) AddColocation(ctx context.Context, co api.Colocation) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, addColocation(c, co)
	})
}

func (b backend) AddOrder(ctx context.Context, o api.Order) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, addOrder(c, o)
	})
}

func (b backend) RemoveConstraint(ctx context.Context, id string) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		return nil, removeConstraint(c, id)
	})
}

func (b backend) UpdateNode(ctx context.Context, name string, req api.NodeUpdate) (api.WriteResult, error) {
	return b.a.changeConfig(ctx, func(c *model.Config, v *controller.View) ([]store.Op, error) {
		return nil, updateNode(c, v.NodeNames(), name, req)
	})
}

func (b backend) Constraints(ctx context.Context) (api.Constraints, error) {
	v, _, err := b.a.readView()
	if err != nil {
		return api.Constraints{}, err
	}
	return constraintsOf(&v.Config, nil), nil
}

// constraintsOf lists the constraints that name one of ids (all when ids
// is nil).
func constraintsOf(c *model.Config, ids []string) api.Constraints {
	out := api.Constraints{Locations: []api.Location{}, Colocations: []api.Colocation{}, Orders: []api.Order{}}
	want := func(xs ...string) bool {
		if ids == nil {
			return true
		}
		for _, x := range xs {
			if slices.Contains(ids, x) {
				return true
			}
		}
		return false
	}
	for _, l := range c.Locations {
		if !want(l.Resource) {
			continue
		}
		al := api.Location{ID: l.ID, Resource: l.Resource, Node: l.Node, Score: l.Score.String()}
		if l.Rule != nil {
			al.Rule = &api.Rule{Or: l.Rule.Or}
			for _, e := range l.Rule.Expressions {
				al.Rule.Expressions = append(al.Rule.Expressions, api.Expression(e))
			}
		}
		out.Locations = append(out.Locations, al)
	}
	for _, co := range c.Colocations {
		if want(co.Resource, co.With) {
			out.Colocations = append(out.Colocations, api.Colocation{ID: co.ID, Resource: co.Resource, With: co.With, Score: co.Score.String()})
		}
	}
	for _, o := range c.Orders {
		if want(o.First, o.Then) {
			kind := o.Kind
			if kind == "" {
				kind = model.OrderMandatory
			}
			out.Orders = append(out.Orders, api.Order{ID: o.ID, First: o.First, Then: o.Then, Kind: kind, Symmetrical: o.Symmetrical})
		}
	}
	return out
}

// readView reads the store's View and epoch.
func (a *Agent) readView() (controller.View, uint64, error) {
	var v controller.View
	var epoch uint64
	var err error
	a.node.Read(func(s *store.State) {
		v, err = controller.ReadView(s)
		epoch = s.Epoch()
	})
	if err != nil {
		return v, 0, fmt.Errorf("read state: %w", err)
	}
	return v, epoch, nil
}

// schedule builds the snapshot the DC would build from v, with this node's
// membership view for liveness, and computes the plan.
func (a *Agent) schedule(v controller.View) (*model.Snapshot, *scheduler.Plan) {
	snap := v.Snapshot(a.alive, time.Now())
	return snap, scheduler.Compute(snap)
}

// resourceView is what the status and list answers are built from.
type resourceView struct {
	v    controller.View
	snap *model.Snapshot
	plan *scheduler.Plan
}

func (a *Agent) resourceView() (resourceView, error) {
	v, _, err := a.readView()
	if err != nil {
		return resourceView{}, err
	}
	snap, plan := a.schedule(v)
	return resourceView{v: v, snap: snap, plan: plan}, nil
}

// addResourceStatus fills the resource part of Status.
func (b backend) addResourceStatus(out *api.Status) {
	rv, err := b.a.resourceView()
	if err != nil {
		out.ResourceError = err.Error()
		return
	}
	out.Resources, out.Failures, out.Blocked, out.Pending = rv.status()
	b.addFenceStatus(out, rv.v)
	for _, f := range rv.plan.Fence {
		out.Warnings = append(out.Warnings, fmt.Sprintf("node %s must be proven down before what it ran is recovered (%s): fencing, or `vigil fence confirm %s` once you know it is off", f.Node, f.Reason, f.Node))
	}
	for _, n := range rv.plan.Notes {
		out.Warnings = append(out.Warnings, n)
	}
	if node, why := controller.StartsHeld(rv.v, rv.snap); node != "" && rv.snap != nil {
		if n, ok := nodeIn(rv.snap, node); ok && n.State == model.NodeLost {
			out.Warnings = append(out.Warnings, fmt.Sprintf("every start is held: %s was %s, so it may run what no record shows: fencing, or `vigil fence confirm %s` once you know it is off", node, why, node))
		}
	}
}

// nodeIn returns the snapshot's entry for a node.
func nodeIn(snap *model.Snapshot, name string) (model.NodeStatus, bool) {
	for _, n := range snap.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return model.NodeStatus{}, false
}

// status turns the view and the plan into crm_mon-style lines: every
// instance where it is active (started, failed, unknown on a lost node,
// starting or stopping), or stopped with the reason.
func (rv resourceView) status() (lines []api.ResourceStatus, failures []api.Record, blocked []api.Blocked, pending []api.PendingTask) {
	c := &rv.v.Config
	nodeState := map[string]string{}
	for _, n := range rv.snap.Nodes {
		nodeState[n.Name] = n.State
	}
	inMotion := map[string]string{} // instance|node → action
	for _, p := range rv.snap.Pending {
		inMotion[p.Resource+"|"+p.Node] = p.Action
	}
	blockedWhy := map[string]string{}
	for _, bl := range rv.plan.Blocked {
		blockedWhy[bl.Resource] = bl.Reason
		blocked = append(blocked, api.Blocked{Instance: bl.Resource, Reason: bl.Reason})
	}
	records := map[string][]model.ResourceRecord{}
	for _, r := range rv.v.Records {
		records[r.Resource] = append(records[r.Resource], r)
		if r.FailCount > 0 || r.State == model.StateFailed || r.State == model.StateStopFailed {
			failures = append(failures, apiRecord(r))
		}
	}
	placed := map[string]scheduler.Placement{}
	var insts []string
	for _, p := range rv.plan.Placements {
		placed[p.Resource] = p
		insts = append(insts, p.Resource)
	}
	// Every configured resource shows, even if the plan has no placement
	// for it (a resource that is not cloned is its own instance).
	for _, r := range c.Resources {
		if cloneOf(c, r.ID) == "" && !slices.Contains(insts, r.ID) {
			insts = append(insts, r.ID)
		}
	}
	// Records of instances no longer configured, still active.
	for inst, recs := range records {
		if _, _, ok := instanceOf(c, inst); !ok && slices.ContainsFunc(recs, func(r model.ResourceRecord) bool { return r.State != model.StateStopped }) {
			insts = append(insts, inst)
		}
	}
	for _, p := range rv.snap.Pending {
		if !slices.Contains(insts, p.Resource) {
			insts = append(insts, p.Resource)
		}
	}
	sort.Strings(insts)
	for _, inst := range insts {
		rid, clone, known := instanceOf(c, inst)
		r, _ := c.Resource(rid)
		base := api.ResourceStatus{Instance: inst, Resource: rid, Agent: r.Agent, Group: groupOf(c, rid), Clone: clone}
		var note []string
		if !known {
			base.Resource = inst
			note = append(note, "orphan: no longer configured")
		} else {
			if effectiveRole(c, rid) == model.RoleStopped {
				note = append(note, "disabled")
			}
			if !r.Managed() {
				note = append(note, "unmanaged")
			}
		}
		var out []api.ResourceStatus
		seen := map[string]bool{}
		for _, rec := range records[inst] {
			st, why := rec.State, note
			act, moving := inMotion[inst+"|"+rec.Node]
			switch {
			case rec.State == model.StateStopped && !moving:
				continue
			case nodeState[rec.Node] == model.NodeLost:
				st, why = model.StateUnknown, append(slices.Clone(why), "waiting for fencing")
			case moving:
				st = motionState(act, rec.State)
			case rec.State == model.StateStopFailed:
				why = append(slices.Clone(why), "stop failed: blocked until the node is fenced or the resource cleaned up")
			}
			seen[rec.Node] = true
			l := base
			l.State, l.Node, l.Note = st, rec.Node, strings.Join(why, "; ")
			out = append(out, l)
		}
		for _, p := range rv.snap.Pending {
			if p.Resource == inst && !seen[p.Node] {
				l := base
				l.State, l.Node, l.Note = motionState(p.Action, model.StateStopped), p.Node, strings.Join(note, "; ")
				out = append(out, l)
			}
		}
		if len(out) == 0 {
			l := base
			l.State = model.StateStopped
			why := note
			p, hasPlacement := placed[inst]
			switch {
			case blockedWhy[inst] != "":
				why = append(why, "blocked: "+blockedWhy[inst])
			case len(why) > 0:
			case hasPlacement && p.Node != "":
				why = append(why, "to start on "+p.Node)
			case hasPlacement && p.Reason != "":
				why = append(why, p.Reason)
			}
			l.Note = strings.Join(why, "; ")
			out = append(out, l)
		} else if reason := blockedWhy[inst]; reason != "" {
			for i := range out {
				if out[i].State != model.StateUnknown {
					out[i].Note = strings.TrimPrefix(out[i].Note+"; blocked: "+reason, "; ")
				}
			}
		}
		lines = append(lines, out...)
	}
	answered := map[string]bool{}
	for _, r := range rv.v.Results {
		answered[r.Node+"/"+r.ID] = true
	}
	for _, t := range rv.v.Tasks {
		if !answered[t.Node+"/"+t.ID] {
			pending = append(pending, api.PendingTask{ID: t.ID, Instance: t.Resource, Node: t.Node, Action: t.Action, Reason: t.Reason, Issued: t.Issued})
		}
	}
	sort.Slice(failures, func(i, j int) bool {
		return failures[i].Instance+"|"+failures[i].Node < failures[j].Instance+"|"+failures[j].Node
	})
	return lines, failures, blocked, pending
}

// motionState names an instance with a task in flight.
func motionState(action, recorded string) string {
	switch action {
	case model.ActStart, model.ActMigrateFrom:
		return api.StateStarting
	case model.ActStop, model.ActMigrateTo:
		return api.StateStopping
	}
	return recorded
}

func apiRecord(r model.ResourceRecord) api.Record {
	return api.Record{
		Instance: r.Resource, Node: r.Node, State: r.State, FailCount: r.FailCount, LastFailure: r.LastFailure, FailureReason: r.FailureReason,
		LastOp: r.LastOp, LastRC: r.LastRC, Output: r.Output, Changed: r.Changed,
	}
}

func (b backend) Resources(ctx context.Context) ([]api.ResourceSummary, error) {
	rv, err := b.a.resourceView()
	if err != nil {
		return nil, err
	}
	lines, _, _, _ := rv.status()
	c := &rv.v.Config
	out := []api.ResourceSummary{}
	for _, r := range c.Resources {
		s := api.ResourceSummary{ID: r.ID, Agent: r.Agent, Group: groupOf(c, r.ID), Clone: cloneOf(c, r.ID), Instances: []api.ResourceStatus{}}
		for _, l := range lines {
			if l.Resource == r.ID {
				s.Instances = append(s.Instances, l)
			}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (b backend) Resource(ctx context.Context, id string) (api.ResourceDetail, error) {
	rv, err := b.a.resourceView()
	if err != nil {
		return api.ResourceDetail{}, err
	}
	c := &rv.v.Config
	r, ok := c.Resource(id)
	if !ok {
		if k := c.Kind(id); k != "" {
			return api.ResourceDetail{}, notFound("%s is a %s; show one of its resources: %s", id, k, strings.Join(members(c, id), ", "))
		}
		return api.ResourceDetail{}, notFound("no resource named %q", id)
	}
	d := api.ResourceDetail{
		Config: fromModelResource(r), Group: groupOf(c, id), Clone: cloneOf(c, id),
		Instances: []api.ResourceStatus{}, Records: []api.Record{},
	}
	lines, _, _, _ := rv.status()
	for _, l := range lines {
		if l.Resource == id {
			d.Instances = append(d.Instances, l)
		}
	}
	for _, rec := range rv.v.Records {
		if rid, _, ok := instanceOf(c, rec.Resource); ok && rid == id {
			d.Records = append(d.Records, apiRecord(rec))
		}
	}
	sort.Slice(d.Records, func(i, j int) bool {
		return d.Records[i].Instance+"|"+d.Records[i].Node < d.Records[j].Instance+"|"+d.Records[j].Node
	})
	names := []string{id}
	for _, x := range []string{d.Group, d.Clone} {
		if x != "" {
			names = append(names, x)
		}
	}
	d.Constraints = constraintsOf(c, names)
	return d, nil
}

// requests writes one operator request per (node, instance) that want
// picks among the records of id's instances.
func (a *Agent) requests(ctx context.Context, id, verb string, key func(node, inst string) string, want func(model.ResourceRecord) bool) (api.RequestResult, error) {
	v, _, err := a.readView()
	if err != nil {
		return api.RequestResult{}, err
	}
	c := &v.Config
	ids := members(c, id)
	if ids == nil {
		return api.RequestResult{}, notFound("no resource, group or clone named %q", id)
	}
	val := clusterstate.Encode(requestRecord{V: clusterstate.FormatVersion, By: a.cfg.Node, At: time.Now().UTC()})
	var ops []store.Op
	out := api.RequestResult{Requests: []string{}}
	for _, rec := range v.Records {
		if rid, _, ok := instanceOf(c, rec.Resource); !ok || !slices.Contains(ids, rid) || !want(rec) {
			continue
		}
		k := key(rec.Node, rec.Resource)
		ops = append(ops, store.Op{Key: k, Value: val})
		out.Requests = append(out.Requests, k)
	}
	if len(ops) == 0 {
		return out, api.Errorf(api.CodeConflict, "%s: nothing to %s: no node records it %s", id, verb, map[string]string{"restart": "running on a live node", "clean up": "at all"}[verb])
	}
	if _, err := a.write(ctx, store.Txn{Ops: ops}); err != nil {
		return api.RequestResult{}, err
	}
	sort.Strings(out.Requests)
	return out, nil
}

// RestartResource asks for a restart where the resource runs on a live
// node: a lost node's executor could only act on it when it comes back,
// long after the operator asked.
func (b backend) RestartResource(ctx context.Context, id string) (api.RequestResult, error) {
	return b.a.requests(ctx, id, "restart", clusterstate.RestartKey, func(r model.ResourceRecord) bool {
		return r.State == model.StateStarted && b.a.alive(r.Node)
	})
}

func (b backend) CleanupResource(ctx context.Context, id string) (api.RequestResult, error) {
	return b.a.requests(ctx, id, "clean up", clusterstate.CleanupKey, func(model.ResourceRecord) bool { return true })
}

func (b backend) Explain(ctx context.Context, id string) (api.Explanation, error) {
	rv, err := b.a.resourceView()
	if err != nil {
		return api.Explanation{}, err
	}
	known := rv.v.Config.Kind(id) != "" || slices.ContainsFunc(rv.plan.Placements, func(p scheduler.Placement) bool { return p.Resource == id })
	if !known {
		return api.Explanation{}, notFound("no resource, group, clone or instance named %q", id)
	}
	return api.Explanation{Resource: id, Text: rv.plan.Explain(id)}, nil
}

// --- simulate ---

func (b backend) Simulate(ctx context.Context, req api.SimulateRequest) (api.SimulateResult, error) {
	v, _, err := b.a.readView()
	if err != nil {
		return api.SimulateResult{}, err
	}
	snap := v.Snapshot(b.a.alive, time.Now())
	var notes []string
	if req.From != "" {
		if snap, notes, err = snapshotFrom([]byte(req.From), snap); err != nil {
			return api.SimulateResult{}, err
		}
	}
	more, err := injectFailures(snap, req.NodeFail, req.ResourceFail)
	if err != nil {
		return api.SimulateResult{}, err
	}
	notes = append(notes, more...)
	return api.SimulateResult{Notes: notes, Plan: scheduler.Compute(snap).String()}, nil
}

// snapshotFrom reads a document given to simulate: a whole snapshot (it
// has a "config" key) or a configuration, which replaces the current
// one in cur.
func snapshotFrom(doc []byte, cur *model.Snapshot) (*model.Snapshot, []string, error) {
	raw, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, nil, badRequest("--from: not YAML or JSON: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, nil, badRequest("--from: want a snapshot or a configuration (a mapping): %v", err)
	}
	if _, ok := top["config"]; ok {
		var s model.Snapshot
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			return nil, nil, badRequest("--from: snapshot: %v", err)
		}
		var names []string
		for _, n := range s.Nodes {
			names = append(names, n.Name)
		}
		if err := s.Config.Validate(names); err != nil {
			return nil, nil, badRequest("--from: snapshot: %v", err)
		}
		if s.Now.IsZero() {
			s.Now = cur.Now
		}
		return &s, []string{"starting from the snapshot given (its nodes, records and pending tasks)"}, nil
	}
	var c model.Config
	if err := yaml.UnmarshalStrict(doc, &c); err != nil {
		return nil, nil, badRequest("--from: configuration: %v", err)
	}
	var names []string
	for _, n := range cur.Nodes {
		names = append(names, n.Name)
	}
	if err := c.Validate(names); err != nil {
		return nil, nil, badRequest("--from: configuration: %v", err)
	}
	s := *cur
	s.Config = c
	return &s, []string{"starting from the configuration given, with the cluster's current nodes and resource states"}, nil
}

// injectFailures applies hypothetical failures to s: a failed node is
// taken as fenced (offline with proof) and what it held is gone; a failed
// resource is recorded failed where it runs, its fail count one higher.
func injectFailures(s *model.Snapshot, nodeFail, resourceFail []string) ([]string, error) {
	var notes []string
	for _, n := range nodeFail {
		i := slices.IndexFunc(s.Nodes, func(x model.NodeStatus) bool { return x.Name == n })
		if i < 0 {
			var names []string
			for _, x := range s.Nodes {
				names = append(names, x.Name)
			}
			return nil, notFound("--node-fail: unknown node %q (nodes: %s)", n, strings.Join(names, ", "))
		}
		s.Nodes = slices.Clone(s.Nodes)
		s.Nodes[i].State = model.NodeOffline
		var dropped []string
		s.Resources = slices.DeleteFunc(slices.Clone(s.Resources), func(r model.ResourceRecord) bool {
			if r.Node == n && r.State != model.StateStopped {
				dropped = append(dropped, r.Resource+" ("+r.State+")")
			}
			return r.Node == n
		})
		s.Pending = slices.DeleteFunc(slices.Clone(s.Pending), func(p model.Pending) bool { return p.Node == n })
		note := fmt.Sprintf("%s fails and is taken as fenced (offline with proof)", n)
		if len(dropped) > 0 {
			note += "; it ran " + strings.Join(dropped, ", ")
		} else {
			note += "; it ran nothing"
		}
		notes = append(notes, note)
	}
	for _, id := range resourceFail {
		ids := members(&s.Config, id)
		if ids == nil && !slices.ContainsFunc(s.Resources, func(r model.ResourceRecord) bool { return r.Resource == id }) {
			return nil, notFound("--resource-fail: no resource, group, clone or instance named %q", id)
		}
		hit := 0
		s.Resources = slices.Clone(s.Resources)
		for i := range s.Resources {
			r := &s.Resources[i]
			rid, _, _ := instanceOf(&s.Config, r.Resource)
			if r.State != model.StateStarted || (r.Resource != id && !slices.Contains(ids, rid)) {
				continue
			}
			r.State = model.StateFailed
			r.FailCount++
			r.LastFailure = s.Now
			r.LastOp = model.OpMonitor
			notes = append(notes, fmt.Sprintf("%s fails on %s (fail count %d)", r.Resource, r.Node, r.FailCount))
			hit++
		}
		if hit == 0 {
			return nil, api.Errorf(api.CodeConflict, "--resource-fail: %s is not running anywhere: nothing to fail", id)
		}
	}
	return notes, nil
}

// --- configuration as a document ---

func (b backend) ExportConfig(ctx context.Context) (api.ConfigDocument, error) {
	v, epoch, err := b.a.readView()
	if err != nil {
		return api.ConfigDocument{}, err
	}
	raw, err := yaml.Marshal(v.Config)
	if err != nil {
		return api.ConfigDocument{}, fmt.Errorf("render configuration: %w", err)
	}
	return api.ConfigDocument{Epoch: epoch, YAML: string(raw)}, nil
}

// parseConfig reads a configuration document strictly: an unknown field is
// an error, not silently dropped.
func parseConfig(doc []byte) (model.Config, error) {
	var c model.Config
	if len(bytes.TrimSpace(doc)) == 0 {
		return c, badRequest("config: the document is empty (an empty configuration is written {})")
	}
	if err := yaml.UnmarshalStrict(doc, &c); err != nil {
		return c, badRequest("config: %v", err)
	}
	return c, nil
}

// diffLines renders store operations as "+ key" (new), "- key" (removed)
// and "~ key" (changed).
func diffLines(old model.Config, ops []store.Op) []string {
	had := map[string]bool{}
	for _, op := range clusterstate.ConfigOps(model.Config{}, old) {
		had[op.Key] = true
	}
	out := []string{}
	for _, op := range ops {
		if store.IsStatusKey(op.Key) {
			continue
		}
		switch {
		case op.Delete:
			out = append(out, "- "+op.Key)
		case had[op.Key]:
			out = append(out, "~ "+op.Key)
		default:
			out = append(out, "+ "+op.Key)
		}
	}
	return out
}

func (b backend) ApplyConfig(ctx context.Context, req api.ApplyConfigRequest) (api.ApplyConfigResult, error) {
	a := b.a
	next, err := parseConfig([]byte(req.YAML))
	if err != nil {
		return api.ApplyConfigResult{}, err
	}
	replace := func(c *model.Config, _ *controller.View) ([]store.Op, error) {
		*c = cloneConfig(next)
		return nil, nil
	}
	if req.DryRun {
		p, err := a.prepare(ctx, replace)
		if err != nil {
			return api.ApplyConfigResult{}, err
		}
		if err := a.readyDatastores(ctx, p.view.Config.Datastores, p.next.Datastores, false); err != nil {
			return api.ApplyConfigResult{}, err
		}
		snap := p.view.Snapshot(a.alive, time.Now())
		snap.Config = p.next
		return api.ApplyConfigResult{
			DryRun: true, Changes: diffLines(p.view.Config, p.ops),
			Plan: scheduler.Compute(snap).String(), Epoch: p.epoch,
		}, nil
	}
	for attempt := 0; ; attempt++ {
		p, err := a.prepare(ctx, replace)
		if err != nil {
			return api.ApplyConfigResult{}, err
		}
		out := api.ApplyConfigResult{Changes: diffLines(p.view.Config, p.ops), Epoch: p.epoch}
		if len(p.ops) == 0 {
			return out, nil
		}
		// New or moved datastores are initialized here before the
		// configuration names them, as `vigil datastore create` does.
		if err := a.readyDatastores(ctx, p.view.Config.Datastores, p.next.Datastores, true); err != nil {
			return api.ApplyConfigResult{}, err
		}
		res, err := a.write(ctx, store.Txn{Ops: p.ops, IfEpoch: p.epoch})
		if api.IsCode(err, api.CodeConflict) && attempt < configRetries {
			continue
		}
		if err != nil {
			return api.ApplyConfigResult{}, err
		}
		out.Epoch = res.Epoch
		return out, nil
	}
}

// --- fence confirm ---

func (b backend) FenceConfirm(ctx context.Context, node string, req api.FenceConfirmRequest) (api.FenceConfirmResult, error) {
	a := b.a
	v, _, err := a.readView()
	if err != nil {
		return api.FenceConfirmResult{}, err
	}
	if !slices.Contains(v.NodeNames(), node) {
		return api.FenceConfirmResult{}, notFound("fence confirm: %s is not a node of this cluster", node)
	}
	if a.alive(node) {
		return api.FenceConfirmResult{}, api.Errorf(api.CodeConflict, "fence confirm: %s is alive (a member in %s's view): it cannot be confirmed down; if it is hung, power it off first and wait until it is lost", node, a.cfg.Node)
	}
	out := api.FenceConfirmResult{Node: node, Released: []string{}, Tasks: []string{}}
	for _, r := range v.Records {
		if r.Node == node {
			out.Released = append(out.Released, fmt.Sprintf("%s (%s)", r.Resource, r.State))
		}
	}
	for _, t := range v.Tasks {
		if t.Node == node {
			out.Tasks = append(out.Tasks, fmt.Sprintf("%s: %s %s", t.ID, t.Action, t.Resource))
		}
	}
	if !req.Yes {
		return out, nil
	}
	// The same proof as a fence's, guarded on the node record read above:
	// if the node came back in between, nothing is written.
	rec := v.NodeRecords[node]
	if rec.Name == "" {
		rec.Name = node
	}
	ops, guard := controller.ProofOps(v, rec, model.DownProof{How: "confirmed", By: "operator", At: time.Now().UTC()})
	if _, err := a.write(ctx, store.Txn{Ops: ops, If: guard}); err != nil {
		if api.IsCode(err, api.CodeConflict) {
			return api.FenceConfirmResult{}, api.Errorf(api.CodeConflict, "fence confirm: %s came back while confirming: nothing was written", node)
		}
		return api.FenceConfirmResult{}, err
	}
	a.log.Warn("operator confirmed a node down", "peer", node, "boot_id", rec.BootID, "released", len(out.Released), "tasks", len(out.Tasks))
	out.Confirmed = true
	return out, nil
}
