package agents

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// processStartWait is how long a started process must stay alive before
// start reports success.
const processStartWait = 200 * time.Millisecond

// processStopTimeout is the default time between SIGTERM and SIGKILL.
const processStopTimeout = 10 * time.Second

// processPoll is how often stop checks whether the process is gone.
const processPoll = 20 * time.Millisecond

// processAgent is vigil:process: one long-running command per resource,
// supervised through a pid file StateDir/process/<resource>.pid holding the
// PID and the process start time (/proc/<pid>/stat field 22), so that a
// recycled PID is never taken for ours.
//
// The process stays in the agent's process group (no setsid), so killing a
// lab node's group kills its resources too, and it is not tied to the
// agent's life (no Pdeathsig): after an agent restart, monitor and stop find
// it through the pid file. While the agent that started it lives, a goroutine
// waits for it, so it never lingers as a zombie; after a restart it is no
// longer our child and its new parent (init or a subreaper) reaps it.
type processAgent struct {
	dir string
	log *slog.Logger

	mu       sync.Mutex
	children map[string]*processChild // by resource, while running
}

// processChild is a process this agent started and waits for.
type processChild struct {
	pid  int
	done chan struct{} // closed once reaped
	err  error         // Wait's result, set before done is closed
}

func newProcess(dir string, log *slog.Logger) (*processAgent, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("agents: state dir: %w", err)
	}
	return &processAgent{dir: dir, log: log, children: map[string]*processChild{}}, nil
}

var processMeta = &Metadata{
	Name:       TypeProcess,
	Version:    "1.0",
	OCFVersion: "1.1",
	ShortDesc:  "A long-running command, supervised",
	LongDesc: "Built-in agent: start runs the command with /bin/sh -c, its output " +
		"appended to StateDir/process/<resource>.log; monitor checks that the very " +
		"process is alive; stop sends SIGTERM, then SIGKILL after stop_timeout.",
	Params: []Param{
		{Name: "command", Required: true, Type: "string", ShortDesc: "Command line, run with /bin/sh -c"},
		{Name: "cwd", Type: "string", Default: "/", ShortDesc: "Working directory"},
		{Name: "env", Type: "string", ShortDesc: "Extra environment, k=v;k=v"},
		{Name: "stop_timeout", Type: "string", Default: "10s", ShortDesc: "Time between SIGTERM and SIGKILL (bounded by the stop timeout)"},
	},
	Actions: []ActionSpec{
		{Name: ActionStart, Timeout: 20 * time.Second},
		{Name: ActionStop, Timeout: 20 * time.Second},
		{Name: ActionMonitor, Timeout: 20 * time.Second, Interval: 10 * time.Second},
		{Name: ActionMetaData, Timeout: 5 * time.Second},
		{Name: ActionValidateAll, Timeout: 20 * time.Second},
	},
}

func (a *processAgent) meta() *Metadata { return processMeta }

// Metadata returns the built-in meta-data.
func (a *processAgent) Metadata(context.Context) (*Metadata, error) { return processMeta, nil }

// Exec runs one action.
func (a *processAgent) Exec(ctx context.Context, req Request) Result {
	res := runBuiltin(ctx, a, req)
	a.log.Debug("process action", "resource", req.Resource, "action", req.Action,
		"code", res.Code, "duration", res.Duration, "err", res.Err)
	return res
}

func (a *processAgent) action(ctx context.Context, req Request) (Result, bool) {
	switch req.Action {
	case ActionStart:
		return a.start(ctx, req), true
	case ActionStop:
		return a.stop(ctx, req), true
	case ActionMonitor:
		return a.monitor(req), true
	}
	return Result{}, false
}

func (a *processAgent) pidPath(res string) string { return filepath.Join(a.dir, res+".pid") }
func (a *processAgent) logPath(res string) string { return filepath.Join(a.dir, res+".log") }

