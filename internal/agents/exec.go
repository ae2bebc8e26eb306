package agents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// killGrace is how long a timed-out or canceled agent's process group has
// between SIGTERM and SIGKILL.
const killGrace = 2 * time.Second

// runGroup runs cmd in a process group of its own, so that a timeout or a
// cancellation kills the agent and everything it started that is still in
// its group. Output (stdout and stderr together) goes to an unlinked
// temporary file, of which the last MaxOutput bytes are returned.
//
// NB: on a normal exit nothing is killed: an OCF start may leave a daemon
// behind on purpose (IPaddr2's send_arp, a database), which lives on in the
// agent's process group. A file rather than a pipe is used for the output
// so that such a daemon, still holding the agent's stdout, neither blocks
// Wait nor dies of SIGPIPE once we stop reading.
//
// With stdoutOnly (meta-data), Output holds stdout alone, up to limit bytes,
// and stderr is added only when the action fails.
func runGroup(ctx context.Context, cmd *exec.Cmd, tmpDir string, limit int64, stdoutOnly bool) Result {
	start := time.Now()
	res := runGroup1(ctx, cmd, tmpDir, limit, stdoutOnly)
	res.Duration = time.Since(start)
	return res
}

// tempOutput returns an unlinked temporary file: nothing to clean up,
// whatever happens.
func tempOutput(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "agent-output-*")
	if err != nil {
		return nil, fmt.Errorf("agents: output file: %w", err)
	}
	_ = os.Remove(f.Name())
	return f, nil
}

func runGroup1(ctx context.Context, cmd *exec.Cmd, tmpDir string, limit int64, stdoutOnly bool) Result {
	out, err := tempOutput(tmpDir)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	defer out.Close()
	errOut := out
	if stdoutOnly {
		if errOut, err = tempOutput(tmpDir); err != nil {
			return Result{Code: CodeErrGeneric, Err: err}
		}
		defer errOut.Close()
	}
	cmd.Stdout, cmd.Stderr = out, errOut
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true

	if err := ctx.Err(); err != nil {
		return Result{Code: codeOf(ctx), Err: context.Cause(ctx)}
	}
	if err := cmd.Start(); err != nil {
		code := CodeErrGeneric
		switch {
		case errors.Is(err, os.ErrNotExist):
			code = CodeNotFound
		case errors.Is(err, os.ErrPermission):
			code = CodeErrPerm
		}
		return Result{Code: code, Err: fmt.Errorf("agents: exec %s: %w", cmd.Path, err)}
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var waitErr error
	var killed Code = -1
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		killed = codeOf(ctx)
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(killGrace)
		select {
		case waitErr = <-done:
			t.Stop()
		case <-t.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			waitErr = <-done
		}
		// Children that ignored SIGTERM, or outlived their parent.
		// NB: the group id cannot be reused while any member lives.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	res := Result{Output: tail(out, limit)}
	if killed >= 0 {
		res.Code = killed
		res.Err = fmt.Errorf("agents: %s: %w", cmd.Path, context.Cause(ctx))
	} else {
		res.Code, res.Err = exitCode(cmd.Path, waitErr)
	}
	if errOut != out && (res.Code != CodeOK || res.Err != nil) {
		res.Output += tail(errOut, MaxOutput)
	}
	return res
}

// exitCode maps the error of exec.Cmd.Wait to a Code.
func exitCode(path string, err error) (Code, error) {
	if err == nil {
		return CodeOK, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return CodeErrGeneric, fmt.Errorf("agents: %s killed by signal %v", path, ws.Signal())
		}
		return Code(ee.ExitCode()), nil
	}
	return CodeErrGeneric, fmt.Errorf("agents: wait %s: %w", path, err)
}

// tail returns the last n bytes written to f.
func tail(f *os.File, n int64) string {
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	k, _ := f.ReadAt(buf, off) // a short read returns what there is
	return string(buf[:k])
}

// tailFile returns the last n bytes of the file at path.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	return tail(f, n)
}
