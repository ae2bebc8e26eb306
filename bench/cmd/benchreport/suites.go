package main

// The suites of bench/run and the DESIGN targets. To add a benchmark to the
// report, add its name to a suite's Benches (or a new Suite to suites); a
// Row gives its figures a label and a target, and without one its metrics
// still appear, labelled by benchmark and metric name.

// Style is a suite's table layout.
type Style int

const (
	// Latency: one row per stage, metrics "<stage>-p50-ms", "-p99-ms",
	// "-min-ms", "-max-ms" (stage "" for "p50-ms" ...), in ms.
	Latency Style = iota
	// Value: one row per metric (such as "cpu-mean-%-of-core", "rss-max-MB").
	Value
	// GoBench: one row per benchmark: ns/op (shown in ms), B/op (MB),
	// allocs/op.
	GoBench
)

// Suite is one part of a bench run: one `go test -bench` command.
type Suite struct {
	Name  string // on the command line: bench/run NAME
	Title string // the report's heading
	About string // the setup, one paragraph of Markdown
	Pkg   string // the package, "./internal/lab/"
	// Benches are the top-level benchmarks, without "Benchmark", run as
	// -bench '^Benchmark(A|B)$'; none: every benchmark of Pkg.
	Benches []string
	// Lab: real agents. It needs the binary (make build, given as
	// $VIGIL_BIN) and runs a fixed count of iterations (-benchtime Nx):
	// Options.Trials, or Options.Windows when Windows is set.
	Lab     bool
	Windows bool
	Netns   bool     // network namespaces: root and iproute2
	Needs   []string // further commands that must be on $PATH
	Style   Style
	Rows    []Row
	Notes   []string // Markdown paragraphs under the table
}

// Row labels one figure of a suite's table.
type Row struct {
	// Bench is the benchmark as printed, without "Benchmark" and the
	// -GOMAXPROCS suffix: "TimelineKill", "InitialPlacement/100x10000".
	Bench string
	// Metric: for Latency, the stage (metrics "<stage>-p50-ms" ...); for
	// Value, the unit as reported ("cpu-mean-%-of-core"); unused for
	// GoBench.
	Metric string
	Label  string // Markdown
	Target string // a key of targets, or ""
}

// Target is a DESIGN target, and the Pacemaker figure DESIGN gives beside
// it.
type Target struct {
	Text      string // as DESIGN writes it
	Pacemaker string
	// Limits are what the report checks ("met"/"missed"); all must hold.
	Limits []Limit
}

// Limit bounds one column of a row: "p50", "p99" (Latency, ms), "value"
// (Value, the metric's unit), "time" (GoBench, ms per op), "alloc"
// (GoBench, MB allocated per op).
type Limit struct {
	Col string
	Max float64
}

// targets are copied from DESIGN.md (/work/shared/DESIGN.md, i.e.
// ../shared/DESIGN.md from the module root), section "Targets (benchmarks,
// not timed tests)", with its column "for scale: Pacemaker 2.1.5 +
// Corosync 3.1.7 on this kind of machine". Keep them in step by hand.
// DESIGN's "false failovers under 1 % packet loss and jitter, 10 minutes:
// 0" is the chaos suite's, not a benchmark's.
var targets = map[string]Target{
	"failover": {
		Text:      "p50 ≤ 1.5 s, p99 ≤ 2.5 s",
		Pacemaker: "9.3 s median at corosync's default token; 5.1 s at token 1000 with a fence device",
		Limits:    []Limit{{"p50", 1500}, {"p99", 2500}},
	},
	// DESIGN gives one bound; the report checks it against p50.
	"from-detection": {
		Text:      "≤ 0.3 s",
		Pacemaker: "about 3.6 s from token loss",
		Limits:    []Limit{{"p50", 300}},
	},
	"sched-initial": {
		Text:      "≤ 100 ms, ≤ 100 MB",
		Pacemaker: "16.6 s, 370 MB (crm_simulate, startup probes off)",
		// B/op is allocated per call, not resident: an upper bound.
		Limits: []Limit{{"time", 100}, {"alloc", 100}},
	},
	"sched-recovery": {
		Text:      "≤ 50 ms",
		Pacemaker: "59 s, 4.1 GB (with operation history)",
		Limits:    []Limit{{"time", 50}},
	},
	"migration": {
		Text: "orchestration overhead over QEMU's own migration ≤ 10 %",
	},
	"idle-cpu": {
		Text:   "≤ 1 % of a core",
		Limits: []Limit{{"value", 1}},
	},
	"idle-mem": {
		Text:   "≤ 40 MB resident",
		Limits: []Limit{{"value", 40}},
	},
}

