// Package agent wires one Vigil node together: heartbeats (membership), vote
// math (quorum), the replicated store (Raft over the peer transport) and the
// HTTPS API. It owns the real clock, sockets and disk; the layers it wires
// are pure cores with thin shells of their own.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/executor"
	"github.com/vigil-ha/vigil/internal/fencing"
	"github.com/vigil-ha/vigil/internal/membership"
	"github.com/vigil-ha/vigil/internal/peer"
	"github.com/vigil-ha/vigil/internal/pki"
	"github.com/vigil-ha/vigil/internal/quorum"
	"github.com/vigil-ha/vigil/internal/store"
	"github.com/vigil-ha/vigil/internal/watchdog"
)

// loopEvery is how often the agent re-evaluates quorum, peers and voter
// balance besides reacting to membership changes at once. Small against
// node_timeout so that "a node outside the quorum knows it within
// node_timeout" holds with room to spare.
const loopEvery = 50 * time.Millisecond

// electionTick is raft's election timeout in 100 ms ticks, heartbeatTick
// its leader heartbeat period.
const (
	electionTick  = 20
	heartbeatTick = 3
)

// campaignStagger separates the survivors' campaigns after the leader is
// lost, so they do not split the vote; lowest raft ID goes first.
const campaignStagger = 150 * time.Millisecond

// Agent is one running node.
type Agent struct {
	cfg    *config.File
	log    *slog.Logger
	key    []byte
	start  time.Time
	bootID uint64

	// agents runs resource agents; exec runs this node's tasks and
	// monitors; ctrl acts as DC when this node is one. Witnesses have
	// neither executor nor controller: they run nothing.
	agents *agents.Registry
	exec   *executor.Executor
	ctrl   *controller.Controller
	fencer *fencing.Runner
	ds     datastoreState // this node's datastore checks (datastores.go)
	hb     hbState        // datastore heartbeats (heartbeat.go)

	stopHeartbeats context.CancelFunc

	node      *store.Node
	disk      store.Disk
	mship     *membership.Service
	transport *peer.Transport
	servers   []*http.Server

	qopts quorum.Options

	// lease is the node lease and the DC's judge of self-fencing; wd the
	// watchdog (nil without one), petted by petLoop until stopPets.
	lease    *leaseState
	wd       watchdog.Watchdog
	stopPets context.CancelFunc
	petsDone chan struct{}
	infoMu   sync.Mutex // serializes setInfo

	mu        sync.Mutex
	infoFlags byte // the quorum flags of the heartbeat Info
	qstate    quorum.State
	qresult   quorum.Result
	peersSeen string // fingerprint of the member list last given to membership
	cache     []store.Member

	leaderless   time.Time // when this node last saw no leader begin; zero while it has one
	lastCampaign time.Time
	promoting    bool // a Promote proposal is in flight
}

// Run starts the node described by f and blocks until ctx ends or a fatal
// error (such as a storage failure) stops it.
func Run(ctx context.Context, f *config.File, log *slog.Logger) error {
	a, err := start(ctx, f, log)
	if err != nil {
		return err
	}
	return a.run(ctx)
}

