package agents

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestVigilDummy(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:dummy")
	req := func(action string) Request {
		return Request{Resource: "d1", Action: action, Params: map[string]string{"fake": "abc"}}
	}
	run(t, a, req(ActionMonitor), CodeNotRunning)
	run(t, a, req(ActionStop), CodeOK)
	run(t, a, req(ActionStart), CodeOK)
	run(t, a, req(ActionStart), CodeOK)
	run(t, a, req(ActionMonitor), CodeOK)
	state := filepath.Join(r.opts.StateDir, "dummy", "d1.state")
	if b, err := os.ReadFile(state); err != nil || !strings.Contains(string(b), "fake=abc") {
		t.Fatalf("state file: %q %v", b, err)
	}
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	run(t, a, req(ActionMonitor), CodeNotRunning)
	run(t, a, req(ActionStart), CodeOK)
	run(t, a, req(ActionStop), CodeOK)
	run(t, a, req(ActionStop), CodeOK)
	run(t, a, req(ActionMonitor), CodeNotRunning)
	run(t, a, req(ActionPromote), CodeErrUnimplemented)

	// Another node's StateDir does not see it.
	run(t, a, req(ActionStart), CodeOK)
	run(t, mustGet(t, newTestRegistry(t), "vigil:dummy"), req(ActionMonitor), CodeNotRunning)

	// meta-data as OCF XML, parsed back.
	res := run(t, a, Request{Action: ActionMetaData}, CodeOK)
	m, err := ParseMetadata([]byte(res.Output))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Param("op_sleep"); !ok || m.Name != "dummy" {
		t.Fatalf("meta-data round trip: %+v", m)
	}
	if mon, _ := m.Action(ActionMonitor); mon.Interval != 10*time.Second {
		t.Errorf("monitor = %+v", mon)
	}
	run(t, a, Request{Action: ActionValidateAll, Params: map[string]string{"fake": "1"}}, CodeOK)
	res = run(t, a, Request{Action: ActionValidateAll, Params: map[string]string{"nope": "1"}}, CodeErrConfigured)
	if !strings.Contains(res.Output, `unknown parameter "nope"`) {
		t.Errorf("validate-all output %q", res.Output)
	}
	run(t, a, Request{Resource: "../x", Action: ActionStart}, CodeErrArgs)
}

func TestVigilDummyOpSleep(t *testing.T) {
	a := mustGet(t, newTestRegistry(t), "vigil:dummy")
	slow := map[string]string{"op_sleep": "300ms"}
	start := time.Now()
	run(t, a, Request{Resource: "s", Action: ActionStart, Params: slow}, CodeOK)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("op_sleep ignored: %v", took)
	}
	slow["op_sleep"] = "1m"
	start = time.Now()
	res := a.Exec(context.Background(), Request{Resource: "s", Action: ActionMonitor, Params: slow, Timeout: 200 * time.Millisecond})
	if res.Code != CodeTimeout || time.Since(start) > 2*time.Second {
		t.Fatalf("got %v after %v, want TIMEOUT at 200ms", res.Code, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res := a.Exec(ctx, Request{Resource: "s", Action: ActionStop}); res.Code != CodeCanceled {
		t.Fatalf("canceled: %v", res.Code)
	}
	run(t, a, Request{Resource: "s", Action: ActionStart, Params: map[string]string{"op_sleep": "soon"}}, CodeErrConfigured)
}

func procReq(action string, params map[string]string) Request {
	return Request{Resource: "p1", Action: action, Params: params, Timeout: 10 * time.Second}
}

func TestVigilProcessLifecycle(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:process")
	params := map[string]string{"command": "echo hello $GREETING; exec sleep 300", "env": "GREETING=world; X=1", "cwd": t.TempDir()}
	pidFile := filepath.Join(r.opts.StateDir, "process", "p1.pid")
	logFile := filepath.Join(r.opts.StateDir, "process", "p1.log")

	run(t, a, procReq(ActionMonitor, params), CodeNotRunning)
	run(t, a, procReq(ActionStop, params), CodeOK)
	run(t, a, procReq(ActionStart, params), CodeOK)
	p := pidOf(t, pidFile)
	run(t, a, procReq(ActionStart, params), CodeOK) // idempotent: same process
	if q := pidOf(t, pidFile); q != p {
		t.Fatalf("second start replaced %v with %v", p, q)
	}
	run(t, a, procReq(ActionMonitor, params), CodeOK)
	if b, _ := os.ReadFile(logFile); !strings.Contains(string(b), "hello world") {
		t.Errorf("log %q", b)
	}
	// The process is in the agent's process group (no setsid).
	if info, _ := readProc(p.pid); info.pgid != syscall.Getpgrp() {
		t.Errorf("pgid %d, want the agent's %d", info.pgid, syscall.Getpgrp())
	}
	run(t, a, procReq(ActionStop, params), CodeOK)
	waitDead(t, p)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left: %v", err)
	}
	run(t, a, procReq(ActionStop, params), CodeOK)
	run(t, a, procReq(ActionMonitor, params), CodeNotRunning)
	noZombies(t)
}

