package lab_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/qemu/guestimage"
)

// BenchmarkVMFailover measures a VM's failover when its node is SIGKILLed
// (issue 5): three agents in network namespaces with the lab fence device,
// a datastore folder in the lab dir, vm1 (the busybox test guest, 128 MiB,
// TCG) colocated with the failover benchmark's resource on its home, a
// non-DC node. Each trial kills the home's process group (QEMU dies with
// it) and times kill → vm1's QEMU running on another node (ground truth)
// and kill → its guest counting there (a fresh boot); then the node is
// restarted and the VM goes back. It also reports the memory a VM costs:
// QEMU's VmRSS and the agent's.
//
// Metrics: started-p50/p99/min/max-ms, guest-p50/p99/max-ms,
// qemu-rss-MB, agent-rss-MB.
//
//	make build && VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench VMFailover -benchtime 10x ./internal/lab/
func BenchmarkVMFailover(b *testing.B) {
	f := vmBenchLab(b, "--disabled")
	l := f.l
	benchCLI(b, l, f.dc, "constraint", "colocation", "add", "vm-with-spin", "vm1", "with", failoverRes)
	benchCLI(b, l, f.dc, "resource", "enable", "vm1")
	var started, guest latencies
	var qemuRSS, agentRSS float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.ready()
		home := f.home
		l.WaitFor("vm1 on "+home, vmBoot, func() (bool, string) { return onlyOn(l, "vm1", home) })
		boot := waitCounting(b, l, home, 1, "")
		if rss, err := procStatus(qemuPid(b, l, home), "VmRSS"); err == nil {
			qemuRSS = max(qemuRSS, rss/1024)
		}
		if rss, err := procStatus(l.Node(home).PID(), "VmRSS"); err == nil {
			agentRSS = max(agentRSS, rss/1024)
		}
		// Only what a console log gains after the kill counts: the VM may
		// have run on the new node in an earlier trial.
		seen := map[string]int{}
		for _, n := range l.Others(home) {
			seen[n] = len(consoleLog(b, l, n))
		}
		killed := time.Now()
		l.Kill(home)
		var to string
		l.WaitFor("vm1 running elsewhere", vmBoot, func() (bool, string) {
			on := l.ActiveOn("vm1")
			if len(on) == 1 && on[0] != home {
				to = on[0]
				return true, ""
			}
			return false, "vm1 on " + strings.Join(on, ",")
		})
		started.add(time.Since(killed))
		l.WaitFor("vm1's guest counting on "+to, vmBoot, func() (bool, string) {
			log := consoleLog(b, l, to)
			c, nb := lastCounter(log[min(seen[to], len(log)):])
			return c >= 0 && nb != boot, "no new counter yet"
		})
		guest.add(time.Since(killed))
		b.Logf("trial %d: kill %s -> vm1 on %s %s, guest counting %s", i+1, home, to,
			started.d[len(started.d)-1].Round(time.Millisecond), guest.d[len(guest.d)-1].Round(time.Millisecond))
		f.restart(home)
	}
	b.StopTimer()
	b.Logf("started (ms): %s; guest counting (ms): %s", started.String(), guest.String())
	started.report(b, "started-")
	guest.report(b, "guest-")
	if len(started.d) > 0 {
		b.ReportMetric(started.pct(0), "started-min-ms")
	}
	b.ReportMetric(qemuRSS, "qemu-rss-MB")
	b.ReportMetric(agentRSS, "agent-rss-MB")
}

// BenchmarkVMMigration measures a live migration driven by the cluster
// (issue 5): vm1 (the idle busybox guest, 128 MiB, TCG) on three agents in
// network namespaces; each trial runs `vigil resource move vm1 NODE --wait`
// to another node and times the command (move request → the DC's three
// steps → the CLI sees it done), beside QEMU's own total time and the
// downtime the source's QEMU reported (migration.json). The difference is
// Vigil's orchestration overhead.
//
// Metrics: move-p50/p99/max-ms, qemu-total-p50-ms, downtime-p50/max-ms.
//
//	make build && VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench VMMigration -benchtime 5x ./internal/lab/
func BenchmarkVMMigration(b *testing.B) {
	f := vmBenchLab(b)
	l := f.l
	var move, qemuTotal, downtime latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var src string
		l.WaitFor("vm1 running on one node", vmBoot, func() (bool, string) {
			on := l.ActiveOn("vm1")
			if len(on) == 1 {
				src = on[0]
				return true, ""
			}
			return false, "vm1 on " + strings.Join(on, ",")
		})
		boot := waitCounting(b, l, src, 1, "")
		to := l.Others(src)[i%2]
		start := time.Now()
		benchCLI(b, l, f.dc, "resource", "move", "vm1", to, "--wait", "--timeout", "2m")
		move.add(time.Since(start))
		p, err := agents.ReadVMMigration(l.RunDir(src), "vm1")
		if err != nil || p.Status != "completed" {
			b.Fatalf("migration %s -> %s: %+v %v", src, to, p, err)
		}
		qemuTotal.add(p.TotalTime)
		downtime.add(p.Downtime)
		if on := l.ActiveOn("vm1"); len(on) != 1 || on[0] != to {
			b.Fatalf("vm1 on %v after the move to %s", on, to)
		}
		l.WaitFor("the guest counting on "+to+" in the same boot", vmBoot, func() (bool, string) {
			_, nb := lastCounter(consoleLog(b, l, to))
			return nb == boot, "boot " + nb
		})
		b.Logf("trial %d: %s -> %s: move --wait %s, QEMU total %s, downtime %s", i+1, src, to,
			move.d[len(move.d)-1].Round(time.Millisecond), p.TotalTime, p.Downtime)
	}
	b.StopTimer()
	move.report(b, "move-")
	b.ReportMetric(qemuTotal.pct(50), "qemu-total-p50-ms")
	b.ReportMetric(downtime.pct(50), "downtime-p50-ms")
	b.ReportMetric(downtime.pct(100), "downtime-max-ms")
}

// vmBenchLab is the failover benchmark's lab (three agents in network
// namespaces, the lab fence device) with a datastore folder ds1 in the lab
// dir and vm1, the busybox test guest (128 MiB, a 64 MiB qcow2 disk on ds1),
// created with the extra `vm create` arguments. It skips without QEMU or
// when the guest cannot be built.
func vmBenchLab(b *testing.B, extra ...string) *failoverLab {
	b.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Skip("qemu-system-x86_64 is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	g, err := guestimage.Ensure(ctx, guestimage.DefaultDir())
	cancel()
	if errors.Is(err, guestimage.ErrUnavailable) {
		b.Skipf("the test guest cannot be built here: %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	f := newFailoverLab(b, failoverMode{})
	ds := filepath.Join(f.l.Dir(), "ds1")
	if err := os.MkdirAll(ds, 0o755); err != nil {
		b.Fatal(err)
	}
	benchCLI(b, f.l, f.dc, "datastore", "create", "ds1", ds)
	args := []string{"vm", "create", "vm1", "--disk", "ds1:vm1.qcow2", "--size", "64M", "--memory", "128M",
		"--kernel", g.Kernel, "--initrd", g.Initrd, "--append", g.Cmdline, "--stop-timeout", "10s"}
	benchCLI(b, f.l, f.dc, append(args, extra...)...)
	return f
}
