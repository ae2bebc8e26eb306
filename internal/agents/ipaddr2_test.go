package agents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOCFIPaddr2InNetns runs the real IPaddr2 start/monitor/stop inside a
// private network namespace (root only): the agent's scripts inherit the
// namespace of the thread that forks them.
func TestOCFIPaddr2InNetns(t *testing.T) {
	const ipaddr2 = DefaultOCFRoot + "/resource.d/heartbeat/IPaddr2"
	needOCF(t, ipaddr2)
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	a := mustGet(t, newTestRegistry(t), "ocf:heartbeat:IPaddr2")
	errc := make(chan error, 1)
	var out strings.Builder
	go func() {
		// NB: the thread stays locked and dies with the goroutine, so the
		// namespace never leaks into other goroutines.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		for _, args := range [][]string{
			{"link", "set", "lo", "up"},
			// A veth pair: the dummy link type needs a kernel module that
			// containers often lack.
			{"link", "add", "vt0", "type", "veth", "peer", "name", "vt1"},
			{"link", "set", "vt0", "up"},
			{"link", "set", "vt1", "up"},
			{"addr", "add", "192.0.2.1/24", "dev", "vt0"},
		} {
			if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				errc <- fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, b)
				return
			}
		}
		params := map[string]string{"ip": "192.0.2.50", "cidr_netmask": "24"}
		for _, step := range []struct {
			action string
			want   Code
		}{
			{ActionMonitor, CodeNotRunning}, {ActionStart, CodeOK}, {ActionMonitor, CodeOK},
			{ActionStop, CodeOK}, {ActionMonitor, CodeNotRunning}, {ActionStop, CodeOK},
		} {
			res := a.Exec(context.Background(), Request{Resource: "vip", Action: step.action, Params: params, Timeout: 20 * time.Second})
			out.WriteString(step.action + ": " + res.Code.String() + "\n" + res.Output)
			if res.Code != step.want {
				errc <- fmt.Errorf("%s gave %v (%v), want %v", step.action, res.Code, res.Err, step.want)
				return
			}
			if step.action == ActionStart {
				b, _ := exec.Command("ip", "-4", "addr", "show", "dev", "vt0").CombinedOutput()
				if !strings.Contains(string(b), "192.0.2.50/24") {
					errc <- fmt.Errorf("address not added: %s", b)
					return
				}
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == syscall.EPERM || errno == syscall.EINVAL) {
			t.Skipf("no network namespace here: %v", err)
		}
		t.Fatalf("%v\n%s", err, out.String())
	}
}
