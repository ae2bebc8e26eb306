package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/fencing"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// Fencer runs fence devices; *fencing.Runner satisfies it.
type Fencer interface {
	Fence(ctx context.Context, node string, levels [][]fencing.DeviceRef, devices map[string]fencing.Device) fencing.Outcome
	Monitor(ctx context.Context, d fencing.Device) fencing.Result
}

// DefaultMonitorInterval is how often a fence device's health is checked
// when its configuration does not say (Pacemaker's default too): a broken
// device must be known before a node has to be fenced with it.
const DefaultMonitorInterval = time.Minute

// monitorDevices runs, on the DC, the monitor action of every device that is
// due, in the background, and records its health (status/fencing/monitor).
func (c *Controller) monitorDevices(ctx context.Context, v View, term uint64) {
	if c.cfg.Fencer == nil {
		return
	}
	now := c.cfg.Now()
	for name, d := range v.Devices {
		every := d.MonitorInterval.D()
		if every == 0 {
			every = DefaultMonitorInterval
		}
		c.mu.Lock()
		due := now.Sub(c.monitored[name]) >= every
		if due {
			c.monitored[name] = now
		}
		c.mu.Unlock()
		if !due {
			continue
		}
		go func() {
			mctx, cancel := context.WithTimeout(ctx, 2*d.Timeout.D()+time.Minute)
			defer cancel()
			res := c.cfg.Fencer.Monitor(mctx, d)
			rec := model.FenceMonitor{V: clusterstate.FormatVersion, Device: name, OK: res.OK(), RC: res.Code,
				Output: res.Output, At: c.cfg.Now(), Duration: res.Duration}
			if !rec.OK {
				c.log.Error("fence device failed its monitor: nodes it protects may not be fenceable", "device", name, "rc", res.Code, "err", res.Err)
			}
			if cur, ok := c.isDC(); !ok || cur != term {
				return
			}
			pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
			defer pcancel()
			if _, err := c.cfg.Store.Propose(pctx, store.Put{Key: clusterstate.FenceMonitorKey(name), Value: clusterstate.Encode(rec)}); err != nil {
				c.log.Warn("record fence device health", "device", name, "err", err)
			}
		}()
	}
}

// fenceRetry is how long the DC waits after a failed fence before trying the
// node's devices again. Meanwhile its resources stay blocked.
const fenceRetry = 10 * time.Second

// fenceTimeout bounds one whole fence (every level, delays, retries).
const fenceTimeout = 5 * time.Minute

// fenceIntentTimeout bounds the commit of a fence's intent: a DC whose
// peers answer commits in a few milliseconds; one that cannot is cut off.
// fenceIntentRetry is the pause before a DC that could not commit tries
// again (if it is still DC, with a quorum).
const (
	fenceIntentTimeout = 2 * time.Second
	fenceIntentRetry   = time.Second
)

// target is one node the DC wants proven down this round.
type target struct {
	node, reason, by string
	manual           bool
}

// fenceTargets returns the nodes to prove down: those the plan asks for (lost
// holding resources, or a failed stop) and the operators' requests.
func fenceTargets(v View, plan *scheduler.Plan, self string, alive func(string) bool) []target {
	var out []target
	seen := map[string]bool{}
	for _, f := range plan.Fence {
		if !seen[f.Node] {
			seen[f.Node] = true
			out = append(out, target{node: f.Node, reason: f.Reason, by: "dc " + self})
		}
	}
	// Every node lost uncleanly is fenced, as Pacemaker does, even when it
	// holds nothing: it may hold what the cluster does not know of (a
	// start whose result never arrived), and it must not come back
	// half-alive. A node never seen alive (no incarnation recorded) is not:
	// it may simply not have been started yet.
	for _, m := range v.Members {
		rec := v.NodeRecords[m.Name]
		if seen[m.Name] || m.Name == self || rec.BootID == 0 || alive(m.Name) ||
			NodeState(m.Name, false, rec, v.Records) != model.NodeLost {
			continue
		}
		seen[m.Name] = true
		out = append(out, target{node: m.Name, reason: "lost uncleanly", by: "dc " + self})
	}
	for _, r := range v.FenceRequests {
		if !seen[r.Target] {
			seen[r.Target] = true
			out = append(out, target{node: r.Target, reason: "requested: " + r.Reason, by: r.By, manual: true})
		} else {
			for i := range out {
				if out[i].node == r.Target {
					out[i].manual, out[i].by = true, r.By
				}
			}
		}
	}
	return out
}

