package datastore

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// State is what a node says about itself in its heartbeat.
type State string

// Heartbeat states.
const (
	// StateAlive: the node runs normally.
	StateAlive State = "alive"
	// StateIsolated: the node lost quorum (no network link reaches a
	// majority) and is stopping its resources; Released lists those it has
	// stopped so far.
	StateIsolated State = "isolated"
)

const (
	hbKind    = "heartbeat"
	hbVersion = 1
)

// HeartbeatRecord is the content of a node's heartbeat slot.
type HeartbeatRecord struct {
	// Node is the slot's owner; a record in another node's slot is refused.
	Node string `json:"node"`
	// Incarnation is the writer's boot id: it changes when the node (or
	// its agent) restarts, and Counter starts over with it.
	Incarnation string `json:"incarnation"`
	// Counter increases with every write of one incarnation. Readers judge
	// liveness by watching it move on their own clock.
	Counter uint64 `json:"counter"`
	// State is the node's own account of itself.
	State State `json:"state"`
	// Released lists the resources this incarnation has stopped (and
	// released any disk lease of) because it lost quorum. A resource is
	// listed only once it is really stopped, and removed again before the
	// node ever starts it again.
	Released []string `json:"released,omitempty"`
	// NodeIndex ties Released to one version of the node's record in the
	// cluster's store (its store index, as the node sees it while it is
	// self-stopped): the claim holds while the record is still that one. A node
	// writes its record anew before it runs anything again, which voids
	// the claim, however late this heartbeat is read. Zero with no claim.
	NodeIndex uint64 `json:"node_index,omitempty"`
	// Written is the writer's wall clock, for display only: the writer's
	// clock is never compared with the reader's.
	Written time.Time `json:"written"`
}

func (r HeartbeatRecord) check() error {
	if err := checkName("node", r.Node); err != nil {
		return err
	}
	if r.Incarnation == "" {
		return fmt.Errorf("%w: heartbeat of %s without an incarnation", ErrName, r.Node)
	}
	if r.State != StateAlive && r.State != StateIsolated {
		return fmt.Errorf("heartbeat of %s: unknown state %q", r.Node, r.State)
	}
	return nil
}

func encodeHeartbeat(r HeartbeatRecord) ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	return encodeFrame(hbKind, hbVersion, r)
}

func decodeHeartbeat(data []byte) (HeartbeatRecord, error) {
	var r HeartbeatRecord
	if _, err := decodeFrame(data, hbKind, hbVersion, &r); err != nil {
		return HeartbeatRecord{}, err
	}
	if err := r.check(); err != nil {
		return HeartbeatRecord{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return r, nil
}

// HeartbeatJudge turns successive reads of the heartbeat slots into
// verdicts, on the DC. It is pure: no clock and no IO; the caller passes
// its own clock as a monotonic offset (time.Duration since any fixed
// origin) with every observation and question. The writer's Written time
// is never used: a node is beating when the DC saw its counter move
// recently on the DC's own clock, whatever the writer's clock says. It is
// not safe for concurrent use.
type HeartbeatJudge struct {
	nodes map[string]*slotState
}

type slotState struct {
	rec     HeartbeatRecord // latest record of the current incarnation
	changed time.Duration   // when the DC saw rec's counter move
	moved   bool            // whether it ever saw it move
	// cand is a record of another incarnation, adopted only once its own
	// counter moves: a late write of a dead incarnation (an NFS request
	// that was in flight when the node died) must not replace a live one.
	cand    *HeartbeatRecord
	retired []string // incarnations replaced by a newer one, most recent last
}

// maxRetired bounds the incarnations remembered per node.
const maxRetired = 8

// NewHeartbeatJudge returns a judge that has seen nothing.
func NewHeartbeatJudge() *HeartbeatJudge {
	return &HeartbeatJudge{nodes: map[string]*slotState{}}
}

// Observe feeds a record read from node's slot at now (on the DC's clock,
// best taken when the read completed). The first record seen for a node
// is a baseline, not a beat: a dead node's last record looks the same as a
// live one's until the counter moves. A record of an older counter of the
// current incarnation, or of a retired incarnation, is ignored.
func (j *HeartbeatJudge) Observe(node string, rec HeartbeatRecord, now time.Duration) {
	if rec.Node != node || rec.check() != nil {
		return
	}
	st, ok := j.nodes[node]
	if !ok {
		j.nodes[node] = &slotState{rec: rec}
		return
	}
	switch {
	case rec.Incarnation == st.rec.Incarnation:
		if rec.Counter > st.rec.Counter {
			st.rec, st.changed, st.moved, st.cand = rec, now, true, nil
		}
	case slices.Contains(st.retired, rec.Incarnation):
		// A late write of an incarnation we know is gone.
	case st.cand != nil && st.cand.Incarnation == rec.Incarnation && rec.Counter > st.cand.Counter:
		// The new incarnation is writing: the node restarted.
		st.retired = append(st.retired, st.rec.Incarnation)
		if len(st.retired) > maxRetired {
			st.retired = st.retired[1:]
		}
		st.rec, st.changed, st.moved, st.cand = rec, now, true, nil
	case st.cand == nil || st.cand.Incarnation != rec.Incarnation:
		c := rec
		st.cand = &c
	}
}

// ObserveSlots feeds every readable slot of one Reader pass.
func (j *HeartbeatJudge) ObserveSlots(slots []Slot, now time.Duration) {
	for _, s := range slots {
		if s.Err == nil {
			j.Observe(s.Node, s.Record, now)
		}
	}
}

// Beating tells whether node's counter was seen to move within the last
// window, on the DC's clock. Since a change is stamped when the DC saw it
// (after the write), a node stops beating at most one read period later
// than it really stopped: the error only ever delays a "not beating"
// verdict, never hastens it.
func (j *HeartbeatJudge) Beating(node string, now, window time.Duration) bool {
	st, ok := j.nodes[node]
	return ok && st.moved && now-st.changed <= window
}

// Silence is how long ago, on the DC's clock, node's counter was last seen
// to move; ok is false if it was never seen to move.
func (j *HeartbeatJudge) Silence(node string, now time.Duration) (d time.Duration, ok bool) {
	st, ok := j.nodes[node]
	if !ok || !st.moved {
		return 0, false
	}
	return now - st.changed, true
}

// Isolated tells whether node's latest record (of its current incarnation)
// says it is isolated.
func (j *HeartbeatJudge) Isolated(node string) bool {
	st, ok := j.nodes[node]
	return ok && st.rec.State == StateIsolated
}

// Released tells whether node's latest record (of its current incarnation)
// says it has stopped and released resource. It answers for the record,
// not for time: the caller must make sure that incarnation is the one it
// believes ran the resource (Latest gives it).
func (j *HeartbeatJudge) Released(node, resource string) bool {
	st, ok := j.nodes[node]
	return ok && slices.Contains(st.rec.Released, resource)
}

// Latest returns node's latest record of its current incarnation.
func (j *HeartbeatJudge) Latest(node string) (HeartbeatRecord, bool) {
	st, ok := j.nodes[node]
	if !ok {
		return HeartbeatRecord{}, false
	}
	return st.rec, true
}

// Nodes lists the nodes observed, sorted.
func (j *HeartbeatJudge) Nodes() []string {
	ns := make([]string, 0, len(j.nodes))
	for n := range j.nodes {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Forget drops what is known of node (it left the cluster).
func (j *HeartbeatJudge) Forget(node string) { delete(j.nodes, node) }
