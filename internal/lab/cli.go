package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
)

// DefaultCallTimeout bounds a CLI call whose context has no deadline.
const DefaultCallTimeout = 20 * time.Second

// CLIError is a failed CLI call: its exit error and what it printed.
type CLIError struct {
	Host   string
	Args   []string
	Err    error
	Stdout string
	Stderr string
}

func (e *CLIError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = strings.TrimSpace(e.Stdout)
	}
	return fmt.Sprintf("vigil %s (on %s): %v: %s", strings.Join(e.Args, " "), e.Host, e.Err, msg)
}

func (e *CLIError) Unwrap() error { return e.Err }

// Exec runs the vigil binary with exactly args on host name (inside its
// namespace in Netns mode) and returns its standard output. A non-zero exit
// is a *CLIError carrying standard error.
func (l *Lab) Exec(ctx context.Context, name string, args ...string) (string, error) {
	p := l.Node(name)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, Scale(DefaultCallTimeout))
		defer cancel()
	}
	argv := l.command(p, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = l.dir
	cmd.Env = l.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return stdout.String(), &CLIError{Host: name, Args: args, Err: err, Stdout: stdout.String(), Stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// CLI runs `vigil --config <host's config> --api <host's links> args...` on
// host name: a CLI call answered by that host only (no fall-over to other
// nodes), so it shows that host's own view. Use Exec for other forms.
func (l *Lab) CLI(ctx context.Context, name string, args ...string) (string, error) {
	p := l.Node(name)
	pre := []string{"--config", p.Config, "--api", strings.Join(p.Addrs, ",")}
	return l.Exec(ctx, name, append(pre, args...)...)
}

// Status returns host name's `vigil status --output json`.
func (l *Lab) Status(ctx context.Context, name string) (api.Status, error) {
	var st api.Status
	out, err := l.CLI(ctx, name, "status", "--output", "json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status of %s: %w: %q", name, err, out)
	}
	return st, nil
}

var epochRE = regexp.MustCompile(`\(epoch (\d+)\)`)

// SetProperty runs `vigil property set key=value` on host name and returns
// the acknowledged epoch.
func (l *Lab) SetProperty(ctx context.Context, name, key, value string) (uint64, error) {
	out, err := l.CLI(ctx, name, "property", "set", key+"="+value)
	if err != nil {
		return 0, err
	}
	m := epochRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("property set on %s: no epoch in %q", name, out)
	}
	return strconv.ParseUint(m[1], 10, 64)
}

// Properties returns host name's `vigil property list --output json` as a map.
func (l *Lab) Properties(ctx context.Context, name string) (map[string]string, error) {
	out, err := l.CLI(ctx, name, "property", "list", "--output", "json")
	if err != nil {
		return nil, err
	}
	var ps []api.Property
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		return nil, fmt.Errorf("property list of %s: %w: %q", name, err, out)
	}
	m := make(map[string]string, len(ps))
	for _, p := range ps {
		m[p.Name] = p.Value
	}
	return m, nil
}

// WaitFor polls cond about every 100ms until it returns true. After timeout
// (scaled) it dumps the tail of every log and fails the test with what and
// the last explanation cond gave.
func (l *Lab) WaitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	l.t.Helper()
	start := time.Now()
	deadline := start.Add(Scale(timeout))
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			l.DumpLogs(40)
			l.t.Fatalf("lab: timed out after %s waiting for %s; last: %s", time.Since(start).Round(time.Millisecond), what, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Always polls cond about every 100ms for d (scaled) and fails the test,
// with logs, the first time it returns false: for "nothing changes" checks.
func (l *Lab) Always(what string, d time.Duration, cond func() (bool, string)) {
	l.t.Helper()
	start := time.Now()
	end := start.Add(Scale(d))
	for {
		ok, why := cond()
		if !ok {
			l.DumpLogs(40)
			l.t.Fatalf("lab: %s stopped holding after %s: %s", what, time.Since(start).Round(time.Millisecond), why)
		}
		if time.Now().After(end) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// statusTimeout bounds one status call inside a wait.
const statusTimeout = 5 * time.Second

// StatusCond asks host name for its status and applies cond; the
// explanation is the status summary or the error. It is the building block
// of WaitStatus and Always checks over several nodes.
func (l *Lab) StatusCond(name string, cond func(api.Status) bool) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), Scale(statusTimeout))
	defer cancel()
	st, err := l.Status(ctx, name)
	if err != nil {
		return false, err.Error()
	}
	return cond(st), Summary(st)
}