// fenceRound starts the fences this round calls for. Fence devices run in
// the background (they take seconds); the watchdog proof is immediate once
// the lease arithmetic allows it. It returns the ops to commit with the
// round (watchdog proofs) and their guards.
func (c *Controller) fenceRound(ctx context.Context, v View, plan *scheduler.Plan, term uint64) ([]store.Op, []store.Cmp) {
	targets := fenceTargets(v, plan, c.cfg.Self, c.cfg.Alive)
	var ops []store.Op
	var guards []store.Cmp
	for _, t := range targets {
		if t.node == c.cfg.Self {
			// A DC never fences itself: it would take the DC down with
			// the proof uncommitted. Another node's DC will, so it hands
			// the role over (a stop that failed here would otherwise
			// block its resource for good).
			c.handOver(ctx, t, targets)
			continue
		}
		rec := v.NodeRecords[t.node]
		if rec.Down != nil && rec.Down.BootID == rec.BootID && !t.manual {
			continue // already proven down
		}
		alive := c.cfg.Alive(t.node)
		// The watchdog: once a majority has not heard the node for long
		// enough, its lease has ended and its watchdog has fired.
		if !alive && rec.Watchdog != nil && c.cfg.SelfFenced != nil && c.cfg.SelfFenced(t.node) {
			ev := model.FenceEvent{
				V: clusterstate.FormatVersion, Target: t.node, By: t.by, Reason: t.reason, How: "watchdog", OK: true,
				Confirmed: fmt.Sprintf("lost by a majority for lease %s + watchdog %s + margin", rec.Watchdog.Lease, rec.Watchdog.Timeout),
				Started:   c.cfg.Now(),
			}
			pops, guard := c.proofWithHistory(v, rec, ev, model.DownProof{How: "watchdog", By: "dc " + c.cfg.Self, At: c.cfg.Now()})
			ops = append(ops, pops...)
			guards = append(guards, guard...)
			c.log.Warn("node fenced by its watchdog: recovering its resources", "node", t.node, "reason", t.reason)
			continue
		}
		c.startDeviceFence(ctx, v, t, rec, term)
	}
	return ops, guards
}

// handOverEvery spaces the DC's requests to hand its role over: a transfer
// takes an election's time, and one refused (no live voter) is retried.
const handOverEvery = 5 * time.Second

// handOver asks for another node to become DC because this DC's own node
// must be fenced (t), at most once per handOverEvery, to a node that is
// not itself one of this round's targets.
func (c *Controller) handOver(ctx context.Context, t target, targets []target) {
	if c.cfg.HandOver == nil {
		return
	}
	now := c.cfg.Now()
	c.mu.Lock()
	// Not while this DC fences another node: its outcome would be
	// dropped ("no longer DC") and the next DC would fence it again.
	if now.Sub(c.handedOver) < handOverEvery || len(c.fencing) > 0 {
		c.mu.Unlock()
		return
	}
	c.handedOver = now
	c.mu.Unlock()
	why := "this DC's node must be fenced (" + t.reason + "): another DC will fence it"
	// Never to a node that must be fenced itself: it would hand back.
	var avoid []string
	for _, o := range targets {
		avoid = append(avoid, o.node)
	}
	if !c.cfg.HandOver(ctx, why, avoid) {
		c.log.Error("this DC's node must be fenced, and no other live node can take the DC role: its resources stay blocked", "reason", t.reason)
	}
}

