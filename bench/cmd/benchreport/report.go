package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine describes the host of a run.
type Machine struct {
	CPUs     int    // online CPUs (nproc)
	Model    string // /proc/cpuinfo "model name"
	RAM      string // MemTotal, "23.4 GiB"
	Kernel   string // uname -r
	VM       string // "yes (hypervisor CPU flag; systemd-detect-virt: kvm)", "no", ...
	LoadFrom string // /proc/loadavg's three figures at the start
	LoadTo   string // ... at the end
}

// Commit is the source the run measured.
type Commit struct {
	Short   string   // git rev-parse --short HEAD
	Changed []string // git status --porcelain lines: the tree is dirty when any
}

// Run is one bench run, everything the report shows.
type Run struct {
	Command    string // the command line, as typed
	Start, End time.Time
	Machine    Machine
	Commit     Commit
	Go         string // `go version`
	Trials     int    // -n
	Windows    int    // -windows
	Quick      bool
	Suites     []*SuiteRun
}

// Status of a suite in a run.
const (
	StatusOK      = "ok"
	StatusSkipped = "skipped"
	StatusFailed  = "failed"
)

// SuiteRun is one suite's part of a run.
type SuiteRun struct {
	Suite   *Suite
	Status  string
	Reason  string // why skipped or failed
	Command string // the go test command, runnable from the module root
	Elapsed time.Duration
	Out     *Output // nil when not run
	Tail    []string
	// Missing lists benchmarks of the suite not found in its package.
	Missing []string
}

// WriteMarkdown writes the report of run.
func WriteMarkdown(w io.Writer, run *Run) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }

	p("## Run of %s, commit `%s`%s (bench/run)\n\n", run.Start.UTC().Format("2006-01-02 15:04 UTC"), run.Commit.Short, dirtyMark(run.Commit))
	if run.Quick {
		p("**Quick run** (`--quick`: a smoke test of the tool, too few trials for figures).\n\n")
	}
	p("| | |\n| --- | --- |\n")
	p("| command | `%s` (from the module root) |\n", run.Command)
	p("| commit | %s |\n", commitText(run.Commit))
	p("| date | %s → %s (%s) |\n", run.Start.UTC().Format("2006-01-02 15:04:05"), run.End.UTC().Format("15:04:05 UTC"), roundDur(run.End.Sub(run.Start)))
	m := run.Machine
	p("| machine | %d CPUs (`nproc`), %s, %s RAM, VM: %s |\n", m.CPUs, quoteOr(m.Model, "CPU model unknown"), or(m.RAM, "?"), or(m.VM, "unknown"))
	p("| kernel | %s |\n", or(m.Kernel, "?"))
	p("| Go | %s; lab binary from `make build` (CGO_ENABLED=0, -trimpath) |\n", or(run.Go, "?"))
	p("| load average | %s at the start, %s at the end (1, 5, 15 min)%s |\n", or(m.LoadFrom, "?"), or(m.LoadTo, "?"), busyNote(m))
	p("| trials | %d per lab benchmark (`-n`); idle: %d window%s of 10 s (`-windows`) |\n", run.Trials, run.Windows, plural(run.Windows))
	p("\n")

	p("| suite | status | time | command |\n| --- | --- | --- | --- |\n")
	for _, sr := range run.Suites {
		st := sr.Status
		if sr.Reason != "" {
			st += ": " + sr.Reason
		}
		el := ""
		if sr.Elapsed > 0 {
			el = roundDur(sr.Elapsed).String()
		}
		cmd := ""
		if sr.Command != "" {
			cmd = "`" + sr.Command + "`"
		}
		p("| %s | %s | %s | %s |\n", sr.Suite.Name, cell(st), el, cell(cmd))
	}
	p("\n")

	for _, sr := range run.Suites {
		if sr.Out == nil {
			continue
		}
		writeSuite(&b, sr)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSuite(b *strings.Builder, sr *SuiteRun) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	s := sr.Suite
	p("### %s\n\n", s.Title)
	if s.About != "" {
		p("%s\n\n", s.About)
	}
	p("`%s`\n\n", sr.Command)
	if sr.Status == StatusFailed {
		p("**Failed**: %s.\n\n", sr.Reason)
	}
	for _, name := range sr.Out.Order {
		if log, ok := sr.Out.Skipped[name]; ok {
			p("- `Benchmark%s` skipped: %s\n", name, cell(lastOr(log, "no reason given")))
		} else if log, ok := sr.Out.Failed[name]; ok {
			p("- `Benchmark%s` **failed**: %s\n", name, cell(lastOr(log, "see the raw output")))
		}
	}
	for _, name := range sr.Missing {
		p("- `Benchmark%s` is not in `%s` yet\n", name, s.Pkg)
	}
	if len(sr.Out.Order)+len(sr.Missing) > 0 {
		p("\n")
	}
	if len(sr.Out.Results) > 0 {
		var rows []tableRow
		var extra []string
		switch s.Style {
		case Latency:
			rows, extra = latencyRows(s, sr.Out)
		case Value:
			rows, extra = valueRows(s, sr.Out)
		case GoBench:
			rows = goRows(s, sr.Out)
		}
		writeTable(b, s.Style, rows)
		if len(extra) > 0 {
			p("\nOther metrics: %s.\n", strings.Join(extra, "; "))
		}
		p("\n")
		for _, n := range s.Notes {
			p("%s\n\n", n)
		}
	}
	if len(sr.Tail) > 0 {
		p("Last lines of the output:\n\n```\n%s\n```\n\n", strings.Join(sr.Tail, "\n"))
	}
	// Raw trials and the benchmarks' own notes, as they logged them.
	var logged bool
	for _, r := range sr.Out.Results {
		if len(r.Log) == 0 {
			continue
		}
		if !logged {
			p("The benchmarks' logs (notes, and raw trials in order):\n\n")
			logged = true
		}
		for _, l := range r.Log {
			p("- %s: %s\n", r.Name, cell(l))
		}
	}
	if logged {
		p("\n")
	}
}

