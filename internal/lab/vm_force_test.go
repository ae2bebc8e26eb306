package lab_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/lab"
)

// forceStartCall bounds `vigil resource force-start` of vm1: the acquirer
// watches the disk lease (5 s by default) before it may refuse, and the
// start's own timeout is 60 s.
const forceStartCall = 3 * time.Minute

// Issue 5, must show 5: with fencing disabled, an operator forces a start
// of vm1 on a second node (outside the cluster, like Pacemaker's
// crm_resource --force-start) while the first still runs it. The disk
// lease refuses, the error names the holder, the first node's QEMU goes on
// (same pid, same boot, still counting), no QEMU for vm1 runs on the
// second node, and the cluster's record of vm1 there is untouched.
func TestVMForceStartRefusedByDiskLease(t *testing.T) {
	l, dc := vmLab(t)
	w := l.WatchNeverTwice(t, "vm1")
	vigil(t, l, dc, "property", "set", "stonith-enabled=false")
	vigil(t, l, dc, "resource", "enable", "vm1")
	holder := waitStarted(t, l, dc, "vm1", vmBoot, nil)
	boot := waitCounting(t, l, holder, 2, "")
	pid := qemuPid(t, l, holder)
	second := l.Other(holder)
	before, _ := recordOn(resourceDetail(t, l, dc, "vm1"), "vm1", second)

	n, _ := lastCounter(consoleLog(t, l, holder))
	start := time.Now()
	out, err := l.CLI(ctxFor(t, forceStartCall), second, "resource", "force-start", "vm1", "--node", second, "--yes")
	var ce *lab.CLIError
	if !errors.As(err, &ce) {
		t.Fatalf("force-start of vm1 on %s while %s runs it: want a failed command, got %v:\n%s", second, holder, err, out)
	}
	t.Logf("force-start of vm1 on %s refused after %s: %s", second, time.Since(start).Round(time.Millisecond), strings.TrimSpace(ce.Stderr))
	if want := "held by " + holder; !strings.Contains(ce.Stderr, "disk lease of vm1") || !strings.Contains(ce.Stderr, want) {
		t.Fatalf("the refusal does not say the disk lease is %q:\n%s", want, ce.Stderr)
	}

	if l.ActiveOnDisk(second, "vm1") {
		t.Fatalf("a QEMU for vm1 runs on %s after the refused force-start", second)
	}
	if on := l.ActiveOn("vm1"); len(on) != 1 || on[0] != holder {
		t.Fatalf("vm1's QEMU runs on %v, want %s alone", on, holder)
	}
	if got := qemuPid(t, l, holder); got != pid {
		t.Fatalf("vm1's QEMU on %s is pid %d, was %d: it was restarted", holder, got, pid)
	}
	counting(t, l, holder, boot, n+2)

	after, _ := recordOn(resourceDetail(t, l, dc, "vm1"), "vm1", second)
	if after.State != before.State || after.FailCount != before.FailCount || after.LastOp != before.LastOp || !after.Changed.Equal(before.Changed) {
		t.Fatalf("vm1's record on %s changed: %+v, was %+v", second, after, before)
	}
	w.Stop()
	if v := w.Violations(); len(v) > 0 {
		t.Fatalf("never twice broken: %v", v)
	}
}
