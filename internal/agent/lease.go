package agent

// Watchdog self-fencing, the agent's part (package lease explains the
// proof, package watchdog the backends):
//
//   - Every node (witnesses too: they vote) puts a loss report in its
//     heartbeat Info after the two quorum bytes: the voters it has not
//     heard for node_timeout, with their silences.
//   - Every node keeps a lease.Judge fed with its own membership view and
//     the reports of its peers, since any node may become DC: the DC's
//     controller asks it (Config.SelfFenced) whether a lost node with a
//     watchdog counts as reset.
//   - A node with a watchdog holds a lease.Holder fed with its peers'
//     echoes, and pets the watchdog only while the lease holds or nothing
//     is active here. Once the lease has lapsed with something active it
//     never pets again (sticky): the watchdog resets it.
//   - A node whose lease is about to end, or that lost quorum, with
//     resources active, stops them itself (executor.SelfStop) and rejoins
//     like a fenced node once it is quorate with a lease again.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/lease"
	"github.com/vigil-ha/vigil/internal/membership"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/watchdog"
)

// leaseEvery is how often the lease loop feeds the Holder and the Judge,
// refreshes the loss report and decides about self-stops.
const leaseEvery = 25 * time.Millisecond

// selfStopMargin is how much of the lease must be left when the node starts
// stopping its resources itself. A quarter of the lease leaves three
// quarters for echoes that are late (jitter, a lost heartbeat or two: a
// false self-stop is a false failover); a stop that outlasts the rest lets
// the lease lapse, and then the watchdog finishes the job.
func selfStopMargin(leaseDuration time.Duration) time.Duration { return leaseDuration / 4 }

// keepMargin is how long an instance left running while this node is cut
// off must stay guarded by its disk lease from now for the node to keep
// petting a watchdog of timeout t: were the agent to freeze right after a
// pet, the reset lands within t (plus the pet's own latency), before the
// lease could be taken over (the lease's Margin covers the rest).
func keepMargin(t time.Duration) time.Duration { return t + 100*time.Millisecond }

// unguarded counts what may be active here, less what a self-stop left
// running under a disk lease that outlasts a watchdog reset from now
// (executor.UnguardedActive).
func (a *Agent) unguarded() int {
	margin := time.Duration(0)
	if a.wd != nil {
		margin = keepMargin(a.wd.Timeout())
	}
	n, _ := a.exec.UnguardedActive(time.Now().Add(margin))
	return n
}

// selfStopBudget bounds one self-stop attempt (stops have their own
// timeouts; the watchdog does not wait for them).
const selfStopBudget = 5 * time.Minute

// leaseState is the node's lease side: the Judge always, the Holder and
// the watchdog when one is configured. Its methods are safe for concurrent
// use.
type leaseState struct {
	self     string
	wcfg     model.WatchdogConfig // with defaults
	lcfg     lease.Config
	nodeTime time.Duration // membership node timeout

	mu         sync.Mutex
	judge      *lease.Judge
	holder     *lease.Holder // nil without a watchdog
	members    *lease.MemberSet
	votersFP   string
	report     []byte            // encoded loss report (nil: nothing lost)
	fed        map[string]fedKey // the peer Info last fed to the Judge
	kicked     map[string]bool   // nodes whose self-fencing the DC was told of
	everValid  bool              // the lease held once in this incarnation
	lapsed     bool              // sticky: the lease lapsed with a resource active
	quorate    bool              // quorate once in this incarnation
	stopping   bool              // a self-stop runs
	warnedPets time.Time
}

type fedKey struct {
	boot uint64
	send time.Duration
}