func start(ctx context.Context, f *config.File, log *slog.Logger) (a *Agent, err error) {
	self := f.Self()
	// Boot IDs must grow across restarts; wall-clock nanoseconds do
	// unless the clock steps back across a restart, which membership logs
	// and counts.
	a = &Agent{cfg: f, log: log.With("node", self.Name), start: time.Now(), qopts: quorumOptions(f), bootID: uint64(time.Now().UnixNano())}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if err := a.qopts.Validate(quorumVoters(f.Nodes)); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, w := range quorum.Warnings(a.qopts, quorumVoters(f.Nodes), false) {
		a.log.Warn("unsafe configuration: " + w)
	}
	if a.lease, err = newLeaseState(f); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if f.Watchdog.Enabled() && f.Quorum.TwoNode && len(f.Nodes) == 2 {
		a.log.Warn("unsafe configuration: watchdog with two_node and no witness: a node's lease needs a majority of the voters' echoes, so on a partition both nodes lose it and stop their resources (and a hung survivor is reset); add a witness")
	}
	if a.key, err = pki.LoadKey(f.KeyPath()); err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(a.key)
	if err != nil {
		return nil, fmt.Errorf("derive cluster CA: %w", err)
	}
	cert, err := ca.IssueNode(self.Name, self.Links, time.Now())
	if err != nil {
		return nil, fmt.Errorf("issue node certificate: %w", err)
	}

	if err := os.MkdirAll(f.DataPath(), 0o700); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	disk, err := store.OpenBoltDisk(f.DataPath())
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	a.disk = disk
	if f.Initial {
		switch err := store.Bootstrap(disk, bootstrapMembers(f.Nodes)); {
		case err == nil:
			a.log.Info("bootstrapped a new cluster", "cluster", f.Name, "nodes", len(f.Nodes))
		case errors.Is(err, store.ErrAlreadyBootstrapped):
			a.log.Info("restarting from the data folder", "dir", f.DataPath())
		default:
			return nil, fmt.Errorf("bootstrap store: %w", err)
		}
	}

	a.transport = peer.New(peer.Config{
		Self:      self.ID,
		SelfName:  self.Name,
		TLS:       pki.ClientTLS(ca, &cert, ""),
		Resolver:  a,
		Logger:    a.log,
		Authorize: a.authorizePeer,
	})
	a.node, err = store.StartNode(store.NodeConfig{
		// Raft's own election timeout (2-4 s) is only the fallback: the
		// membership layer declares a leader lost after node_timeout and
		// the survivors elect a new one at once (onNodeLost). The longer
		// timeout keeps a link switch from costing the leader.
		// Raft heartbeats only keep the leader's lease (commits are pushed at
		// once), so they can be sparse: membership detects failures.
		Core:      store.Config{ID: self.ID, Name: self.Name, Log: a.log, ElectionTick: electionTick, HeartbeatTick: heartbeatTick},
		Disk:      disk,
		Transport: a.transport,
	})
	if err != nil {
		return nil, fmt.Errorf("start store: %w", err)
	}

	a.reloadMembers()
	tm := f.Timing.WithDefaults()
	a.mship, err = membership.NewService(membership.ServiceConfig{
		Machine: membership.Config{
			Self:        self.Name,
			SelfLinks:   len(self.Links),
			Peers:       a.peers(),
			Interval:    tm.Heartbeat.D(),
			NodeTimeout: tm.NodeTimeout.D(),
		},
		BootID:    a.bootID,
		ClusterID: f.Name,
		Key:       pki.HeartbeatKey(a.key),
		Listen:    self.Links,
		Logger:    a.log,
	})
	if err != nil {
		return nil, fmt.Errorf("start heartbeats: %w", err)
	}
	// Heartbeats outlive the signal context: a node that leaves cleanly
	// keeps answering until its resources are stopped (close ends them).
	mctx, mcancel := context.WithCancel(context.Background())
	a.stopHeartbeats = mcancel
	if err := a.mship.Start(mctx); err != nil {
		return nil, fmt.Errorf("start heartbeats: %w", err)
	}

	if err := os.MkdirAll(f.RunPath(), 0o700); err != nil {
		return nil, fmt.Errorf("create run folder: %w", err)
	}
	a.agents = agents.NewRegistry(agents.Options{StateDir: f.RunPath(), Logger: a.log, Datastores: a.datastoreLookup})
	if !self.IsWitness() {
		// Armed before anything can start a resource; petted from here on.
		if err := a.startWatchdog(); err != nil {
			return nil, err
		}
		ecfg := executor.Config{Node: self.Name, BootID: a.bootID, Store: a.node, Agents: a.agents, Log: a.log, Watchdog: a.watchdogInfo()}
		ecfg.Survivors = a.agents.Survivors
		if a.wd != nil {
			ecfg.Lease = a.holdsLease
			ecfg.KeepMargin = keepMargin(a.wd.Timeout())
		}
		a.exec = executor.New(ecfg)
		a.fencer = fencing.NewRunner(fencing.Options{Logger: a.log})
		a.ctrl = controller.New(controller.Config{
			Self: self.Name, Store: a.node, Alive: a.alive, Quorate: a.quorate, Log: a.log,
			Fencer: a.fencer, SelfFenced: a.selfFenced, Releases: a.releaseClaims,
			HandOver: a.transferLeadership,
		})
		if a.wd != nil {
			pctx, stop := context.WithCancel(context.Background())
			a.stopPets, a.petsDone = stop, make(chan struct{})
			go func() { defer close(a.petsDone); a.petLoop(pctx) }()
		}
	}

	mux := http.NewServeMux()
	mux.Handle("/raft/", a.transport.Handler(a.node.Step))
	mux.Handle("/v1/", newAPI(a))
	// Profiles for operators and for our own idle-cost work; same token as
	// the API.
	mux.Handle("/debug/pprof/", a.requireToken(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", a.requireToken(http.HandlerFunc(pprof.Profile)))
	serverTLS := pki.ServerTLS(ca, cert)
	for _, addr := range self.Links {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		srv := &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		}
		a.servers = append(a.servers, srv)
		go func() {
			if err := srv.Serve(tls.NewListener(ln, serverTLS)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("API listener stopped", "addr", addr, "err", err)
			}
		}()
	}
	a.log.Info("agent started", "cluster", f.Name, "links", self.Links, "id", self.ID)
	return a, nil
}

// requireToken wraps h with the API token check.
func (a *Agent) requireToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !pki.CheckToken(a.key, tok) {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// run is the agent's loop: it reacts to membership changes at once and
// re-evaluates quorum and the cluster layout every loopEvery.
func (a *Agent) run(ctx context.Context) error {
	defer a.close()
	changes, unsubscribe := a.mship.Subscribe()
	defer unsubscribe()
	// The executor and the controller outlive ctx: on a clean stop the
	// node first leaves (its resources are stopped through the DC, which
	// may be this node), then they stop.
	workCtx, stopWork := context.WithCancel(context.Background())
	var work sync.WaitGroup
	defer func() { stopWork(); work.Wait() }()
	work.Add(1)
	go func() { defer work.Done(); a.relayTransportReports(workCtx) }()
	work.Add(1)
	go func() { defer work.Done(); a.leaseLoop(workCtx) }()
	if a.exec != nil {
		work.Add(4)
		go func() { defer work.Done(); _ = a.exec.Run(workCtx) }()
		go func() { defer work.Done(); _ = a.ctrl.Run(workCtx) }()
		go func() { defer work.Done(); a.datastoreLoop(workCtx) }()
		go func() { defer work.Done(); a.heartbeatLoop(workCtx) }()
	}
	tick := time.NewTicker(loopEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping")
			a.leave(workCtx, changes)
			return nil
		case <-a.node.Done():
			return fmt.Errorf("store stopped: %w", a.node.Err())
		case ch, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			if ch.Kind == membership.ChangeInfo {
				// Loss reports change the Info at every heartbeat while a
				// node is lost: the lease loop and the periodic refresh
				// read it.
				continue
			}
			a.logChange(ch)
			if ch.Kind == membership.ChangeNode && ch.To == membership.StatusLost {
				a.onNodeLost(ctx, ch.Node)
			}
			if a.exec != nil && ch.Kind == membership.ChangeNode && ch.From == membership.StatusLost && ch.To.IsMember() {
				// A partition healed: what this node holds is announced
				// again, for neighbours that learned a stale owner.
				a.exec.Reannounce("node " + ch.Node + " is back")
			}
			if a.ctrl != nil && ch.Kind == membership.ChangeNode {
				a.ctrl.Kick()
			}
		case <-tick.C:
		}
		a.refresh(ctx)
	}
}

// leaveTimeout bounds a clean stop: the time the DC has to stop this
// node's resources before the agent exits anyway (they are then unknown to
// the others until the node is fenced or confirmed down).
const leaveTimeout = 60 * time.Second

// leave stops this node's resources through the DC before the agent exits,
// so the others may start them at once without fencing. Membership, quorum
// and the controller keep running meanwhile.
func (a *Agent) leave(ctx context.Context, changes <-chan membership.Change) {
	if a.exec == nil {
		return
	}
	if !a.quorate() {
		// Nothing can be recorded without quorum: the others will treat
		// this node as lost (its resources unknown) until it is fenced or
		// confirmed down.
		a.log.Warn("stopping without quorum: cannot leave cleanly; resources here are left as they are")
		return
	}
	lctx, cancel := context.WithTimeout(ctx, leaveTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.exec.Leave(lctx) }()
	tick := time.NewTicker(loopEvery)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				a.log.Warn("left without stopping every resource", "err", err)
			} else {
				a.log.Info("left the cluster cleanly: every resource here is stopped")
			}
			return
		case ch, ok := <-changes:
			if ok && a.ctrl != nil && ch.Kind == membership.ChangeNode {
				a.ctrl.Kick()
			}
		case <-tick.C:
			a.refresh(lctx)
		}
	}
}

