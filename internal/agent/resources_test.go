package agent

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/quorum"
	"github.com/vigil-ha/vigil/internal/store"
)

var testNodes = []string{"n1", "n2", "n3"}

// baseConfig: web and db in group stack, ip alone, a location, a
// colocation and an order.
func baseConfig() model.Config {
	return model.Config{
		Resources: []model.Resource{
			{ID: "db", Agent: "vigil:dummy"},
			{ID: "ip", Agent: "vigil:dummy", Params: map[string]string{"fake": "1"}},
			{ID: "web", Agent: "vigil:dummy", Meta: map[string]string{model.MetaTargetRole: model.RoleStopped},
				Ops: []model.Op{{Name: "monitor", Interval: model.Duration(10 * time.Second)}}},
		},
		Groups:      []model.Group{{ID: "stack", Resources: []string{"db", "web"}}},
		Locations:   []model.Location{{ID: "web-on-n1", Resource: "web", Node: "n1", Score: 100}},
		Colocations: []model.Colocation{{ID: "ip-with-web", Resource: "ip", With: "web", Score: model.Infinity}},
		Orders:      []model.Order{{ID: "web-then-ip", First: "web", Then: "ip"}},
	}
}

func TestMutations(t *testing.T) {
	f := false
	for i, tc := range []struct {
		name   string
		mutate func(c *model.Config) error
		check  func(c *model.Config) bool
		err    string // substring of the expected error (mutation or validation)
		code   string // the expected api error code, if any
	}{
		{
			name: "create",
			mutate: func(c *model.Config) error {
				return createResource(c, api.CreateResourceRequest{Resource: api.Resource{
					ID: "vip", Agent: "vigil:dummy", Params: map[string]string{"fake": "x"},
					Ops:         []api.Op{{Name: "monitor", Interval: "10", Timeout: "20s", OnFail: "restart"}},
					Utilization: map[string]string{"cpu": "2"},
				}, Disabled: true})
			},
			check: func(c *model.Config) bool {
				r, ok := c.Resource("vip")
				return ok && r.Params["fake"] == "x" && !r.Enabled() && r.Utilization["cpu"] == 2 &&
					len(r.Ops) == 1 && r.Ops[0].Interval.D() == 10*time.Second && r.Ops[0].Timeout.D() == 20*time.Second
			},
		},
		{
			name: "create in a new group",
			mutate: func(c *model.Config) error {
				return createResource(c, api.CreateResourceRequest{Resource: api.Resource{ID: "fs", Agent: "vigil:dummy"}, Group: "storage"})
			},
			check: func(c *model.Config) bool { return groupOf(c, "fs") == "storage" },
		},
		{
			name: "create duplicate id",
			mutate: func(c *model.Config) error {
				return createResource(c, api.CreateResourceRequest{Resource: api.Resource{ID: "stack", Agent: "vigil:dummy"}})
			},
			err: "already used by a group", code: api.CodeConflict,
		},
		{
			name: "create bad duration",
			mutate: func(c *model.Config) error {
				return createResource(c, api.CreateResourceRequest{Resource: api.Resource{ID: "x", Agent: "vigil:dummy", Ops: []api.Op{{Name: "monitor", Interval: "often"}}}})
			},
			err: `interval "often"`,
		},
		{
			name: "create bad utilization",
			mutate: func(c *model.Config) error {
				return createResource(c, api.CreateResourceRequest{Resource: api.Resource{ID: "x", Agent: "vigil:dummy", Utilization: map[string]string{"cpu": "two"}}})
			},
			err: "want an integer",
		},
		{
			name: "create bad meta (model validation)",
			mutate: func(c *model.Config) error {
				return createResource(c, api.CreateResourceRequest{Resource: api.Resource{ID: "x", Agent: "vigil:dummy", Meta: map[string]string{"stickiness": "1"}}})
			},
			err: `unknown meta attribute "stickiness"`,
		},
		{
			name: "update removes with empty values and replaces ops by name",
			mutate: func(c *model.Config) error {
				return updateResource(c, "ip", api.UpdateResourceRequest{
					Params: map[string]string{"fake": "", "op_sleep": "1"},
					Meta:   map[string]string{model.MetaStickiness: "50"},
					Ops:    []api.Op{{Name: "monitor", Interval: "5s"}},
				})
			},
			check: func(c *model.Config) bool {
				r, _ := c.Resource("ip")
				_, has := r.Params["fake"]
				return !has && r.Params["op_sleep"] == "1" && r.Meta[model.MetaStickiness] == "50" && len(r.Ops) == 1 && r.Ops[0].Interval.D() == 5*time.Second
			},
		},
		{
			name: "update replaces an existing op",
			mutate: func(c *model.Config) error {
				return updateResource(c, "web", api.UpdateResourceRequest{Ops: []api.Op{{Name: "monitor", Interval: "30s"}}})
			},
			check: func(c *model.Config) bool {
				r, _ := c.Resource("web")
				return len(r.Ops) == 1 && r.Ops[0].Interval.D() == 30*time.Second
			},
		},
		{
			name: "enable a group (meta on a group)",
			mutate: func(c *model.Config) error {
				return updateResource(c, "stack", api.UpdateResourceRequest{Meta: map[string]string{model.MetaTargetRole: model.RoleStopped}})
			},
			check: func(c *model.Config) bool { return effectiveRole(c, "db") == model.RoleStopped },
		},
		{
			name: "params on a group refused",
			mutate: func(c *model.Config) error {
				return updateResource(c, "stack", api.UpdateResourceRequest{Params: map[string]string{"a": "b"}})
			},
			err: "only meta attributes",
		},
		{
			name:   "update unknown",
			mutate: func(c *model.Config) error { return updateResource(c, "nope", api.UpdateResourceRequest{}) },
			err:    `no resource, group or clone named "nope"`, code: api.CodeNotFound,
		},
		{
			name: "delete a disabled, stopped resource takes its constraints along",
			mutate: func(c *model.Config) error {
				_, err := deleteResource(c, &controller.View{}, "web")
				return err
			},
			check: func(c *model.Config) bool {
				_, has := c.Resource("web")
				return !has && len(c.Locations) == 0 && len(c.Colocations) == 0 && len(c.Orders) == 0 &&
					slices.Equal(c.Groups[0].Resources, []string{"db"})
			},
		},
		{
			name: "delete an enabled resource is refused",
			mutate: func(c *model.Config) error {
				_, err := deleteResource(c, &controller.View{}, "ip")
				return err
			},
			err: "vigil resource disable ip", code: api.CodeConflict,
		},
		{
			name: "delete a disabled resource still running is refused",
			mutate: func(c *model.Config) error {
				v := &controller.View{Records: []model.ResourceRecord{{Resource: "web", Node: "n2", State: model.StateStarted}}}
				_, err := deleteResource(c, v, "web")
				return err
			},
			err: "still started on n2", code: api.CodeConflict,
		},
		{
			name: "delete with a task pending is refused",
			mutate: func(c *model.Config) error {
				v := &controller.View{Tasks: []model.Task{{ID: "t1", Node: "n2", Action: model.ActStop, Resource: "web"}}}
				_, err := deleteResource(c, v, "web")
				return err
			},
			err: "stop pending on n2",
		},
		{
			name: "delete the last member removes the group",
			mutate: func(c *model.Config) error {
				c.Groups = []model.Group{{ID: "solo", Resources: []string{"web"}}}
				c.Locations = append(c.Locations, model.Location{ID: "solo-n2", Resource: "solo", Node: "n2", Score: 5})
				_, err := deleteResource(c, &controller.View{}, "web")
				return err
			},
			check: func(c *model.Config) bool { return len(c.Groups) == 0 && len(c.Locations) == 0 },
		},
		{
			name: "delete a group is refused",
			mutate: func(c *model.Config) error {
				_, err := deleteResource(c, &controller.View{}, "stack")
				return err
			},
			err: "is a group",
		},
		{
			name:   "move",
			mutate: func(c *model.Config) error { return moveResource(c, testNodes, "ip", "n2") },
			check: func(c *model.Config) bool {
				return slices.ContainsFunc(c.Locations, func(l model.Location) bool {
					return l.ID == "cli-prefer-ip" && l.Node == "n2" && l.Score == model.Infinity
				})
			},
		},
		{
			name: "move again replaces the move and lifts a ban on the target",
			mutate: func(c *model.Config) error {
				if err := moveResource(c, testNodes, "ip", "n2"); err != nil {
					return err
				}
				if err := banResource(c, testNodes, "ip", "n3"); err != nil {
					return err
				}
				return moveResource(c, testNodes, "ip", "n3")
			},
			check: func(c *model.Config) bool {
				n := 0
				for _, l := range c.Locations {
					if strings.HasPrefix(l.ID, "cli-") {
						n++
					}
				}
				return n == 1 && c.Locations[len(c.Locations)-1].Node == "n3"
			},
		},
		{
			name:   "move to an unknown node",
			mutate: func(c *model.Config) error { return moveResource(c, testNodes, "ip", "n9") },
			err:    `unknown node "n9"`, code: api.CodeNotFound,
		},
		{
			name:   "move an unknown resource",
			mutate: func(c *model.Config) error { return moveResource(c, testNodes, "nope", "n1") },
			err:    `"nope"`, code: api.CodeNotFound,
		},
		{
			name: "ban drops a move to that node",
			mutate: func(c *model.Config) error {
				if err := moveResource(c, testNodes, "ip", "n2"); err != nil {
					return err
				}
				return banResource(c, testNodes, "ip", "n2")
			},
			check: func(c *model.Config) bool {
				return !slices.ContainsFunc(c.Locations, func(l model.Location) bool { return l.ID == "cli-prefer-ip" }) &&
					slices.ContainsFunc(c.Locations, func(l model.Location) bool {
						return l.ID == "cli-ban-ip-on-n2" && l.Score == -model.Infinity
					})
			},
		},
		{
			name: "clear removes cli constraints only",
			mutate: func(c *model.Config) error {
				for _, n := range []string{"n2", "n3"} {
					if err := banResource(c, testNodes, "web", n); err != nil {
						return err
					}
				}
				return clearResource(c, "web")
			},
			check: func(c *model.Config) bool { return len(c.Locations) == 1 && c.Locations[0].ID == "web-on-n1" },
		},
		{
			name: "a ban contradicting a +INFINITY location is refused by validation",
			mutate: func(c *model.Config) error {
				c.Locations = append(c.Locations, model.Location{ID: "must", Resource: "ip", Node: "n2", Score: model.Infinity})
				return banResource(c, testNodes, "ip", "n2")
			},
			err: "contradicts",
		},
		{
			name:   "group add moves a resource between groups",
			mutate: func(c *model.Config) error { return addToGroup(c, "front", []string{"web", "ip"}) },
			check: func(c *model.Config) bool {
				return groupOf(c, "web") == "front" && groupOf(c, "ip") == "front" && slices.Equal(c.Groups[0].Resources, []string{"db"})
			},
			// web before ip in a group, and the order web→ip: fine; but the
			// colocation ip with web stays valid too.
		},
		{
			name:   "group add of a group",
			mutate: func(c *model.Config) error { return addToGroup(c, "g2", []string{"stack"}) },
			err:    "is a group; a group holds resources",
		},
		{
			name:   "group add twice",
			mutate: func(c *model.Config) error { return addToGroup(c, "stack", []string{"db"}) },
			err:    "already in it",
		},
		{
			name:   "clone",
			mutate: func(c *model.Config) error { return cloneResource(c, "ip", api.CloneRequest{Max: 2}) },
			check: func(c *model.Config) bool {
				return len(c.Clones) == 1 && c.Clones[0].ID == "ip-clone" && c.Clones[0].Max == 2
			},
		},
		{
			name:   "clone a group member is refused by validation",
			mutate: func(c *model.Config) error { return cloneResource(c, "web", api.CloneRequest{}) },
			err:    "clone the group instead",
		},
		{
			name: "location by rule",
			mutate: func(c *model.Config) error {
				return addLocation(c, testNodes, api.Location{ID: "ssd", Resource: "ip", Score: "-INFINITY",
					Rule: &api.Rule{Expressions: []api.Expression{{Attribute: "ssd", Op: "not_defined"}}}})
			},
			check: func(c *model.Config) bool {
				l := c.Locations[len(c.Locations)-1]
				return l.Score == -model.Infinity && l.Rule != nil && l.Rule.Expressions[0].Op == "not_defined"
			},
		},
		{
			name: "location with a bad rule operator",
			mutate: func(c *model.Config) error {
				return addLocation(c, testNodes, api.Location{ID: "x", Resource: "ip", Score: "1",
					Rule: &api.Rule{Expressions: []api.Expression{{Attribute: "a", Op: "like", Value: "b"}}}})
			},
			err: `rule operator "like"`,
		},
		{
			name: "location on an unknown node",
			mutate: func(c *model.Config) error {
				return addLocation(c, testNodes, api.Location{ID: "x", Resource: "ip", Node: "n7", Score: "1"})
			},
			err: `unknown node "n7"`,
		},
		{
			name: "duplicate constraint id",
			mutate: func(c *model.Config) error {
				return addColocation(c, api.Colocation{ID: "web-on-n1", Resource: "db", With: "ip"})
			},
			err: "already used by a location constraint", code: api.CodeConflict,
		},
		{
			name: "colocation loop",
			mutate: func(c *model.Config) error {
				return addColocation(c, api.Colocation{ID: "web-with-ip", Resource: "web", With: "ip", Score: "100"})
			},
			err: "colocation constraints form a loop",
		},
		{
			name: "colocation contradiction",
			mutate: func(c *model.Config) error {
				return addColocation(c, api.Colocation{ID: "apart", Resource: "ip", With: "web", Score: "-INFINITY"})
			},
			err: "must both be together and apart",
		},
		{
			name:   "order loop",
			mutate: func(c *model.Config) error { return addOrder(c, api.Order{ID: "back", First: "ip", Then: "web"}) },
			err:    "order constraints form a loop",
		},
		{
			name: "optional order breaks no loop rule",
			mutate: func(c *model.Config) error {
				return addOrder(c, api.Order{ID: "back", First: "ip", Then: "web", Kind: "optional", Symmetrical: &f})
			},
			check: func(c *model.Config) bool {
				o := c.Orders[len(c.Orders)-1]
				return o.Kind == model.OrderOptional && !o.IsSymmetrical()
			},
		},
		{
			name:   "remove constraint",
			mutate: func(c *model.Config) error { return removeConstraint(c, "ip-with-web") },
			check:  func(c *model.Config) bool { return len(c.Colocations) == 0 },
		},
		{
			name:   "remove unknown constraint",
			mutate: func(c *model.Config) error { return removeConstraint(c, "nope") },
			err:    `no constraint named "nope"`, code: api.CodeNotFound,
		},
		{
			name: "node settings",
			mutate: func(c *model.Config) error {
				yes := true
				return updateNode(c, testNodes, "n2", api.NodeUpdate{Standby: &yes, Attributes: map[string]string{"rack": "a"}, Utilization: map[string]string{"cpu": "4", "memory": "8192"}})
			},
			check: func(c *model.Config) bool {
				n := c.NodeConfig("n2")
				return n.Standby && n.Attributes["rack"] == "a" && n.Utilization["memory"] == 8192
			},
		},
		{
			name: "node settings back to defaults are removed",
			mutate: func(c *model.Config) error {
				yes, no := true, false
				if err := updateNode(c, testNodes, "n2", api.NodeUpdate{Standby: &yes}); err != nil {
					return err
				}
				return updateNode(c, testNodes, "n2", api.NodeUpdate{Standby: &no})
			},
			check: func(c *model.Config) bool { return len(c.Nodes) == 0 },
		},
		{
			name: "node unknown",
			mutate: func(c *model.Config) error {
				yes := true
				return updateNode(c, testNodes, "n9", api.NodeUpdate{Maintenance: &yes})
			},
			err: `unknown node "n9"`, code: api.CodeNotFound,
		},
	} {
		c := baseConfig()
		if err := c.Validate(testNodes); err != nil {
			t.Fatalf("base config: %v", err)
		}
		err := tc.mutate(&c)
		if err == nil {
			err = c.Validate(testNodes)
		}
		if !expectErr(t, i, tc.name, err, tc.err, tc.code) {
			continue
		}
		if !tc.check(&c) {
			t.Errorf("#%d %s: unexpected result: %+v", i, tc.name, c)
		}
	}
}

