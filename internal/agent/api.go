package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/membership"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/pki"
	"github.com/vigil-ha/vigil/internal/store"
)

// propertyPrefix is where cluster properties live in the replicated store.
const propertyPrefix = "config/properties/"

// writeTimeout bounds how long a write waits for commit before the caller
// is told it may or may not have happened.
const writeTimeout = 10 * time.Second

var propertyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func newAPI(a *Agent) http.Handler {
	return api.NewHandler(backend{a}, func(tok string) bool { return pki.CheckToken(a.key, tok) }, a.log)
}

// backend implements api.Backend on the agent.
type backend struct{ a *Agent }

func (b backend) Status(ctx context.Context) (api.Status, error) {
	a := b.a
	st := a.node.Status()
	q := a.quorum()
	members := a.members()
	byID := map[uint64]string{}
	for _, m := range members {
		byID[m.ID] = m.Name
	}
	out := api.Status{
		Cluster: a.cfg.Name,
		Node:    a.cfg.Node,
		Term:    st.Term,
		Epoch:   st.Epoch,
		Applied: st.Applied,
		Quorum: api.QuorumStatus{
			Quorate: q.Quorate, Votes: q.TotalVotes, Expected: q.ExpectedVotes, Needed: q.Needed, Reason: q.Reason,
		},
		Counters: heartbeatCounters(a.mship.Counters()),
	}
	// The DC is the Raft leader of the quorate partition: a node without
	// quorum names none, whatever leader it last heard of.
	if q.Quorate && st.Lead != 0 {
		out.DC = byID[st.Lead]
	}
	for _, w := range a.warnings() {
		out.Warnings = append(out.Warnings, w)
	}
	for _, m := range members {
		ns := api.NodeStatus{Name: m.Name, ID: m.ID, Role: string(model.RoleNode), Raft: api.RaftLearner}
		if m.Role == store.RoleWitness {
			ns.Role = string(model.RoleWitness)
		}
		if slices.Contains(st.Voters, m.ID) {
			ns.Raft = api.RaftVoter
		}
		ns.DC = out.DC == m.Name
		if m.Name == a.cfg.Node {
			ns.Self = true
			ns.State = api.NodeMember
			for i, l := range m.Links {
				ns.Links = append(ns.Links, api.LinkStatus{Index: i, Addr: l, Up: true})
			}
		} else if ps, ok := a.mship.Node(m.Name); ok {
			ns.State = ps.Status.String()
			for _, l := range ps.Links {
				ns.Links = append(ns.Links, api.LinkStatus{
					Index: l.Index, Addr: l.Addr, Up: l.Status == membership.LinkUp, RTT: l.RTT, Loss: l.Loss,
				})
			}
		} else {
			ns.State = api.NodeUnknown
		}
		out.Nodes = append(out.Nodes, ns)
	}
	b.addResourceStatus(&out)
	b.addDatastoreStatus(&out)
	return out, nil
}

// warnings are the conditions an operator should see in `vigil status`.
func (a *Agent) warnings() []string {
	var out []string
	for _, w := range quorumWarnings(a) {
		out = append(out, w)
	}
	for _, ns := range a.mship.Snapshot() {
		if !ns.Status.IsMember() {
			continue
		}
		for _, l := range ns.Links {
			if l.Status == membership.LinkDown {
				out = append(out, fmt.Sprintf("link %d to %s is down: the node is reachable on its other links only", l.Index, ns.Name))
			}
		}
	}
	return out
}

func heartbeatCounters(c membership.Counters) map[string]uint64 {
	return map[string]uint64{
		"heartbeat_accepted":      c.Accepted,
		"heartbeat_bad_mac":       c.BadMAC,
		"heartbeat_malformed":     c.Malformed + c.Short + c.NotHeartbeat + c.Version,
		"heartbeat_wrong_cluster": c.WrongCluster,
		"heartbeat_unknown_peer":  c.UnknownPeer + c.NotForMe + c.BadLink,
		"heartbeat_replay":        c.Replay + c.StaleBoot,
	}
}

func (b backend) Properties(ctx context.Context) ([]api.Property, error) {
	var out []api.Property
	b.a.node.Read(func(s *store.State) {
		s.Range(propertyPrefix, func(k string, it store.Item) bool {
			out = append(out, api.Property{Name: k[len(propertyPrefix):], Value: string(it.Value)})
			return true
		})
	})
	if out == nil {
		out = []api.Property{}
	}
	return out, nil
}

