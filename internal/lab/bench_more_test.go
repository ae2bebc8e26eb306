package lab_test

// Benchmarks for the bench command (bench/run): the same labs as
// bench_test.go, reporting every figure of a failover as p50, p99, min and
// max, under uniform metric names "<stage>-<stat>-ms", and the idle cost of
// an agent as a mean as well as a worst window. bench/run parses these
// names; see bench/cmd/benchreport.
//
//	make build
//	VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench '^Benchmark(TimelineKill|TimelineHang)$' -benchtime 20x ./internal/lab/
//	VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench '^BenchmarkTimelineWatchdog$' -benchtime 20x ./internal/lab/
//	VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench '^BenchmarkIdleCost$' -benchtime 6x ./internal/lab/
//
// The names do not contain those of bench_test.go ("FailoverFenced",
// "AgentIdle", ...), so that the unanchored patterns of BENCHMARKS.md's
// older commands do not run these as well.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/lab"
)

// reportAll reports p50, p99, min and max (nearest rank, ms) of s as
// "<stage>-p50-ms" and so on.
func (s *latencies) reportAll(b *testing.B, stage string) {
	if len(s.d) == 0 {
		return
	}
	b.ReportMetric(s.pct(50), stage+"-p50-ms")
	b.ReportMetric(s.pct(99), stage+"-p99-ms")
	b.ReportMetric(s.pct(0), stage+"-min-ms")
	b.ReportMetric(s.pct(100), stage+"-max-ms")
}

// benchTimeline runs the failover trials of mode (the labs and trials of
// benchFailover) and reports, for each stage, p50/p99/min/max in ms:
//
//	lost         fault → the victim lost, first survivor's status
//	fenced       fault → the end of the OK fencing event (device: off
//	             confirmed; watchdog: the proof), as the DC recorded it
//	old-gone     fault → the victim's resource process gone (ground truth)
//	disk         fault → the new process alive on a survivor (ground truth)
//	started      fault → the resource started on another node, first
//	             survivor's status
//	started-all  the same, both survivors
//	from-lost    started − lost, per trial
func benchTimeline(b *testing.B, mode failoverMode) {
	f := newFailoverLab(b, mode)
	logRTT(b, f.polls[f.dc])
	stages := []string{"lost", "fenced", "old-gone", "disk", "started", "started-all", "from-lost"}
	lat := map[string]*latencies{}
	for _, s := range stages {
		lat[s] = &latencies{}
	}
	tos := map[string]int{}
	i := 0
	for b.Loop() {
		victim := f.home
		tr := f.trial(i)
		since := func(t time.Time) time.Duration { return t.Sub(tr.start) }
		lat["lost"].add(since(tr.lost))
		lat["fenced"].add(since(tr.end))
		lat["old-gone"].add(since(tr.oldGone))
		lat["disk"].add(since(tr.onDisk))
		lat["started"].add(since(tr.started))
		lat["started-all"].add(since(tr.startedAll))
		lat["from-lost"].add(tr.started.Sub(tr.lost))
		tos[victim+"→"+tr.to]++
		if !strings.HasPrefix(tr.event.By, "dc ") {
			b.Errorf("iteration %d: fencing event by %q, want the DC", i, tr.event.By)
		}
		f.restart(victim)
		i++
	}
	// go test keeps about 10 lines of a benchmark's log: one per stage.
	for _, s := range stages {
		b.Logf("raw %s (ms): %s", s, lat[s].String())
	}
	b.Logf("moves (victim→new node: trials): %v", tos)
	for _, s := range stages {
		lat[s].reportAll(b, s)
	}
}

// BenchmarkTimelineKill: BenchmarkFailoverFenced's lab and trials (SIGKILL
// of the node running the resource, lab fence device), every stage
// reported as p50/p99/min/max.
func BenchmarkTimelineKill(b *testing.B) { benchTimeline(b, failoverMode{}) }

// BenchmarkTimelineHang: BenchmarkFailoverHang's (SIGSTOP, fenced).
func BenchmarkTimelineHang(b *testing.B) { benchTimeline(b, failoverMode{hang: true}) }

