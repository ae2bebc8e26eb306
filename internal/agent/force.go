package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/executor"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// forceDanger is why a forced action needs the operator's explicit yes.
const forceDanger = "it runs the resource agent on this node outside the cluster: the cluster neither places nor records it, so the resource may end up active on two nodes (only the agent's own guards, such as vigil:vm's disk lease, can refuse)"

// ForceStart implements api.ForceBackend: it runs the start action of one
// resource instance with its configuration, on this node, directly through
// the agent (the executor's queues, tasks and records are bypassed), and
// returns what the agent said. It writes nothing to the store: this is an
// operator's debugging tool, like Pacemaker's `crm_resource
// --force-start`, and the cluster learns of what it did only by probing
// (`vigil resource cleanup`). No node is passed as proven down, so agents
// with a storage guard (vigil:vm's disk lease) apply it in full.
func (b backend) ForceStart(ctx context.Context, id string, req api.ForceStartRequest) (api.ForceResult, error) {
	a := b.a
	in, err := a.forceTarget(id, req)
	if err != nil {
		return api.ForceResult{}, err
	}
	ag, err := a.agents.Get(in.Resource.Agent)
	if err != nil {
		return api.ForceResult{}, badRequest("force-start %s: agent %s: %v", id, in.Resource.Agent, err)
	}
	op, _ := in.Resource.Op(model.OpStart)
	areq := agents.Request{
		Resource: in.ID,
		Action:   agents.ActionStart,
		Params:   in.Resource.Params,
		Meta:     in.Resource.Meta,
		Timeout:  op.Timeout.D(),
		Node:     a.cfg.Node,
	}
	a.log.Warn("force-start by an operator: running the agent outside the cluster",
		"resource", in.ID, "agent", in.Resource.Agent, "timeout", areq.Timeout)
	// The start runs to its end (its timeout bounds it) even if the
	// caller goes away: an agent killed half-way leaves a half-started
	// resource nobody knows about.
	res := ag.Exec(context.WithoutCancel(ctx), areq)
	out := forceResult(in, a.cfg.Node, areq, res)
	a.log.Warn("force-start done", "resource", in.ID, "rc", out.RCName, "err", out.Error, "took", res.Duration.Round(time.Millisecond))
	return out, nil
}

// forceTarget checks a forced action's request and finds the instance it
// names. It refuses, changing nothing, without the operator's yes, when
// the request is meant for another node, on a witness, and for an id that
// names no instance (with the ids that would do, for a group or clone).
func (a *Agent) forceTarget(id string, req api.ForceStartRequest) (executor.Instance, error) {
	if !req.Yes {
		return executor.Instance{}, badRequest("force-start %s: not confirmed (yes unset): %s", id, forceDanger)
	}
	if req.Node != a.cfg.Node {
		return executor.Instance{}, badRequest("force-start %s: this is node %s, not %q: ask the node that must run it", id, a.cfg.Node, req.Node)
	}
	if a.isWitness() {
		return executor.Instance{}, badRequest("force-start %s: %s is a witness: it runs no resources", id, a.cfg.Node)
	}
	var c model.Config
	var insts []executor.Instance
	var err error
	a.node.Read(func(s *store.State) {
		if c, err = clusterstate.LoadConfig(s); err == nil {
			insts = executor.Instances(c, runnerCount(s))
		}
	})
	if err != nil {
		return executor.Instance{}, fmt.Errorf("force-start %s: read the configuration: %w", id, err)
	}
	for _, in := range insts {
		if in.ID == id {
			return in, nil
		}
	}
	return executor.Instance{}, noInstance(&c, insts, id)
}

// noInstance says why id names no instance: it is a group or a clone, a
// cloned resource (whose instances carry a number), or nothing at all.
func noInstance(c *model.Config, insts []executor.Instance, id string) error {
	var of []string
	for _, in := range insts {
		if in.Clone == id || in.Resource.ID == id || groupOf(c, in.Resource.ID) == id {
			of = append(of, in.ID)
		}
	}
	switch k := c.Kind(id); {
	case len(of) == 0 || k == "":
	case k == model.KindResource:
		return notFound("force-start %s: %s is cloned; name one of its instances: %s", id, id, strings.Join(of, ", "))
	default:
		return notFound("force-start %s: %s is a %s; name one of its instances: %s", id, id, k, strings.Join(of, ", "))
	}
	return notFound("force-start: no resource named %q", id)
}

// runnerCount counts the members that may run resources (not witnesses):
// the size of a clone without a maximum, as the executor counts it.
func runnerCount(s *store.State) int {
	n := 0
	for _, m := range s.Members() {
		if m.Role != store.RoleWitness {
			n++
		}
	}
	return n
}

// forceResult renders an agent's result for the API.
func forceResult(in executor.Instance, node string, req agents.Request, res agents.Result) api.ForceResult {
	out := api.ForceResult{
		Resource: in.ID, Agent: in.Resource.Agent, Node: node, Action: req.Action,
		RC: int(res.Code), RCName: res.Code.String(), Output: strings.TrimSpace(res.Output),
		Timeout: req.Timeout, Duration: res.Duration,
	}
	if res.Err != nil {
		out.Error = res.Err.Error()
	}
	if res.Code == agents.CodeTimeout {
		// The agent only says that it was killed; say after how long.
		out.Error = fmt.Sprintf("the %s did not finish within its timeout %s: the agent was killed", req.Action, req.Timeout)
	}
	return out
}
