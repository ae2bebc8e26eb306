package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/report.golden.md")

// The testdata files are real `go test -bench` outputs: detection,
// failover, watchdog, scheduler and idle from `bench/run --quick` (-v);
// plain.txt from a run without -v (logs after "--- BENCH:", truncated);
// mixed-v.txt and mixed-plain.txt from the benchmarks of
// mixed_test.go.txt (a skip, a failure, stray output, sub-benchmarks).

func parseFile(t *testing.T, name string) *Output {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	o, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func metric(t *testing.T, o *Output, bench, unit string) float64 {
	t.Helper()
	r := o.Result(bench)
	if r == nil {
		t.Fatalf("no result %q; have %v", bench, names(o))
	}
	v, ok := r.Metric(unit)
	if !ok {
		t.Fatalf("%s: no metric %q in %v", bench, unit, r.Metrics)
	}
	return v
}

func names(o *Output) []string {
	var n []string
	for _, r := range o.Results {
		n = append(n, r.Name)
	}
	return n
}

func TestParseLabVerbose(t *testing.T) {
	o := parseFile(t, "failover.txt")
	if o.Pkg != "github.com/vigil-ha/vigil/internal/lab" || !strings.Contains(o.CPU, "Oxide") {
		t.Errorf("header: pkg %q cpu %q", o.Pkg, o.CPU)
	}
	if got := names(o); !slices.Equal(got, []string{"TimelineKill", "TimelineHang"}) {
		t.Fatalf("results %v", got)
	}
	k := o.Result("TimelineKill")
	if k.N != 2 || k.Procs != 2 {
		t.Errorf("N %d procs %d, want 2 2", k.N, k.Procs)
	}
	if len(k.Metrics) != 29 { // ns/op + 7 stages × 4
		t.Errorf("%d metrics, want 29", len(k.Metrics))
	}
	for unit, want := range map[string]float64{
		"ns/op": 7592460170, "started-p50-ms": 1944, "started-p99-ms": 3144,
		"lost-p99-ms": 913.4, "old-gone-min-ms": 11.22, "from-lost-max-ms": 2281,
	} {
		if got := metric(t, o, "TimelineKill", unit); got != want {
			t.Errorf("%s = %v, want %v", unit, got, want)
		}
	}
	// -v prints the log before the result line; it belongs to it.
	if len(k.Log) != 10 || k.Log[2] != "raw lost (ms): 863 913" {
		t.Errorf("TimelineKill log: %q", k.Log)
	}
	if h := o.Result("TimelineHang"); len(h.Log) != 10 || !strings.HasPrefix(h.Log[0], "protection:") {
		t.Errorf("TimelineHang log: %q", h.Log)
	}
	if len(o.Other) != 0 || len(o.Order) != 0 {
		t.Errorf("other %q, skips/fails %q", o.Other, o.Order)
	}
}

func TestParseScheduler(t *testing.T) {
	o := parseFile(t, "scheduler.txt")
	want := []string{"InitialPlacement/3x10", "InitialPlacement/16x200", "InitialPlacement/32x1000",
		"InitialPlacement/64x3000", "InitialPlacement/100x10000", "Recovery64x3000", "Recovery64x3000Lost"}
	if got := names(o); !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	if got := metric(t, o, "InitialPlacement/100x10000", "allocs/op"); got != 124112 {
		t.Errorf("allocs/op %v", got)
	}
	if got := metric(t, o, "InitialPlacement/100x10000", "B/op"); got != 21041392 {
		t.Errorf("B/op %v", got)
	}
}

func TestParsePlain(t *testing.T) {
	o := parseFile(t, "plain.txt")
	if got := names(o); !slices.Equal(got, []string{"TimelineKill", "TimelineHang", "IdleCost", "NodeLossDetection"}) {
		t.Fatalf("results %v", got)
	}
	// Without -v the log follows "--- BENCH:"; go test cut it at 10 lines.
	k := o.Result("TimelineKill")
	if len(k.Log) != 10 || k.Log[9] != "moves (victim→new node: trials): map[n2→n1:2]" {
		t.Errorf("log %q", k.Log)
	}
	if got := metric(t, o, "IdleCost", "cpu-mean-%-of-core"); got != 2.398 {
		t.Errorf("cpu-mean %v", got)
	}
	if got := metric(t, o, "NodeLossDetection", "first-p50-ms"); got != 929.8 {
		t.Errorf("first-p50 %v", got)
	}
	if l := o.Result("NodeLossDetection").Log; len(l) != 7 || l[6] != "kill → lost on the first survivor (ms): 930 1005" {
		t.Errorf("NodeLossDetection log %q", l)
	}
}

func TestParseSkipFailStray(t *testing.T) {
	for _, file := range []string{"mixed-v.txt", "mixed-plain.txt"} {
		t.Run(file, func(t *testing.T) {
			o := parseFile(t, file)
			if got := names(o); !slices.Equal(got, []string{"OK", "Stray", "Sub/small"}) {
				t.Fatalf("results %v", got)
			}
			if got := metric(t, o, "OK", "stage-p50-ms"); got != 12.5 {
				t.Errorf("stage-p50-ms %v", got)
			}
			if got := metric(t, o, "Stray", "p50-ms"); got != 7 {
				t.Errorf("p50-ms %v", got)
			}
			if l := o.Result("OK").Log; !slices.Equal(l, []string{"note before"}) {
				t.Errorf("OK log %q", l)
			}
			if l := o.Failed["Fail"]; !slices.Equal(l, []string{"setting up", "iteration 0 (n2): no complete failover within 1m0s"}) {
				t.Errorf("Fail: %q", l)
			}
			if !slices.Contains(o.Other, "stray output from the benchmark") {
				t.Errorf("stray line not in Other: %q", o.Other)
			}
			if file == "mixed-plain.txt" {
				// Without -v go test does not print skips at all: the
				// reason bench/run runs go test -v.
				if len(o.Skipped) != 0 {
					t.Errorf("skips %v", o.Skipped)
				}
				return
			}
			if !slices.Equal(o.Order, []string{"Skip", "Fail", "Sub/big"}) {
				t.Errorf("order %v", o.Order)
			}
			if l := o.Skipped["Skip"]; !slices.Equal(l, []string{"network namespaces unavailable: not root"}) {
				t.Errorf("Skip: %q", l)
			}
			if l := o.Skipped["Sub/big"]; !slices.Equal(l, []string{"too big"}) {
				t.Errorf("Sub/big: %q", l)
			}
		})
	}
}

func TestSplitStat(t *testing.T) {
	for _, c := range []struct{ unit, stage, stat string }{
		{"p50-ms", "", "p50"},
		{"first-p50-ms", "first", "p50"},
		{"from-lost-p99-ms", "from-lost", "p99"},
		{"started-all-min-ms", "started-all", "min"},
		{"old-gone-max-ms", "old-gone", "max"},
	} {
		stage, stat, ok := splitStat(c.unit)
		if !ok || stage != c.stage || stat != c.stat {
			t.Errorf("splitStat(%q) = %q %q %v", c.unit, stage, stat, ok)
		}
	}
	for _, u := range []string{"ns/op", "cpu-mean-%-of-core", "p50-s", "rss-max-MB"} {
		if _, _, ok := splitStat(u); ok {
			t.Errorf("splitStat(%q) matched", u)
		}
	}
}

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{1433: "1433", 1432.6: "1433", 59.06: "59.1", 0.0651: "0.0651", 11.22: "11.2", 0: "0", 100: "100"} {
		if got := fmtNum(v); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", v, got, want)
		}
	}
	if got := fmtCount(124112); got != "124,112" {
		t.Errorf("fmtCount = %q", got)
	}
	if got := fmtValue(2.398, "cpu-mean-%-of-core"); got != "2.40 %" {
		t.Errorf("fmtValue = %q", got)
	}
	ft := targets["failover"]
	if got := verdict(ft, map[string]float64{"p50": 1433, "p99": 1572}); got != "met" {
		t.Errorf("verdict %q", got)
	}
	if got := verdict(ft, map[string]float64{"p50": 1944, "p99": 3144}); got != "**missed** (p50 1944 > 1500, p99 3144 > 2500)" {
		t.Errorf("verdict %q", got)
	}
	if got := verdict(ft, map[string]float64{"p50": 1433}); got != "not measured" {
		t.Errorf("verdict %q", got)
	}
}

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"failover", "-n", "5", "--quick", "scheduler"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Trials != 5 || o.Windows != 1 || !o.Quick || o.Out != "bench/out/quick.md" {
		t.Errorf("options %+v", o)
	}
	var sel []string
	for _, s := range o.selected() {
		sel = append(sel, s.Name)
	}
	if !slices.Equal(sel, []string{"failover", "scheduler"}) {
		t.Errorf("selected %v", sel)
	}
	o, err = parseArgs(nil, io.Discard)
	if err != nil || o.Trials != 20 || o.Windows != 6 || len(o.selected()) != len(suites) || o.Out != "bench/out/latest.md" {
		t.Errorf("defaults %+v, %v", o, err)
	}
	if _, err := parseArgs([]string{"nope"}, io.Discard); err == nil {
		t.Error("unknown suite accepted")
	}
	if _, err := parseArgs([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestGoTestArgs(t *testing.T) {
	o := &Options{Trials: 20, Windows: 6}
	got := strings.Join(quoteArgs(goTestArgs(o, suiteByName("failover"), []string{"TimelineKill", "TimelineHang"})), " ")
	want := `test -count=1 -v -run '^$' -bench '^Benchmark(TimelineKill|TimelineHang)$' -benchtime 20x -timeout 30m ./internal/lab/`
	if got != want {
		t.Errorf("failover:\n got %s\nwant %s", got, want)
	}
	got = strings.Join(quoteArgs(goTestArgs(o, suiteByName("idle"), []string{"IdleCost"})), " ")
	if !strings.Contains(got, "-benchtime 6x") {
		t.Errorf("idle: %s", got)
	}
	got = strings.Join(quoteArgs(goTestArgs(o, suiteByName("scheduler"), []string{"*"})), " ")
	if got != `test -count=1 -v -run '^$' -bench . -benchmem ./internal/scheduler/` {
		t.Errorf("scheduler: %s", got)
	}
}

// TestFindBenches runs against this module's own packages: every named
// benchmark of the suites either exists or is listed as missing.
func TestFindBenches(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	present, missing := findBenches(root, suiteByName("failover"))
	if !slices.Equal(present, []string{"TimelineKill", "TimelineHang"}) || len(missing) != 0 {
		t.Errorf("failover: present %v missing %v", present, missing)
	}
	present, missing = findBenches(root, &Suite{Pkg: "./internal/lab/", Benches: []string{"TimelineKill", "NoSuchThing"}})
	if !slices.Equal(present, []string{"TimelineKill"}) || !slices.Equal(missing, []string{"NoSuchThing"}) {
		t.Errorf("present %v missing %v", present, missing)
	}
	if reason := unmet(&Suite{Pkg: "./internal/lab/", Benches: []string{"NoSuchThing"}}, "", nil); !strings.Contains(reason, "no benchmark yet") {
		t.Errorf("unmet: %q", reason)
	}
}

// TestReport renders a run made of the captured outputs and compares it
// with testdata/report.golden.md.
func TestReport(t *testing.T) {
	start := time.Date(2026, 11, 24, 2, 40, 0, 0, time.UTC)
	mk := func(suite, file, cmd string, el time.Duration) *SuiteRun {
		sr := &SuiteRun{Suite: suiteByName(suite), Command: cmd, Elapsed: el, Out: parseFile(t, file)}
		classify(sr, nil, nil)
		return sr
	}
	// A failed suite: the mixed benchmarks under a test-only suite.
	mixed := &SuiteRun{
		Suite: &Suite{Name: "mixed", Title: "Mixed (test only)", Pkg: "./bf/", Style: Latency,
			Benches: []string{"OK", "Stray", "Skip", "Fail", "Sub", "Gone"},
			Rows:    []Row{{"OK", "stage", "the OK stage", "failover"}}},
		Command: "go test -v -bench . ./bf/",
		Elapsed: 350 * time.Millisecond,
		Out:     parseFile(t, "mixed-v.txt"),
		Missing: []string{"Gone"},
	}
	raw, err := os.ReadFile("testdata/mixed-v.txt")
	if err != nil {
		t.Fatal(err)
	}
	classify(mixed, errors.New("exit status 1"), raw)
	run := &Run{
		Command: "bench/run --quick",
		Start:   start,
		End:     start.Add(3*time.Minute + 20*time.Second),
		Machine: Machine{CPUs: 2, Model: "AMD EPYC", RAM: "23.5 GiB", Kernel: "6.18.44-fc-v769",
			VM: "yes (systemd-detect-virt --vm: bhyve); in a container (docker)", LoadFrom: "2.20 1.25 1.07", LoadTo: "1.95 1.50 1.20"},
		Commit:  Commit{Short: "b84b403", Changed: []string{" M internal/agent/agent.go", "?? bench/run"}},
		Go:      "go1.26.8 linux/amd64",
		Trials:  2,
		Windows: 1,
		Quick:   true,
		Suites: []*SuiteRun{
			mk("detection", "detection.txt", "VIGIL_BIN=$PWD/bin/vigil go test -count=1 -v -run '^$' -bench '^Benchmark(NodeLossDetection|DCFailover)$' -benchtime 2x -timeout 12m ./internal/lab/", 22*time.Second),
			mk("failover", "failover.txt", "VIGIL_BIN=$PWD/bin/vigil go test ... (failover)", 46*time.Second),
			mk("watchdog", "watchdog.txt", "VIGIL_BIN=$PWD/bin/vigil go test ... (watchdog)", 35*time.Second),
			{Suite: suiteByName("vip"), Status: StatusSkipped, Reason: unmet(suiteByName("vip"), "", nil)},
			{Suite: suiteByName("vm"), Status: StatusSkipped, Reason: "needs network namespaces: not root"},
			mk("scheduler", "scheduler.txt", "go test -count=1 -v -run '^$' -bench . -benchtime 1x -benchmem ./internal/scheduler/", 1400*time.Millisecond),
			mk("idle", "idle.txt", "VIGIL_BIN=$PWD/bin/vigil go test ... (idle)", 20*time.Second),
			mixed,
		},
	}
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, run); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	const golden = "testdata/report.golden.md"
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("report differs from %s (go test -update to accept):\n%s", golden, firstDiff(string(want), got))
	}

	// What must be there, whatever the golden file says.
	for _, s := range []string{
		"| command | `bench/run --quick` (from the module root) |",
		"**working tree dirty** (2 paths",
		"| machine | 2 CPUs (`nproc`), \"AMD EPYC\", 23.5 GiB RAM, VM: yes",
		"| Go | go1.26.8 linux/amd64",
		"| vip | skipped: no benchmark yet (`BenchmarkVIPOutage` not in `./internal/lab/`) |",
		"| **fenced**: SIGKILL → resource `started` on another node (first survivor's status) | 1944 | 3144 | 1944 | 3144 | 2 | p50 ≤ 1.5 s, p99 ≤ 2.5 s | **missed** (p50 1944 > 1500, p99 3144 > 2500) |",
		"| hang (fenced): SIGSTOP → victim `lost` (first survivor) | 882 | 918 | 882 | 918 | 2 |",
		"| SIGKILL of a non-DC node → **both** survivors report it `lost` (quorum kept) | 905 | 931 | — | 931 | 2 |",
		"| InitialPlacement **100 × 10,000** | 148 | 21 | 124,112 | 1 | ≤ 100 ms, ≤ 100 MB | **missed** (time 148 > 100) |",
		"| CPU, % of one core: the highest per-agent mean over the windows | 2.40 % | 1 | ≤ 1 % of a core | **missed** (value 2.4 > 1) |",
		"| resident memory (VmRSS), the highest seen | 20.6 MB | 1 | ≤ 40 MB resident | met |",
		"- `BenchmarkSkip` skipped: network namespaces unavailable: not root",
		"- `BenchmarkFail` **failed**: iteration 0 (n2): no complete failover within 1m0s",
		"- `BenchmarkGone` is not in `./bf/` yet",
		"| the OK stage | 12.5 | — | — | — | 2 |",
		"| `Stray` | 7 | — | — | — | 2 |",
		"Other metrics: OK 3 odd-unit",
		"- TimelineKill: raw started (ms): 3144 1944",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("report lacks %q", s)
		}
	}
}

// firstDiff shows the first differing line.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return "line " + strconv.Itoa(i+1) + ":\nwant: " + x + "\n got: " + y
		}
	}
	return ""
}