// newLeaseState builds the Judge, and the Holder when this node runs a
// watchdog (never on a witness: it runs nothing).
func newLeaseState(f *config.File) (*leaseState, error) {
	w := f.Watchdog.WithDefaults()
	l := &leaseState{
		self:     f.Node,
		wcfg:     w,
		nodeTime: f.Timing.WithDefaults().NodeTimeout.D(),
		lcfg:     lease.Config{LeaseDuration: w.Lease.D(), WatchdogTimeout: w.Timeout.D()},
		fed:      map[string]fedKey{},
		kicked:   map[string]bool{},
	}
	var err error
	if l.judge, err = lease.NewJudge(l.lcfg); err != nil {
		return nil, err
	}
	if w.Enabled() && !f.Self().IsWitness() {
		if l.holder, err = lease.NewHolder(l.lcfg); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// startWatchdog arms the configured watchdog backend. The process backend
// kills this process's group: the agent must lead it, so that the resources
// it starts (which stay in its group) die with it.
func (a *Agent) startWatchdog() error {
	l := a.lease
	if l.holder == nil {
		return nil
	}
	switch l.wcfg.Backend {
	case model.WatchdogProcess:
		if pg := syscall.Getpgrp(); pg != os.Getpid() {
			if err := syscall.Setpgid(0, 0); err != nil {
				return fmt.Errorf("watchdog: become process group leader (group %d): %w", pg, err)
			}
			a.log.Warn("watchdog: made the agent its own process group leader, so that the supervisor can kill it and everything it starts", "old_group", pg, "group", syscall.Getpgrp())
		} else {
			a.log.Info("watchdog: the agent leads its process group", "group", pg)
		}
		bin, err := os.Executable()
		if err != nil {
			return fmt.Errorf("watchdog: %w", err)
		}
		a.wd, err = watchdog.StartProcess(bin, l.wcfg.Timeout.D(), syscall.Getpgrp(), a.log)
		if err != nil {
			return err
		}
	case model.WatchdogDevice:
		wd, err := watchdog.OpenDevice(l.wcfg.Device, l.wcfg.Timeout.D())
		if err != nil {
			return err
		}
		a.wd = wd
		a.log.Info("watchdog device armed", "device", l.wcfg.Device, "timeout", wd.Timeout())
	}
	return nil
}

// watchdogInfo is what the node record says of this node's watchdog.
func (a *Agent) watchdogInfo() *model.WatchdogInfo {
	if a.wd == nil {
		return nil
	}
	return &model.WatchdogInfo{Backend: a.lease.wcfg.Backend, Timeout: a.wd.Timeout(), Lease: a.lease.wcfg.Lease.D()}
}

// holdsLease reports whether this node may start resources as far as its
// lease goes (always without a watchdog).
func (a *Agent) holdsLease() bool {
	l := a.lease
	if l.holder == nil {
		return true
	}
	now := a.mship.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.lapsed && l.holder.Valid(now)
}

// setInfo publishes the heartbeat Info: [infoVersion, flags] and the loss
// report, if any (older releases read the first two bytes only).
func (a *Agent) setInfo() {
	a.infoMu.Lock()
	defer a.infoMu.Unlock()
	a.mu.Lock()
	info := []byte{infoVersion, a.infoFlags}
	a.mu.Unlock()
	a.lease.mu.Lock()
	info = append(info, a.lease.report...)
	a.lease.mu.Unlock()
	if err := a.mship.SetInfo(info); err != nil {
		a.log.Error("set heartbeat info", "err", err)
	}
}

// selfFenced is the controller's SelfFenced hook.
func (a *Agent) selfFenced(node string) bool {
	now := a.mship.Now()
	a.lease.mu.Lock()
	defer a.lease.mu.Unlock()
	return a.lease.judge.Fenced(now, node)
}

// leaseLoop runs leaseTick every leaseEvery until ctx ends.
func (a *Agent) leaseLoop(ctx context.Context) {
	t := time.NewTicker(leaseEvery)
	defer t.Stop()
	for {
		a.leaseTick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leaseTick feeds the Holder and the Judge, publishes the loss report and
// starts a self-stop or a rejoin when due.
func (a *Agent) leaseTick(ctx context.Context) {
	l := a.lease
	nodes := a.mship.Snapshot()
	now := a.mship.Now()
	voters := make([]string, 0, len(nodes)+1)
	for _, v := range a.voters() {
		voters = append(voters, v.Name)
	}
	slices.Sort(voters)
	quorate := a.quorate()

	l.mu.Lock()
	if fp := strings.Join(voters, ","); fp != l.votersFP {
		l.votersFP = fp
		l.judge.SetVoters(voters, l.self)
		if l.holder != nil {
			l.holder.SetVoters(voters, l.self)
		}
		ms, err := lease.NewMemberSet(voters)
		if err != nil {
			a.log.Error("lease: cannot encode loss reports for these voters", "err", err)
		}
		l.members = ms
		a.log.Info("lease: voters", "voters", voters)
	}
	isVoter := func(n string) bool { _, ok := slices.BinarySearch(voters, n); return ok }

	// Our own losses: the voters silent for node_timeout (and those never
	// heard since this incarnation started that long ago).
	var lost []lease.Loss
	for _, ns := range nodes {
		if !isVoter(ns.Name) {
			continue
		}
		if ns.Status == membership.StatusLost || (ns.Status == membership.StatusUnknown && now >= l.nodeTime) {
			lost = append(lost, lease.Loss{Node: ns.Name, Silence: now - ns.LastHeard})
		}
	}
	l.report = nil
	if len(lost) > 0 && l.members != nil {
		b, err := l.members.AppendReport(nil, lease.LossReport{AsOf: now, Lost: lost})
		if err != nil {
			a.log.Error("lease: encode loss report", "err", err)
		} else {
			l.report = b
		}
	}

	// The Judge: peers' reports first (each once), then our own view.
	for _, ns := range nodes {
		if !ns.InfoHasEcho || !isVoter(ns.Name) {
			continue
		}
		key := fedKey{boot: ns.BootID, send: ns.InfoSend}
		if l.fed[ns.Name] == key {
			continue
		}
		r, ok := decodeLossReport(l.members, ns.Info)
		if !ok {
			continue
		}
		l.fed[ns.Name] = key
		age := time.Duration(0)
		if len(r.Lost) > 0 {
			age = ns.InfoSend - r.AsOf
		}
		l.judge.Report(now, lease.Report{Reporter: ns.Name, Lost: r.Lost, Age: age, SentAfter: ns.InfoEcho})
	}
	l.judge.ReportSelf(now, lost)
	kick := false
	for _, n := range voters {
		at, ok := l.judge.SelfFencedAt(n)
		switch {
		case ok && now >= at && !l.kicked[n]:
			l.kicked[n] = true
			kick = true
			a.log.Warn("lease: node counts as reset by its watchdog (lease lapsed by a majority's account, plus the watchdog's reset bound)", "peer", n)
		case !ok:
			delete(l.kicked, n)
		}
	}

	// The Holder.
	ending := false
	if l.holder != nil {
		for _, ns := range nodes {
			if ns.HasEcho {
				l.holder.Observe(now, ns.Name, ns.Echo)
			}
		}
		if l.holder.Valid(now) {
			l.everValid = true
		}
		ending = l.everValid && l.holder.Remaining(now) < selfStopMargin(l.lcfg.LeaseDuration)
	}
	if quorate {
		l.quorate = true
	} else if l.quorate {
		ending = true
	}
	lapsed, stopping := l.lapsed, l.stopping
	l.mu.Unlock()

	a.setInfo()
	if kick && a.ctrl != nil {
		a.ctrl.Kick()
	}
	if a.exec == nil {
		return
	}
	// An instance left running whose guard no longer outlasts a reset is
	// stopped by a self-stop again (which keeps only what it may).
	switch {
	case ending && !stopping && ((!a.exec.SelfStopped() && a.exec.LocalActive() > 0) || a.unguarded() > 0):
		a.startSelfStop(ctx, quorate)
	case !ending && !lapsed && quorate && a.exec.SelfStopped():
		a.exec.Rejoin()
	}
}

// startSelfStop runs executor.SelfStop in the background, once at a time.
func (a *Agent) startSelfStop(ctx context.Context, quorate bool) {
	l := a.lease
	l.mu.Lock()
	l.stopping = true
	why := "quorum lost"
	if l.holder != nil {
		why = fmt.Sprintf("lease ending (%s left of %s; %s)", l.holder.Remaining(a.mship.Now()), l.lcfg.LeaseDuration, l.holder)
		if !quorate {
			why += ", quorum lost"
		}
	}
	l.mu.Unlock()
	a.log.Error("SELF-STOP: this node stops its resources itself", "why", why)
	go func() {
		defer func() {
			l.mu.Lock()
			l.stopping = false
			l.mu.Unlock()
		}()
		sctx, cancel := context.WithTimeout(ctx, selfStopBudget)
		defer cancel()
		if err := a.exec.SelfStop(sctx, why); err != nil && ctx.Err() == nil {
			a.log.Error("self-stop incomplete", "err", err)
		}
	}()
}

// decodeLossReport reads the loss report after the two quorum bytes of a
// peer's Info. A peer that reports nothing (nothing lost, or an older
// release) counts as an empty report; one that cannot be read (another
// member list, a newer format) is ignored.
func decodeLossReport(ms *lease.MemberSet, info []byte) (lease.LossReport, bool) {
	if len(info) < 2 || info[0] != infoVersion {
		return lease.LossReport{}, false
	}
	if len(info) == 2 {
		return lease.LossReport{}, true
	}
	if ms == nil {
		return lease.LossReport{}, false
	}
	r, _, err := ms.DecodeReport(info[2:])
	if err != nil {
		return lease.LossReport{}, false
	}
	return r, true
}

// petLoop pets the watchdog every Timeout/4 while the lease holds or
// nothing is active here, until ctx ends. Once the lease has lapsed with a
// resource active it stops petting for good.
func (a *Agent) petLoop(ctx context.Context) {
	t := time.NewTicker(a.wd.Timeout() / 4)
	defer t.Stop()
	for {
		if !a.petOnce() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// petOnce decides and pets once; false once the node has self-fenced.
func (a *Agent) petOnce() bool {
	l := a.lease
	// A VM left running by its isolation response counts as inactive
	// while its disk lease outlasts a reset from now: were the agent to
	// freeze after this pet, the reset would land before any other node
	// could take the disk over.
	active := 0
	if a.exec != nil {
		active = a.unguarded()
	}
	now := a.mship.Now()
	l.mu.Lock()
	valid := l.holder.Valid(now)
	switch {
	case l.lapsed:
		l.mu.Unlock()
		return false
	case valid || active == 0:
		l.mu.Unlock()
		if err := a.wd.Pet(); err != nil {
			a.log.Error("watchdog: pet failed", "err", err)
			if errors.Is(err, watchdog.ErrFired) || errors.Is(err, watchdog.ErrClosed) {
				return false
			}
		}
		return true
	case l.everValid:
		l.lapsed = true
		holder := l.holder.String()
		l.mu.Unlock()
		a.log.Error("LEASE LAPSED WITH RESOURCES ACTIVE: no more watchdog pets; the watchdog resets this node", "active", active, "lease", holder, "timeout", a.wd.Timeout())
		return false
	default:
		// No lease yet in this incarnation, with something active: no pet,
		// but not sticky (the lease may come within the timeout).
		warn := time.Since(l.warnedPets) > time.Second
		if warn {
			l.warnedPets = time.Now()
		}
		l.mu.Unlock()
		if warn {
			a.log.Warn("watchdog: not petting: no lease yet and resources may be active here", "active", active)
		}
		return true
	}
}

// closeWatchdog disarms the watchdog on a clean stop with nothing active;
// otherwise it leaves it armed, which is the point.
func (a *Agent) closeWatchdog() {
	if a.wd == nil {
		return
	}
	if a.stopPets != nil {
		a.stopPets()
		<-a.petsDone
	}
	active := 0
	if a.exec != nil {
		active = a.exec.LocalActive()
	}
	a.lease.mu.Lock()
	lapsed := a.lease.lapsed
	a.lease.mu.Unlock()
	if active > 0 || lapsed {
		a.log.Error("agent exiting with resources possibly active here: the watchdog stays armed and resets this node", "active", active, "lapsed", lapsed)
		return
	}
	if err := a.wd.Close(); err != nil {
		a.log.Error("watchdog: disarm", "err", err)
		return
	}
	a.log.Info("watchdog disarmed: clean stop, nothing active here")
}