// startDeviceFence runs the node's fence topology in the background, once
// at a time per node, with a pause after a failure.
func (c *Controller) startDeviceFence(ctx context.Context, v View, t target, rec model.NodeRecord, term uint64) {
	if c.cfg.Fencer == nil || v.Config.Properties[model.PropStonithEnabled] == "false" {
		return
	}
	levels, err := fencing.Plan(t.node, v.Topology, v.Devices)
	if err != nil || len(levels) == 0 {
		return // no device can fence it: the watchdog or an operator must
	}
	c.mu.Lock()
	if _, busy := c.fencing[t.node]; busy || c.cfg.Now().Before(c.fenceAfter[t.node]) {
		c.mu.Unlock()
		return
	}
	c.fencing[t.node] = struct{}{}
	c.mu.Unlock()
	devices := v.Devices
	dcVersion := v.DCVersion
	go func() {
		// Intent before action: the decision is committed through Raft,
		// guarded on the DC record this round read, before the device
		// runs. A DC cut off from its peers sees them lost one by one and
		// may still count a quorum for a moment; it cannot commit, so it
		// never powers off a healthy node of the majority.
		intent := model.FenceEvent{V: clusterstate.FormatVersion, Target: t.node, By: t.by, Reason: t.reason, How: "device", Started: c.cfg.Now()}
		ictx, icancel := context.WithTimeout(ctx, fenceIntentTimeout)
		_, err := c.cfg.Store.Propose(ictx, store.Txn{
			Ops: []store.Op{{Key: clusterstate.FenceIntentKey(t.node), Value: clusterstate.Encode(intent)}},
			If:  []store.Cmp{{Key: clusterstate.KeyDC, Version: dcVersion}},
		})
		icancel()
		if err != nil {
			c.log.Warn("fence not started: its intent did not commit (no quorum behind this DC, or no longer DC)", "node", t.node, "err", err)
			c.mu.Lock()
			delete(c.fencing, t.node)
			c.fenceAfter[t.node] = c.cfg.Now().Add(fenceIntentRetry)
			c.mu.Unlock()
			c.Kick()
			return
		}
		c.log.Warn("fencing node", "node", t.node, "reason", t.reason, "levels", len(levels))
		fctx, cancel := context.WithTimeout(ctx, fenceTimeout)
		defer cancel()
		started := c.cfg.Now()
		out := c.cfg.Fencer.Fence(fctx, t.node, levels, devices)
		ev := model.FenceEvent{
			V: clusterstate.FormatVersion, Target: t.node, By: t.by, Reason: t.reason, How: "device",
			OK: out.OK, Level: out.Level, Devices: out.Devices, Confirmed: out.Confirmed, Error: out.Err,
			Started: started, Duration: time.Duration(out.Duration),
		}
		for _, a := range out.Attempts {
			line := fmt.Sprintf("level %d %s %s: rc %d", a.Level, a.Device, a.Action, a.Code)
			if a.TimedOut {
				line += " (timed out)"
			}
			if a.Err != "" {
				line += ": " + a.Err
			}
			ev.Attempts = append(ev.Attempts, line)
		}
		c.finishDeviceFence(ctx, t, rec, ev, term)
	}()
}

