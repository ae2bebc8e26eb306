package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NodeProc is one host of the lab (an agent or a witness) and its process,
// if running. Its exported fields are fixed at New.
type NodeProc struct {
	// Name is n1..nN or w1..wW.
	Name string
	// Index is the host number k: 1..N for nodes, then N+1.. for witnesses.
	// In Netns mode its link i address is 198.18.i.k.
	Index int
	// Witness marks a witness (run with `vigil witness`).
	Witness bool
	// Config is the host's configuration file.
	Config string
	// Log is the host's log file (stdout and stderr of every run, with
	// "=== lab:" marker lines between runs).
	Log string
	// Netns is the host's network namespace; empty on loopback.
	Netns string
	// Addrs holds the host's "host:port" per link.
	Addrs []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current run has exited
	exitErr  error
	expected bool // the lab ended this run (Stop, Kill, cleanup)
	paused   bool
	runs     int
}

// Host returns the IP address of link i (without the port).
func (p *NodeProc) Host(link int) string {
	h, _, _ := strings.Cut(p.Addrs[link], ":")
	return h
}

// PID returns the process id of the current run, or 0 when not running.
func (p *NodeProc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the host's process is alive (a paused one is).
func (p *NodeProc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exitedLocked()
}

// Paused reports whether the host was paused with Pause and not resumed.
func (p *NodeProc) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused && p.cmd != nil && !p.exitedLocked()
}

// Exit returns how the last run ended: nil while running or never run, or
// after a clean exit; the exec error otherwise.
func (p *NodeProc) Exit() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || !p.exitedLocked() {
		return nil
	}
	return p.exitErr
}

// Runs returns how many times the host was started.
func (p *NodeProc) Runs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runs
}

func (p *NodeProc) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// mark appends a "=== lab: ..." line to the host's log.
func (p *NodeProc) mark(format string, args ...any) {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "=== lab %s: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// signal sends sig to the process group of the current run.
func (p *NodeProc) signalGroup(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return fmt.Errorf("%s is not running", p.Name)
	}
	err := syscall.Kill(-p.cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil // exiting already
	}
	return err
}

// wait waits up to d for the current run to exit.
func (p *NodeProc) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// killForCleanup SIGKILLs the process group, if any, and waits for it.
func (p *NodeProc) killForCleanup() {
	p.mu.Lock()
	if p.cmd == nil || p.exitedLocked() {
		p.mu.Unlock()
		return
	}
	p.expected = true
	pid := p.cmd.Process.Pid
	p.mu.Unlock()
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(-pid, syscall.SIGCONT)
	p.wait(10 * time.Second)
}

