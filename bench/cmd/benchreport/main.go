// Command benchreport is bench/run: it builds vigil, runs the benchmark
// suites (go test -bench), parses their output, custom metrics included,
// and writes a Markdown report with the machine, the commit, the command
// and one table per suite, beside the DESIGN targets.
//
// Usage, from the module root (bench/run adds -cmdline):
//
//	bench/run [flags] [suite ...]     suites: see -list; default: all
//
// Flags may come before or after the suites:
//
//	-n N         trials per lab benchmark (default 20)
//	-windows N   10 s windows of the idle benchmark (default 6)
//	-quick       a smoke run: 2 trials, 1 window, scheduler 1 iteration;
//	             writes bench/out/quick.md unless -out is given
//	-out FILE    the report (default bench/out/latest.md); it also goes
//	             to standard output; raw go test output: bench/out/SUITE.txt
//	-no-build    do not run `make build` (use bin/vigil as it is)
//	-list        list the suites and exit
//
// A suite that cannot run here (not root, no iproute2, no benchmark yet,
// the build failed) is listed as skipped with the reason. The exit status
// is 1 when a suite failed, 2 on a usage error.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Options are the command-line options.
type Options struct {
	Trials  int
	Windows int
	Quick   bool
	Out     string
	NoBuild bool
	List    bool
	Cmdline string
	Suites  []string
}

func parseArgs(args []string, stderr io.Writer) (*Options, error) {
	o := &Options{}
	fs := flag.NewFlagSet("bench/run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.Trials, "n", 20, "trials per lab benchmark")
	fs.IntVar(&o.Windows, "windows", 6, "10 s windows of the idle benchmark")
	fs.BoolVar(&o.Quick, "quick", false, "smoke run: 2 trials, 1 idle window, scheduler 1 iteration")
	fs.StringVar(&o.Out, "out", "", "report file (default bench/out/latest.md, or bench/out/quick.md with -quick)")
	fs.BoolVar(&o.NoBuild, "no-build", false, "do not run make build")
	fs.BoolVar(&o.List, "list", false, "list the suites")
	fs.StringVar(&o.Cmdline, "cmdline", "", "the command line to record (set by bench/run)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench/run [flags] [suite ...]\nsuites: %s (default: all)\n", strings.Join(suiteNames(), ", "))
		fs.PrintDefaults()
	}
	// Flags and suite names in any order.
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		o.Suites = append(o.Suites, args[0])
		args = args[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.Quick {
		if !set["n"] {
			o.Trials = 2
		}
		if !set["windows"] {
			o.Windows = 1
		}
	}
	if o.Out == "" {
		o.Out = "bench/out/latest.md"
		if o.Quick {
			o.Out = "bench/out/quick.md"
		}
	}
	if o.Trials < 1 || o.Windows < 1 {
		return nil, errors.New("-n and -windows must be at least 1")
	}
	for _, s := range o.Suites {
		if s != "all" && suiteByName(s) == nil {
			return nil, fmt.Errorf("unknown suite %q; suites: %s, all", s, strings.Join(suiteNames(), ", "))
		}
	}
	return o, nil
}

func suiteNames() []string {
	var n []string
	for _, s := range suites {
		n = append(n, s.Name)
	}
	return n
}

// selected returns the suites to run, in the table's order.
func (o *Options) selected() []*Suite {
	want := map[string]bool{}
	for _, s := range o.Suites {
		want[s] = true
	}
	var out []*Suite
	for _, s := range suites {
		if len(want) == 0 || want["all"] || want[s.Name] {
			out = append(out, s)
		}
	}
	return out
}

func main() {
	o, err := parseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/run:", err)
		os.Exit(2)
	}
	if o.List {
		for _, s := range suites {
			fmt.Printf("%-10s %s\n", s.Name, s.Title)
		}
		return
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/run:", err)
		os.Exit(2)
	}
	run := execute(root, o)
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, run); err != nil {
		fmt.Fprintln(os.Stderr, "bench/run:", err)
		os.Exit(1)
	}
	os.Stdout.Write(buf.Bytes())
	out := o.Out
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err == nil {
		err = os.WriteFile(out, buf.Bytes(), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/run:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "bench/run: report written to %s\n", out)
	for _, sr := range run.Suites {
		if sr.Status == StatusFailed {
			os.Exit(1)
		}
	}
}

