package fencing

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxOutput bounds Result.Output: only the last MaxOutput bytes an agent
// wrote are kept.
const MaxOutput = 8 << 10

// maxMetadata bounds the metadata XML read from an agent.
const maxMetadata = 1 << 20

// killGrace is how long a timed-out agent's process group has between
// SIGTERM (fencing.py logs out of the device on it) and SIGKILL.
const killGrace = time.Second

// waitDelay bounds how long Wait waits for the output pipes to close after
// the agent exited: a child it left behind may hold them.
const waitDelay = 2 * time.Second

// agentEnv is the environment of every fence agent: the agents are run
// unmodified, and a fixed environment keeps them from depending on the
// daemon's. fencing.py sets LANG=C itself; the lab agent needs ip(8).
var agentEnv = []string{
	"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C",
	"LC_ALL=C",
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
	total int64
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += int64(len(p))
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// runGroup runs path with stdin in a process group of its own, within
// timeout. At the timeout (or when ctx ends) the whole group gets SIGTERM,
// then SIGKILL after killGrace, so that neither the agent nor anything it
// started (ssh, ipmitool, curl) outlives the attempt.
//
// Output holds the last limit bytes of stdout and stderr together; with
// stdoutOnly, stdout alone, and stderr is appended only on failure (the
// metadata XML must not be mixed with Python's warnings).
func runGroup(ctx context.Context, path, stdin string, timeout time.Duration, limit int, stdoutOnly bool) Result {
	start := time.Now()
	res := runGroup1(ctx, path, stdin, timeout, limit, stdoutOnly)
	res.Duration = time.Since(start)
	return res
}

func runGroup1(ctx context.Context, path, stdin string, timeout time.Duration, limit int, stdoutOnly bool) Result {
	if err := ctx.Err(); err != nil {
		return Result{Code: -1, Err: context.Cause(ctx)}
	}
	tctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrTimeout)
	defer cancel()

	cmd := exec.Command(path)
	cmd.Env = agentEnv
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = waitDelay
	cmd.Stdin = strings.NewReader(stdin)
	out := &tailBuffer{limit: limit}
	errOut := out
	if stdoutOnly {
		errOut = &tailBuffer{limit: MaxOutput}
	}
	cmd.Stdout, cmd.Stderr = out, errOut

	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, syscall.ENOENT) {
			err = fmt.Errorf("%w: %s: %w", ErrAgentNotFound, path, err)
		} else {
			err = fmt.Errorf("fencing: exec %s: %w", path, err)
		}
		return Result{Code: -1, Err: err}
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var waitErr error
	killed := false
	select {
	case waitErr = <-done:
	case <-tctx.Done():
		killed = true
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(killGrace)
		select {
		case waitErr = <-done:
			t.Stop()
		case <-t.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			waitErr = <-done
		}
		// Children that ignored SIGTERM or outlived the agent.
		// NB: the group id cannot be reused while any member lives.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	res := Result{Code: -1, Output: out.String()}
	switch {
	case killed:
		cause := context.Cause(tctx)
		res.TimedOut = errors.Is(cause, ErrTimeout)
		if res.TimedOut {
			res.Err = fmt.Errorf("%w after %s: %s (process group killed)", ErrTimeout, timeout, path)
		} else {
			res.Err = fmt.Errorf("fencing: %s: %w", path, cause)
		}
	case cmd.ProcessState != nil && cmd.ProcessState.Exited():
		// Exited, even if Wait then gave up on the pipes (ErrWaitDelay).
		res.Code = cmd.ProcessState.ExitCode()
	case cmd.ProcessState != nil:
		res.Err = fmt.Errorf("fencing: %s: %s", path, cmd.ProcessState)
	default:
		res.Err = fmt.Errorf("fencing: wait %s: %w", path, waitErr)
	}
	if errOut != out && (res.Code != 0 || res.Err != nil) {
		res.Output += errOut.String()
	}
	return res
}
