package agent

// Datastore heartbeats: the second liveness channel beside the network.
// Every node that runs resources writes its slot on every datastore
// (datastore.Heartbeater) every heartbeatEvery, and at once when what it
// says changes. While its executor is self-stopped (it lost quorum) it says
// "isolated" and lists what its self-stop has stopped, tied to its node
// record (executor.Released). The DC reads every slot every heartbeatRead
// into one datastore.HeartbeatJudge per datastore and hands the claims to
// its controller (controller.Config.Releases), which may recover those
// resources at once instead of waiting for a fence device or the node's
// watchdog. Every node keeps reading while it is DC only; `vigil status`
// shows the DC's view.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

const (
	// heartbeatEvery is how often a node rewrites its slots when nothing
	// changed.
	heartbeatEvery = time.Second
	// hbTick is how often the loop looks for a change to say at
	// once (a release), and for a DC read that is due.
	hbTick = 100 * time.Millisecond
	// heartbeatRead is how often the DC reads every slot.
	heartbeatRead = 500 * time.Millisecond
	// heartbeatWindow: a node whose counter the DC saw move within this
	// window is beating on that datastore.
	heartbeatWindow = 3 * heartbeatEvery
)

// hbState is this node's heartbeat writers and, while DC, its judges.
type hbState struct {
	mu      sync.Mutex
	origin  time.Time                            // the judges' clock origin
	writers map[string]*hbWriter                 // by datastore
	judges  map[string]*datastore.HeartbeatJudge // by datastore (DC only)
	paths   map[string]string                    // datastore → path the judge reads
	reading map[string]bool                      // a read in flight, by datastore
	lastErr map[string]error                     // of the latest read, by datastore (for status)
}

type hbWriter struct {
	path string
	hb   *datastore.Heartbeater
	last time.Time // latest beat started
}

// incarnation is this agent's heartbeat incarnation: its boot id in hex.
func (a *Agent) incarnation() string { return strconv.FormatUint(a.bootID, 16) }