// readPidFile returns the recorded process, or ok=false if there is no pid
// file.
func (a *processAgent) readPidFile(res string) (id procID, ok bool, err error) {
	b, err := os.ReadFile(a.pidPath(res))
	if errors.Is(err, fs.ErrNotExist) {
		return procID{}, false, nil
	}
	if err != nil {
		return procID{}, false, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return procID{}, false, fmt.Errorf("agents: malformed pid file %s", a.pidPath(res))
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return procID{}, false, fmt.Errorf("agents: malformed pid file %s", a.pidPath(res))
	}
	return procID{pid, start}, true, nil
}

func (a *processAgent) writePidFile(res string, id procID) error {
	tmp := a.pidPath(res) + ".tmp"
	data := fmt.Sprintf("%d %d\n", id.pid, id.start)
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, a.pidPath(res))
}

func (a *processAgent) removePidFile(res string) error {
	if err := os.Remove(a.pidPath(res)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (a *processAgent) monitor(req Request) Result {
	id, ok, err := a.readPidFile(req.Resource)
	switch {
	case err != nil:
		return Result{Code: CodeErrGeneric, Err: err}
	case !ok:
		return Result{Code: CodeNotRunning}
	case !procAlive(id.pid, id.start):
		return Result{Code: CodeNotRunning, Output: fmt.Sprintf("process %d exited\n", id.pid) + tailFile(a.logPath(req.Resource), 1<<10)}
	}
	return Result{Code: CodeOK}
}

// parseEnv parses "k=v;k=v".
func parseEnv(s string) ([]string, error) {
	var env []string
	for _, kv := range strings.Split(s, ";") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !validEnvName(k) {
			return nil, fmt.Errorf("%w: env: %q is not name=value", ErrInvalidParams, kv)
		}
		env = append(env, kv)
	}
	return env, nil
}

func (a *processAgent) start(ctx context.Context, req Request) Result {
	res := req.Resource
	command := req.Params["command"]
	if strings.TrimSpace(command) == "" {
		return Result{Code: CodeErrConfigured, Err: fmt.Errorf("%w: vigil:process needs a command", ErrInvalidParams)}
	}
	// Idempotent: a live process is already started.
	if id, ok, err := a.readPidFile(res); err == nil && ok && procAlive(id.pid, id.start) {
		return Result{Code: CodeOK}
	}
	extra, err := parseEnv(req.Params["env"])
	if err != nil {
		return Result{Code: CodeErrConfigured, Err: err}
	}
	if _, err := durationParam(req.Params, "stop_timeout"); err != nil {
		return Result{Code: CodeErrConfigured, Err: err}
	}
	cwd := req.Params["cwd"]
	if cwd == "" {
		cwd = "/"
	}
	if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
		// Missing on this node: another node may have it.
		return Result{Code: CodeErrInstalled, Err: fmt.Errorf("agents: vigil:process: cwd %q is not a directory here", cwd)}
	}

	if err := a.removePidFile(res); err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}

	logf, err := os.OpenFile(a.logPath(res), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:process log: %w", err)}
	}
	env := []string{"PATH=" + ocfPath, "VIGIL_RESOURCE=" + res}
	if home := os.Getenv("HOME"); home != "" {
		env = append(env, "HOME="+home)
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Dir = cwd
	cmd.Env = append(env, extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// NB: no Setpgid/Setsid and no Pdeathsig, on purpose (see processAgent).
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:process start: %w", err)}
	}
	c := &processChild{pid: cmd.Process.Pid, done: make(chan struct{})}
	a.mu.Lock()
	a.children[res] = c
	a.mu.Unlock()
	go func() {
		c.err = cmd.Wait()
		a.mu.Lock()
		if a.children[res] == c {
			delete(a.children, res)
		}
		a.mu.Unlock()
		close(c.done)
	}()

	info, err := readProc(c.pid)
	if err == nil {
		err = a.writePidFile(res, procID{c.pid, info.start})
	}
	if err != nil {
		// Exited at once (nothing in /proc), or no pid file: do not leave
		// an unsupervised process behind.
		_ = cmd.Process.Kill() // still our child, not yet reaped: safe
		<-c.done
		_ = a.removePidFile(res)
		return Result{Code: CodeErrGeneric, Output: tailFile(a.logPath(res), MaxOutput),
			Err: fmt.Errorf("agents: vigil:process start: %w", err)}
	}

	t := time.NewTimer(processStartWait)
	defer t.Stop()
	select {
	case <-t.C:
		return Result{Code: CodeOK}
	case <-c.done:
		_ = a.removePidFile(res)
		return Result{Code: CodeErrGeneric, Output: tailFile(a.logPath(res), MaxOutput),
			Err: fmt.Errorf("agents: vigil:process %q exited during start: %v", res, exitDesc(c.err))}
	case <-ctx.Done():
		kctx, cancel := context.WithTimeout(context.Background(), killGrace)
		defer cancel()
		a.kill(kctx, a.tree(procID{c.pid, info.start}), 0)
		_ = a.removePidFile(res)
		return ctxResult(ctx)
	}
}