// finishDeviceFence records a fence's outcome: on confirmed success, the
// proof that releases the node's resources; always, the history entry.
func (c *Controller) finishDeviceFence(ctx context.Context, t target, rec model.NodeRecord, ev model.FenceEvent, term uint64) {
	defer func() {
		c.mu.Lock()
		delete(c.fencing, t.node)
		if !ev.OK {
			c.fenceAfter[t.node] = c.cfg.Now().Add(fenceRetry)
		}
		c.mu.Unlock()
		c.Kick()
	}()
	var v View
	var err error
	c.cfg.Store.Read(func(s *store.State) { v, err = ReadView(s) })
	if err != nil {
		c.log.Error("record fence outcome", "node", t.node, "err", err)
		return
	}
	var ops []store.Op
	var guard []store.Cmp
	if ev.OK {
		c.log.Warn("node fenced", "node", t.node, "level", ev.Level, "devices", strings.Join(ev.Devices, ","), "confirmed", ev.Confirmed)
		ops, guard = c.proofWithHistory(v, rec, ev, model.DownProof{How: "fenced", Device: strings.Join(ev.Devices, ","), By: "dc " + c.cfg.Self, At: c.cfg.Now()})
	} else {
		c.log.Error("fencing failed: the node's resources stay blocked", "node", t.node, "err", ev.Error, "attempts", len(ev.Attempts))
		ops = c.historyOps(v, ev)
	}
	ops = append(ops, store.Op{Key: clusterstate.FenceIntentKey(t.node), Delete: true})
	if cur, ok := c.isDC(); !ok || cur != term {
		c.log.Warn("fence outcome not recorded: no longer DC", "node", t.node, "ok", ev.OK)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.cfg.Store.Propose(pctx, store.Txn{Ops: ops, If: guard}); err != nil {
		c.log.Error("record fence outcome", "node", t.node, "err", err)
	}
}

// ProofOps records rec's node as proven down in the incarnation rec names,
// and releases what it ran: its resource records, tasks and restart
// requests are deleted, so the scheduler sees its resources stopped. The
// guard makes the whole transaction conditional on the node record still
// being rec (same store version): a node that came back in between (a new
// incarnation registered) keeps its fresh records. Every down proof, from a
// fence device, a watchdog or an operator, is written through here.
func ProofOps(v View, rec model.NodeRecord, proof model.DownProof) ([]store.Op, []store.Cmp) {
	proof.BootID = rec.BootID
	rec.V = clusterstate.FormatVersion
	rec.Down = &proof
	ops := []store.Op{{Key: clusterstate.NodeKey(rec.Name), Value: clusterstate.Encode(rec)}}
	for _, r := range v.Records {
		if r.Node == rec.Name {
			ops = append(ops, store.Op{Key: clusterstate.RecordKey(r.Node, r.Resource), Delete: true})
		}
	}
	for _, t := range v.Tasks {
		if t.Node == rec.Name {
			ops = append(ops, store.Op{Key: clusterstate.TaskKey(t.Node, t.ID), Delete: true})
		}
	}
	prefix := clusterstate.PrefixRestart + rec.Name + "/"
	for _, k := range v.Restarts {
		if strings.HasPrefix(k, prefix) {
			ops = append(ops, store.Op{Key: k, Delete: true})
		}
	}
	return ops, []store.Cmp{{Key: clusterstate.NodeKey(rec.Name), Version: rec.Version}}
}

// proofWithHistory is ProofOps plus the fencing history entry.
func (c *Controller) proofWithHistory(v View, rec model.NodeRecord, ev model.FenceEvent, proof model.DownProof) ([]store.Op, []store.Cmp) {
	ops, guard := ProofOps(v, rec, proof)
	return append(ops, c.historyOps(v, ev)...), guard
}

// historyOps appends a fencing event (and answers an operator's request for
// that node), keeping the history bounded.
func (c *Controller) historyOps(v View, ev model.FenceEvent) []store.Op {
	ev.ID = fmt.Sprintf("%020d-%s", ev.Started.UnixNano(), ev.Target)
	ops := append([]store.Op{}, v.HistoryPrune...)
	ops = append(ops, store.Op{Key: clusterstate.FenceEventKey(ev.ID), Value: clusterstate.Encode(ev)})
	for _, r := range v.FenceRequests {
		if r.Target == ev.Target {
			ops = append(ops, store.Op{Key: clusterstate.FenceRequestKey(r.Target), Delete: true})
		}
	}
	return ops
}
