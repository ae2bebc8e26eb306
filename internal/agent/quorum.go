package agent

import (
	"time"

	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/quorum"
	"github.com/vigil-ha/vigil/internal/store"
)

// Heartbeat info: [infoVersion, flags] and then, when this node misses
// some voters, its lease loss report (lease.MemberSet wire format; see
// lease.go). The flags say what a node tells its peers about its quorum view
// (membership carries the bytes opaquely). A reader ignores bytes it does
// not know, so the report did not need a new version.
const (
	infoVersion     = 1
	infoQuorate     = 1 << 0
	infoWaitForAllD = 1 << 1 // wait_for_all has been satisfied
)

func quorumOptions(f *config.File) quorum.Options {
	q := f.Quorum
	return quorum.Options{
		ExpectedVotes:         q.ExpectedVotes,
		TwoNode:               q.TwoNode,
		WaitForAll:            q.WaitForAll,
		LastManStanding:       q.LastManStanding,
		LastManStandingWindow: q.LastManStandingWindow.D(),
	}
}

func quorumVoters(nodes []model.Node) []quorum.Voter {
	out := make([]quorum.Voter, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, quorum.Voter{Name: n.Name, Votes: n.VoteCount(), Witness: n.IsWitness()})
	}
	return out
}

// bootstrapMembers decides the first Raft layout: witnesses vote (that is
// what they are for), then nodes in configuration order until the target of
// 3 or 5 voters; the rest are learners, so a large cluster does not run
// many-way consensus.
func bootstrapMembers(nodes []model.Node) []store.Member {
	target := store.TargetVoters(len(nodes))
	voters := 0
	for _, n := range nodes {
		if n.IsWitness() {
			voters++
		}
	}
	out := make([]store.Member, 0, len(nodes))
	for _, n := range nodes {
		m := store.Member{Name: n.Name, ID: n.ID, Links: n.Links}
		switch {
		case n.IsWitness():
			m.Role = store.RoleWitness
		case voters < target:
			m.Role = store.RoleVoter
			voters++
		default:
			m.Role = store.RoleLearner
		}
		out = append(out, m)
	}
	return out
}

// voters returns the quorum voters: every member of the replicated state,
// with the votes the configuration gives it (1 for nodes that joined later).
func (a *Agent) voters() []quorum.Voter {
	ms := a.members()
	if len(ms) == 0 {
		return quorumVoters(a.cfg.Nodes)
	}
	out := make([]quorum.Voter, 0, len(ms))
	for _, m := range ms {
		v := quorum.Voter{Name: m.Name, Votes: 1, Witness: m.Role == store.RoleWitness}
		if n, ok := a.cfg.Cluster.Node(m.Name); ok {
			v.Votes = n.VoteCount()
		}
		out = append(out, v)
	}
	return out
}

// updateQuorum recomputes this node's quorum from its membership view. A
// peer that says wait_for_all was satisfied lets a restarted node skip the
// wait, as votequorum does: the cluster as a whole has seen all nodes.
func (a *Agent) updateQuorum() {
	alive := []string{a.cfg.Node}
	peerDone := false
	for _, ns := range a.mship.Snapshot() {
		if !ns.Status.IsMember() {
			continue
		}
		alive = append(alive, ns.Name)
		if len(ns.Info) >= 2 && ns.Info[0] == infoVersion && ns.Info[1]&infoWaitForAllD != 0 {
			peerDone = true
		}
	}
	voters := a.voters()
	now := time.Since(a.start)

	a.mu.Lock()
	st := a.qstate
	if peerDone {
		st.WaitForAllDone = true
	}
	res, st := quorum.Compute(a.qopts, voters, alive, st, now)
	prev := a.qresult
	a.qstate, a.qresult = st, res
	a.mu.Unlock()

	if res.Quorate != prev.Quorate || prev.Reason == "" {
		if res.Quorate {
			a.log.Info("quorum gained", "reason", res.Reason)
		} else {
			a.log.Warn("no quorum", "reason", res.Reason)
		}
	}
	var flags byte
	if res.Quorate {
		flags |= infoQuorate
	}
	if st.WaitForAllDone {
		flags |= infoWaitForAllD
	}
	a.mu.Lock()
	a.infoFlags = flags
	a.mu.Unlock()
	a.setInfo()
}

func (a *Agent) quorum() quorum.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.qresult
}

func (a *Agent) quorate() bool { return a.quorum().Quorate }

func quorumWarnings(a *Agent) []string {
	return quorum.Warnings(a.qopts, a.voters(), false)
}