// crashLines returns the lines of the log that show a Go panic, a fatal
// runtime error or a data race, with a little context; "" when clean.
func (p *NodeProc) crashLines() string {
	f, err := os.Open(p.Log)
	if err != nil {
		return ""
	}
	defer f.Close()
	var out []string
	after := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") ||
			strings.Contains(line, "WARNING: DATA RACE") {
			after = 20
		}
		if after > 0 {
			out = append(out, line)
			after--
			if len(out) > 200 {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// command returns the argv that runs args of the vigil binary on host p:
// through `ip netns exec` in Netns mode.
func (l *Lab) command(p *NodeProc, args ...string) []string {
	argv := append([]string{l.bin}, args...)
	if p != nil && p.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", p.Netns}, argv...)
	}
	return argv
}

// StartAll starts every host that is not running, witnesses first.
func (l *Lab) StartAll() {
	l.t.Helper()
	for i := len(l.hosts) - 1; i >= 0; i-- {
		if p := l.hosts[i]; p.Witness && !p.Running() {
			l.Start(p.Name)
		}
	}
	for _, p := range l.hosts {
		if !p.Witness && !p.Running() {
			l.Start(p.Name)
		}
	}
}

// Start starts a host's agent (or witness) in the background: in its own
// process group, in its namespace, output appended to its log.
func (l *Lab) Start(name string) {
	l.t.Helper()
	p := l.Node(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		l.t.Fatalf("lab: start %s: already running (pid %d)", name, p.cmd.Process.Pid)
	}
	sub := "agent"
	if p.Witness {
		sub = "witness"
	}
	l.reboot(p)
	argv := l.command(p, sub, "--config", p.Config)
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		l.t.Fatalf("lab: start %s: %v", name, err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = l.dir
	cmd.Env = l.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.runs++
	fmt.Fprintf(logf, "=== lab %s: start %s run %d: %s\n", time.Now().Format("15:04:05.000"), name, p.runs, strings.Join(argv, " "))
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("lab: start %s: %v", name, err)
	}
	if err := l.writePower(p, cmd.Process.Pid); err != nil {
		l.t.Fatalf("lab: start %s: power descriptor: %v", name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr, p.expected, p.paused = cmd, done, nil, false, false
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		expected := p.expected
		p.mu.Unlock()
		how := "exited"
		if err != nil {
			how = err.Error()
		}
		if !expected {
			how += " UNEXPECTEDLY"
		}
		p.mark("%s (pid %d): %s", name, cmd.Process.Pid, how)
		close(done)
	}()
}

// Stop sends SIGTERM to a host's process and waits for it to exit (up to
// Options.StopTimeout, then SIGKILL and a test error). A non-zero exit
// status after SIGTERM is reported as a test error too: a clean stop is
// part of the contract.
func (l *Lab) Stop(name string) {
	l.t.Helper()
	p := l.Node(name)
	p.mu.Lock()
	if p.cmd == nil || p.exitedLocked() {
		p.mu.Unlock()
		l.t.Fatalf("lab: stop %s: not running", name)
	}
	p.expected = true
	pid := p.cmd.Process.Pid
	paused := p.paused
	p.mu.Unlock()
	p.mark("SIGTERM %s (pid %d)", name, pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if paused {
		l.Resume(name) // a stopped process cannot handle SIGTERM
	}
	if !p.wait(Scale(l.opts.StopTimeout)) {
		p.mark("%s did not stop within %s: SIGKILL", name, Scale(l.opts.StopTimeout))
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		p.wait(10 * time.Second)
		l.t.Errorf("lab: %s did not stop within %s of SIGTERM; killed", name, Scale(l.opts.StopTimeout))
		return
	}
	// Reap anything the agent left in its group.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if err := p.Exit(); err != nil {
		l.t.Errorf("lab: %s exited with %v after SIGTERM (want a clean stop); log tail:\n%s", name, err, l.LogTail(name, 20))
	}
}

// Kill SIGKILLs a host's whole process group and waits for it to die: the
// crash fault.
func (l *Lab) Kill(name string) {
	l.t.Helper()
	p := l.Node(name)
	p.mu.Lock()
	if p.cmd == nil || p.exitedLocked() {
		p.mu.Unlock()
		l.t.Fatalf("lab: kill %s: not running", name)
	}
	p.expected = true
	pid := p.cmd.Process.Pid
	p.mu.Unlock()
	p.mark("SIGKILL %s (pid %d)", name, pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if !p.wait(Scale(10 * time.Second)) {
		l.t.Fatalf("lab: %s (pid %d) survived SIGKILL", name, pid)
	}
	l.dropForeignAddrs(p)
}

// KillAll SIGKILLs every running host at once (as close together as the
// lab can), then waits for them all.
func (l *Lab) KillAll() {
	l.t.Helper()
	var killed []*NodeProc
	for _, p := range l.hosts {
		p.mu.Lock()
		if p.cmd != nil && !p.exitedLocked() {
			p.expected = true
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			killed = append(killed, p)
		}
		p.mu.Unlock()
	}
	for _, p := range killed {
		p.mark("SIGKILL %s (KillAll)", p.Name)
		if !p.wait(Scale(10 * time.Second)) {
			l.t.Fatalf("lab: %s survived SIGKILL", p.Name)
		}
		l.dropForeignAddrs(p)
	}
}

// Pause SIGSTOPs a host's process group: the hung-node fault. Its sockets
// stay open; the kernel still accepts TCP connections for it.
func (l *Lab) Pause(name string) {
	l.t.Helper()
	p := l.Node(name)
	p.mark("SIGSTOP %s", name)
	if err := p.signalGroup(syscall.SIGSTOP); err != nil {
		l.t.Fatalf("lab: pause: %v", err)
	}
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume SIGCONTs a paused host.
func (l *Lab) Resume(name string) {
	l.t.Helper()
	p := l.Node(name)
	p.mark("SIGCONT %s", name)
	if err := p.signalGroup(syscall.SIGCONT); err != nil {
		l.t.Fatalf("lab: resume: %v", err)
	}
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// Restart stops a host cleanly (SIGTERM) and starts it again.
func (l *Lab) Restart(name string) {
	l.t.Helper()
	l.Stop(name)
	l.Start(name)
}

// Running returns the names of the hosts whose process is alive.
func (l *Lab) Running() []string {
	var out []string
	for _, p := range l.hosts {
		if p.Running() {
			out = append(out, p.Name)
		}
	}
	return out
}
