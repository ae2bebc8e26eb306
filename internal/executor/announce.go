package executor

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/model"
)

// announceTimeout bounds one re-announcement (its first packet; the
// repeats run in the agent's background).
const announceTimeout = 5 * time.Second

// Reannounce queues a fresh announcement of every instance active here
// whose agent is an agents.Announcer (vigil:ip). The agent calls it when a
// peer comes back from lost: while the partition lasted, a neighbour on the
// other side may have learned a stale owner of an address, and only a new
// announcement from the holder corrects its cache before it expires.
// Announcements go through the instances' queues, so they never run beside
// a start or stop of the same instance. A self-stopped executor, or one
// whose probes have not run, announces nothing.
func (e *Executor) Reannounce(why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.selfStopped || !e.localKnown || e.leaving || e.closed || !e.started {
		return
	}
	var queued []string
	for inst, on := range e.local {
		if !on {
			continue
		}
		r, ok := e.resourceOfLocked(inst)
		if !ok || !e.isAnnouncer(r.Agent) {
			continue
		}
		e.enqueueLocked(e.instanceLocked(inst), job{announce: true})
		queued = append(queued, inst)
	}
	if len(queued) > 0 {
		slices.Sort(queued)
		e.log.Info("announcing again", "why", why, "instances", queued)
	}
}

func (e *Executor) isAnnouncer(spec string) bool {
	a, err := e.cfg.Agents.Get(spec)
	if err != nil {
		return false
	}
	_, ok := a.(agents.Announcer)
	return ok
}

// runAnnounce announces inst once more if it is still active here.
func (e *Executor) runAnnounce(ctx context.Context, inst string) {
	e.mu.Lock()
	on := e.local[inst] && !e.selfStopped
	r, ok := e.resourceOfLocked(inst)
	e.mu.Unlock()
	if !on || !ok {
		return
	}
	a, err := e.cfg.Agents.Get(r.Agent)
	if err != nil {
		return
	}
	an, isAnn := a.(agents.Announcer)
	if !isAnn {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, announceTimeout)
	defer cancel()
	err = an.Announce(ctx, agents.Request{Resource: inst, Action: "announce", Params: r.Params, Meta: r.Meta, Node: e.cfg.Node})
	if err != nil && !errors.Is(err, context.Canceled) {
		e.log.Warn("announcement failed", "instance", inst, "err", err)
	}
}

// resourceOfLocked returns the configuration inst runs with here: that of
// its last task, else the current one. Called with e.mu held.
func (e *Executor) resourceOfLocked(inst string) (model.Resource, bool) {
	if r, ok := e.lastConfig[inst]; ok {
		return r, true
	}
	i, ok := e.instByID[inst]
	return i.Resource, ok
}