// timelineRows are the rows of a benchTimeline benchmark
// (internal/lab/bench_more_test.go): what names the case, fault is
// "SIGKILL" or "SIGSTOP", proof what its "fenced" stage is.
func timelineRows(bench, what, fault, proof string, withTargets bool) []Row {
	t := func(k string) string {
		if withTargets {
			return k
		}
		return ""
	}
	return []Row{
		{bench, "started", "**" + what + "**: " + fault + " → resource `started` on another node (first survivor's status)", t("failover")},
		{bench, "started-all", what + ": " + fault + " → `started` in both survivors' status", ""},
		{bench, "lost", what + ": " + fault + " → victim `lost` (first survivor)", ""},
		{bench, "fenced", what + ": " + fault + " → " + proof, ""},
		{bench, "old-gone", what + ": " + fault + " → the victim's resource process gone (ground truth)", ""},
		{bench, "disk", what + ": " + fault + " → the new process alive on a survivor (ground truth)", ""},
		{bench, "from-lost", what + ": from detection: `lost` → `started` elsewhere (per trial)", t("from-detection")},
	}
}

const p99Note = "p99 is the nearest-rank 99th percentile: with fewer than 100 trials it is the maximum."

var suites = []*Suite{
	{
		Name:    "detection",
		Title:   "Failure detection and DC failover (3 nodes, network namespaces)",
		About:   "Three agents, each in its own network namespace, default timings (heartbeat 200 ms, node lost after 1 s of silence). A non-DC node (alternately one of the two) or the DC is SIGKILLed; the survivors' own status is polled in-process every 10 ms. The victim is restarted and the cluster settles between trials (untimed).",
		Pkg:     "./internal/lab/",
		Benches: []string{"NodeLossDetection", "DCFailover"},
		Lab:     true,
		Netns:   true,
		Style:   Latency,
		Rows: []Row{
			{"NodeLossDetection", "", "SIGKILL of a non-DC node → **both** survivors report it `lost` (quorum kept)", ""},
			{"NodeLossDetection", "first", "same, the first survivor to report it", ""},
			{"DCFailover", "lost", "SIGKILL of the DC → both survivors report the old DC `lost`", ""},
			{"DCFailover", "", "SIGKILL of the DC → **both** survivors quorate and naming the **same new DC**", ""},
		},
		Notes: []string{p99Note},
	},
	{
		Name:    "failover",
		Title:   "Resource failover, fenced: node SIGKILL and hang (3 nodes, network namespaces)",
		About:   "Three agents in network namespaces, default timings, the lab fence device (`fence_vigil_lab`: SIGKILL of the node's process group and of every process in its namespace, then a status check) for every node, no watchdog. One `vigil:process` resource (monitor every 2 s) prefers (INFINITY) a non-DC node, the victim, which is SIGKILLed (or SIGSTOPped: a hang) with its process group. Status is polled in-process every 10 ms on each survivor; the ground truth (pid files and /proc) every 10 ms. Between trials the victim restarts as after a reboot, gets the resource back, and the cluster settles (untimed). The lab fence device takes ~0.25 s; a real power fence takes longer.",
		Pkg:     "./internal/lab/",
		Benches: []string{"TimelineKill", "TimelineHang"},
		Lab:     true,
		Netns:   true,
		Style:   Latency,
		Rows: append(timelineRows("TimelineKill", "fenced", "SIGKILL", "fencing confirmed (end of the OK fencing event, DC's history)", true),
			timelineRows("TimelineHang", "hang (fenced)", "SIGSTOP", "fencing confirmed (end of the OK fencing event, DC's history)", false)...),
		Notes: []string{p99Note, "`started` is a *reported* start, committed to the store; it includes `vigil:process`'s 200 ms start check. The benchmark fails if the new process is ever seen alive before the old one is gone (never twice)."},
	},
	{
		Name:    "watchdog",
		Title:   "Resource failover, watchdog only (3 nodes, network namespaces)",
		About:   "As the fenced failover, but `cluster setup --watchdog process` and no fence device: after a SIGKILL the DC may recover only once lease + 2 × watchdog + margin have passed since the loss (defaults: lease 1 s, watchdog 2 s).",
		Pkg:     "./internal/lab/",
		Benches: []string{"TimelineWatchdog"},
		Lab:     true,
		Netns:   true,
		Style:   Latency,
		Rows:    timelineRows("TimelineWatchdog", "watchdog only", "SIGKILL", "watchdog proof made (the DC's fencing history)", false),
		Notes:   []string{p99Note},
	},
	{
		Name:    "vip",
		Title:   "Virtual IP: client outage (network namespaces)",
		About:   "A `vigil:ip` address and a client outside the cluster; the node holding the address is SIGKILLed; the outage is what the client sees.",
		Pkg:     "./internal/lab/",
		Benches: []string{"VIPOutage"},
		Lab:     true,
		Netns:   true,
		Style:   Latency,
		Rows: []Row{
			{"VIPOutage", "outage", "SIGKILL of the node holding the address → the client reaches it again", ""},
		},
		Notes: []string{p99Note},
	},
	{
		Name:    "vm",
		Title:   "Virtual machines: failover, isolation and live migration (QEMU, TCG)",
		About:   "Three agents in network namespaces with the lab fence device and a datastore folder shared by all; `vm1` is the project's busybox test guest (`scripts/guest-image.sh`: 128 MiB, 1 vCPU, TCG, a 64 MiB qcow2 disk on the datastore), whose init prints a counter every second. **Failover**: the node running `vm1` is SIGKILLed with its process group (QEMU dies with it). **Live migration**: `vigil resource move vm1 NODE --wait` to another node, timed by the benchmark (the CLI's wall time), beside QEMU's own total time and downtime (`query-migrate`, as the source's `vigil:vm` recorded them); the guest must keep counting in the same boot on the target. The idle guest does nothing but its counter; the busy one (`vigil.busy=32` on its kernel command line) keeps rewriting 32 MiB of its memory without pause, so that every pass finds those pages dirty again. QEMU's default migration parameters (bandwidth 128 MiB/s, downtime limit 300 ms). **Isolation**: every network link of `vm1`'s node is cut (the datastore stays), in a lab with no fence device and a 10 s process watchdog: the node loses quorum, shuts `vm1` down (its default isolation response) and says so on the datastore; the DC restarts it elsewhere without waiting for the watchdog.",
		Pkg:     "./internal/lab/",
		Benches: []string{"VMFailover", "VMIsolation", "VMMigration", "VMMigrationBusy"},
		Lab:     true,
		Netns:   true,
		Needs:   []string{"qemu-system-x86_64"},
		Style:   Latency,
		Rows: []Row{
			{"VMFailover", "started", "**VM failover**: SIGKILL of its node → `vm1`'s QEMU running on another node (ground truth)", ""},
			{"VMFailover", "guest", "VM failover: SIGKILL → the guest counting on the new node (a fresh boot under TCG)", ""},
			{"VMIsolation", "started", "**VM isolation**: every link of its node cut → `vm1`'s QEMU running on another node (no fence device; watchdog 10 s)", ""},
			{"VMIsolation", "guest", "VM isolation: links cut → the guest counting on the new node", ""},
			{"VMMigration", "move", "**live migration, idle guest**: `resource move --wait` (CLI wall time)", ""},
			{"VMMigration", "qemu-total", "idle guest: QEMU's total migration time", ""},
			{"VMMigration", "downtime", "idle guest: **downtime** (QEMU)", ""},
			{"VMMigration", "overhead", "idle guest: orchestration overhead (move − QEMU total, per trial)", "migration"},
			{"VMMigrationBusy", "move", "**live migration, busy guest** (32 MiB dirtied continuously): `resource move --wait`", ""},
			{"VMMigrationBusy", "qemu-total", "busy guest: QEMU's total migration time", ""},
			{"VMMigrationBusy", "downtime", "busy guest: **downtime** (QEMU)", ""},
			{"VMMigrationBusy", "overhead", "busy guest: orchestration overhead (move − QEMU total, per trial)", "migration"},
		},
		Notes: []string{p99Note, "In the other metrics, `MiB-sent-p50` is the RAM QEMU sent (median), `passes-p50` its dirty-bitmap syncs, `MiB-dirty-after-pass1-p50` what was left to send once the first pass had sent all RAM (the pages the guest dirtied meanwhile); `qemu-rss-MB` and `agent-rss-MB` are VmRSS of a VM's QEMU and of its node's agent."},
	},
	{
		Name:  "scheduler",
		Title: "Scheduler (`internal/scheduler`, pure function, no I/O)",
		About: "Snapshots from `gen.Cluster` (seeded; see `internal/scheduler/README.md`). Memory is **bytes allocated per call** (`B/op`, in MB of 10⁶ bytes), not peak resident memory; the DESIGN memory target is checked against it, an upper bound.",
		Pkg:   "./internal/scheduler/",
		Style: GoBench,
		Rows: []Row{
			{Bench: "InitialPlacement/100x10000", Label: "InitialPlacement **100 × 10,000**", Target: "sched-initial"},
			{Bench: "Recovery64x3000", Label: "**Recovery 64 × 3,000** (one node fenced → its resources placed again, the rest sticky)", Target: "sched-recovery"},
			{Bench: "Recovery64x3000Lost", Label: "Recovery 64 × 3,000, node lost not yet fenced (blocked + fence request)"},
		},
	},
	{
		Name:    "idle",
		Title:   "Agent at idle (3 nodes on loopback)",
		About:   "A default three-node cluster on loopback (no watchdog, **no resource**), settled 5 s; each window samples every agent's CPU time (utime + stime, /proc/PID/stat) over 10 s and its VmRSS at the end. Nothing polls the agents during the windows.",
		Pkg:     "./internal/lab/",
		Benches: []string{"IdleCost"},
		Lab:     true,
		Windows: true,
		Style:   Value,
		Rows: []Row{
			{"IdleCost", "cpu-mean-%-of-core", "CPU, % of one core: the highest per-agent mean over the windows", "idle-cpu"},
			{"IdleCost", "cpu-max-%-of-core", "CPU: the worst single window of any agent", ""},
			{"IdleCost", "dc-cpu-mean-%-of-core", "CPU of the DC, mean over the windows", ""},
			{"IdleCost", "rss-max-MB", "resident memory (VmRSS), the highest seen", "idle-mem"},
			{"IdleCost", "hwm-MB", "peak resident memory (VmHWM) at the end, the highest agent", ""},
			{"IdleCost", "dc-rss-max-MB", "VmRSS of the DC, the highest seen", ""},
		},
		Notes: []string{"The count of trials is the count of 10 s windows. A node running resources (monitors) or a watchdog (lease renewals) costs more; not measured here."},
	},
}

// suiteByName returns the suite called name, or nil.
func suiteByName(name string) *Suite {
	for _, s := range suites {
		if s.Name == name {
			return s
		}
	}
	return nil
}