// expectErr checks a table case's error: with want set, err must contain it
// (and carry code, if set); without, err must be nil. It reports whether the
// case succeeded and its result should be checked further.
func expectErr(t *testing.T, i int, name string, err error, want, code string) bool {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("#%d %s: err %v, want %q", i, name, err, want)
		}
		if code != "" && !api.IsCode(err, code) {
			t.Errorf("#%d %s: err %v, want code %s", i, name, err, code)
		}
		return false
	}
	if err != nil {
		t.Errorf("#%d %s: %v", i, name, err)
		return false
	}
	return true
}

func TestInstanceOf(t *testing.T) {
	c := baseConfig()
	c.Resources = append(c.Resources, model.Resource{ID: "vip", Agent: "vigil:dummy"})
	c.Clones = []model.Clone{{ID: "vip-clone", Of: "vip"}, {ID: "stack-clone", Of: "stack"}}
	for i, tc := range []struct {
		inst, res, clone string
		ok               bool
	}{
		{"ip", "ip", "", true},
		{"vip-clone:1", "vip", "vip-clone", true},
		{"db:0", "db", "stack-clone", true},               // executor naming of a cloned group member
		{"stack-clone:2/web", "web", "stack-clone", true}, // scheduler naming
		{"vip", "vip", "vip-clone", true},
		{"nope", "", "", false},
		{"ip:x", "", "", false},
	} {
		res, clone, ok := instanceOf(&c, tc.inst)
		if res != tc.res || clone != tc.clone || ok != tc.ok {
			t.Errorf("#%d %s: got %q %q %v", i, tc.inst, res, clone, ok)
		}
	}
}