// heartbeatLoop writes this node's heartbeats and, while this node is DC,
// reads everyone's, until ctx ends.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	st := &a.hb
	st.mu.Lock()
	st.origin = time.Now()
	st.writers, st.judges = map[string]*hbWriter{}, map[string]*datastore.HeartbeatJudge{}
	st.paths, st.reading, st.lastErr = map[string]string{}, map[string]bool{}, map[string]error{}
	st.mu.Unlock()
	t := time.NewTicker(hbTick)
	defer t.Stop()
	var lastRead time.Time
	// The datastores are read again only when the configuration epoch
	// moves: the loop runs ten times a second on every node.
	var paths map[string]string
	epoch := ^uint64(0)
	for {
		var now uint64
		a.node.Read(func(s *store.State) { now = s.Epoch() })
		if now != epoch {
			if ds, err := a.datastores(); err == nil {
				epoch, paths = now, map[string]string{}
				for _, d := range ds {
					paths[d.Name] = d.Path
				}
			}
		}
		if paths != nil {
			a.beat(ctx, paths)
			if a.ctrl.Term() != 0 && time.Since(lastRead) >= heartbeatRead {
				lastRead = time.Now()
				a.readHeartbeats(ctx, paths)
			} else if a.ctrl.Term() == 0 {
				a.forgetHeartbeats()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// beat brings the writers in line with the datastores, sets what they say
// and starts the beats that are due (now, if what they say changed).
func (a *Agent) beat(ctx context.Context, paths map[string]string) {
	state := datastore.StateAlive
	var released []string
	var index uint64
	if a.exec.SelfStopped() {
		state = datastore.StateIsolated
		released, index = a.exec.Released()
	}
	st := &a.hb
	st.mu.Lock()
	defer st.mu.Unlock()
	for name, w := range st.writers {
		if paths[name] != w.path {
			delete(st.writers, name)
		}
	}
	for name, path := range paths {
		w, ok := st.writers[name]
		if !ok {
			hb, err := datastore.NewHeartbeater(datastore.HeartbeaterConfig{
				Root: path, Node: a.cfg.Node, Incarnation: a.incarnation(), Interval: heartbeatEvery,
			})
			if err != nil {
				a.log.Error("datastore heartbeat not written", "datastore", name, "err", err)
				continue
			}
			w = &hbWriter{path: path, hb: hb}
			st.writers[name] = w
		}
		changed := w.hb.SetState(state, released, index)
		if changed || time.Since(w.last) >= heartbeatEvery {
			w.last = time.Now()
			go func() {
				if err := w.hb.Beat(ctx); err != nil && changed {
					a.log.Warn("datastore heartbeat not written", "datastore", name, "state", state, "err", err)
				}
			}()
			if changed && state == datastore.StateIsolated {
				a.log.Warn("datastore heartbeat: isolated; telling the cluster what this node released", "datastore", name, "released", released)
			}
		}
	}
}

// readHeartbeats reads every slot of every datastore in the background,
// one read per datastore at a time, into the judges.
func (a *Agent) readHeartbeats(ctx context.Context, paths map[string]string) {
	st := &a.hb
	st.mu.Lock()
	defer st.mu.Unlock()
	for name := range st.judges {
		if _, ok := paths[name]; !ok {
			delete(st.judges, name)
		}
	}
	for name, path := range paths {
		if st.paths[name] != path {
			st.paths[name] = path
			st.judges[name] = datastore.NewHeartbeatJudge()
		}
		if st.reading[name] {
			continue
		}
		st.reading[name] = true
		go func() {
			rctx, cancel := context.WithTimeout(ctx, datastoreCheckTimeout)
			slots, err := datastore.Reader{Root: path}.Read(rctx)
			cancel()
			st.mu.Lock()
			st.reading[name] = false
			st.lastErr[name] = err
			j := st.judges[name]
			if err == nil && j != nil && st.paths[name] == path {
				j.ObserveSlots(slots, time.Since(st.origin))
			}
			st.mu.Unlock()
			if err == nil && a.ctrl != nil && len(a.releaseClaims()) > 0 {
				a.ctrl.Kick()
			}
		}()
	}
}

// forgetHeartbeats drops the judges when this node is not DC: a later term
// starts from fresh baselines.
func (a *Agent) forgetHeartbeats() {
	st := &a.hb
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.judges) > 0 {
		clear(st.judges)
		clear(st.paths)
	}
}

// slotView is one node's latest heartbeat on one datastore as the judge
// of that datastore sees it now.
type slotView struct {
	datastore, node string
	rec             datastore.HeartbeatRecord
	beating         bool
	silence         time.Duration
	silenceKnown    bool
}

// slotsLocked lists every node's latest heartbeat on every datastore this
// node judges, sorted by datastore and node. Called with st.mu held.
func (st *hbState) slotsLocked() []slotView {
	now := time.Since(st.origin)
	var out []slotView
	for _, ds := range slices.Sorted(maps.Keys(st.judges)) {
		j := st.judges[ds]
		for _, n := range j.Nodes() {
			rec, _ := j.Latest(n)
			v := slotView{datastore: ds, node: n, rec: rec, beating: j.Beating(n, now, heartbeatWindow)}
			v.silence, v.silenceKnown = j.Silence(n, now)
			out = append(out, v)
		}
	}
	return out
}

// releaseClaims is the controller's Releases hook: every isolation claim
// read from a datastore (controller.ReleaseClaim).
func (a *Agent) releaseClaims() []controller.ReleaseClaim {
	st := &a.hb
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []controller.ReleaseClaim
	for _, v := range st.slotsLocked() {
		if v.rec.State != datastore.StateIsolated || len(v.rec.Released) == 0 || v.rec.NodeIndex == 0 {
			continue
		}
		boot, err := strconv.ParseUint(v.rec.Incarnation, 16, 64)
		if err != nil {
			continue
		}
		out = append(out, controller.ReleaseClaim{
			Node: v.node, BootID: boot, NodeIndex: v.rec.NodeIndex, Resources: v.rec.Released,
			Datastore: v.datastore, Beating: v.beating,
		})
	}
	return out
}

// heartbeatStatus is what this node knows of the datastore heartbeats, for
// `vigil status`: its own writes, and while DC every node's.
func (a *Agent) heartbeatStatus() []api.DatastoreHeartbeat {
	st := &a.hb
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []api.DatastoreHeartbeat
	for _, v := range st.slotsLocked() {
		h := api.DatastoreHeartbeat{Datastore: v.datastore, Node: v.node, State: string(v.rec.State),
			Released: v.rec.Released, Beating: v.beating}
		if v.silenceKnown {
			h.Silence = v.silence.Round(time.Millisecond).String()
		}
		out = append(out, h)
	}
	for _, ds := range slices.Sorted(maps.Keys(st.writers)) {
		if s := st.writers[ds].hb.Status(); s.Err != nil {
			out = append(out, api.DatastoreHeartbeat{Datastore: ds, Node: a.cfg.Node, WriteError: fmt.Sprint(s.Err)})
		}
	}
	return out
}

// addIsolationStatus marks the nodes that are isolated by the datastore's
// account (a release recorded against their current node record, or, on the
// DC, an isolated heartbeat), and adds the DC's heartbeat view and this
// node's failing heartbeat writes.
func (a *Agent) addIsolationStatus(out *api.Status) {
	var recs map[string]model.IsolationRecord
	var nodes map[string]model.NodeRecord
	a.node.Read(func(s *store.State) {
		recs = clusterstate.Isolations(s)
		nodes, _ = clusterstate.NodeRecords(s)
	})
	out.Heartbeats = a.heartbeatStatus()
	a.hb.mu.Lock()
	for _, ds := range slices.Sorted(maps.Keys(a.hb.lastErr)) {
		if err := a.hb.lastErr[ds]; err != nil && a.hb.judges[ds] != nil {
			out.Warnings = append(out.Warnings, fmt.Sprintf("the DC cannot read the datastore heartbeats on %s (isolated nodes' releases are not seen): %v", ds, err))
		}
	}
	a.hb.mu.Unlock()
	seen := map[string]api.DatastoreHeartbeat{}
	for _, h := range out.Heartbeats {
		if h.WriteError != "" {
			out.Warnings = append(out.Warnings, fmt.Sprintf("datastore heartbeat of %s on %s cannot be written: %s", h.Node, h.Datastore, h.WriteError))
			continue
		}
		if h.State == string(datastore.StateIsolated) {
			seen[h.Node] = h
		}
	}
	for i := range out.Nodes {
		n := &out.Nodes[i]
		if n.Self || n.State == api.NodeMember {
			continue
		}
		r, ok := recs[n.Name]
		h, isolated := seen[n.Name]
		switch {
		case ok && r.BootID == nodes[n.Name].BootID && r.NodeIndex == nodes[n.Name].Index:
			n.Isolation = fmt.Sprintf("isolated (%s on %s): released %s at %s", beatWord(r.Beating), r.Datastore,
				strings.Join(r.Released, ", "), r.At.Local().Format(time.TimeOnly))
		case isolated:
			n.Isolation = fmt.Sprintf("isolated (%s on %s)", beatWord(h.Beating), h.Datastore)
		}
	}
}

func beatWord(beating bool) string {
	if beating {
		return "beating"
	}
	return "heartbeat stopped"
}
