//go:build linux

package watchdog

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const testTimeout = 300 * time.Millisecond

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// dummy is a stand-in for an agent's process group: a sleep in a session
// of its own.
type dummy struct {
	cmd  *exec.Cmd
	done chan error
}

func startDummy(t *testing.T) *dummy {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &dummy{cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	})
	return d
}

func (d *dummy) pgid() int { return d.cmd.Process.Pid }

// killedWithin waits up to limit for the dummy to die by SIGKILL.
func (d *dummy) killedWithin(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("dummy ended with %v, want SIGKILL", err)
		}
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("dummy still alive after %s", limit)
	}
	return 0
}

func (d *dummy) aliveFor(t *testing.T, span time.Duration) {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		t.Fatalf("dummy died: %v", err)
	case <-time.After(span):
	}
}

func startSupervisor(t *testing.T, target int) *process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w, err := StartProcess(exe, testTimeout, target, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return w.(*process)
}

// waitExit waits for the supervisor to exit on its own and returns its
// exit code.
func waitExit(t *testing.T, p *process) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("supervisor still running")
	}
	var exit *exec.ExitError
	if errors.As(p.exitErr, &exit) {
		return exit.ExitCode()
	}
	if p.exitErr != nil {
		t.Fatal(p.exitErr)
	}
	return 0
}

func TestProcessFiresWhenNotPetted(t *testing.T) {
	d := startDummy(t)
	p := startSupervisor(t, d.pgid())
	start := time.Now()
	d.killedWithin(t, 3*time.Second)
	if took := time.Since(start); took < testTimeout-50*time.Millisecond {
		t.Errorf("fired after %s, before the timeout %s", took, testTimeout)
	}
	if code := waitExit(t, p); code != ExitFired {
		t.Errorf("exit code %d, want %d", code, ExitFired)
	}
	if err := p.Pet(); !errors.Is(err, ErrFired) {
		t.Errorf("Pet after firing: %v", err)
	}
	if err := p.Close(); !errors.Is(err, ErrFired) {
		t.Errorf("Close after firing: %v", err)
	}
}

func TestProcessPettedDoesNotFire(t *testing.T) {
	d := startDummy(t)
	p := startSupervisor(t, d.pgid())
	stop := time.After(4 * testTimeout)
	tick := time.NewTicker(testTimeout / 4)
	defer tick.Stop()
pet:
	for {
		select {
		case <-tick.C:
			if err := p.Pet(); err != nil {
				t.Fatal(err)
			}
		case <-stop:
			break pet
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("killed while petted: %v", err)
		default:
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	d.aliveFor(t, 2*testTimeout)
	if err := p.Pet(); !errors.Is(err, ErrClosed) {
		t.Errorf("Pet after Close: %v", err)
	}
}

func TestProcessCleanClose(t *testing.T) {
	d := startDummy(t)
	p := startSupervisor(t, d.pgid())
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	d.aliveFor(t, 2*testTimeout)
}

// The agent's end of the pipe closes without a disarm: the agent died.
func TestProcessFiresOnEOF(t *testing.T) {
	d := startDummy(t)
	p := startSupervisor(t, d.pgid())
	p.mu.Lock()
	p.stdin.Close()
	p.stdin = nil
	p.mu.Unlock()
	if took := d.killedWithin(t, 3*time.Second); took > testTimeout/2 {
		t.Errorf("fired %s after EOF: should not wait for the timeout", took)
	}
	if code := waitExit(t, p); code != ExitFired {
		t.Errorf("exit code %d, want %d", code, ExitFired)
	}
}

func TestProcessExitsWhenTargetGone(t *testing.T) {
	d := startDummy(t)
	p := startSupervisor(t, d.pgid())
	_ = syscall.Kill(-d.pgid(), syscall.SIGKILL)
	if code := waitExit(t, p); code != ExitDisarmed {
		t.Errorf("exit code %d, want %d", code, ExitDisarmed)
	}
	_ = p.Close()
}

func TestProcessBadArguments(t *testing.T) {
	exe, _ := os.Executable()
	if _, err := StartProcess(exe, time.Millisecond, 1234, nil); err == nil {
		t.Error("1ms timeout accepted")
	}
	if _, err := StartProcess(exe, time.Second, 1, nil); err == nil {
		t.Error("target group 1 accepted")
	}
	// A group that does not exist: the supervisor refuses to arm.
	if _, err := StartProcess(exe, time.Second, 1<<22+12345, nil); err == nil {
		t.Error("missing target group accepted")
	}
	if code := SupervisorMain([]string{"--timeout=1s"}); code != ExitUsage {
		t.Errorf("no target: exit %d", code)
	}
}

// agentMain is a stand-in agent: the leader of its own process group, it
// starts a child in that group (a resource), arms a supervisor on the
// group, reports "ready PID" and pets until it is killed or stopped.
func agentMain() int {
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	exe, _ := os.Executable()
	w, err := StartProcess(exe, testTimeout, syscall.Getpgrp(), nil)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", child.Process.Pid)
	for {
		time.Sleep(testTimeout / 4)
		if err := w.Pet(); err != nil {
			return 1
		}
	}
}

// gone reports whether pid has exited (a zombie counts as gone).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

// The cases with a real agent process: SIGKILL (the agent dies,
// its resource lives on) and SIGSTOP (a hang). Either way the supervisor
// kills the agent's whole group, the resource included.
func TestProcessKillsAgentGroup(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
		t.Run(sig.String(), func(t *testing.T) {
			exe, _ := os.Executable()
			agent := exec.Command(exe)
			agent.Env = append(os.Environ(), agentEnv+"=1")
			agent.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			out, err := agent.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			agent.Stderr = os.Stderr
			if err := agent.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = syscall.Kill(-agent.Process.Pid, syscall.SIGKILL)
				_ = agent.Wait()
			}()
			line, err := bufio.NewReader(out).ReadString('\n')
			var child int
			if _, serr := fmt.Sscanf(line, "ready %d", &child); err != nil || serr != nil {
				t.Fatalf("agent: %q %v", line, err)
			}
			time.Sleep(2 * testTimeout) // petted meanwhile: all alive
			if gone(child) {
				t.Fatal("resource died while the agent was petting")
			}
			if err := agent.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !gone(child) {
				if time.Now().After(deadline) {
					t.Fatalf("resource %d still alive 5s after %s of the agent", child, sig)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if sig == syscall.SIGSTOP {
				// The stopped agent was killed too.
				if err := agent.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
					t.Errorf("stopped agent: %v", err)
				}
			}
		})
	}
}
