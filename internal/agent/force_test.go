package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/api"
)

// TestForceStart: a forced start runs the agent's start on this node with
// the resource's configuration and start timeout, returns the agent's code
// and message, and writes nothing to the store; bad requests are refused
// before any agent runs.
func TestForceStart(t *testing.T) {
	a := testAgent(t)
	b := backend{a}
	ctx := context.Background()
	for _, req := range []api.CreateResourceRequest{
		{Resource: api.Resource{ID: "d1", Agent: "vigil:dummy", Params: map[string]string{"fake": "x"}}, Disabled: true},
		{Resource: api.Resource{ID: "slow", Agent: "vigil:dummy", Params: map[string]string{"op_sleep": "5s"},
			Ops: []api.Op{{Name: "start", Timeout: "300ms"}}}, Disabled: true},
		{Resource: api.Resource{ID: "g1", Agent: "vigil:dummy"}, Group: "grp", Disabled: true},
		{Resource: api.Resource{ID: "c1", Agent: "vigil:dummy"}, Disabled: true},
	} {
		if _, err := b.CreateResource(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.CloneResource(ctx, "c1", api.CloneRequest{Max: 2}); err != nil {
		t.Fatal(err)
	}
	epoch := a.epoch()
	dummy, err := a.agents.Get("vigil:dummy")
	if err != nil {
		t.Fatal(err)
	}
	state := func(inst string) bool {
		return dummy.Exec(ctx, agents.Request{Resource: inst, Action: agents.ActionMonitor}).Code == agents.CodeOK
	}
	yes := api.ForceStartRequest{Node: "n1", Yes: true}

	for i, tc := range []struct {
		name, id string
		req      api.ForceStartRequest
		code     string
		want     string
	}{
		{"no yes", "d1", api.ForceStartRequest{Node: "n1"}, api.CodeBadRequest, "outside the cluster"},
		{"another node", "d1", api.ForceStartRequest{Node: "n2", Yes: true}, api.CodeBadRequest, `this is node n1, not "n2"`},
		{"unknown resource", "nope", yes, api.CodeNotFound, `no resource named "nope"`},
		{"a group", "grp", yes, api.CodeNotFound, "grp is a group; name one of its instances: g1"},
		{"a cloned resource", "c1", yes, api.CodeNotFound, "c1 is cloned; name one of its instances: c1-clone:0, c1-clone:1"},
	} {
		_, err := b.ForceStart(ctx, tc.id, tc.req)
		if err == nil || !api.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("#%d %s: err %v, want %s %q", i, tc.name, err, tc.code, tc.want)
		}
		if state(tc.id) {
			t.Errorf("#%d %s: the agent ran", i, tc.name)
		}
	}

	res, err := b.ForceStart(ctx, "d1", yes)
	if err != nil || !res.OK() || res.Node != "n1" || res.Agent != "vigil:dummy" || res.Action != agents.ActionStart {
		t.Fatalf("force-start d1: %+v %v", res, err)
	}
	if !state("d1") {
		t.Fatal("force-start d1 did not run the agent's start")
	}
	if res, err := b.ForceStart(ctx, "c1-clone:1", yes); err != nil || !res.OK() || !state("c1-clone:1") {
		t.Fatalf("force-start of a clone instance: %+v %v", res, err)
	}

	// The start's own timeout bounds it; the failure is a result.
	res, err = b.ForceStart(ctx, "slow", yes)
	if err != nil || res.OK() || res.RCName != agents.CodeTimeout.String() || !strings.Contains(res.Error, "300ms") {
		t.Fatalf("force-start slow: %+v %v", res, err)
	}

	if got := a.epoch(); got != epoch {
		t.Fatalf("force-start moved the epoch from %d to %d", epoch, got)
	}
	d, err := b.Resource(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Records) != 0 {
		t.Fatalf("force-start wrote records: %+v", d.Records)
	}
}