// moduleRoot finds the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = up
	}
}

// execute builds and runs the selected suites.
func execute(root string, o *Options) *Run {
	run := &Run{
		Command: o.Cmdline,
		Start:   time.Now(),
		Machine: readMachine(),
		Commit:  readCommit(root),
		Go:      strings.TrimPrefix(output(root, "go", "version"), "go version "),
		Trials:  o.Trials,
		Windows: o.Windows,
		Quick:   o.Quick,
	}
	if run.Command == "" {
		run.Command = "go run ./bench/cmd/benchreport " + strings.Join(quoteArgs(os.Args[1:]), " ")
	}
	sel := o.selected()
	buildErr := ""
	needBuild := false
	for _, s := range sel {
		if present, _ := findBenches(root, s); s.Lab && len(present) > 0 {
			needBuild = true
		}
	}
	if needBuild && !o.NoBuild {
		logf("make build")
		cmd := exec.Command("make", "build")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			buildErr = "`make build` failed: " + err.Error()
		}
	}
	bin := filepath.Join(root, "bin", "vigil")
	if buildErr == "" && needBuild {
		if _, err := os.Stat(bin); err != nil {
			buildErr = "no bin/vigil (make build)"
		}
	}
	for _, s := range sel {
		sr := &SuiteRun{Suite: s}
		run.Suites = append(run.Suites, sr)
		present, missing := findBenches(root, s)
		sr.Missing = missing
		if reason := unmet(s, buildErr, present); reason != "" {
			sr.Status, sr.Reason = StatusSkipped, reason
			sr.Missing = nil
			logf("%s: skipped: %s", s.Name, reason)
			continue
		}
		runSuite(root, o, sr, present)
	}
	run.End = time.Now()
	run.Machine.LoadTo = loadAvg()
	return run
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench/run: "+format+"\n", a...)
}

// unmet returns why suite s cannot run here, or "".
func unmet(s *Suite, buildErr string, present []string) string {
	if len(present) == 0 {
		if len(s.Benches) == 0 {
			return "no benchmark in `" + s.Pkg + "`"
		}
		var names []string
		for _, b := range s.Benches {
			names = append(names, "`Benchmark"+b+"`")
		}
		return "no benchmark yet (" + strings.Join(names, ", ") + " not in `" + s.Pkg + "`)"
	}
	if s.Netns {
		if reason := netnsUnavailable(); reason != "" {
			return "needs network namespaces: " + reason
		}
	}
	for _, c := range s.Needs {
		if _, err := exec.LookPath(c); err != nil {
			return "`" + c + "` is not installed"
		}
	}
	if s.Lab && buildErr != "" {
		return buildErr
	}
	return ""
}

// netnsUnavailable mirrors lab.NetnsUnavailable (internal/lab/netns.go),
// which the lab benchmarks skip on; checked here to say so up front.
func netnsUnavailable() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "iproute2's ip is not installed"
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return "no network namespace support"
	}
	return ""
}

// findBenches returns which of s.Benches are defined in the package's test
// files (all of them "*" when s.Benches is empty and the package has
// any), and which are not.
func findBenches(root string, s *Suite) (present, missing []string) {
	files, _ := filepath.Glob(filepath.Join(root, s.Pkg, "*_test.go"))
	var src []byte
	for _, f := range files {
		if raw, err := os.ReadFile(f); err == nil {
			src = append(src, raw...)
			src = append(src, '\n')
		}
	}
	if len(s.Benches) == 0 {
		if regexp.MustCompile(`(?m)^func Benchmark\w*\(`).Match(src) {
			return []string{"*"}, nil
		}
		return nil, nil
	}
	for _, b := range s.Benches {
		if regexp.MustCompile(`(?m)^func Benchmark` + regexp.QuoteMeta(b) + `\(`).Match(src) {
			present = append(present, b)
		} else {
			missing = append(missing, b)
		}
	}
	return present, missing
}

