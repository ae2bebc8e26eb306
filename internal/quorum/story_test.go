package quorum

import (
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

// TestStories replays testdata/*.txt, small datadriven-style scripts: each
// directive is a command line, "----", and the expected output up to a blank
// line. Run with -rewrite to regenerate and review the diff.
//
// Commands:
//
//	voters a b w:witness c:2   set the voters (name[:votes][:witness]); prints Validate
//	options two_node wait_for_all=false last_man_standing window=5s expected_votes=4
//	                           replace the options; prints Validate
//	alive a b at=3s [node=x]   Compute as node x (default "") at 3s; prints result and state
//	restart [node=x]           node x starts afresh (zero State)
//	join-quorate [node=x]      node x joins members already past wait_for_all
//	warnings fencing=true      prints Warnings
func TestStories(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no stories: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runStory(t, f) })
	}
}

type story struct {
	opts   Options
	voters []Voter
	states map[string]State
}

func runStory(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	s := &story{states: map[string]State{}}
	var out strings.Builder
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		cmdLine, pos := line, i+1
		i++
		if i >= len(lines) || lines[i] != "----" {
			t.Fatalf("%s:%d: want ---- after %q", path, pos, cmdLine)
		}
		var want []string
		for i+1 < len(lines) && lines[i+1] != "" {
			i++
			want = append(want, lines[i])
		}
		got := s.run(t, fmt.Sprintf("%s:%d", path, pos), cmdLine)
		if !*rewrite && got != strings.Join(want, "\n") {
			t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, pos, cmdLine, got, strings.Join(want, "\n"))
		}
		out.WriteString(cmdLine + "\n----\n" + got + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *story) run(t *testing.T, where, line string) string {
	fields := strings.Fields(line)
	cmd, args := fields[0], fields[1:]
	kv := map[string]string{}
	var words []string
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			kv[k] = v
		} else {
			words = append(words, a)
		}
	}
	node := kv["node"]
	validate := func() string {
		if err := s.opts.Validate(s.voters); err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	}
	switch cmd {
	case "voters":
		s.voters = nil
		for _, w := range words {
			parts := strings.Split(w, ":")
			v := Voter{Name: parts[0]}
			for _, p := range parts[1:] {
				if p == "witness" {
					v.Witness = true
				} else {
					v.Votes = atoi(t, where, p)
				}
			}
			s.voters = append(s.voters, v)
		}
		return validate()
	case "options":
		s.opts = Options{}
		for _, w := range words {
			switch w {
			case "two_node":
				s.opts.TwoNode = true
			case "wait_for_all":
				s.opts.WaitForAll = new(true)
			case "last_man_standing":
				s.opts.LastManStanding = true
			default:
				t.Fatalf("%s: unknown option %q", where, w)
			}
		}
		for k, v := range kv {
			switch k {
			case "wait_for_all":
				b, err := strconv.ParseBool(v)
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				s.opts.WaitForAll = new(b)
			case "window":
				s.opts.LastManStandingWindow = duration(t, where, v)
			case "expected_votes":
				s.opts.ExpectedVotes = atoi(t, where, v)
			default:
				t.Fatalf("%s: unknown option %q", where, k)
			}
		}
		return validate()
	case "alive":
		res, st := Compute(s.opts, s.voters, words, s.states[node], duration(t, where, kv["at"]))
		s.states[node] = st
		out := res.String()
		if res.RecheckAt != 0 {
			out += fmt.Sprintf("\nrecheck at %s", res.RecheckAt)
		}
		return out + "\nstate: " + st.String()
	case "restart":
		delete(s.states, node)
		return "ok"
	case "join-quorate":
		st := s.states[node]
		st.WaitForAllDone = true
		s.states[node] = st
		return "ok"
	case "warnings":
		w := Warnings(s.opts, s.voters, kv["fencing"] == "true")
		if len(w) == 0 {
			return "none"
		}
		return "- " + strings.Join(w, "\n- ")
	}
	t.Fatalf("%s: unknown command %q", where, cmd)
	return ""
}

func atoi(t *testing.T, where, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return n
}

func duration(t *testing.T, where, s string) time.Duration {
	if s == "" {
		t.Fatalf("%s: missing at=", where)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return d
}
