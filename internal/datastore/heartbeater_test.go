package datastore

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

func TestHeartbeaterReaderJudge(t *testing.T) {
	root := newDatastore(t)
	var hbs []*Heartbeater
	for _, n := range []string{"n1", "n2"} {
		hb, err := NewHeartbeater(HeartbeaterConfig{Root: root, Node: n, Incarnation: "boot-" + n, Interval: 20 * ms})
		if err != nil {
			t.Fatal(err)
		}
		hbs = append(hbs, hb)
	}
	ctx, cancel := context.WithCancel(bg())
	done := make(chan error, 2)
	for _, hb := range hbs {
		go func() { done <- hb.Run(ctx) }()
	}
	defer func() {
		cancel()
		for range hbs {
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v", err)
			}
		}
	}()

	// The DC's side: its own clock, two reads some intervals apart.
	j := NewHeartbeatJudge()
	clock := newClock()
	r := Reader{Root: root}
	read := func() {
		slots, err := r.Read(bg())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range slots {
			if s.Err != nil {
				t.Errorf("slot %s: %v", s.Node, s.Err)
			}
		}
		j.ObserveSlots(slots, clock.now())
	}
	for deadline := time.Now().Add(2 * time.Second); ; {
		time.Sleep(30 * ms)
		read()
		if j.Beating("n1", clock.now(), time.Second) && j.Beating("n2", clock.now(), time.Second) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not beating after 2 s of 20 ms heartbeats")
		}
	}

	// n2 loses quorum, stops vm1 and says so.
	if !hbs[1].SetState(StateIsolated, []string{"vm1"}, 42) {
		t.Error("SetState reported no change")
	}
	if hbs[1].SetState(StateIsolated, []string{"vm1"}, 42) {
		t.Error("SetState reported a change for the same state")
	}
	for deadline := time.Now().Add(2 * time.Second); !j.Isolated("n2"); {
		if time.Now().After(deadline) {
			rec, _ := j.Latest("n2")
			t.Fatalf("isolation not seen: %+v", rec)
		}
		time.Sleep(30 * ms)
		read()
	}
	if !j.Released("n2", "vm1") || j.Released("n2", "vm2") || j.Isolated("n1") {
		t.Errorf("judge: n1 isolated %v, n2 released vm1 %v", j.Isolated("n1"), j.Released("n2", "vm1"))
	}
	if rec, _ := j.Latest("n2"); rec.NodeIndex != 42 {
		t.Errorf("n2's claim is tied to node index %d, want 42", rec.NodeIndex)
	}
	if st := hbs[0].Status(); st.Err != nil || st.Counter < 3 || st.LastOK.IsZero() {
		t.Errorf("status %+v", st)
	}
}

// A torn slot is reported as damaged, never decoded into a record, and the
// other slots are still read.
func TestReaderReportsDamagedSlots(t *testing.T) {
	root := newDatastore(t)
	hb, _ := NewHeartbeater(HeartbeaterConfig{Root: root, Node: "n1", Incarnation: "b"})
	if err := hb.Beat(bg()); err != nil {
		t.Fatal(err)
	}
	data, _ := encodeHeartbeat(beat("n3", "b", 1))
	os.WriteFile(hbPath(root, "n2"), data[:len(data)-4], 0o644) // torn
	os.WriteFile(hbPath(root, "n4"), data, 0o644)               // n3's record in n4's slot
	os.WriteFile(hbPath(root, ".n5.tmp-123"), []byte("x"), 0o644)
	slots, err := Reader{Root: root}.Read(bg())
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 3 || slots[0].Node != "n1" || slots[1].Node != "n2" || slots[2].Node != "n4" {
		t.Fatalf("slots %+v", slots)
	}
	if slots[0].Err != nil || slots[0].Record.Counter != 1 {
		t.Errorf("n1: %+v", slots[0])
	}
	for _, s := range slots[1:] {
		if !errors.Is(s.Err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", s.Node, s.Err)
		}
	}
	j := NewHeartbeatJudge()
	j.ObserveSlots(slots, 0)
	if got := j.Nodes(); len(got) != 1 || got[0] != "n1" {
		t.Errorf("judge fed %v", got)
	}
}

// On a hung datastore a heartbeat write gives up at its timeout, no second
// write piles up behind it, and Run still stops on cancel.
func TestHeartbeaterHungDatastore(t *testing.T) {
	root := newDatastore(t)
	ffs := newFaultFS(hbRel)
	unblock := ffs.block(t)
	hb, err := NewHeartbeater(HeartbeaterConfig{Root: root, Node: "n1", Incarnation: "b", Interval: 20 * ms, Timeout: 50 * ms, FS: ffs})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := hb.Beat(bg()); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Beat: %v", err)
	}
	if d := time.Since(start); d > 500*ms {
		t.Errorf("Beat returned after %v", d)
	}
	if err := hb.Beat(bg()); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Beat: %v", err)
	}
	ctx, cancel := context.WithTimeout(bg(), 100*ms)
	defer cancel()
	start = time.Now()
	if err := hb.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run: %v", err)
	}
	if d := time.Since(start); d > 500*ms {
		t.Errorf("Run returned after %v", d)
	}
	if st := hb.Status(); !errors.Is(st.Err, ErrBusy) || !st.LastOK.IsZero() {
		t.Errorf("status %+v", st)
	}
	// The mount comes back: the pending write completes, beats resume.
	unblock()
	deadline := time.Now().Add(time.Second)
	for {
		err := hb.Beat(bg())
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("after recovery: %v", err)
		}
		time.Sleep(5 * ms)
	}
	slots, err := Reader{Root: root}.Read(bg())
	if err != nil || len(slots) != 1 || slots[0].Record.Counter < 2 {
		t.Fatalf("slots %+v, %v", slots, err)
	}
}

func TestHeartbeaterConfig(t *testing.T) {
	for _, cfg := range []HeartbeaterConfig{
		{Node: "", Incarnation: "b"},
		{Node: "n1"},
		{Node: "n1/x", Incarnation: "b"},
		{Node: "n1", Incarnation: "b", Interval: -1},
	} {
		if _, err := NewHeartbeater(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	// Without Init the hb folder is missing: an unmounted mountpoint gets
	// no heartbeat written into it.
	hb, _ := NewHeartbeater(HeartbeaterConfig{Root: t.TempDir(), Node: "n1", Incarnation: "b"})
	if err := hb.Beat(bg()); err == nil {
		t.Error("heartbeat written into an uninitialized folder")
	}
}
