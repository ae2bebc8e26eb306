package sim

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt with the actual output")

// TestScripts runs the stories in testdata/*.txt, datadriven style: each
// block is a command, a "----" line and the expected output, ended by a
// blank line. go test ./internal/sim -run TestScripts -rewrite regenerates
// the outputs; review them as a diff.
//
// Commands (nodes are numbered from 1):
//
//	nodes N [seed=S]      a fresh bootstrapped cluster
//	run D                 step for duration D (e.g. 2s); prints the events
//	partition 1,2|3,4,5   split the network (unlisted nodes: one more group)
//	heal                  remove partitions, cuts and loss
//	cut-link L [A B]      cut link L between A and B, or all of it
//	crash N / restart N
//	propose N KEY VALUE   a client write on node N
//	stabilize [D]         heal, restart all, run until converged (max D)
//	check                 the end-of-run invariants
//	status                one line per node
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type block struct {
	cmd  string
	want string
}

func parseScript(t *testing.T, path string) []block {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []block
	sc := bufio.NewScanner(f)
	var cur *block
	inOut := false
	var out []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case inOut && line == "":
			cur.want = strings.Join(out, "\n")
			blocks = append(blocks, *cur)
			cur, inOut, out = nil, false, nil
		case inOut:
			out = append(out, line)
		case line == "----":
			if cur == nil {
				t.Fatalf("%s: ---- without a command", path)
			}
			inOut = true
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			if cur != nil {
				t.Fatalf("%s: command %q has no ---- block", path, cur.cmd)
			}
			cur = &block{cmd: line}
		}
	}
	if cur != nil {
		cur.want = strings.Join(out, "\n")
		blocks = append(blocks, *cur)
	}
	return blocks
}

func runScript(t *testing.T, path string) {
	blocks := parseScript(t, path)
	var c *Cluster
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	var rewritten strings.Builder
	for _, b := range blocks {
		got := doCommand(t, &c, b.cmd)
		fmt.Fprintf(&rewritten, "%s\n----\n%s\n\n", b.cmd, got)
		if !*rewrite && got != b.want {
			t.Errorf("%s: %s:\ngot:\n%s\nwant:\n%s", path, b.cmd, got, b.want)
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func nodeArg(t *testing.T, c *Cluster, s string) int {
	i, err := strconv.Atoi(s)
	if err != nil || i < 1 || i > len(c.n) {
		t.Fatalf("bad node %q", s)
	}
	return i - 1
}

func doCommand(t *testing.T, cp **Cluster, line string) string {
	f := strings.Fields(line)
	c := *cp
	if f[0] != "nodes" && c == nil {
		t.Fatalf("%q before nodes", line)
	}
	if c != nil {
		c.log = c.log[:0]
	}
	switch f[0] {
	case "nodes":
		n, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatal(err)
		}
		seed := uint64(1)
		for _, a := range f[2:] {
			if v, ok := strings.CutPrefix(a, "seed="); ok {
				if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
					t.Fatal(err)
				}
			}
		}
		if c != nil {
			c.Close()
		}
		if c, err = NewCluster(seed, Options{Nodes: n, SnapshotEvery: 20, StoreOnly: true}); err != nil {
			t.Fatal(err)
		}
		c.logAll = true
		*cp = c
		return "ok"
	case "run":
		d, err := time.ParseDuration(f[1])
		if err != nil {
			t.Fatal(err)
		}
		c.RunFor(d)
	case "partition":
		var groups [][]int
		for _, g := range strings.Split(f[1], "|") {
			var ids []int
			for _, s := range strings.Split(g, ",") {
				ids = append(ids, nodeArg(t, c, s))
			}
			groups = append(groups, ids)
		}
		c.Partition(groups...)
	case "heal":
		c.Heal()
	case "cut-link":
		l, _ := strconv.Atoi(f[1])
		if len(f) == 4 {
			c.CutLink(l, nodeArg(t, c, f[2]), nodeArg(t, c, f[3]))
		} else {
			c.CutLink(l, -1, -1)
		}
	case "crash":
		c.Crash(nodeArg(t, c, f[1]))
	case "restart":
		c.Restart(nodeArg(t, c, f[1]))
	case "propose":
		if !c.Propose(nodeArg(t, c, f[1]), f[2], f[3]) {
			c.tracef("propose %s on n%s refused", f[2], f[1])
		}
	case "stabilize":
		d := 30 * time.Second
		if len(f) > 1 {
			var err error
			if d, err = time.ParseDuration(f[1]); err != nil {
				t.Fatal(err)
			}
		}
		c.Stabilize(d)
	case "check":
		if err := c.Check(); err != nil {
			return err.Error()
		}
		return "ok"
	case "status":
		var lines []string
		for _, n := range c.n {
			if !n.up {
				lines = append(lines, n.name+" down")
				continue
			}
			st := n.core.Status()
			lines = append(lines, fmt.Sprintf("%s %s term=%d lead=%d applied=%d quorate=%t",
				n.name, st.Role, st.Term, st.Lead, st.Applied, n.quorate))
		}
		return strings.Join(lines, "\n")
	default:
		t.Fatalf("unknown command %q", line)
	}
	out := strings.Join(c.log, "\n")
	if c.err != nil {
		out += "\n" + c.err.Error()
	}
	if out == "" {
		return "ok"
	}
	return out
}
