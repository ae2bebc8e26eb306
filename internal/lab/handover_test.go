package lab_test

import (
	"strings"
	"testing"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
)

// A stop that fails on the DC's own node: the node must be fenced, and a
// DC never fences itself. It hands the DC role to another node, whose DC
// fences it with the lab device; the resource is then stopped for good
// (its node is off) instead of blocked for ever. The real OCF Delay agent
// sleeps stopdelay in its stop, longer than the stop's timeout.
func TestStopFailedOnTheDCsNodeIsFencedByAnother(t *testing.T) {
	l, dc := fenceLab(t, lab.Options{Nodes: 3})
	createLabDevice(t, l, dc, "lab")
	vigil(t, l, dc, "resource", "create", "slow", "ocf:heartbeat:Delay", "startdelay=1", "stopdelay=10", "mondelay=0",
		"op", "start", "timeout=20s", "op", "stop", "timeout=2s", "op", "monitor", "interval=10s", "timeout=20s", "--disabled")
	vigil(t, l, dc, "constraint", "location", "add", "slow-on-dc", "slow", "prefers", dc+"=INFINITY")
	vigil(t, l, dc, "resource", "enable", "slow")
	// (The lab's ground truth knows Dummy's state file, not Delay's: status
	// says where it runs.)
	l.WaitStatus(dc, "slow started on "+dc, settle, func(st api.Status) bool { return resState(st, "slow") == "started@"+dc })
	ask := l.Other(dc)
	before := newestID(t, l, ask, dc)

	vigil(t, l, ask, "resource", "disable", "slow")
	ev := waitFenceEvent(t, l, ask, dc, before, "the old DC "+dc+" fenced", fencedWithin+settle,
		func(e api.FenceEvent) bool { return e.OK && e.How == "device" })
	t.Logf("fencing event: %s", eventLine(ev))
	if strings.Contains(ev.By, dc) {
		t.Fatalf("%s fenced itself: %s", dc, eventLine(ev))
	}
	if !strings.Contains(l.Log(dc), "handing raft leadership (and the DC role) to another node") {
		t.Errorf("%s did not log the hand-over", dc)
	}
	st := l.WaitStatus(ask, "slow stopped (its node off)", settle, func(st api.Status) bool {
		return !strings.HasPrefix(resState(st, "slow"), "started") && !strings.Contains(resState(st, "slow"), "stop_failed")
	})
	t.Logf("slow: %s", resState(st, "slow"))
}