func (b backend) SetProperty(ctx context.Context, name, value string) (api.WriteResult, error) {
	if !propertyRE.MatchString(name) {
		return api.WriteResult{}, api.Errorf(api.CodeBadRequest, "property name %q: use letters, digits, '.', '_' and '-', at most 128 characters", name)
	}
	if err := model.ValidateProperty(name, value); err != nil {
		return api.WriteResult{}, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	return b.a.write(ctx, store.Put{Key: propertyPrefix + name, Value: []byte(value)})
}

func (b backend) DeleteProperty(ctx context.Context, name string) (api.WriteResult, error) {
	found := false
	b.a.node.Read(func(s *store.State) { _, found = s.Get(propertyPrefix + name) })
	if !found {
		return api.WriteResult{}, api.Errorf(api.CodeNotFound, "property %q is not set", name)
	}
	return b.a.write(ctx, store.Delete{Key: propertyPrefix + name})
}

func (b backend) Join(ctx context.Context, req api.JoinRequest) (api.JoinResponse, error) {
	a := b.a
	if err := model.ValidName(req.Name); err != nil {
		return api.JoinResponse{}, api.Errorf(api.CodeBadRequest, "join: %v", err)
	}
	if len(req.Links) == 0 || len(req.Links) > model.MaxLinks {
		return api.JoinResponse{}, api.Errorf(api.CodeBadRequest, "join: a node needs 1 to %d links", model.MaxLinks)
	}
	for _, l := range req.Links {
		if err := model.ValidLink(l); err != nil {
			return api.JoinResponse{}, api.Errorf(api.CodeBadRequest, "join: %v", err)
		}
	}
	role := store.RoleLearner
	switch model.Role(req.Role) {
	case "", model.RoleNode:
	case model.RoleWitness:
		role = store.RoleWitness
	default:
		return api.JoinResponse{}, api.Errorf(api.CodeBadRequest, "join: role %q: want node or witness", req.Role)
	}
	members := a.members()
	var maxID uint64
	for _, m := range members {
		if m.Name == req.Name {
			return api.JoinResponse{}, api.Errorf(api.CodeConflict, "join: a node named %s is already a member", req.Name)
		}
		for _, l := range m.Links {
			if slices.Contains(req.Links, l) {
				return api.JoinResponse{}, api.Errorf(api.CodeConflict, "join: address %s is already used by %s", l, m.Name)
			}
		}
		maxID = max(maxID, m.ID)
	}
	// IDs of removed nodes are retired for good; step past them.
	var res api.WriteResult
	var id uint64
	var err error
	for id = maxID + 1; id < maxID+64; id++ {
		res, err = a.write(ctx, store.AddNode{Member: store.Member{Name: req.Name, ID: id, Links: req.Links, Role: role}})
		if !errors.Is(err, store.ErrIDRetired) {
			break
		}
	}
	if err != nil {
		return api.JoinResponse{}, err
	}
	// The write is applied here: refresh the member cache so the layout
	// sent back includes the new node.
	a.reloadMembers()
	layout := model.Cluster{Name: a.cfg.Name, Quorum: a.cfg.Quorum, Timing: a.cfg.Timing}
	for _, m := range a.members() {
		n := model.Node{Name: m.Name, ID: m.ID, Links: m.Links}
		if m.Role == store.RoleWitness {
			n.Role = model.RoleWitness
		}
		if c, ok := a.cfg.Cluster.Node(m.Name); ok {
			n.Votes = c.Votes
		}
		layout.Nodes = append(layout.Nodes, n)
	}
	raw, err := yaml.Marshal(layout)
	if err != nil {
		return api.JoinResponse{}, fmt.Errorf("render cluster layout: %w", err)
	}
	a.log.Info("node admitted", "peer", req.Name, "id", id, "role", role)
	return api.JoinResponse{ID: id, Cluster: raw, Epoch: res.Epoch}, nil
}

func (b backend) RemoveNode(ctx context.Context, name string) (api.WriteResult, error) {
	a := b.a
	found := false
	for _, m := range a.members() {
		found = found || m.Name == name
	}
	if !found {
		return api.WriteResult{}, api.Errorf(api.CodeNotFound, "remove-node: %s is not a member", name)
	}
	if name == a.cfg.Node {
		return api.WriteResult{}, api.Errorf(api.CodeBadRequest, "remove-node: %s is the node answering; stop it and ask another node", name)
	}
	if ns, ok := a.mship.Node(name); ok && ns.Status.IsMember() {
		return api.WriteResult{}, api.Errorf(api.CodeConflict, "remove-node: %s is still running (%s); stop its agent first", name, ns.Status)
	}
	return a.write(ctx, store.RemoveNode{Name: name})
}

// write proposes a configuration change and returns once it is committed and
// applied on this node: the only acknowledgement Vigil gives. Without quorum
// it refuses before proposing, so a minority never queues writes.
func (a *Agent) write(ctx context.Context, cmd store.Command) (api.WriteResult, error) {
	if q := a.quorum(); !q.Quorate {
		return api.WriteResult{}, api.Errorf(api.CodeNoQuorum, "no quorum (%s): this node refuses configuration changes until it is in a quorate partition", q.Reason)
	}
	// Quorum of votes is not enough to commit: Raft needs a majority of its
	// voters. They differ in two_node clusters (quorate alone, but Raft
	// needs both) and when learners hold votes; say so instead of waiting.
	if alive, voters := a.raftVotersAlive(); 2*alive <= voters {
		return api.WriteResult{}, api.Errorf(api.CodeNoQuorum,
			"only %d of %d Raft voters are reachable: configuration changes need a majority of them (a two_node cluster needs both nodes for changes; add a witness to change that)", alive, voters)
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	res, err := a.node.Propose(ctx, cmd)
	switch {
	case err == nil:
		return api.WriteResult{Epoch: res.Epoch}, nil
	case errors.Is(err, store.ErrNoLeader):
		return api.WriteResult{}, api.Errorf(api.CodeNoLeader, "no leader: the cluster is electing a coordinator; try again shortly")
	case errors.Is(err, store.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return api.WriteResult{}, api.Errorf(api.CodeTimeout, "the change was not committed within %s; it may still commit: check before retrying", writeTimeout)
	case errors.Is(err, store.ErrConfChangePending):
		return api.WriteResult{}, api.Errorf(api.CodeConflict, "another membership change is in progress; try again shortly")
	case errors.Is(err, store.ErrNodeExists), errors.Is(err, store.ErrEpochMismatch), errors.Is(err, store.ErrCompareFailed):
		return api.WriteResult{}, api.Errorf(api.CodeConflict, "%v", err)
	case errors.Is(err, store.ErrUnknownNode):
		return api.WriteResult{}, api.Errorf(api.CodeNotFound, "%v", err)
	case errors.Is(err, store.ErrBadCommand), errors.Is(err, store.ErrLastVoter):
		return api.WriteResult{}, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	return api.WriteResult{}, err
}
