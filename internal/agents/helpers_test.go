package agents

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ocfDummy = DefaultOCFRoot + "/resource.d/heartbeat/Dummy"

// needOCF skips the test when Debian's resource-agents is not installed.
func needOCF(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is absent: install Debian's resource-agents package (apt-get install resource-agents) to run this test", path)
	}
}

func newTestRegistry(t *testing.T) *Registry {
	t.Helper()
	return NewRegistry(Options{StateDir: t.TempDir()})
}

func mustGet(t *testing.T, r *Registry, spec string) Agent {
	t.Helper()
	a, err := r.Get(spec)
	if err != nil {
		t.Fatalf("Get(%q): %v", spec, err)
	}
	return a
}

// run executes one action and fails the test unless it returns want.
func run(t *testing.T, a Agent, req Request, want Code) Result {
	t.Helper()
	if req.Timeout == 0 {
		req.Timeout = 10 * time.Second
	}
	res := a.Exec(context.Background(), req)
	if res.Code != want {
		t.Fatalf("%s %s: got %v (err %v), want %v; output:\n%s", req.Resource, req.Action, res.Code, res.Err, want, res.Output)
	}
	return res
}

// zombies returns our children that have exited but were not reaped.
func zombies(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readProc(pid); err == nil && p.ppid == self && p.state == 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// noZombies waits briefly for reaping goroutines, then fails on zombies.
func noZombies(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		z := zombies(t)
		if len(z) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("zombie children: %v", z)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDead waits until the process id is gone.
func waitDead(t *testing.T, id procID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for procAlive(id.pid, id.start) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", id.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pidOf reads a "pid" or "pid start" file written by a test script or the
// process agent.
func pidOf(t *testing.T, path string) procID {
	t.Helper()
	var b []byte
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err = os.ReadFile(path)
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read %s: %v", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f := strings.Fields(string(b))
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	info, err := readProc(pid)
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	return procID{pid, info.start}
}

// killProc sends SIGKILL to id unless its PID was recycled.
func killProc(id procID) error {
	if !procAlive(id.pid, id.start) {
		return nil
	}
	return syscall.Kill(id.pid, syscall.SIGKILL)
}
