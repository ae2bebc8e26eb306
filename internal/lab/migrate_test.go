package lab_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/lab"
)

// Live migration driven by the DC (issue 5, must show 2 and 3), with the
// guest of vmLab (vm_test.go): where vm1 runs is read from the QEMU pid
// files and QEMU's run state, that it was not restarted from its console
// (the same boot id, the counter going on), and how the migration went
// from the source's migration.json. A never-twice watch runs throughout:
// watchMigration gives vm1's QEMUs the ground truth's own QMP monitor, so
// that a destination waiting for the guest (inmigrate) and a source that
// handed it over (postmigrate) do not count as running it.

// watchMigration adds the ground truth's QMP monitor to vm1 (before it is
// enabled: the monitor is on QEMU's command line) and watches that vm1
// never runs on two nodes.
func watchMigration(t *testing.T, l *lab.Lab, dc string) *lab.Watch {
	t.Helper()
	vigil(t, l, dc, "resource", "update", "vm1", "extra_args="+lab.TruthQMPArgs)
	return l.WatchNeverTwice(t, "vm1")
}

// counting waits until node's console shows vm1's guest of boot counting
// past n, and returns the last counter.
func counting(t *testing.T, l *lab.Lab, node, boot string, n int) int {
	t.Helper()
	var c int
	l.WaitFor(fmt.Sprintf("vm1's guest (boot %s) counting past %d on %s", boot, n, node), vmBoot, func() (bool, string) {
		var b string
		c, b = lastCounter(consoleLog(t, l, node))
		return c > n && b == boot, fmt.Sprintf("last counter %d boot %q", c, b)
	})
	return c
}

// Must show 2: `vigil resource move vm1 NODE --wait` live-migrates the
// running guest, which goes on counting on NODE without a reboot; the CLI
// shows the progress and the final figures.
func TestVMLiveMigration(t *testing.T) {
	l, dc := vmLab(t)
	w := watchMigration(t, l, dc)
	vigil(t, l, dc, "resource", "enable", "vm1")
	src := waitStarted(t, l, dc, "vm1", vmBoot, nil)
	boot := waitCounting(t, l, src, 2, "")
	before, _ := lastCounter(consoleLog(t, l, src))
	to := l.Others(src)[0]
	if _, err := os.Stat(filepath.Join(l.RunDir(src), "vm", "vm1", lab.TruthQMPSocket)); err != nil {
		t.Fatalf("the ground truth's QMP socket: %v", err)
	}
	samples := w.Samples()

	start := time.Now()
	out := vigil(t, l, dc, "resource", "move", "vm1", to, "--wait", "--timeout", "2m")
	t.Logf("vigil resource move --wait:\n%s", out)
	if !strings.Contains(out, "live-migrated to "+to) {
		t.Errorf("the CLI did not report a live migration:\n%s", out)
	}
	if on := l.ActiveOn("vm1"); len(on) != 1 || on[0] != to {
		t.Fatalf("vm1's QEMU runs on %v after the move, want %s alone", on, to)
	}
	counting(t, l, to, boot, before)
	p, err := agents.ReadVMMigration(l.RunDir(src), "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != "completed" || !p.Done {
		t.Fatalf("source's migration.json: %+v", p)
	}
	t.Logf("FIGURE vm live migration: %s -> %s, QEMU total %v, downtime %v, %d bytes; move --wait took %v",
		src, to, p.TotalTime, p.Downtime, p.TransferredBytes, time.Since(start).Round(time.Millisecond))
	// The watch must have sampled through the move (both QEMUs live
	// during it), or it proves nothing about the handover.
	if n := w.Samples() - samples; n < 5 {
		t.Errorf("the never-twice watch took %d samples during the move", n)
	}
}

// Must show 3: a migration whose destination QEMU is killed mid-way (the
// bandwidth limited so that it takes a while) fails, and the VM keeps
// running on the source: the same QEMU, the same boot, still counting.
func TestVMLiveMigrationFailureKeepsTheSource(t *testing.T) {
	l, dc := vmLab(t)
	watchMigration(t, l, dc)
	// One failure on the target bans it (no retry), so the VM stays.
	vigil(t, l, dc, "resource", "update", "vm1", "migrate_bandwidth=2M", "meta", "migration-threshold=1")
	vigil(t, l, dc, "resource", "enable", "vm1")
	src := waitStarted(t, l, dc, "vm1", vmBoot, nil)
	boot := waitCounting(t, l, src, 2, "")
	pid := qemuPid(t, l, src)
	to := l.Others(src)[0]

	done := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = l.CLI(ctxFor(t, 3*time.Minute), dc, "resource", "move", "vm1", to, "--wait", "--timeout", "150s")
		done <- err
	}()
	l.WaitFor("the migration to send", time.Minute, func() (bool, string) {
		p, err := agents.ReadVMMigration(l.RunDir(src), "vm1")
		if err != nil {
			return false, err.Error()
		}
		return p.Status == "active" && p.TransferredBytes > 1<<20, fmt.Sprintf("%s, %d bytes", p.Status, p.TransferredBytes)
	})
	b, err := os.ReadFile(filepath.Join(l.RunDir(to), "vm", "vm1", "qemu.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var target int
	fmt.Sscan(strings.TrimSpace(string(b)), &target)
	if target <= 0 {
		t.Fatalf("target's qemu.pid: %q", b)
	}
	// Both QEMUs live; the ground truth counts the one running the guest.
	if err := syscall.Kill(target, 0); err != nil {
		t.Fatalf("the target's QEMU (pid %d): %v", target, err)
	}
	if on := l.ActiveOn("vm1"); len(on) != 1 || on[0] != src {
		t.Fatalf("mid-migration, vm1 counted active on %v, want the source %s alone", on, src)
	}
	if err := syscall.Kill(target, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = <-done
	t.Logf("vigil resource move --wait (err %v):\n%s", err, out)
	if err == nil {
		t.Fatal("move --wait succeeded although the destination was killed")
	}
	if p := qemuPid(t, l, src); p != pid {
		t.Fatalf("the source's QEMU changed (pid %d, was %d): restarted", p, pid)
	}
	if on := l.ActiveOnDisk(src, "vm1"); !on {
		t.Fatalf("vm1 no longer runs on the source %s", src)
	}
	c, _ := lastCounter(consoleLog(t, l, src))
	counting(t, l, src, boot, c)
	l.Always("vm1 stays on its source (the target is banned after one failure)", quiet, func() (bool, string) {
		on := l.ActiveOn("vm1")
		return len(on) == 1 && on[0] == src, fmt.Sprintf("vm1 runs on %v", on)
	})
	if p := qemuPid(t, l, src); p != pid {
		t.Fatalf("the source's QEMU changed (pid %d, was %d)", p, pid)
	}
}