// BenchmarkTimelineWatchdog: BenchmarkFailoverWatchdog's (SIGKILL,
// `--watchdog process`, no fence device).
func BenchmarkTimelineWatchdog(b *testing.B) { benchTimeline(b, failoverMode{watchdog: true}) }

// BenchmarkIdleCost: BenchmarkAgentIdle's lab and windows (3 nodes on
// loopback, no resource, no watchdog, idleWindow per iteration, nothing
// polling the agents), reporting for CPU (% of one core) both the worst
// agent's mean over the windows and the worst single window, and for
// memory the worst VmRSS seen and the worst VmHWM at the end:
//
//	cpu-mean-%-of-core   highest per-agent mean over all windows
//	cpu-max-%-of-core    highest single window of any agent
//	rss-max-MB           highest VmRSS at the end of a window
//	hwm-MB               highest VmHWM at the end
//	dc-cpu-mean-%-of-core, dc-rss-max-MB  the DC's own
func BenchmarkIdleCost(b *testing.B) {
	l := benchLab(b, lab.Options{Nodes: 3})
	names := l.NodeNames()
	polls := pollersFor(b, l, names)
	l.StartAll()
	dc := waitSteady(b, pick(polls, names), names)
	for _, p := range polls {
		p.hc.CloseIdleConnections()
	}
	time.Sleep(5 * time.Second)

	pids := map[string]int{}
	for _, n := range names {
		pid := l.Node(n).PID()
		if c := procComm(pid); c != "vigil" {
			b.Fatalf("%s: pid %d is %q, not the vigil agent", n, pid, c)
		}
		pids[n] = pid
	}
	cpuSum := map[string]float64{}
	cpus, rsss := map[string][]string{}, map[string][]string{}
	var windows int
	var cpuMax, rssMax, dcRSS float64
	for b.Loop() {
		before := map[string]time.Duration{}
		for _, n := range names {
			c, err := procCPU(pids[n])
			if err != nil {
				b.Fatal(err)
			}
			before[n] = c
		}
		t0 := time.Now()
		time.Sleep(idleWindow)
		wall := time.Since(t0)
		for _, n := range names {
			c, err := procCPU(pids[n])
			if err != nil {
				b.Fatal(err)
			}
			rss, err := procStatus(pids[n], "VmRSS")
			if err != nil {
				b.Fatal(err)
			}
			cpu := 100 * float64(c-before[n]) / float64(wall)
			rssMB := rss / 1024
			cpuSum[n] += cpu
			cpuMax, rssMax = max(cpuMax, cpu), max(rssMax, rssMB)
			if n == dc {
				dcRSS = max(dcRSS, rssMB)
			}
			cpus[n] = append(cpus[n], fmt.Sprintf("%.1f", cpu))
			rsss[n] = append(rsss[n], fmt.Sprintf("%.1f", rssMB))
		}
		windows++
	}
	var meanMax, dcMean, hwmMax float64
	for _, n := range names {
		mean := cpuSum[n] / float64(windows)
		meanMax = max(meanMax, mean)
		if n == dc {
			dcMean = mean
		}
		hwm, _ := procStatus(pids[n], "VmHWM")
		hwmMax = max(hwmMax, hwm/1024)
		role := "follower"
		if n == dc {
			role = "DC"
		}
		b.Logf("%s (%s): cpu %% of a core per %s window [%s] mean %.2f; VmRSS MB [%s]; VmHWM %.1f MB",
			n, role, idleWindow, strings.Join(cpus[n], " "), mean, strings.Join(rsss[n], " "), hwm/1024)
	}
	b.ReportMetric(meanMax, "cpu-mean-%-of-core")
	b.ReportMetric(cpuMax, "cpu-max-%-of-core")
	b.ReportMetric(rssMax, "rss-max-MB")
	b.ReportMetric(hwmMax, "hwm-MB")
	b.ReportMetric(dcMean, "dc-cpu-mean-%-of-core")
	b.ReportMetric(dcRSS, "dc-rss-max-MB")
}
