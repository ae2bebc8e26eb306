package executor

import (
	"context"
	"testing"
	"time"
)

// A node whose agent restarted and lost quorum before its new incarnation
// could register (no probe yet, so no configuration loaded) still stops,
// in a self-stop, what its earlier incarnation's records say runs here.
// Found by the simulator (internal/sim, TestSimSelfStopBeforeProbe): the
// self-stop said "no configuration known for this instance: cannot stop
// it" and left it running.
func TestSelfStopBeforeFirstProbe(t *testing.T) {
	h := newHarness(t)
	r1 := dummy("r1")
	h.resource(r1)
	first := h.start(nil)
	h.waitProbed(first)
	h.startRunning(r1)
	first.stop() // the agent dies; r1 keeps running
	if !h.runs("r1") {
		t.Fatal("r1 does not run after the first incarnation")
	}

	fl := &flaky{Node: h.node}
	fl.down.Store(true) // no quorum: the new incarnation cannot register
	second := h.start(func(c *Config) { c.Store, c.BootID = fl, 200 })
	eventually(t, "a registration attempt", func() bool { return fl.refusals.Load() > 0 })
	if n := second.ex.LocalActive(); n != 1 {
		t.Fatalf("LocalActive %d before the first probe, want 1 (the earlier record)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Before the first probe the node's records count as active; the
	// self-stop cannot rewrite them, but a stop of its own that succeeded
	// answers them: nothing is active after it, so the agent need not
	// retry it nor let its watchdog reset the node.
	if err := second.ex.SelfStop(ctx, "test: quorum lost"); err != nil {
		t.Fatalf("SelfStop: %v", err)
	}
	if h.runs("r1") {
		t.Fatal("the self-stop left r1 running")
	}
	if n := second.ex.LocalActive(); n != 0 {
		t.Fatalf("LocalActive %d after the self-stop, want 0", n)
	}
	if at, ok := second.ex.StoppedHere()["r1"]; !ok || at.IsZero() {
		t.Fatalf("StoppedHere: %v", second.ex.StoppedHere())
	}
}