// WaitStatus polls host name's status until cond holds (see WaitFor).
func (l *Lab) WaitStatus(name, what string, timeout time.Duration, cond func(api.Status) bool) api.Status {
	l.t.Helper()
	var last api.Status
	l.WaitFor(name+": "+what, timeout, func() (bool, string) {
		ok, why := l.StatusCond(name, func(st api.Status) bool {
			last = st
			return cond(st)
		})
		return ok, why
	})
	return last
}

// WaitFormed waits until every running node (witnesses are not asked)
// reports quorum, the same DC, and every running host as a member, and
// returns that DC.
func (l *Lab) WaitFormed(timeout time.Duration) string {
	l.t.Helper()
	var dc string
	l.WaitFor("the cluster to form", timeout, func() (bool, string) {
		ok, why, d := l.formed()
		dc = d
		return ok, why
	})
	return dc
}

// formed checks WaitFormed's condition once.
func (l *Lab) formed() (bool, string, string) {
	running := l.Running()
	dc := ""
	var notes []string
	ok := true
	asked := 0
	for _, name := range running {
		if l.Node(name).Witness {
			continue
		}
		asked++
		good, why := l.StatusCond(name, func(st api.Status) bool {
			if !st.Quorum.Quorate || st.DC == "" {
				return false
			}
			if dc == "" {
				dc = st.DC
			} else if st.DC != dc {
				return false
			}
			for _, h := range running {
				if State(st, h) != api.NodeMember {
					return false
				}
			}
			return true
		})
		if !good {
			ok = false
			notes = append(notes, name+": "+why)
		}
	}
	if asked == 0 {
		return false, "no node is running", ""
	}
	if ok {
		return true, "", dc
	}
	return false, strings.Join(notes, " | "), ""
}

// State returns the state (member, suspect, lost, unknown) of host name in
// st, or "absent" when st does not list it.
func State(st api.Status, name string) string {
	if n, ok := NodeIn(st, name); ok {
		return n.State
	}
	return "absent"
}

// NodeIn returns host name's entry in st.
func NodeIn(st api.Status, name string) (api.NodeStatus, bool) {
	for _, n := range st.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return api.NodeStatus{}, false
}

// LinkUp reports whether st shows link i to host name as up.
func LinkUp(st api.Status, name string, link int) bool {
	n, ok := NodeIn(st, name)
	if !ok {
		return false
	}
	for _, ls := range n.Links {
		if ls.Index == link {
			return ls.Up
		}
	}
	return false
}

// Members returns the names st shows as members.
func Members(st api.Status) []string {
	var out []string
	for _, n := range st.Nodes {
		if n.State == api.NodeMember {
			out = append(out, n.Name)
		}
	}
	return out
}

// Summary renders a status on one line for test logs, e.g.
//
//	n1: dc=n2 term=3 epoch=5 quorum=yes(3/3 need 2) n1=member* n2=member(dc)[0:up 1:down] n3=lost[0:down]
func Summary(st api.Status) string {
	var b strings.Builder
	dc := st.DC
	if dc == "" {
		dc = "none"
	}
	q := "no"
	if st.Quorum.Quorate {
		q = "yes"
	}
	fmt.Fprintf(&b, "%s: dc=%s term=%d epoch=%d quorum=%s(%d/%d need %d", st.Node, dc, st.Term, st.Epoch, q,
		st.Quorum.Votes, st.Quorum.Expected, st.Quorum.Needed)
	if st.Quorum.Reason != "" {
		fmt.Fprintf(&b, " %q", st.Quorum.Reason)
	}
	b.WriteString(")")
	for _, n := range st.Nodes {
		fmt.Fprintf(&b, " %s=%s", n.Name, n.State)
		if n.DC {
			b.WriteString("(dc)")
		}
		if n.Self {
			b.WriteString("*")
			continue
		}
		if len(n.Links) > 0 {
			var ls []string
			for _, l := range n.Links {
				s := "down"
				if l.Up {
					s = "up"
				}
				ls = append(ls, fmt.Sprintf("%d:%s", l.Index, s))
			}
			b.WriteString("[" + strings.Join(ls, " ") + "]")
		}
	}
	for _, w := range st.Warnings {
		fmt.Fprintf(&b, " warning=%q", w)
	}
	return b.String()
}
