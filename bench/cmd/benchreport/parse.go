package main

import (
	"bufio"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Metric is one value of a benchmark result line: "1433 p50-ms" is
// {1433, "p50-ms"}; "65000 ns/op" is {65000, "ns/op"}.
type Metric struct {
	Value float64
	Unit  string
}

// Result is one benchmark as `go test -bench` printed it.
type Result struct {
	// Name without "Benchmark" and without the -GOMAXPROCS suffix:
	// "TimelineKill", "InitialPlacement/100x10000".
	Name    string
	Procs   int // the -GOMAXPROCS suffix (0: none printed)
	N       int // iterations (trials for the lab benchmarks)
	Metrics []Metric
	// Log holds the benchmark's log lines (b.Logf), without the leading
	// indentation and the "file.go:123: " prefix.
	Log []string
}

// Metric returns the value reported with unit, if any.
func (r *Result) Metric(unit string) (float64, bool) {
	for _, m := range r.Metrics {
		if m.Unit == unit {
			return m.Value, true
		}
	}
	return 0, false
}

// Output is a parsed `go test -bench` output (with or without -v).
type Output struct {
	Pkg, CPU string
	Results  []*Result
	// Skipped and Failed map a benchmark name (as in Result.Name) to its
	// log: for a skip, the reason.
	Skipped map[string][]string
	Failed  map[string][]string
	// Order lists skipped and failed benchmarks in the order seen.
	Order []string
	// Other holds lines that are neither benchmark lines nor logs
	// attached to one (build errors, panics, FAIL lines, ...).
	Other []string
}

// Result returns the result of benchmark name, or nil.
func (o *Output) Result(name string) *Result {
	for _, r := range o.Results {
		if r.Name == name {
			return r
		}
	}
	return nil
}

var (
	// A result line: name, iterations, then value/unit pairs.
	resultLine = regexp.MustCompile(`^Benchmark(\S+)\s+(\d+)\s+(.*\S)\s*$`)
	// A result whose name was printed on an earlier line (output
	// interleaved): iterations then pairs, the first being ns/op.
	bareResult = regexp.MustCompile(`^\s*(\d+)\s+(\S+ ns/op.*\S)\s*$`)
	// A name alone (-v prints it before the benchmark runs; without -v
	// it is printed without a newline, which stray output may cut).
	nameLine = regexp.MustCompile(`^Benchmark(\S+?)\s*$`)
	// "--- SKIP: BenchmarkX-2", "--- FAIL: ...", "--- BENCH: ...",
	// possibly indented (sub-benchmarks).
	statusLine = regexp.MustCompile(`^\s*--- (SKIP|FAIL|BENCH|PASS): Benchmark(\S+)`)
	// A log line: indented, "file.go:123: text".
	logLine = regexp.MustCompile(`^\s+(?:\S+\.go:\d+: )?(.*)$`)
	// The -GOMAXPROCS suffix.
	procsSuffix = regexp.MustCompile(`-(\d+)$`)
)

// splitName strips the -GOMAXPROCS suffix.
func splitName(s string) (string, int) {
	if m := procsSuffix.FindStringSubmatch(s); m != nil {
		p, _ := strconv.Atoi(m[1])
		return strings.TrimSuffix(s, m[0]), p
	}
	return s, 0
}

// parsePairs reads "value unit value unit ...".
func parsePairs(s string) ([]Metric, bool) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f)%2 != 0 {
		return nil, false
	}
	var ms []Metric
	for i := 0; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return nil, false
		}
		ms = append(ms, Metric{Value: v, Unit: f[i+1]})
	}
	return ms, true
}

// Parse reads the output of `go test -bench` (-v or not). It never fails:
// what it does not recognize goes to Output.Other.
func Parse(r io.Reader) (*Output, error) {
	o := &Output{Skipped: map[string][]string{}, Failed: map[string][]string{}}
	// logs of benchmarks seen so far, by name; -v prints them before the
	// result (or the SKIP/FAIL line), plain mode after "--- BENCH:".
	logs := map[string][]string{}
	cur := ""     // the benchmark whose log lines follow
	pending := "" // a name printed without its result yet (plain mode)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, "pkg: "):
			o.Pkg = strings.TrimSpace(strings.TrimPrefix(line, "pkg: "))
			continue
		case strings.HasPrefix(line, "cpu: "):
			o.CPU = strings.TrimSpace(strings.TrimPrefix(line, "cpu: "))
			continue
		case strings.HasPrefix(line, "goos: "), strings.HasPrefix(line, "goarch: "),
			line == "PASS", strings.HasPrefix(line, "ok  \t"), strings.TrimSpace(line) == "":
			continue
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			if ms, ok := parsePairs(m[3]); ok {
				name, procs := splitName(m[1])
				n, _ := strconv.Atoi(m[2])
				res := &Result{Name: name, Procs: procs, N: n, Metrics: ms, Log: logs[name]}
				o.Results = append(o.Results, res)
				cur, pending = name, ""
				continue
			}
		}
		if m := bareResult.FindStringSubmatch(line); m != nil && pending != "" {
			if ms, ok := parsePairs(m[2]); ok {
				name, procs := splitName(pending)
				n, _ := strconv.Atoi(m[1])
				o.Results = append(o.Results, &Result{Name: name, Procs: procs, N: n, Metrics: ms, Log: logs[name]})
				cur, pending = name, ""
				continue
			}
		}
		if m := nameLine.FindStringSubmatch(line); m != nil {
			name, _ := splitName(m[1])
			cur, pending = name, m[1]
			continue
		}
		if strings.HasPrefix(line, "Benchmark") {
			// A name followed by stray output on the same line.
			f := strings.Fields(line)
			name, _ := splitName(strings.TrimPrefix(f[0], "Benchmark"))
			cur, pending = name, strings.TrimPrefix(f[0], "Benchmark")
			o.Other = append(o.Other, line)
			continue
		}
		if m := statusLine.FindStringSubmatch(line); m != nil {
			name, _ := splitName(m[2])
			cur = name
			switch m[1] {
			case "SKIP":
				o.Skipped[name] = logs[name]
				o.Order = append(o.Order, name)
			case "FAIL":
				o.Failed[name] = logs[name]
				o.Order = append(o.Order, name)
			}
			continue
		}
		if cur != "" && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) &&
			!strings.HasPrefix(strings.TrimSpace(line), "... [output truncated]") {
			text := logLine.FindStringSubmatch(line)[1]
			logs[cur] = append(logs[cur], text)
			// Plain mode: the log follows the result or the status line.
			if r := o.Result(cur); r != nil {
				r.Log = logs[cur]
			}
			if _, ok := o.Skipped[cur]; ok {
				o.Skipped[cur] = logs[cur]
			}
			if _, ok := o.Failed[cur]; ok {
				o.Failed[cur] = logs[cur]
			}
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "... [output truncated]") {
			continue
		}
		o.Other = append(o.Other, line)
	}
	return o, sc.Err()
}

// statRe splits a latency metric unit: "<stage>-<stat>-ms" or
// "<stat>-ms" (stage "").
var statRe = regexp.MustCompile(`^(?:(.+)-)?(p50|p99|min|max|mean)-ms$`)

// splitStat returns the stage and statistic of a latency unit.
func splitStat(unit string) (stage, stat string, ok bool) {
	m := statRe.FindStringSubmatch(unit)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}