// alive reports whether a node is a member in this node's view (itself
// included): the liveness the DC uses for node states.
func (a *Agent) alive(name string) bool {
	if name == a.cfg.Node {
		return true
	}
	if a.mship == nil {
		return false
	}
	ns, ok := a.mship.Node(name)
	return ok && ns.Status.IsMember()
}

// relayTransportReports hands the transport's delivery failures to raft:
// an unreachable peer stops optimistic pipelining to it, and a lost
// snapshot is sent again instead of being waited for.
func (a *Agent) relayTransportReports(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-a.transport.Unreachable():
			a.node.ReportUnreachable(ctx, id)
		case r := <-a.transport.Snapshots():
			if r.Failed {
				a.node.ReportSnapshot(ctx, r.To, true)
			}
		}
	}
}

// refresh recomputes quorum, pushes the member list to membership when it
// changed, and lets the leader keep the Raft voter count at its target.
func (a *Agent) refresh(ctx context.Context) {
	a.reloadMembers()
	a.syncPeers()
	a.updateQuorum()
	a.balanceVoters(ctx)
	a.campaignIfLeaderless(ctx)
	a.handOffLeadership(ctx)
}

// campaignIfLeaderless starts an election when this quorate voter has had
// no leader for a while: at first start, and after a leader stepped down.
// Voters go in raft-ID order (rank × campaignStagger apart), at most one
// campaign per second each, so they do not split the vote.
func (a *Agent) campaignIfLeaderless(ctx context.Context) {
	st := a.node.Status()
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if st.Lead != 0 || !a.qresult.Quorate || !slices.Contains(st.Voters, st.ID) || a.isWitness() {
		a.leaderless = time.Time{}
		return
	}
	if a.leaderless.IsZero() {
		a.leaderless = now
	}
	rank := 0
	for _, m := range a.cache {
		if m.ID < st.ID && slices.Contains(st.Voters, m.ID) {
			if ns, ok := a.mship.Node(m.Name); ok && ns.Status.IsMember() {
				rank++
			}
		}
	}
	wait := campaignStagger + time.Duration(rank)*2*campaignStagger
	if now.Sub(a.leaderless) < wait || now.Sub(a.lastCampaign) < time.Second {
		return
	}
	a.lastCampaign = now
	go a.node.Campaign(ctx)
}