func TestInjectFailures(t *testing.T) {
	s := &model.Snapshot{
		Config: baseConfig(),
		Nodes:  []model.NodeStatus{{Name: "n1", State: model.NodeOnline}, {Name: "n2", State: model.NodeOnline}},
		Resources: []model.ResourceRecord{
			{Resource: "ip", Node: "n1", State: model.StateStarted},
			{Resource: "db", Node: "n2", State: model.StateStarted, FailCount: 1},
			{Resource: "web", Node: "n2", State: model.StateStopped},
		},
		Pending: []model.Pending{{Resource: "web", Node: "n1", Action: model.ActStart}},
	}
	notes, err := injectFailures(s, []string{"n1"}, []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Nodes[0].State != model.NodeOffline || len(s.Pending) != 0 || len(s.Resources) != 2 {
		t.Fatalf("node failure not applied: %+v", s)
	}
	if r := s.Resources[0]; r.Resource != "db" || r.State != model.StateFailed || r.FailCount != 2 {
		t.Fatalf("resource failure not applied: %+v", r)
	}
	want := []string{"n1 fails and is taken as fenced (offline with proof); it ran ip (started)", "db fails on n2 (fail count 2)"}
	if !slices.Equal(notes, want) {
		t.Fatalf("notes %q, want %q", notes, want)
	}
	if _, err := injectFailures(s, []string{"n9"}, nil); err == nil || !strings.Contains(err.Error(), `unknown node "n9"`) {
		t.Fatalf("unknown node: %v", err)
	}
	if _, err := injectFailures(s, nil, []string{"web"}); err == nil || !strings.Contains(err.Error(), "not running anywhere") {
		t.Fatalf("stopped resource: %v", err)
	}
}

// testAgent is an Agent with only what the resource API needs: a real
// one-voter store (n1; n2 and n3 are learners that never run), quorum, and
// an agents registry.
func testAgent(t *testing.T) *Agent {
	t.Helper()
	net := store.NewLocalNetwork()
	disk := store.NewMemDisk()
	members := []store.Member{
		{Name: "n1", ID: 1, Links: []string{"127.0.0.1:1"}, Role: store.RoleVoter},
		{Name: "n2", ID: 2, Links: []string{"127.0.0.1:2"}, Role: store.RoleLearner},
		{Name: "n3", ID: 3, Links: []string{"127.0.0.1:3"}, Role: store.RoleLearner},
	}
	if err := store.Bootstrap(disk, members); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	n, err := store.StartNode(store.NodeConfig{Core: store.Config{ID: 1, Name: "n1", Log: log}, Disk: disk, Transport: net.Transport(1), TickInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	net.Attach(1, n)
	t.Cleanup(func() {
		net.Detach(1)
		_ = n.Stop()
		net.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for n.Status().Lead != 1 {
		n.Campaign(ctx)
		select {
		case <-n.Watch():
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no leader")
		}
	}
	a := &Agent{
		cfg:     &config.File{Cluster: model.Cluster{Name: "test"}, Node: "n1", RunDir: t.TempDir()},
		log:     log,
		node:    n,
		qresult: quorum.Result{Quorate: true},
		agents:  agents.NewRegistry(agents.Options{StateDir: t.TempDir()}),
	}
	return a
}

func (a *Agent) epoch() uint64 {
	var e uint64
	a.node.Read(func(s *store.State) { e = s.Epoch() })
	return e
}

// TestBadInputChangesNothing: every refused change leaves the epoch where
// it was (issue 3, "what it must show" 6).
func TestBadInputChangesNothing(t *testing.T) {
	a := testAgent(t)
	b := backend{a}
	ctx := context.Background()
	res, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "web", Agent: "vigil:dummy", Ops: []api.Op{{Name: "monitor", Interval: "10s"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "db", Agent: "vigil:dummy"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddOrder(ctx, api.Order{ID: "db-then-web", First: "db", Then: "web"}); err != nil {
		t.Fatal(err)
	}
	epoch := a.epoch()
	if epoch != res.Epoch+2 {
		t.Fatalf("epoch %d after create at %d and two more changes", epoch, res.Epoch)
	}
	ocf := func() bool { _, err := a.agents.Get("ocf:heartbeat:IPaddr2"); return err == nil }()
	for i, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"unknown agent", func() error {
			_, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "x", Agent: "vigil:nope"}})
			return err
		}, "vigil:nope"},
		{"unknown class", func() error {
			_, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "x", Agent: "lsb:foo"}})
			return err
		}, "lsb"},
		{"missing required parameter", func() error {
			_, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "x", Agent: "vigil:process"}})
			return err
		}, `missing required parameter "command"`},
		{"unknown parameter", func() error {
			_, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "x", Agent: "vigil:dummy", Params: map[string]string{"colour": "red"}}})
			return err
		}, `unknown parameter "colour"`},
		{"unknown parameter on update", func() error {
			_, err := b.UpdateResource(ctx, "web", api.UpdateResourceRequest{Params: map[string]string{"colour": "red"}})
			return err
		}, `unknown parameter "colour"`},
		{"unknown node", func() error {
			_, err := b.MoveResource(ctx, "web", "n9")
			return err
		}, `unknown node "n9"`},
		{"unknown node settings", func() error {
			yes := true
			_, err := b.UpdateNode(ctx, "n9", api.NodeUpdate{Standby: &yes})
			return err
		}, `unknown node "n9"`},
		{"duplicate id", func() error {
			_, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "web", Agent: "vigil:dummy"}})
			return err
		}, "already used"},
		{"order loop", func() error {
			_, err := b.AddOrder(ctx, api.Order{ID: "web-then-db", First: "web", Then: "db"})
			return err
		}, "order constraints form a loop: db → web → db"},
		{"delete enabled", func() error {
			_, err := b.DeleteResource(ctx, "web")
			return err
		}, "vigil resource disable web"},
		{"bad document", func() error {
			_, err := b.ApplyConfig(ctx, api.ApplyConfigRequest{YAML: "resources:\n- id: a\n  agent: vigil:dummy\n  colour: red\n"})
			return err
		}, "colour"},
		{"ocf missing required parameter", func() error {
			if !ocf {
				return api.Errorf(api.CodeBadRequest, "skipped: no ocf:heartbeat:IPaddr2 here: missing required parameter \"ip\"")
			}
			_, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "vip", Agent: "ocf:heartbeat:IPaddr2"}})
			return err
		}, `missing required parameter "ip"`},
	} {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("#%d %s: err %v, want %q", i, tc.name, err, tc.want)
		}
		if got := a.epoch(); got != epoch {
			t.Fatalf("#%d %s: epoch moved from %d to %d", i, tc.name, epoch, got)
		}
	}
	// Asking for what is already so writes nothing.
	res, err = b.UpdateResource(ctx, "web", api.UpdateResourceRequest{Meta: map[string]string{model.MetaTargetRole: ""}})
	if err != nil || !res.Unchanged || res.Epoch != epoch {
		t.Fatalf("no-op update: %+v %v", res, err)
	}
}