// tableRow is one row of a suite's table.
type tableRow struct {
	label  string
	cols   map[string]float64 // by column: p50, p99, min, max | value | time, alloc, allocs
	unit   string             // Value: the metric's unit
	n      int
	target string // key of targets
}

var latencyCols = []string{"p50", "p99", "min", "max"}

// latencyRows builds the rows of a Latency suite: the suite's Rows first,
// then, labelled by name, any other stage a benchmark reported; metrics
// that are not latencies come back as extra.
func latencyRows(s *Suite, o *Output) (rows []tableRow, extra []string) {
	used := map[string]map[string]bool{} // bench → stage
	mark := func(bench, stage string) {
		if used[bench] == nil {
			used[bench] = map[string]bool{}
		}
		used[bench][stage] = true
	}
	stageRow := func(r *Result, stage, label, target string) (tableRow, bool) {
		tr := tableRow{label: label, cols: map[string]float64{}, n: r.N, target: target}
		for _, m := range r.Metrics {
			if st, stat, ok := splitStat(m.Unit); ok && st == stage {
				tr.cols[stat] = m.Value
			}
		}
		return tr, len(tr.cols) > 0
	}
	for _, row := range s.Rows {
		r := o.Result(row.Bench)
		if r == nil {
			continue
		}
		if tr, ok := stageRow(r, row.Metric, row.Label, row.Target); ok {
			rows = append(rows, tr)
			mark(row.Bench, row.Metric)
		}
	}
	for _, r := range o.Results {
		var stages []string
		for _, m := range r.Metrics {
			st, _, ok := splitStat(m.Unit)
			if !ok {
				if m.Unit != "ns/op" {
					extra = append(extra, fmt.Sprintf("%s %s %s", r.Name, fmtNum(m.Value), m.Unit))
				}
				continue
			}
			if !used[r.Name][st] && !slices.Contains(stages, st) {
				stages = append(stages, st)
			}
		}
		for _, st := range stages {
			label := "`" + r.Name + "`"
			if st != "" {
				label += " " + st
			}
			if tr, ok := stageRow(r, st, label, ""); ok {
				rows = append(rows, tr)
			}
		}
	}
	return rows, extra
}

// valueRows builds the rows of a Value suite.
func valueRows(s *Suite, o *Output) (rows []tableRow, extra []string) {
	used := map[string]bool{}
	for _, row := range s.Rows {
		r := o.Result(row.Bench)
		if r == nil {
			continue
		}
		if v, ok := r.Metric(row.Metric); ok {
			rows = append(rows, tableRow{label: row.Label, cols: map[string]float64{"value": v}, unit: row.Metric, n: r.N, target: row.Target})
			used[row.Bench+" "+row.Metric] = true
		}
	}
	for _, r := range o.Results {
		for _, m := range r.Metrics {
			if m.Unit == "ns/op" || used[r.Name+" "+m.Unit] {
				continue
			}
			rows = append(rows, tableRow{label: "`" + r.Name + "` " + m.Unit, cols: map[string]float64{"value": m.Value}, unit: m.Unit, n: r.N})
		}
	}
	return rows, extra
}

// goRows builds the rows of a GoBench suite: every result, in order.
func goRows(s *Suite, o *Output) []tableRow {
	var rows []tableRow
	for _, r := range o.Results {
		tr := tableRow{label: strings.ReplaceAll(r.Name, "/", " "), cols: map[string]float64{}, n: r.N}
		for _, row := range s.Rows {
			if row.Bench == r.Name {
				tr.label, tr.target = row.Label, row.Target
			}
		}
		if v, ok := r.Metric("ns/op"); ok {
			tr.cols["time"] = v / 1e6
		}
		if v, ok := r.Metric("B/op"); ok {
			tr.cols["alloc"] = v / 1e6
		}
		if v, ok := r.Metric("allocs/op"); ok {
			tr.cols["allocs"] = v
		}
		rows = append(rows, tr)
	}
	return rows
}