func (a *Agent) logChange(ch membership.Change) {
	switch ch.Kind {
	case membership.ChangeNode:
		a.log.Info("node state changed", "peer", ch.Node, "from", ch.From.String(), "to", ch.To.String())
	case membership.ChangeLink:
		a.log.Info("link state changed", "peer", ch.Node, "link", ch.Link, "from", ch.LinkFrom.String(), "to", ch.LinkTo.String())
	case membership.ChangeRestart:
		a.log.Info("peer restarted", "peer", ch.Node)
	}
}

// members returns the replicated member list as of the last refresh (at
// most loopEvery old), so callers on hot paths such as the transport's
// resolver never wait on the store.
func (a *Agent) members() []store.Member {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cache
}

// reloadMembers refreshes the member cache from the store.
func (a *Agent) reloadMembers() {
	var ms []store.Member
	a.node.Read(func(s *store.State) { ms = s.Members() })
	a.mu.Lock()
	a.cache = ms
	a.mu.Unlock()
}

// onNodeLost reacts to membership declaring a peer lost. If it was the raft
// leader, the survivors forget it and campaign at once, staggered by raft
// ID, instead of waiting out raft's election timeout: membership is the
// faster failure detector. Safety stays raft's: a pre-vote still needs a
// majority that also lost the leader.
func (a *Agent) onNodeLost(ctx context.Context, name string) {
	st := a.node.Status()
	var lostID uint64
	var voters []uint64
	for _, m := range a.members() {
		if m.Name == name {
			lostID = m.ID
		}
	}
	if lostID == 0 || st.Lead != lostID || !slices.Contains(st.Voters, st.ID) {
		return
	}
	// Everyone forgets the lost leader (so pre-votes are granted), but a
	// witness does not campaign: it must not become the DC.
	if a.isWitness() {
		a.node.ForgetLeader(ctx)
		return
	}
	for _, id := range st.Voters {
		if id == lostID {
			continue
		}
		if id == st.ID {
			voters = append(voters, id)
			continue
		}
		for _, m := range a.members() {
			if m.ID == id {
				if ns, ok := a.mship.Node(m.Name); ok && ns.Status.IsMember() {
					voters = append(voters, id)
				}
			}
		}
	}
	slices.Sort(voters)
	rank := slices.Index(voters, st.ID)
	a.log.Info("leader lost: electing a new one", "lost", name, "rank", rank)
	a.node.ForgetLeader(ctx)
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(rank) * campaignStagger):
		}
		if cur := a.node.Status(); cur.Lead == 0 || cur.Lead == lostID {
			a.node.Campaign(ctx)
		}
	}()
}