func TestConfigRoundTripAndLifecycle(t *testing.T) {
	a := testAgent(t)
	b := backend{a}
	ctx := context.Background()
	must := func(res api.WriteResult, err error) api.WriteResult {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	must(b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "web", Agent: "vigil:dummy", Params: map[string]string{"fake": "1"},
		Ops: []api.Op{{Name: "monitor", Interval: "10s", Timeout: "20s", OnFail: "restart"}}, Meta: map[string]string{"resource-stickiness": "100"}}, Group: "stack"}))
	must(b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "db", Agent: "vigil:dummy"}}))
	must(b.AddColocation(ctx, api.Colocation{ID: "db-apart", Resource: "db", With: "stack", Score: "-INFINITY"}))
	must(b.MoveResource(ctx, "stack", "n2"))
	yes := true
	must(b.UpdateNode(ctx, "n3", api.NodeUpdate{Maintenance: &yes, Utilization: map[string]string{"cpu": "4"}}))
	if _, err := b.SetProperty(ctx, "stonith_enabled", "true"); err == nil || !strings.Contains(err.Error(), `did you mean "stonith-enabled"`) {
		t.Fatalf("property typo: %v", err)
	}
	must(b.SetProperty(ctx, "stonith-enabled", "false"))

	doc, err := b.ExportConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Applying the export changes nothing.
	res, err := b.ApplyConfig(ctx, api.ApplyConfigRequest{YAML: doc.YAML})
	if err != nil || len(res.Changes) != 0 || res.Epoch != doc.Epoch {
		t.Fatalf("re-apply of the export: %+v %v\n%s", res, err, doc.YAML)
	}
	// The document round-trips through YAML.
	var c model.Config
	if err := yaml.UnmarshalStrict([]byte(doc.YAML), &c); err != nil {
		t.Fatal(err)
	}
	again, _ := yaml.Marshal(c)
	if string(again) != doc.YAML {
		t.Fatalf("export does not round-trip:\n%s\n---\n%s", doc.YAML, again)
	}
	// A dry run shows the diff and changes nothing.
	c.Resources[0].Params = map[string]string{"fake": "2"} // db
	c.Colocations = nil
	c.Resources = append(c.Resources, model.Resource{ID: "new", Agent: "vigil:dummy"})
	edited, _ := yaml.Marshal(c)
	res, err = b.ApplyConfig(ctx, api.ApplyConfigRequest{YAML: string(edited), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"- config/constraints/colocation/db-apart", "~ config/resources/db", "+ config/resources/new"}
	if !slices.Equal(res.Changes, want) || !res.DryRun || res.Plan == "" || a.epoch() != doc.Epoch {
		t.Fatalf("dry run: %+v (epoch now %d), want changes %q", res, a.epoch(), want)
	}
	res, err = b.ApplyConfig(ctx, api.ApplyConfigRequest{YAML: string(edited)})
	if err != nil || res.Epoch != doc.Epoch+1 || !slices.Equal(res.Changes, want) {
		t.Fatalf("apply: %+v %v", res, err)
	}

	// Constraint listing names all three kinds.
	cs, err := b.Constraints(ctx)
	if err != nil || len(cs.Locations) != 1 || cs.Locations[0].ID != "cli-prefer-stack" || len(cs.Colocations) != 0 {
		t.Fatalf("constraints: %+v %v", cs, err)
	}
	must(b.ClearResource(ctx, "stack"))

	// Delete: refused while enabled, then disabled and (no records) deleted
	// with its group.
	if _, err := b.DeleteResource(ctx, "web"); !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("delete enabled: %v", err)
	}
	must(b.UpdateResource(ctx, "web", api.UpdateResourceRequest{Meta: map[string]string{model.MetaTargetRole: model.RoleStopped}}))
	del := must(b.DeleteResource(ctx, "web"))
	if want := []string{"- config/groups/stack", "- config/resources/web"}; !slices.Equal(del.Changes, want) {
		t.Fatalf("delete changes %q, want %q", del.Changes, want)
	}
	var v controller.View
	a.node.Read(func(s *store.State) { v, err = controller.ReadView(s) })
	if err != nil || v.Config.Kind("web") != "" || v.Config.Kind("stack") != "" {
		t.Fatalf("after delete: %+v %v", v.Config, err)
	}
}

