package lab_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
)

// isolationWatchdog is the watchdog timeout of the isolation test: a
// hardware watchdog's usual order (sbd's default is 5 s, many boards
// cannot go below 10 s), so that recovery through the watchdog is slow
// enough to tell apart from recovery on the node's word.
const isolationWatchdog = 10 * time.Second

// Issue 5, must show 4: every network link of the VM's node is cut but the
// datastore stays. Nothing can fence the node (no device; only its
// watchdog), so without the datastore the cluster would wait out the node
// lease and the watchdog. The isolated node loses quorum, applies the
// VM's isolation response (the default: ACPI shutdown), and says on the
// datastore that it released vm1; the DC restarts vm1 on another node at
// once, before the watchdog bound gives any proof. vm1 never runs twice
// (sampled 20 times a second). Healed, the node rejoins and vm1 stays
// where it was restarted.
func TestVMIsolationReleasesOnTheDatastore(t *testing.T) {
	l, dc := vmLabWith(t, lab.Options{Nodes: 3, Netns: true,
		SetupArgs: []string{"--watchdog", "process", "--watchdog-timeout", isolationWatchdog.String()}}, false)
	w := l.WatchNeverTwice(t, "vm1")
	vigil(t, l, dc, "resource", "enable", "vm1")
	holder := waitStarted(t, l, dc, "vm1", vmBoot, nil)
	boot := waitCounting(t, l, holder, 2, "")
	ask := l.Other(holder)
	before := newestID(t, l, ask, holder)
	runs := l.Node(holder).Runs()

	isoAt := time.Now()
	l.Isolate(holder)
	to := waitStarted(t, l, ask, "vm1", vmBoot, notIn(holder))
	startedIn := time.Since(isoAt)

	// Recovered on the node's word, not on a proof: no fencing of it yet.
	h, err := fenceHistory(t, l, ask)
	if err != nil {
		t.Fatal(err)
	}
	if evs := eventsFor(h, holder, before); len(evs) > 0 {
		t.Fatalf("%s was fenced (%s) before vm1 restarted: the release did not come from the datastore", holder, eventLine(evs[0]))
	}
	st, err := l.Status(ctxFor(t, 10*time.Second), ask)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := lab.NodeIn(st, holder); !strings.Contains(n.Isolation, "released vm1") {
		t.Errorf("status of %s: %q, want it isolated with vm1 released", holder, n.Isolation)
	}
	if !strings.Contains(lastRun(l, holder), "SELF-STOP") {
		t.Errorf("%s did not log its self-stop", holder)
	}
	newBoot := waitCounting(t, l, to, 1, boot)
	t.Logf("FIGURE vm isolation: links of %s cut -> vm1 started on %s %s, guest counting (boot %s) %s; node lease + watchdog alone: %s + %s + margin",
		holder, to, startedIn.Round(time.Millisecond), newBoot, time.Since(isoAt).Round(time.Millisecond), "1s", isolationWatchdog)
	if !l.Node(holder).Running() || l.Node(holder).Runs() != runs {
		t.Fatal("the isolated node's agent died: with vm1 stopped it should keep petting its watchdog")
	}

	l.Heal()
	l.WaitFor(holder+" rejoined and probed again", formTimeout, func() (bool, string) {
		return strings.Contains(lastRun(l, holder), "rejoin=true"), "no rejoin yet"
	})
	l.Always("vm1 stays on "+to+" only", quiet, func() (bool, string) { return onlyOn(l, "vm1", to) })
	w.Stop()
	if v := w.Violations(); len(v) > 0 {
		t.Fatalf("never twice broken: %v", v)
	}
}

// The isolation response leave-running, with a watchdog (process backend,
// 2 s) and no fence device: the isolated node keeps vm1 running (same
// QEMU, the guest keeps counting) and keeps petting its watchdog, since
// vm1's disk lease outlasts a reset. The majority proves the node down by
// the watchdog's timing and tries to start vm1 elsewhere, but the lease
// says the holder may have left it running, so no node takes the disk
// over: vm1 never runs twice. Healed, the node rejoins with vm1 still
// running, and the cluster records it there.
func TestVMIsolationLeaveRunning(t *testing.T) {
	l, dc := vmLabWith(t, lab.Options{Nodes: 3, Netns: true, SetupArgs: []string{"--watchdog", "process"}}, false)
	vigil(t, l, dc, "resource", "update", "vm1", "isolation_response=leave-running")
	w := l.WatchNeverTwice(t, "vm1")
	vigil(t, l, dc, "resource", "enable", "vm1")
	holder := waitStarted(t, l, dc, "vm1", vmBoot, nil)
	boot := waitCounting(t, l, holder, 2, "")
	pid := qemuPid(t, l, holder)
	ask := l.Other(holder)
	before := newestID(t, l, ask, holder)
	runs := l.Node(holder).Runs()

	l.Isolate(holder)
	waitFenceEvent(t, l, ask, holder, before, "the watchdog's proof of "+holder, fencedWithin+settle,
		func(e api.FenceEvent) bool { return e.OK && e.How == "watchdog" })
	// Past the proof the majority tries to start vm1 elsewhere: the lease
	// says the holder may have left it running, so the start waits for it
	// to stand still, and the holder renews it.
	l.WaitFor("a start of vm1 elsewhere held back by its disk lease", settle, func() (bool, string) {
		for _, n := range l.Others(holder) {
			if strings.Contains(lastRun(l, n), "may have left the VM running (leave-running)") {
				return true, ""
			}
		}
		return false, "no start tried yet"
	})
	l.Always("vm1 left running on the isolated "+holder+" only", quiet, func() (bool, string) { return onlyOn(l, "vm1", holder) })
	if qemuPid(t, l, holder) != pid {
		t.Fatal("vm1's QEMU on the isolated node was restarted")
	}
	n, b := lastCounter(consoleLog(t, l, holder))
	if b != boot {
		t.Fatalf("the guest rebooted: boot %s, was %s", b, boot)
	}
	waitCounting(t, l, holder, n+2, "x") // still counting
	if !l.Node(holder).Running() || l.Node(holder).Runs() != runs {
		t.Fatal("the isolated node was reset: vm1's disk lease guards it, the watchdog should be petted")
	}
	if !strings.Contains(lastRun(l, holder), "left running") {
		t.Errorf("%s did not log that it left vm1 running", holder)
	}

	l.Heal()
	waitStarted(t, l, ask, "vm1", formTimeout, is(holder))
	if qemuPid(t, l, holder) != pid {
		t.Fatal("vm1's QEMU was restarted after the heal")
	}
	w.Stop()
	if v := w.Violations(); len(v) > 0 {
		t.Fatalf("never twice broken: %v", v)
	}
}