// goTestArgs returns the go test arguments of suite s.
func goTestArgs(o *Options, s *Suite, present []string) []string {
	pattern := "."
	if len(present) > 0 && present[0] != "*" {
		pattern = "^Benchmark(" + strings.Join(present, "|") + ")$"
	}
	args := []string{"test", "-count=1", "-v", "-run", "^$", "-bench", pattern}
	switch {
	case s.Lab:
		n := o.Trials
		if s.Windows {
			n = o.Windows
		}
		// A trial takes seconds (a watchdog one about 10 s, an idle window
		// 10 s); the lab itself up to a minute.
		timeout := 10 + n
		args = append(args, "-benchtime", strconv.Itoa(n)+"x", "-timeout", strconv.Itoa(timeout)+"m")
	case o.Quick:
		args = append(args, "-benchtime", "1x")
	}
	if s.Style == GoBench {
		args = append(args, "-benchmem")
	}
	return append(args, s.Pkg)
}

// runSuite runs one suite's go test, streaming its output to standard
// error and bench/out/SUITE.txt, and parses it.
func runSuite(root string, o *Options, sr *SuiteRun, present []string) {
	s := sr.Suite
	args := goTestArgs(o, s, present)
	sr.Command = "go " + strings.Join(quoteArgs(args), " ")
	env := os.Environ()
	if s.Lab {
		sr.Command = "VIGIL_BIN=$PWD/bin/vigil " + sr.Command
		env = append(env, "VIGIL_BIN="+filepath.Join(root, "bin", "vigil"))
	}
	logf("%s: %s", s.Name, sr.Command)
	var buf bytes.Buffer
	w := io.Writer(&buf)
	rawPath := filepath.Join(root, "bench", "out", s.Name+".txt")
	if err := os.MkdirAll(filepath.Dir(rawPath), 0o755); err == nil {
		if f, err := os.Create(rawPath); err == nil {
			defer f.Close()
			w = io.MultiWriter(&buf, f)
		}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = env
	cmd.Stdout = io.MultiWriter(w, os.Stderr)
	cmd.Stderr = cmd.Stdout
	t0 := time.Now()
	err := cmd.Run()
	sr.Elapsed = time.Since(t0)
	out, _ := Parse(bytes.NewReader(buf.Bytes()))
	sr.Out = out
	classify(sr, err, buf.Bytes())
}

// classify sets the suite's status from go test's exit and output.
func classify(sr *SuiteRun, runErr error, raw []byte) {
	out := sr.Out
	if runErr != nil {
		sr.Status = StatusFailed
		sr.Reason = "go test: " + runErr.Error()
		for _, name := range out.Order {
			if log, ok := out.Failed[name]; ok {
				sr.Reason = "`Benchmark" + name + "` failed: " + lastOr(log, "see bench/out/"+sr.Suite.Name+".txt")
				break
			}
		}
		sr.Tail = tail(raw, 25)
		return
	}
	if len(out.Results) == 0 {
		sr.Status = StatusSkipped
		sr.Reason = "no benchmark ran"
		for _, name := range out.Order {
			if log, ok := out.Skipped[name]; ok {
				sr.Reason = lastOr(log, "skipped")
				break
			}
		}
		return
	}
	sr.Status = StatusOK
}

// tail returns the last n non-empty lines of raw.
func tail(raw []byte, n int) []string {
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// quoteArgs quotes arguments for a POSIX shell where needed.
func quoteArgs(args []string) []string {
	var out []string
	for _, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`|&;()<>*?[]{}!#~^") {
			out = append(out, a)
			continue
		}
		out = append(out, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	return out
}