// peers returns the membership peers: every member but self, from the
// replicated state, or from the configuration before the store has any.
func (a *Agent) peers() []membership.Peer {
	var out []membership.Peer
	ms := a.members()
	if len(ms) == 0 {
		for _, n := range a.cfg.Nodes {
			if n.Name != a.cfg.Node {
				out = append(out, membership.Peer{Name: n.Name, Links: n.Links})
			}
		}
		return out
	}
	for _, m := range ms {
		if m.Name != a.cfg.Node {
			out = append(out, membership.Peer{Name: m.Name, Links: m.Links})
		}
	}
	return out
}

func (a *Agent) syncPeers() {
	ps := a.peers()
	fp := fmt.Sprint(ps)
	a.mu.Lock()
	same := fp == a.peersSeen
	a.peersSeen = fp
	a.mu.Unlock()
	if same {
		return
	}
	if err := a.mship.SetPeers(ps); err != nil {
		a.log.Error("update heartbeat peers", "err", err)
	}
	// Stop streaming to nodes that were removed.
	if a.transport != nil {
		for _, id := range a.removedSince(ps) {
			a.transport.Remove(id)
		}
	}
}

// removedSince returns the raft IDs of configured nodes (from the file)
// that are no longer members; called when the member list changes.
func (a *Agent) removedSince(ps []membership.Peer) []uint64 {
	var out []uint64
	for _, n := range a.cfg.Nodes {
		if n.Name == a.cfg.Node || slices.ContainsFunc(ps, func(p membership.Peer) bool { return p.Name == n.Name }) {
			continue
		}
		out = append(out, n.ID)
	}
	return out
}

// PeerAddrs implements peer.Resolver: a node's link addresses, links that
// membership sees up first, so raft traffic moves off a cut link at once.
func (a *Agent) PeerAddrs(id uint64) []string {
	var m store.Member
	var ok bool
	for _, x := range a.members() {
		if x.ID == id {
			m, ok = x, true
		}
	}
	if !ok {
		for _, n := range a.cfg.Nodes {
			if n.ID == id {
				m, ok = store.Member{Name: n.Name, ID: n.ID, Links: n.Links}, true
			}
		}
	}
	if !ok {
		return nil
	}
	st, _ := a.mship.Node(m.Name)
	up := make(map[int]bool)
	for _, l := range st.Links {
		up[l.Index] = l.Status == membership.LinkUp
	}
	addrs := slices.Clone(m.Links)
	slices.SortStableFunc(addrs, func(x, y string) int {
		ix, iy := slices.Index(m.Links, x), slices.Index(m.Links, y)
		switch {
		case up[ix] && !up[iy]:
			return -1
		case up[iy] && !up[ix]:
			return 1
		}
		return 0
	})
	return addrs
}

