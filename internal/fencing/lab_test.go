package fencing

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// labAgent returns the absolute path of internal/fencing/labagent/fence_vigil_lab.
func labAgent(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("labagent/fence_vigil_lab")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// labDevice is a fence_vigil_lab device over a fresh power directory.
func labDevice(t *testing.T, nodes ...string) (Device, string) {
	t.Helper()
	dir := t.TempDir()
	return Device{Name: "lab", Agent: labAgent(t), HostList: nodes,
		Params: map[string]string{"power_dir": dir, "power_timeout": "5"}}, dir
}

// writePgid writes <dir>/<node>.pgid as the lab harness does: the group id
// and its leader's start time.
func writePgid(t *testing.T, dir, node string, pgid int, start string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, node+".pgid"), []byte(fmt.Sprintf("%d %s\n", pgid, start)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestLabAgentMetadataAndValidate(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	ctx := testCtx(t)
	d, dir := labDevice(t, "node1")
	m, err := r.Metadata(ctx, d.Agent)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"off", "on", "reboot", "status", "monitor", "list", "metadata"} {
		if !m.HasAction(a) {
			t.Errorf("no action %s: %v", a, m.Actions)
		}
	}
	if p, ok := m.Param("power_dir"); !ok || !p.Required {
		t.Errorf("power_dir: %+v", p)
	}
	if m.hostArg() != "plug" {
		t.Errorf("hostArg %q", m.hostArg())
	}
	if err := r.Validate(ctx, d); err != nil {
		t.Fatal(err)
	}
	delete(d.Params, "power_dir")
	var pe *ParamError
	if err := r.Validate(ctx, d); !errors.As(err, &pe) || !slices.Equal(pe.Missing, []string{"power_dir"}) {
		t.Errorf("no power_dir: %v", err)
	}

	d.Params["power_dir"] = dir
	if res := r.Monitor(ctx, d); !res.OK() {
		t.Errorf("monitor: %+v", res)
	}
	writePgid(t, dir, "node1", 99999999, "")
	writePgid(t, dir, "node2", 99999999, "")
	if res := r.Run(ctx, d, "list", ""); !res.OK() || res.Output != "node1,node1\nnode2,node2\n" {
		t.Errorf("list: %+v", res)
	}
	d.Params["power_dir"] = filepath.Join(dir, "missing")
	if res := r.Monitor(ctx, d); res.OK() {
		t.Errorf("monitor of a missing power_dir: %+v", res)
	}
}

// The lab agent really powers off: every process of the node's group dies,
// and status is honest before and after.
func TestLabAgentPowersOffProcessGroup(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	ctx := testCtx(t)
	d, dir := labDevice(t, "node1")
	pgid := startGroup(t, 0)
	members := groupPids(pgid)
	writePgid(t, dir, "node1", pgid, procStat(pgid)[19])

	if st, res := r.Status(ctx, d, "node1"); st != PowerOn || !strings.Contains(res.Output, "Status: ON") {
		t.Fatalf("status of a running node: %v %+v", st, res)
	}
	levels, err := Plan("node1", nil, map[string]Device{"lab": d})
	if err != nil {
		t.Fatal(err)
	}
	o := r.Fence(ctx, "node1", levels, map[string]Device{"lab": d})
	if !o.OK || o.Confirmed != ConfirmedStatusOff {
		t.Fatalf("outcome %+v", o)
	}
	if !waitDead(members) {
		t.Fatalf("members of group %d still alive: %v", pgid, groupPids(pgid))
	}
	if left := groupPids(pgid); len(left) != 0 {
		t.Fatalf("group %d still has %v", pgid, left)
	}
	if !exists(filepath.Join(dir, "node1.off")) {
		t.Error("no node1.off marker")
	}
	if st, res := r.Status(ctx, d, "node1"); st != PowerOff {
		t.Fatalf("status after off: %v %+v", st, res)
	}
	// on removes the marker; it starts nothing, and status stays honest.
	if res := r.Run(ctx, d, "on", "node1"); !res.OK() {
		t.Fatalf("on: %+v", res)
	}
	if exists(filepath.Join(dir, "node1.off")) {
		t.Error("on left the marker")
	}
	if st, _ := r.Status(ctx, d, "node1"); st != PowerOff {
		t.Errorf("status after on (nothing restarted): %v", st)
	}
	// Off of a node already off succeeds.
	if res := r.Run(ctx, d, "off", "node1"); !res.OK() {
		t.Errorf("second off: %+v", res)
	}
}

// Status is honest about what the agent cannot see: without a .pgid file it
// is unknown (exit 1), and fencing fails. A .pgid file whose id now names
// someone else's group (the leader's start time differs) is stale: nothing
// is killed, and the node, whose group is gone, is off.
func TestLabAgentStaleAndMissing(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	ctx := testCtx(t)
	d, dir := labDevice(t, "node1", "node2")

	// No .pgid: the agent cannot tell; status unknown and fencing fails.
	if st, res := r.Status(ctx, d, "node1"); st != PowerUnknown || res.Code != 1 {
		t.Fatalf("status without .pgid: %v %+v", st, res)
	}
	d.Retries = -1
	o := r.Fence(ctx, "node1", [][]DeviceRef{{{"lab", "node1"}}}, map[string]Device{"lab": d})
	if o.OK {
		t.Fatalf("fenced a node it cannot see: %+v", o)
	}

	// Stale: the id is another group's now (start time differs).
	other := startGroup(t, 0)
	writePgid(t, dir, "node2", other, "1")
	if st, res := r.Status(ctx, d, "node2"); st != PowerOff {
		t.Fatalf("status of a stale .pgid: %v %+v", st, res)
	}
	if res := r.Run(ctx, d, "off", "node2"); !res.OK() {
		t.Fatalf("off of a stale .pgid: %+v", res)
	}
	if len(groupPids(other)) != 3 {
		t.Fatalf("the agent killed an unrelated group: %v left", groupPids(other))
	}

	// Bad plugs are refused.
	for _, plug := range []string{"../etc", "a b", "-1"} {
		if res := r.Run(ctx, d, "status", plug); res.Code != 1 {
			t.Errorf("plug %q: %+v", plug, res)
		}
	}
}

// netns mode: every process in the node's network namespace dies, also
// those that left the node's process group.
func TestLabAgentNetns(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("netns mode needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8)")
	}
	ns := "vigil-fence-test-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })

	r := NewRunner(Options{})
	ctx := testCtx(t)
	d, dir := labDevice(t, "node1")
	// The node: a group in the namespace, one of whose children escapes
	// into a session of its own.
	pgid := startGroup(t, 2, "ip", "netns", "exec", ns, "sh", "-c", "setsid sleep 101 & sleep 100 & wait")
	var inNS []int
	deadline := time.Now().Add(10 * time.Second)
	for len(inNS) < 3 && time.Now().Before(deadline) {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		inNS = nil
		for _, f := range strings.Fields(string(out)) {
			p, _ := strconv.Atoi(f)
			inNS = append(inNS, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(inNS) < 3 {
		t.Fatalf("namespace %s holds %v", ns, inNS)
	}
	t.Cleanup(func() {
		for _, p := range inNS {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	writePgid(t, dir, "node1", pgid, procStat(pgid)[19])
	if err := os.WriteFile(filepath.Join(dir, "node1.netns"), []byte(ns+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if st, res := r.Status(ctx, d, "node1"); st != PowerOn {
		t.Fatalf("status before: %v %+v", st, res)
	}
	o := r.Fence(ctx, "node1", [][]DeviceRef{{{"lab", "node1"}}}, map[string]Device{"lab": d})
	if !o.OK || o.Confirmed != ConfirmedStatusOff {
		t.Fatalf("outcome %+v", o)
	}
	if !waitDead(inNS) {
		t.Fatalf("processes of namespace %s survived: %v", ns, inNS)
	}
	if st, res := r.Status(ctx, d, "node1"); st != PowerOff {
		t.Fatalf("status after: %v %+v", st, res)
	}
}