func TestFenceConfirmAndRequests(t *testing.T) {
	a := testAgent(t)
	b := backend{a}
	ctx := context.Background()
	if _, err := b.CreateResource(ctx, api.CreateResourceRequest{Resource: api.Resource{ID: "web", Agent: "vigil:dummy"}}); err != nil {
		t.Fatal(err)
	}
	rec := model.ResourceRecord{V: 1, Resource: "web", Node: "n2", State: model.StateStarted, FailCount: 1}
	task := model.Task{V: 1, ID: "t1", Node: "n2", Action: model.ActStop, Resource: "web"}
	nrec := model.NodeRecord{V: 1, Name: "n2", BootID: 42, Probed: 42}
	if _, err := a.node.Propose(ctx, store.Txn{Ops: []store.Op{
		{Key: clusterstate.RecordKey("n2", "web"), Value: clusterstate.Encode(rec)},
		{Key: clusterstate.TaskKey("n2", "t1"), Value: clusterstate.Encode(task)},
		{Key: clusterstate.NodeKey("n2"), Value: clusterstate.Encode(nrec)},
	}}); err != nil {
		t.Fatal(err)
	}
	// Status sees web unknown on the lost n2 (a has no membership: only
	// itself is alive).
	rv, err := a.resourceView()
	if err != nil {
		t.Fatal(err)
	}
	lines, failures, _, pending := rv.status()
	if len(lines) != 1 || lines[0].State != model.StateUnknown || lines[0].Node != "n2" || !strings.Contains(lines[0].Note, "waiting for fencing") {
		t.Fatalf("status lines: %+v", lines)
	}
	if len(failures) != 1 || failures[0].FailCount != 1 || len(pending) != 1 {
		t.Fatalf("failures %+v pending %+v", failures, pending)
	}
	// n2 is lost: no restart there; a cleanup request waits for it.
	if _, err := b.RestartResource(ctx, "web"); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "nothing to restart") {
		t.Fatalf("restart on a lost node: %v", err)
	}
	cr, err := b.CleanupResource(ctx, "web")
	if err != nil || !slices.Equal(cr.Requests, []string{"status/cleanup/n2/web"}) {
		t.Fatalf("cleanup: %+v %v", cr, err)
	}
	// Self is alive: refused.
	if _, err := b.FenceConfirm(ctx, "n1", api.FenceConfirmRequest{Yes: true}); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "is alive") {
		t.Fatalf("confirm self: %v", err)
	}
	if _, err := b.FenceConfirm(ctx, "n9", api.FenceConfirmRequest{Yes: true}); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("confirm unknown: %v", err)
	}
	// Without yes: what would be released, nothing written.
	epoch := a.epoch()
	chk, err := b.FenceConfirm(ctx, "n2", api.FenceConfirmRequest{})
	if err != nil || chk.Confirmed || !slices.Equal(chk.Released, []string{"web (started)"}) || len(chk.Tasks) != 1 {
		t.Fatalf("check: %+v %v", chk, err)
	}
	a.node.Read(func(s *store.State) {
		if clusterstate.NodeRecord(s, "n2").Down != nil {
			t.Fatal("check wrote a proof")
		}
	})
	done, err := b.FenceConfirm(ctx, "n2", api.FenceConfirmRequest{Yes: true})
	if err != nil || !done.Confirmed {
		t.Fatalf("confirm: %+v %v", done, err)
	}
	a.node.Read(func(s *store.State) {
		r := clusterstate.NodeRecord(s, "n2")
		if r.Down == nil || r.Down.How != "confirmed" || r.Down.By != "operator" || r.Down.BootID != 42 {
			t.Fatalf("proof: %+v", r.Down)
		}
		if recs, _ := clusterstate.Records(s, "n2"); len(recs) != 0 {
			t.Fatalf("records left: %+v", recs)
		}
		if ts, _ := clusterstate.Tasks(s, "n2"); len(ts) != 0 {
			t.Fatalf("tasks left: %+v", ts)
		}
	})
	if a.epoch() != epoch {
		t.Fatal("fence confirm moved the configuration epoch")
	}
	// n2 is now offline with proof: web may start elsewhere (on n1).
	rv, err = a.resourceView()
	if err != nil {
		t.Fatal(err)
	}
	lines, _, _, _ = rv.status()
	if len(lines) != 1 || lines[0].State != model.StateStopped {
		t.Fatalf("after confirm: %+v\n%s", lines, rv.plan.String())
	}
	// A restart goes where the resource runs on a live node.
	rec.Node = "n1"
	if _, err := a.node.Propose(ctx, store.Put{Key: clusterstate.RecordKey("n1", "web"), Value: clusterstate.Encode(rec)}); err != nil {
		t.Fatal(err)
	}
	rr, err := b.RestartResource(ctx, "web")
	if err != nil || !slices.Equal(rr.Requests, []string{"status/restart/n1/web"}) {
		t.Fatalf("restart: %+v %v", rr, err)
	}
	// Simulate changes nothing and says what it assumed.
	sim, err := b.Simulate(ctx, api.SimulateRequest{NodeFail: []string{"n3"}})
	if err != nil || len(sim.Notes) != 1 || !strings.Contains(sim.Notes[0], "n3 fails and is taken as fenced") || sim.Plan == "" {
		t.Fatalf("simulate: %+v %v", sim, err)
	}
	ex, err := b.Explain(ctx, "web")
	if err != nil || !strings.HasPrefix(ex.Text, "web") {
		t.Fatalf("explain: %+v %v", ex, err)
	}
	if _, err := b.Explain(ctx, "nope"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("explain unknown: %v", err)
	}
}