// authorizePeer checks that a peer's certificate name owns the raft ID it
// sends as, so one node cannot speak for another.
func (a *Agent) authorizePeer(certName string, fromID uint64) bool {
	for _, m := range a.members() {
		if m.ID == fromID {
			return m.Name == certName
		}
	}
	// A node that joined after our last applied entry: accept any cluster
	// certificate until we learn of it (it holds the cluster key).
	return true
}

// raftVotersAlive counts the Raft voters this node can reach (itself
// included) against all of them.
func (a *Agent) raftVotersAlive() (alive, voters int) {
	st := a.node.Status()
	for _, id := range st.Voters {
		if id == st.ID {
			alive++
			continue
		}
		for _, m := range a.members() {
			if m.ID == id {
				if ns, ok := a.mship.Node(m.Name); ok && ns.Status.IsMember() {
					alive++
				}
			}
		}
	}
	return alive, len(st.Voters)
}

// isWitness reports whether this node only votes.
func (a *Agent) isWitness() bool { return a.cfg.Self().IsWitness() }

// handOffLeadership moves Raft leadership off a witness: a witness votes so
// that two-node sites keep a majority, but it must never be the DC (the DC
// runs the scheduler and dispatches work). It picks the first reachable
// non-witness voter; Raft only completes the transfer once that node has
// caught up.
func (a *Agent) handOffLeadership(ctx context.Context) {
	st := a.node.Status()
	if !a.isWitness() || st.Lead != st.ID {
		return
	}
	a.transferLeadership(ctx, "witness is raft leader", nil)
}

// transferLeadership hands raft leadership (and so the DC role) to a live
// voter that runs resources, other than this node and those in avoid. It
// reports whether it found one.
func (a *Agent) transferLeadership(ctx context.Context, why string, avoid []string) bool {
	st := a.node.Status()
	for _, m := range a.members() {
		if m.Role == store.RoleWitness || m.ID == st.ID || !slices.Contains(st.Voters, m.ID) || slices.Contains(avoid, m.Name) {
			continue
		}
		if ns, ok := a.mship.Node(m.Name); ok && ns.Status.IsMember() {
			a.log.Warn("handing raft leadership (and the DC role) to another node", "why", why, "to", m.Name)
			a.node.TransferLeader(ctx, m.ID)
			return true
		}
	}
	return false
}

// balanceVoters promotes a live learner when the cluster has fewer Raft
// voters than its target (3 or 5), one at a time, on the quorate leader.
func (a *Agent) balanceVoters(ctx context.Context) {
	st := a.node.Status()
	if st.Lead != st.ID || !a.quorate() {
		return
	}
	ms := a.members()
	if len(st.Voters) >= store.TargetVoters(len(ms)) {
		return
	}
	var cand string
	for _, m := range ms {
		if m.Role == store.RoleLearner {
			if ns, ok := a.mship.Node(m.Name); ok && ns.Status.IsMember() {
				cand = m.Name
				break
			}
		}
	}
	a.mu.Lock()
	if cand == "" || a.promoting {
		a.mu.Unlock()
		return
	}
	a.promoting = true
	a.mu.Unlock()
	go func() {
		defer func() { a.mu.Lock(); a.promoting = false; a.mu.Unlock() }()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := a.node.Propose(pctx, store.Promote{Name: cand}); err != nil {
			a.log.Warn("promote learner to voter", "peer", cand, "err", err)
			return
		}
		a.log.Info("promoted learner to voter", "peer", cand)
	}()
}

// close releases everything start acquired, in reverse order.
func (a *Agent) close() {
	a.closeWatchdog()
	for _, s := range a.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.Shutdown(ctx)
		cancel()
	}
	if a.stopHeartbeats != nil {
		a.stopHeartbeats()
	}
	if a.mship != nil {
		_ = a.mship.Close()
	}
	if a.transport != nil {
		a.transport.Close()
	}
	if a.node != nil {
		if err := a.node.Stop(); err != nil {
			a.log.Error("stop store", "err", err)
		}
	}
	if a.disk != nil {
		if err := a.disk.Close(); err != nil {
			a.log.Error("close store", "err", err)
		}
	}
}
