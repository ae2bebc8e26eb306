package fencing

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const fenceDummy = "/usr/sbin/fence_dummy"

// needFenceDummy skips the test when Debian's fence-agents is absent.
func needFenceDummy(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(fenceDummy); err != nil {
		t.Skipf("%s is absent: install Debian's fence-agents package (apt-get install fence-agents) to run this test", fenceDummy)
	}
}

// testCtx is a context that ends with the test (or after a minute).
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fileDevice is a fence_dummy device of type file whose plug starts on.
func fileDevice(t *testing.T, name string, nodes ...string) Device {
	t.Helper()
	needFenceDummy(t)
	status := filepath.Join(t.TempDir(), name+".status")
	if err := os.WriteFile(status, []byte("on"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Device{Name: name, Agent: "fence_dummy", HostList: nodes,
		Params: map[string]string{"type": "file", "status_file": status}}
}

// failDevice is a fence_dummy device of type fail: off never succeeds
// (it waits power_timeout=1 second for an off that never comes).
func failDevice(t *testing.T, name string, nodes ...string) Device {
	t.Helper()
	needFenceDummy(t)
	return Device{Name: name, Agent: "fence_dummy", HostList: nodes,
		Params: map[string]string{"type": "fail", "power_timeout": "1"}}
}

// scriptAgent writes a fence agent script whose off and status run the
// given shell bodies, and whose metadata advertises actions. Every stdin
// line it reads is appended to <path>.stdin. It returns the script's path.
func scriptAgent(t *testing.T, name, offBody, statusBody string, actions ...string) string {
	t.Helper()
	var acts strings.Builder
	for _, a := range actions {
		fmt.Fprintf(&acts, "\t<action name=%q />\n", a)
	}
	script := `#!/bin/sh
action=reboot
while IFS= read -r l; do
	case $l in action=*) action=${l#action=} ;; esac
	echo "$l" >>"$0.stdin"
done
case $action in
metadata)
	cat <<'XML'
<?xml version="1.0" ?>
<resource-agent name="` + name + `" shortdesc="test agent" >
<longdesc>test agent</longdesc>
<parameters>
	<parameter name="action" unique="0" required="1"><content type="string" default="reboot" /></parameter>
	<parameter name="port" unique="0" required="0"><content type="string" /></parameter>
	<parameter name="secret" unique="0" required="0"><content type="string" /></parameter>
</parameters>
<actions>
` + acts.String() + `</actions>
</resource-agent>
XML
	exit 0 ;;
off) ` + offBody + ` ;;
status) ` + statusBody + ` ;;
monitor) exit 0 ;;
esac
exit 1
`
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// procStat returns the fields of /proc/pid/stat after the command name
// (index 0 is the state, 2 the group, 19 the start time), or nil.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// procDead reports whether pid is gone or a zombie.
func procDead(pid int) bool {
	f := procStat(pid)
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// groupPids returns the live members of process group pgid.
func groupPids(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := procStat(pid)
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			out = append(out, pid)
		}
	}
	return out
}

// startGroup starts argv (default: a shell with two sleeping children) in
// a process group of its own, a stand-in for a lab node, waits until the
// group has want members, and returns its id. The group is killed and
// reaped when the test ends.
func startGroup(t *testing.T, want int, argv ...string) int {
	t.Helper()
	if len(argv) == 0 {
		argv = []string{"sh", "-c", "sleep 100 & sleep 100 & wait"}
		want = 3
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	})
	deadline := time.Now().Add(10 * time.Second)
	for len(groupPids(pgid)) < want {
		if time.Now().After(deadline) {
			t.Fatalf("group %d: children did not start: %v", pgid, groupPids(pgid))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return pgid
}

// waitDead waits (boundedly) until every pid is gone or a zombie.
func waitDead(pids []int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		alive := false
		for _, p := range pids {
			alive = alive || !procDead(p)
		}
		if !alive {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
