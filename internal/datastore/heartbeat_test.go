package datastore

import (
	"testing"
	"time"
)

func beat(node, inc string, counter uint64) HeartbeatRecord {
	return HeartbeatRecord{Node: node, Incarnation: inc, Counter: counter, State: StateAlive}
}

// Liveness is judged on the DC's clock only: the counter must have been
// seen to move within the window. The writer's timestamps are wildly off
// here and change nothing.
func TestJudgeBeatingOnTheDCClock(t *testing.T) {
	j := NewHeartbeatJudge()
	const win = time.Second
	r1 := beat("n1", "b1", 1)
	r1.Written = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	j.Observe("n1", r1, 10*time.Second)
	if j.Beating("n1", 10*time.Second, win) {
		t.Fatal("beating after a single record: a dead node's last record looks the same")
	}
	if _, ok := j.Silence("n1", 10*time.Second); ok {
		t.Error("silence known before any move")
	}
	r2 := beat("n1", "b1", 2)
	r2.Written = time.Unix(0, 0)
	j.Observe("n1", r2, 11*time.Second)
	if !j.Beating("n1", 11500*ms, win) {
		t.Fatal("not beating half a window after a move")
	}
	// The same counter again is not a beat.
	j.Observe("n1", r2, 11900*ms)
	if j.Beating("n1", 12100*ms, win) {
		t.Fatal("beating a window after the last move")
	}
	if d, ok := j.Silence("n1", 12100*ms); !ok || d != 1100*ms {
		t.Errorf("silence %v %v", d, ok)
	}
	if j.Beating("n2", 12*time.Second, win) {
		t.Error("unknown node beating")
	}
}

func TestJudgeIgnoresStaleAndMisplacedRecords(t *testing.T) {
	j := NewHeartbeatJudge()
	j.Observe("n1", beat("n1", "b1", 5), 0)
	j.Observe("n1", beat("n1", "b1", 3), time.Second) // an older record (cache, reordering)
	if j.Beating("n1", time.Second, time.Second) {
		t.Error("an older counter counted as a beat")
	}
	if r, _ := j.Latest("n1"); r.Counter != 5 {
		t.Errorf("latest %+v", r)
	}
	j.Observe("n1", beat("n2", "b1", 9), time.Second) // n2's record in n1's slot
	if r, _ := j.Latest("n1"); r.Counter != 5 {
		t.Errorf("took a misplaced record: %+v", r)
	}
	j.Observe("n3", HeartbeatRecord{Node: "n3", Counter: 1, State: StateAlive}, 0) // no incarnation
	if _, ok := j.Latest("n3"); ok {
		t.Error("took a record without an incarnation")
	}
}

// A restarted node is adopted once its new incarnation's counter moves; a
// late write of a dead incarnation (landing after the new one started)
// neither replaces it nor resurrects the old claims.
func TestJudgeIncarnations(t *testing.T) {
	j := NewHeartbeatJudge()
	old := beat("n1", "b1", 7)
	old.State, old.Released = StateIsolated, []string{"vm1"}
	j.Observe("n1", beat("n1", "b1", 6), 0)
	j.Observe("n1", old, 1*time.Second)
	if !j.Isolated("n1") || !j.Released("n1", "vm1") || j.Released("n1", "vm2") {
		t.Fatal("isolation record not reflected")
	}
	// The node restarts: one record of the new incarnation is a candidate.
	j.Observe("n1", beat("n1", "b2", 1), 2*time.Second)
	if r, _ := j.Latest("n1"); r.Incarnation != "b1" {
		t.Fatalf("adopted a new incarnation on one record: %+v", r)
	}
	j.Observe("n1", beat("n1", "b2", 2), 3*time.Second)
	if r, _ := j.Latest("n1"); r.Incarnation != "b2" || !j.Beating("n1", 3*time.Second, time.Second) {
		t.Fatalf("new incarnation not adopted: %+v", r)
	}
	if j.Isolated("n1") || j.Released("n1", "vm1") {
		t.Error("the old incarnation's claims carried over")
	}
	// A late write of b1, twice, with a higher counter: ignored.
	j.Observe("n1", beat("n1", "b1", 8), 4*time.Second)
	j.Observe("n1", beat("n1", "b1", 9), 5*time.Second)
	if r, _ := j.Latest("n1"); r.Incarnation != "b2" {
		t.Fatalf("a retired incarnation came back: %+v", r)
	}
	if j.Beating("n1", 5*time.Second, 1500*ms) {
		t.Error("late writes of a dead incarnation counted as beats")
	}
	// A stale record of the old incarnation landing once, between two
	// writes of the live one, does not disturb it either.
	j2 := NewHeartbeatJudge()
	j2.Observe("n1", beat("n1", "b2", 1), 0)
	j2.Observe("n1", beat("n1", "b1", 50), time.Second)
	j2.Observe("n1", beat("n1", "b2", 2), 2*time.Second)
	if r, _ := j2.Latest("n1"); r.Incarnation != "b2" || r.Counter != 2 {
		t.Fatalf("latest %+v", r)
	}
	j.Forget("n1")
	if got := j.Nodes(); len(got) != 0 {
		t.Errorf("nodes after Forget: %v", got)
	}
}
