//go:build linux

package watchdog

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SupervisorCommand is the vigil subcommand that runs SupervisorMain.
const SupervisorCommand = "watchdog-supervisor"

// Supervisor exit codes.
const (
	ExitDisarmed   = 0 // disarmed by Close, or the target group is gone
	ExitUsage      = 2
	ExitFired      = 3 // not petted in time, or the agent died: target killed
	readyLine      = "armed"
	startupTimeout = 10 * time.Second
	minTimeout     = 10 * time.Millisecond
)

// process is the supervisor-process backend, as seen from the agent.
type process struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	stdin   *os.File // nil once closed
	timeout time.Duration
	log     *slog.Logger
	done    chan struct{} // closed when the supervisor exited
	exitErr error         // its exit status, set before done closes
}

// StartProcess starts `bin watchdog-supervisor --timeout=T --target=PGID`
// (wire that subcommand to SupervisorMain, with flag parsing left to it)
// and returns once the supervisor is armed. The supervisor runs in a
// session of its own, so that killing the agent's process group does not
// kill it, and outlives the agent. It SIGKILLs process group target (pass
// the agent's own, syscall.Getpgrp(), with the agent its leader: every
// vigil:process child stays in it) and exits when
//
//   - it is not petted within timeout (the agent hangs, or stopped petting
//     because its lease ended), or
//   - its stdin reaches EOF without a disarm (the agent died: that is the
//     crash case, not a clean stop).
//
// It exits without killing anything when Close disarms it, or when the
// target group is gone. log receives the agent-side events (may be nil).
func StartProcess(bin string, timeout time.Duration, target int, log *slog.Logger) (Watchdog, error) {
	if timeout < minTimeout {
		return nil, fmt.Errorf("watchdog: timeout %s below %s", timeout, minTimeout)
	}
	if target <= 1 {
		return nil, fmt.Errorf("watchdog: bad target process group %d", target)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	defer outR.Close()
	cmd := exec.Command(bin, SupervisorCommand,
		"--timeout="+timeout.String(), "--target="+strconv.Itoa(target))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		return nil, fmt.Errorf("watchdog: start supervisor: %w", err)
	}
	p := &process{cmd: cmd, stdin: inW, timeout: timeout, log: log, done: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.done)
	}()
	_ = outR.SetReadDeadline(time.Now().Add(startupTimeout))
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != readyLine {
		// Never armed: nothing to disarm, but do not leave it running.
		inW.Close()
		_ = cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("watchdog: supervisor did not start (%v): %q: %w", p.exitErr, line, err)
	}
	log.Info("watchdog supervisor armed", "pid", cmd.Process.Pid, "target", target, "timeout", timeout)
	return p, nil
}

// mono reads CLOCK_MONOTONIC, which the agent and its supervisor share.
func mono() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err) // cannot fail on Linux
	}
	return time.Duration(ts.Nano())
}

// Pet sends a pet stamped with the time it was sent: a pet that waits in
// the pipe while the supervisor is descheduled does not count as newer.
func (p *process) Pet() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin == nil {
		return ErrClosed
	}
	select {
	case <-p.done:
		return fmt.Errorf("%w: supervisor exited: %v", ErrFired, p.exitErr)
	default:
	}
	if _, err := fmt.Fprintf(p.stdin, "pet %d\n", mono()); err != nil {
		return fmt.Errorf("%w: pet: %v", ErrFired, err)
	}
	return nil
}

// Close disarms the supervisor and waits for it to exit. Only on a clean
// stop: see the package documentation. It returns ErrFired if the
// supervisor had fired before.
func (p *process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin == nil {
		return ErrClosed
	}
	_, werr := io.WriteString(p.stdin, "disarm\n")
	p.stdin.Close()
	p.stdin = nil
	select {
	case <-p.done:
	case <-time.After(startupTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("watchdog: supervisor did not exit on disarm; killed it")
	}
	var exit *exec.ExitError
	switch {
	case errors.As(p.exitErr, &exit) && exit.ExitCode() == ExitFired:
		return ErrFired
	case p.exitErr != nil:
		return fmt.Errorf("watchdog: supervisor: %w", p.exitErr)
	case werr != nil:
		return fmt.Errorf("watchdog: disarm: %w", werr)
	}
	p.log.Info("watchdog supervisor disarmed")
	return nil
}

func (p *process) Timeout() time.Duration { return p.timeout }

// SupervisorMain runs the supervisor: `vigil watchdog-supervisor
// --timeout=T --target=PGID`. It reads "pet NANOS" (CLOCK_MONOTONIC) and
// "disarm" lines on stdin, prints "armed" on stdout once running, logs to
// stderr and returns the exit code (ExitDisarmed, ExitFired, ExitUsage).
func SupervisorMain(args []string) int {
	fs := flag.NewFlagSet(SupervisorCommand, flag.ContinueOnError)
	timeout := fs.Duration("timeout", 0, "kill the target when not petted for this long")
	target := fs.Int("target", 0, "process group to kill")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", SupervisorCommand, "target", *target)
	if *timeout < minTimeout || *target <= 1 || fs.NArg() != 0 {
		log.Error("usage: " + SupervisorCommand + " --timeout=DURATION --target=PGID")
		return ExitUsage
	}
	// The agent's terminal or service manager may signal its whole
	// session: only the agent's fate decides ours.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
	if err := unix.Kill(-*target, 0); err != nil {
		log.Error("target process group unusable", "err", err)
		return ExitUsage
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := mono() + *timeout
	if _, err := fmt.Println(readyLine); err != nil {
		log.Error("cannot report ready", "err", err)
		return ExitUsage
	}
	poll := min(*timeout/4, 100*time.Millisecond)
	fire := func(why string) int {
		err := unix.Kill(-*target, unix.SIGKILL)
		log.Error("watchdog fired: killed the target process group", "why", why, "kill_err", err)
		return ExitFired
	}
	timer := time.NewTimer(poll)
	for {
		now := mono()
		if now >= deadline {
			return fire(fmt.Sprintf("not petted for %s", *timeout))
		}
		timer.Reset(min(deadline-now, poll))
		select {
		case line, ok := <-lines:
			switch {
			case !ok:
				return fire("agent gone without disarming (stdin closed)")
			case line == "disarm":
				log.Info("disarmed")
				return ExitDisarmed
			case strings.HasPrefix(line, "pet "):
				at, err := strconv.ParseInt(line[4:], 10, 64)
				if err != nil {
					log.Warn("bad pet", "line", line)
					continue
				}
				// Never later than a pet sent now would give.
				deadline = max(deadline, min(time.Duration(at), mono())+*timeout)
			default:
				log.Warn("unknown message", "line", line)
			}
		case <-timer.C:
			if err := unix.Kill(-*target, 0); errors.Is(err, unix.ESRCH) {
				log.Info("target process group gone: exiting")
				return ExitDisarmed
			}
		}
	}
}