func writeTable(b *strings.Builder, style Style, rows []tableRow) {
	hasPM := false
	for _, r := range rows {
		if targets[r.target].Pacemaker != "" {
			hasPM = true
		}
	}
	var head []string
	switch style {
	case Latency:
		head = []string{"figure", "p50 (ms)", "p99 (ms)", "min (ms)", "max (ms)", "trials"}
	case Value:
		head = []string{"figure", "value", "n"}
	case GoBench:
		head = []string{"benchmark", "time/op (ms)", "allocated/op (MB)", "allocs/op", "iterations"}
	}
	head = append(head, "target (DESIGN)", "verdict")
	if hasPM {
		head = append(head, "Pacemaker 2.1.5 + Corosync 3.1.7 (DESIGN)")
	}
	fmt.Fprintf(b, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat(" --- |", len(head)))
	for _, r := range rows {
		cells := []string{r.label}
		switch style {
		case Latency:
			for _, c := range latencyCols {
				cells = append(cells, colText(r.cols, c, fmtMS))
			}
		case Value:
			cells = append(cells, colText(r.cols, "value", func(v float64) string { return fmtValue(v, r.unit) }))
		case GoBench:
			cells = append(cells, colText(r.cols, "time", fmtMS), colText(r.cols, "alloc", fmtNum), colText(r.cols, "allocs", fmtCount))
		}
		cells = append(cells, strconv.Itoa(r.n))
		t := targets[r.target]
		cells = append(cells, cell(t.Text), verdict(t, r.cols))
		if hasPM {
			cells = append(cells, cell(t.Pacemaker))
		}
		fmt.Fprintf(b, "| %s |\n", strings.Join(cells, " | "))
	}
}

// verdict checks a row against its target's limits: "met", "missed (p50
// 1612 > 1500)", or "" when there is nothing to check.
func verdict(t Target, cols map[string]float64) string {
	if len(t.Limits) == 0 {
		return ""
	}
	var missed []string
	for _, l := range t.Limits {
		v, ok := cols[l.Col]
		if !ok {
			return "not measured"
		}
		if v > l.Max {
			missed = append(missed, fmt.Sprintf("%s %s > %s", l.Col, fmtNum(v), fmtNum(l.Max)))
		}
	}
	if len(missed) > 0 {
		return "**missed** (" + strings.Join(missed, ", ") + ")"
	}
	return "met"
}

func colText(cols map[string]float64, c string, f func(float64) string) string {
	v, ok := cols[c]
	if !ok {
		return "—"
	}
	return f(v)
}

// fmtMS formats milliseconds: whole ms from 100 up, else three
// significant digits.
func fmtMS(v float64) string { return fmtNum(v) }

// fmtNum formats a figure: integers from 100 up, three significant digits
// below.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case v == 0:
		return "0"
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func fmtCount(v float64) string {
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	// Thousands separators.
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// fmtValue formats a Value metric with its unit.
func fmtValue(v float64, unit string) string {
	switch {
	case strings.HasSuffix(unit, "%-of-core"):
		return strconv.FormatFloat(v, 'f', 2, 64) + " %"
	case strings.HasSuffix(unit, "MB"):
		return strconv.FormatFloat(v, 'f', 1, 64) + " MB"
	case strings.HasSuffix(unit, "-ms"):
		return fmtNum(v) + " ms"
	}
	return fmtNum(v) + " " + unit
}

func dirtyMark(c Commit) string {
	if len(c.Changed) > 0 {
		return " + uncommitted changes"
	}
	return ""
}

func commitText(c Commit) string {
	if c.Short == "" {
		return "unknown (not a git checkout?)"
	}
	if len(c.Changed) == 0 {
		return "`" + c.Short + "` (`git rev-parse --short HEAD`), working tree clean"
	}
	const show = 12
	var paths []string
	for i, l := range c.Changed {
		if i == show {
			paths = append(paths, fmt.Sprintf("… %d more", len(c.Changed)-show))
			break
		}
		paths = append(paths, "`"+strings.TrimSpace(l)+"`")
	}
	return fmt.Sprintf("`%s` (`git rev-parse --short HEAD`), **working tree dirty** (%d paths, `git status --porcelain`: %s): the figures measure the working tree", c.Short, len(c.Changed), strings.Join(paths, ", "))
}

// busyNote flags a run that did not start on a quiet machine: 1-minute
// load above half the CPUs.
func busyNote(m Machine) string {
	f := strings.Fields(m.LoadFrom)
	if len(f) == 0 || m.CPUs == 0 {
		return ""
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v <= float64(m.CPUs)/2 {
		return ""
	}
	return "; **the machine was busy at the start: figures may be inflated**"
}

func roundDur(d time.Duration) time.Duration {
	if d >= time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

// cell makes s safe inside a table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func quoteOr(s, def string) string {
	if s == "" {
		return def
	}
	return "\"" + s + "\""
}

func lastOr(l []string, def string) string {
	if len(l) == 0 {
		return def
	}
	return l[len(l)-1]
}