func exitDesc(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// tree returns p and its live descendants.
func (a *processAgent) tree(p procID) []procID {
	return append([]procID{p}, descendants(p.pid)...)
}

func (a *processAgent) stop(ctx context.Context, req Request) Result {
	res := req.Resource
	id, ok, err := a.readPidFile(res)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	if !ok || !procAlive(id.pid, id.start) {
		// Idempotent: stopping a stopped resource succeeds.
		if err := a.removePidFile(res); err != nil {
			return Result{Code: CodeErrGeneric, Err: err}
		}
		return Result{Code: CodeOK}
	}
	grace, err := durationParam(req.Params, "stop_timeout")
	if err != nil || req.Params["stop_timeout"] == "" {
		grace = processStopTimeout // a stop must not fail on a bad parameter
	}
	if !a.kill(ctx, a.tree(id), grace) {
		return Result{Code: codeOf(ctx), Err: fmt.Errorf("agents: vigil:process %q (pid %d) still running: %w", res, id.pid, context.Cause(ctx)),
			Output: tailFile(a.logPath(res), MaxOutput)}
	}
	if err := a.removePidFile(res); err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	return Result{Code: CodeOK}
}

// kill sends SIGTERM to procs (and to the group of any that leads one),
// waits up to grace for them to go, then sends SIGKILL and waits until ctx
// is done. The SIGTERM phase is cut short so that, when ctx has a deadline,
// a quarter of the remaining time (at most 2 s) is left for SIGKILL. It
// reports whether every process is gone.
func (a *processAgent) kill(ctx context.Context, procs []procID, grace time.Duration) bool {
	if grace > 0 {
		if dl, ok := ctx.Deadline(); ok {
			reserve := min(time.Until(dl)/4, 2*time.Second)
			grace = min(grace, time.Until(dl)-reserve)
		}
		signalAll(procs, syscall.SIGTERM)
		if waitGone(ctx, procs, grace) {
			return true
		}
		// Catch what was forked meanwhile.
		procs = a.withDescendants(procs)
	}
	signalAll(procs, syscall.SIGKILL)
	return waitGone(ctx, procs, time.Hour)
}

func (a *processAgent) withDescendants(procs []procID) []procID {
	out := append([]procID(nil), procs...)
	for _, p := range procs {
		if procAlive(p.pid, p.start) {
			out = append(out, descendants(p.pid)...)
		}
	}
	return out
}

// signalAll signals each live process of procs, and its process group if
// it leads one (but never the caller's own group).
func signalAll(procs []procID, sig syscall.Signal) {
	own := syscall.Getpgrp()
	for _, p := range procs {
		info, err := readProc(p.pid)
		if err != nil || info.start != p.start {
			continue // gone, or the PID was recycled: not ours
		}
		_ = syscall.Kill(p.pid, sig)
		if info.pgid == p.pid && info.pgid != own {
			_ = syscall.Kill(-p.pid, sig)
		}
	}
}

// waitGone polls until no process of procs is alive, for at most d or
// until ctx is done; it reports whether they are all gone.
func waitGone(ctx context.Context, procs []procID, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		alive := false
		for _, p := range procs {
			if procAlive(p.pid, p.start) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, processPoll) {
			return false
		}
	}
}