func TestVigilProcessKilledExternally(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:process")
	params := map[string]string{"command": "exec sleep 300"}
	run(t, a, procReq(ActionStart, params), CodeOK)
	p := pidOf(t, filepath.Join(r.opts.StateDir, "process", "p1.pid"))
	if err := killProc(p); err != nil {
		t.Fatal(err)
	}
	waitDead(t, p)
	run(t, a, procReq(ActionMonitor, params), CodeNotRunning)
	noZombies(t)
	run(t, a, procReq(ActionStop, params), CodeOK)
	run(t, a, procReq(ActionStart, params), CodeOK) // restart in place
	run(t, a, procReq(ActionMonitor, params), CodeOK)
	run(t, a, procReq(ActionStop, params), CodeOK)
	noZombies(t)
}

func TestVigilProcessExitsDuringStart(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:process")
	res := run(t, a, procReq(ActionStart, map[string]string{"command": "echo boom >&2; exit 3"}), CodeErrGeneric)
	if !strings.Contains(res.Output, "boom") || res.Err == nil || !strings.Contains(res.Err.Error(), "exit status 3") {
		t.Errorf("output %q err %v", res.Output, res.Err)
	}
	run(t, a, procReq(ActionMonitor, nil), CodeNotRunning)
	run(t, a, procReq(ActionStart, map[string]string{"command": "sleep 1", "cwd": "/nonexistent"}), CodeErrInstalled)
	run(t, a, procReq(ActionStart, map[string]string{"command": "sleep 1", "env": "novalue"}), CodeErrConfigured)
	run(t, a, procReq(ActionStart, map[string]string{}), CodeErrConfigured)
	m, _ := a.Metadata(context.Background())
	if err := m.Validate(map[string]string{"cwd": "/"}); err == nil || !strings.Contains(err.Error(), `missing required parameter "command"`) {
		t.Errorf("validate: %v", err)
	}
	noZombies(t)
}

// TestVigilProcessPIDReuse: a pid file naming a live process with another
// start time is somebody else's process: monitor says stopped and stop
// leaves it alone.
func TestVigilProcessPIDReuse(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:process")
	other := exec.Command("sleep", "300")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	info, err := readProc(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(r.opts.StateDir, "process", "p1.pid")
	stale := []byte(strings.Join([]string{strconv.Itoa(other.Process.Pid), strconv.FormatUint(info.start-1, 10)}, " ") + "\n")
	if err := os.WriteFile(pidFile, stale, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, a, procReq(ActionMonitor, nil), CodeNotRunning)
	run(t, a, procReq(ActionStop, nil), CodeOK)
	if !procAlive(other.Process.Pid, info.start) {
		t.Fatal("stop killed a process that is not ours")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Error("stale pid file kept")
	}
}

// TestVigilProcessAgentRestart: a new agent (as after a vigil restart)
// finds the process through its pid file, monitors and stops it.
func TestVigilProcessAgentRestart(t *testing.T) {
	dir := t.TempDir()
	params := map[string]string{"command": "exec sleep 300"}
	before := mustGet(t, NewRegistry(Options{StateDir: dir}), "vigil:process")
	run(t, before, procReq(ActionStart, params), CodeOK)
	p := pidOf(t, filepath.Join(dir, "process", "p1.pid"))

	after := mustGet(t, NewRegistry(Options{StateDir: dir}), "vigil:process")
	run(t, after, procReq(ActionMonitor, params), CodeOK)
	run(t, after, procReq(ActionStart, params), CodeOK)
	if q := pidOf(t, filepath.Join(dir, "process", "p1.pid")); q != p {
		t.Fatal("start after restart spawned a second process")
	}
	run(t, after, procReq(ActionStop, params), CodeOK)
	waitDead(t, p)
	run(t, after, procReq(ActionMonitor, params), CodeNotRunning)
	noZombies(t)
}

// TestVigilProcessStopEscalates: a process that ignores SIGTERM is killed
// after stop_timeout, with the children of its shell.
func TestVigilProcessStopEscalates(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:process")
	kidFile := filepath.Join(t.TempDir(), "kid.pid")
	params := map[string]string{
		"command":      "trap '' TERM; sleep 300 & echo $! > " + kidFile + "; wait",
		"stop_timeout": "300ms",
	}
	run(t, a, procReq(ActionStart, params), CodeOK)
	p := pidOf(t, filepath.Join(r.opts.StateDir, "process", "p1.pid"))
	kid := pidOf(t, kidFile)
	start := time.Now()
	run(t, a, procReq(ActionStop, params), CodeOK)
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("stop took %v", took)
	}
	waitDead(t, p)
	waitDead(t, kid)
	noZombies(t)

	// A stop timeout shorter than stop_timeout still ends in SIGKILL
	// within the timeout.
	params["stop_timeout"] = "1m"
	run(t, a, procReq(ActionStart, params), CodeOK)
	p = pidOf(t, filepath.Join(r.opts.StateDir, "process", "p1.pid"))
	req := procReq(ActionStop, params)
	req.Timeout = time.Second
	run(t, a, req, CodeOK)
	waitDead(t, p)
	noZombies(t)
}

// TestVigilProcessShellChildren: stop also ends what the shell started.
func TestVigilProcessShellChildren(t *testing.T) {
	r := newTestRegistry(t)
	a := mustGet(t, r, "vigil:process")
	kidFile := filepath.Join(t.TempDir(), "kid.pid")
	params := map[string]string{"command": "sleep 300 & echo $! > " + kidFile + "; sleep 301; echo done"}
	run(t, a, procReq(ActionStart, params), CodeOK)
	kid := pidOf(t, kidFile)
	run(t, a, procReq(ActionStop, params), CodeOK)
	waitDead(t, kid)
	noZombies(t)
}
