package agents

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/qemu"
	"github.com/vigil-ha/vigil/internal/qemu/guestimage"
	"github.com/vigil-ha/vigil/internal/qemu/qmp"
)

// --- parameters (pure) ---

func TestVMParams(t *testing.T) {
	ds := func(name string) (string, bool) {
		if name == "ds1" {
			return "/srv/ds1", true
		}
		return "", false
	}
	cases := []struct {
		params map[string]string
		code   Code // 0: valid
		errHas string
		check  func(t *testing.T, c vmConfig)
	}{
		{params: map[string]string{}, check: func(t *testing.T, c vmConfig) {
			if c.spec.CPUs != 1 || c.spec.MemoryMiB != 128 || c.spec.Machine != "q35" || c.stopTimeout != 60*time.Second || c.leaseRoot != "" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{params: map[string]string{"cpus": "2", "memory": "1G", "disk": "ds1:vm/a.qcow2,/var/lib/b.img,ds1:c:raw", "nic": "user,bridge:br0"},
			check: func(t *testing.T, c vmConfig) {
				if c.spec.CPUs != 2 || c.spec.MemoryMiB != 1024 {
					t.Errorf("cpus/memory: %+v", c.spec)
				}
				want := []qemu.Disk{{Path: "/srv/ds1/vm/a.qcow2", Format: qemu.FormatQcow2}, {Path: "/var/lib/b.img", Format: qemu.FormatRaw}, {Path: "/srv/ds1/c", Format: qemu.FormatRaw}}
				if len(c.spec.Disks) != 3 {
					t.Fatalf("disks %+v", c.spec.Disks)
				}
				for i := range want {
					if c.spec.Disks[i] != want[i] {
						t.Errorf("disk %d: %+v, want %+v", i, c.spec.Disks[i], want[i])
					}
				}
				if c.leaseDS != "ds1" || c.leaseRoot != "/srv/ds1" {
					t.Errorf("lease on %q %q", c.leaseDS, c.leaseRoot)
				}
				if len(c.spec.NICs) != 2 || c.spec.NICs[1].Bridge != "br0" || c.spec.NICs[0].MAC == "" || c.spec.NICs[0].MAC == c.spec.NICs[1].MAC {
					t.Errorf("nics %+v", c.spec.NICs)
				}
			}},
		{params: map[string]string{"memory": "512", "migrate_bandwidth": "100M", "migrate_downtime": "50ms", "stop_timeout": "0", "machine": "none"},
			check: func(t *testing.T, c vmConfig) {
				if c.spec.MemoryMiB != 512 || c.migrate.MaxBandwidth != 100<<20 || c.migrate.DowntimeLimit != 50*time.Millisecond || c.stopTimeout != 0 {
					t.Errorf("%+v", c)
				}
			}},
		{params: map[string]string{"memory": "12X"}, code: CodeErrConfigured, errHas: "memory"},
		{params: map[string]string{"memory": "1536K"}, code: CodeErrConfigured, errHas: "whole number of MiB"},
		{params: map[string]string{"cpus": "0"}, code: CodeErrConfigured, errHas: "cpus"},
		{params: map[string]string{"disk": "ds1:disk"}, code: CodeErrConfigured, errHas: "cannot tell the format"},
		{params: map[string]string{"disk": "ds1:../etc/passwd.raw"}, code: CodeErrConfigured, errHas: "stay inside"},
		{params: map[string]string{"disk": "ds1:.vigil/leases/x.raw"}, code: CodeErrConfigured, errHas: "stay inside"},
		{params: map[string]string{"disk": "relative.qcow2"}, code: CodeErrConfigured, errHas: "DATASTORE:path"},
		{params: map[string]string{"disk": "ds9:a.qcow2"}, code: CodeErrInstalled, errHas: `datastore "ds9" is not known`},
		{params: map[string]string{"disk": "ds9:a.qcow2", "memory": "x"}, code: CodeErrConfigured, errHas: "ds9"},
		{params: map[string]string{"nic": "wifi"}, code: CodeErrConfigured, errHas: "nic 0"},
		{params: map[string]string{"machine": "none", "nic": "user"}, code: CodeErrConfigured, errHas: "machine none"},
		{params: map[string]string{"extra_args": "-daemonize"}, code: CodeErrConfigured, errHas: "managed by vigil"},
		{params: map[string]string{"stop_timeout": "soon"}, code: CodeErrConfigured, errHas: "stop_timeout"},
	}
	for i, tc := range cases {
		c, err := parseVMParams("vm1", tc.params, ds)
		if tc.code == 0 {
			if err != nil {
				t.Errorf("%d: %v", i, err)
				continue
			}
			tc.check(t, c)
			continue
		}
		if err == nil {
			t.Errorf("%d: %v accepted", i, tc.params)
			continue
		}
		if got := codeOfParamErr(err); got != tc.code || !errors.Is(err, ErrInvalidParams) && tc.code == CodeErrConfigured {
			t.Errorf("%d: code %v, want %v (%v)", i, got, tc.code, err)
		}
		if !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%d: error %q lacks %q", i, err, tc.errHas)
		}
	}
	if vmMAC("vm1", 0) != vmMAC("vm1", 0) || vmMAC("vm1", 0) == vmMAC("vm2", 0) || !strings.HasPrefix(vmMAC("vm1", 0), "52:54:00:") {
		t.Errorf("MACs: %s %s", vmMAC("vm1", 0), vmMAC("vm2", 0))
	}
}

func TestVMRunDirTooLong(t *testing.T) {
	a := &vmAgent{dir: "/" + strings.Repeat("d", 100)}
	_, err := a.runDir("vm1")
	if err == nil || codeOfParamErr(err) != CodeErrInstalled || !strings.Contains(err.Error(), "unix sockets allow 107") {
		t.Fatalf("err %v", err)
	}
}

// --- helpers for tests with real QEMU ---

func needVMTools(t *testing.T) {
	t.Helper()
	for _, bin := range []string{qemu.DefaultBinary, "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skip(bin + " not installed")
		}
	}
}

// testLease are short disk lease timings, so that takeovers take a second.
// Settle is the most it may be: the race detector slows the synced writes.
var testLease = datastore.Options{LeaseTime: time.Second, Settle: 250 * time.Millisecond}

// newTestDatastore initializes a datastore folder ds1 with a small qcow2
// image per name in images.
func newTestDatastore(t *testing.T, images ...string) string {
	t.Helper()
	root := t.TempDir()
	if err := datastore.Init(context.Background(), root, datastore.Identity{Cluster: "test", Datastore: "ds1"}); err != nil {
		t.Fatal(err)
	}
	for _, img := range images {
		out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(root, img), "16M").CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	return root
}

// vmNode is one node's vigil:vm, with what it was notified of.
type vmNode struct {
	name     string
	stateDir string
	a        *vmAgent

	mu       sync.Mutex
	notified []string
	kick     chan string
}

func newVMNode(t *testing.T, name, stateDir, dsRoot string) *vmNode {
	t.Helper()
	return newVMNodeLease(t, name, stateDir, dsRoot, testLease)
}

// newVMNodeLease is newVMNode with the node's own disk lease timings.
func newVMNodeLease(t *testing.T, name, stateDir, dsRoot string, lease datastore.Options) *vmNode {
	t.Helper()
	n := &vmNode{name: name, stateDir: stateDir, kick: make(chan string, 64)}
	r := NewRegistry(Options{
		StateDir:    stateDir,
		Datastores:  func(ds string) (string, bool) { return dsRoot, ds == "ds1" },
		DiskLease:   lease,
		Incarnation: "boot-of-" + name, // each test node is its own host
	})
	r.SetNotify(func(res string) {
		n.mu.Lock()
		n.notified = append(n.notified, res)
		n.mu.Unlock()
		select {
		case n.kick <- res:
		default:
		}
	})
	ag, err := r.Get("vigil:vm")
	if err != nil {
		t.Fatal(err)
	}
	n.a = ag.(*vmAgent)
	return n
}

// stub is a near-free VM: machine none, 16 MiB, one disk on ds1, quit at
// once on stop.
func stubParams(img string) map[string]string {
	return map[string]string{"machine": "none", "memory": "16M", "accel": "tcg", "disk": "ds1:" + img, "stop_timeout": "0"}
}

func (n *vmNode) req(res, action string, params map[string]string, meta map[string]string) Request {
	return Request{Resource: res, Action: action, Params: params, Meta: meta, Node: n.name, Timeout: 20 * time.Second}
}

// cleanupVM stops res on n at the end of the test, then lets go of
// everything (so no goroutine outlives the test).
func (n *vmNode) cleanupVM(t *testing.T, res string, params map[string]string) {
	t.Cleanup(func() {
		p := map[string]string{}
		for k, v := range params {
			p[k] = v
		}
		p["stop_timeout"] = "0"
		if r := n.a.Exec(context.Background(), n.req(res, ActionStop, p, nil)); r.Code != CodeOK {
			t.Errorf("cleanup: stop %s on %s: %v %v", res, n.name, r.Code, r.Err)
		}
		n.a.detachAll()
	})
}

func (n *vmNode) waitNotified(t *testing.T, res string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got := <-n.kick:
			if got == res {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no notification for %s", n.name, res)
		}
	}
}

func readLease(t *testing.T, root, res string) datastore.Record {
	t.Helper()
	rec, err := datastore.Read(context.Background(), root, res)
	if err != nil {
		t.Fatalf("read lease of %s: %v", res, err)
	}
	return rec
}

func qemuPid(t *testing.T, n *vmNode, res string) int {
	t.Helper()
	n.a.mu.Lock()
	r := n.a.vms[res]
	n.a.mu.Unlock()
	if r == nil {
		t.Fatalf("%s: no QEMU for %s", n.name, res)
	}
	return r.vm.Pid()
}

func waitGoneOrFail(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if p, err := readProc(pid); err == nil && p.state == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU pid %d still alive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- real QEMU ---

// Start, monitor, stop, with the disk lease taken and released.
func TestVMStartMonitorStop(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n := newVMNode(t, "n1", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n.cleanupVM(t, "vm1", p)

	run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeOK)
	if rec := readLease(t, root, "vm1"); rec.Holder.Node != "n1" || rec.Released {
		t.Fatalf("lease %+v, want held by n1", rec)
	}
	if res := run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK); !strings.Contains(res.Output, "already running") {
		t.Errorf("second start: %q", res.Output)
	}
	pid := qemuPid(t, n, "vm1")
	run(t, n.a, n.req("vm1", ActionStop, p, nil), CodeOK)
	waitGoneOrFail(t, pid)
	if rec := readLease(t, root, "vm1"); !rec.Released {
		t.Fatalf("lease %+v, want released", rec)
	}
	run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
	run(t, n.a, n.req("vm1", ActionStop, p, nil), CodeOK) // idempotent
	if len(n.notified) != 0 {
		t.Errorf("notified %v for our own stop", n.notified)
	}
}

// A missing image on a datastore is a configuration error, and the lease
// taken for the attempt is released.
func TestVMStartMissingImage(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t)
	n := newVMNode(t, "n1", t.TempDir(), root)
	p := stubParams("nope.qcow2")
	n.cleanupVM(t, "vm1", p)
	res := run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeErrConfigured)
	if !strings.Contains(res.Err.Error(), "nope.qcow2") {
		t.Errorf("err %v", res.Err)
	}
	if rec := readLease(t, root, "vm1"); !rec.Released {
		t.Errorf("lease %+v, want released", rec)
	}
}

// After an agent restart QEMU still runs: the probe attaches to it and
// takes its lease back at once (it names this host's incarnation).
func TestVMProbeAfterAgentRestart(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	state := t.TempDir()
	before := newVMNode(t, "n1", state, root)
	p := stubParams("vm1.qcow2")
	run(t, before.a, before.req("vm1", ActionStart, p, nil), CodeOK)
	pid := qemuPid(t, before, "vm1")
	before.a.detachAll() // the agent is gone; QEMU runs on

	after := newVMNode(t, "n1", state, root)
	after.cleanupVM(t, "vm1", p)
	start := time.Now()
	run(t, after.a, after.req("vm1", ActionMonitor, p, nil), CodeOK)
	if d := time.Since(start); d > testLease.LeaseTime {
		t.Errorf("probe took %v: the lease was not taken back at once", d)
	}
	if got := qemuPid(t, after, "vm1"); got != pid {
		t.Errorf("attached to pid %d, want %d", got, pid)
	}
	// Renewed by the new agent: still held well after the lease time.
	time.Sleep(2 * testLease.LeaseTime)
	if rec := readLease(t, root, "vm1"); rec.Holder.Node != "n1" || rec.Released {
		t.Fatalf("lease %+v", rec)
	}
	run(t, after.a, after.req("vm1", ActionMonitor, p, nil), CodeOK)
	run(t, after.a, after.req("vm1", ActionStop, p, nil), CodeOK)
	waitGoneOrFail(t, pid)
}

// Issue 5, item 5: with the VM running on n1, a start on n2 (fencing off,
// a forced attempt) is refused by the disk lease, and the error names n1.
func TestVMDiskLeaseRefusesSecondNode(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n1 := newVMNode(t, "n1", t.TempDir(), root)
	n2 := newVMNode(t, "n2", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n1.cleanupVM(t, "vm1", p)
	n2.cleanupVM(t, "vm1", p)

	run(t, n1.a, n1.req("vm1", ActionStart, p, nil), CodeOK)
	res := run(t, n2.a, n2.req("vm1", ActionStart, p, nil), CodeErrGeneric)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "disk lease of vm1 is held by n1") {
		t.Fatalf("refusal %v, want the holder named", res.Err)
	}
	if _, err := os.Stat(filepath.Join(n2.stateDir, "vm", "vm1", "qemu.pid")); err == nil {
		t.Error("n2 started a QEMU")
	}
	run(t, n1.a, n1.req("vm1", ActionMonitor, p, nil), CodeOK)
	run(t, n2.a, n2.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
}

// A lost disk lease kills QEMU at once, and the monitor reports a failure
// (not a guest shutdown).
func TestVMLeaseLostKillsQEMU(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n := newVMNode(t, "n1", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n.cleanupVM(t, "vm1", p)
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	pid := qemuPid(t, n, "vm1")

	// The DC fenced n1 (as it believes) and n2 takes the lease over.
	thief, err := datastore.AcquireFenced(context.Background(), root, "vm1",
		datastore.Holder{Node: "n2", Incarnation: "boot-of-n2"}, readLease(t, root, "vm1").Holder, testLease)
	if err != nil {
		t.Fatal(err)
	}
	defer thief.Close()

	n.waitNotified(t, "vm1")
	waitGoneOrFail(t, pid)
	res := run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
	if res.StoppedByGuest || !strings.Contains(res.Output, "lease") {
		t.Errorf("monitor after loss: %+v", res)
	}
	if rec := readLease(t, root, "vm1"); rec.Holder.Node != "n2" {
		t.Errorf("lease %+v, want n2's", rec)
	}
}

// SIGKILL of QEMU is a failure: notified at once, NOT_RUNNING without the
// guest marker, lease released so another node can start it at once.
func TestVMKilledIsFailure(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n := newVMNode(t, "n1", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n.cleanupVM(t, "vm1", p)
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	pid := qemuPid(t, n, "vm1")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	n.waitNotified(t, "vm1")
	res := run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
	if res.StoppedByGuest || !strings.Contains(res.Output, "killed") {
		t.Errorf("monitor: %+v", res)
	}
	if rec := readLease(t, root, "vm1"); !rec.Released {
		t.Errorf("lease %+v, want released", rec)
	}
	// Recovery: it starts again (here or elsewhere).
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeOK)
}

// The guest's own SHUTDOWN (guest=true, guest-shutdown) is recorded: the
// monitor says NOT_RUNNING with StoppedByGuest, and a start clears it.
// machine none has no guest, so the event is fed to the agent as QEMU
// would send it, and QEMU is then made to exit.
func TestVMGuestShutdownMarker(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n := newVMNode(t, "n1", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n.cleanupVM(t, "vm1", p)
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	n.a.mu.Lock()
	r := n.a.vms["vm1"]
	n.a.mu.Unlock()
	n.a.onEvent(r, qmp.Event{Name: qemu.EventShutdown, Data: []byte(`{"guest":true,"reason":"guest-shutdown"}`)})
	n.waitNotified(t, "vm1")
	if err := r.vm.Kill(); err != nil { // QEMU exits after the guest's shutdown
		t.Fatal(err)
	}
	waitGoneOrFail(t, r.vm.Pid())
	res := run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
	if !res.StoppedByGuest || !strings.Contains(res.Output, "shut itself down") {
		t.Fatalf("monitor: %+v", res)
	}
	if rec := readLease(t, root, "vm1"); !rec.Released {
		t.Errorf("lease %+v, want released", rec)
	}
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	if res := run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeOK); res.StoppedByGuest {
		t.Error("marker survived a start")
	}
}

// prepare returns the target's listening URI.
func prepare(t *testing.T, n *vmNode, res string, p map[string]string) string {
	t.Helper()
	out := run(t, n.a, n.req(res, ActionMigrateFrom, p, map[string]string{MetaMigratePhase: MigratePhasePrepare, MetaMigrateListen: "127.0.0.1"}), CodeOK)
	uri := strings.TrimSpace(out.Output)
	if !strings.HasPrefix(uri, "tcp:127.0.0.1:") || strings.HasSuffix(uri, ":0") {
		t.Fatalf("prepare returned %q", uri)
	}
	return uri
}

// Live migration between two nodes sharing a datastore: the source quits,
// the target runs, the lease moves, progress was written.
func TestVMMigration(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n1 := newVMNode(t, "n1", t.TempDir(), root)
	n2 := newVMNode(t, "n2", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n1.cleanupVM(t, "vm1", p)
	n2.cleanupVM(t, "vm1", p)
	run(t, n1.a, n1.req("vm1", ActionStart, p, nil), CodeOK)
	srcPid := qemuPid(t, n1, "vm1")

	uri := prepare(t, n2, "vm1", p)
	// The destination runs no guest yet: a probe must not call it stopped.
	run(t, n2.a, n2.req("vm1", ActionMonitor, p, nil), CodeErrGeneric)
	to := n1.req("vm1", ActionMigrateTo, p, map[string]string{MetaMigrateURI: uri})
	to.MigrateTarget = "n2"
	res := run(t, n1.a, to, CodeOK)
	t.Logf("migrate_to: %s", res.Output)
	waitGoneOrFail(t, srcPid)
	// Between migrate_to and finish the disk is handed to n2 alone, never
	// free: a third node may not take it at once.
	if rec := readLease(t, root, "vm1"); rec.HandOver != "n2" || rec.Released || rec.Holder.Node != "n1" {
		t.Fatalf("lease after migrate_to %+v, want n1's handed over to n2", rec)
	}
	n3 := newVMNodeLease(t, "n3", t.TempDir(), root, datastore.Options{LeaseTime: 60 * time.Second, Settle: 250 * time.Millisecond})
	n3.cleanupVM(t, "vm1", p)
	start := n3.req("vm1", ActionStart, p, nil)
	start.Timeout = 2 * time.Second
	if res := n3.a.Exec(context.Background(), start); res.Code == CodeOK {
		t.Fatal("a third node took the disk handed over to n2")
	}
	run(t, n2.a, n2.req("vm1", ActionMigrateFrom, p, map[string]string{MetaMigratePhase: MigratePhaseFinish}), CodeOK)

	run(t, n1.a, n1.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
	run(t, n2.a, n2.req("vm1", ActionMonitor, p, nil), CodeOK)
	if rec := readLease(t, root, "vm1"); rec.Holder.Node != "n2" || rec.Released {
		t.Fatalf("lease %+v, want held by n2", rec)
	}
	prog, err := ReadVMMigration(n1.stateDir, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if !prog.Done || prog.Status != "completed" || prog.Target != "n2" || prog.URI != uri {
		t.Errorf("progress %+v", prog)
	}
	run(t, n1.a, n1.req("vm1", ActionStop, p, nil), CodeOK) // the DC's stop on the source: nothing there
	run(t, n2.a, n2.req("vm1", ActionMonitor, p, nil), CodeOK)
}

// A migration to nowhere fails and leaves the source running with its
// lease.
func TestVMMigrationBadURIKeepsSource(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n1 := newVMNode(t, "n1", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n1.cleanupVM(t, "vm1", p)
	run(t, n1.a, n1.req("vm1", ActionStart, p, nil), CodeOK)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	res := run(t, n1.a, n1.req("vm1", ActionMigrateTo, p, map[string]string{MetaMigrateURI: "tcp:" + addr}), CodeErrGeneric)
	if !strings.Contains(res.Err.Error(), "keeps running here") {
		t.Errorf("err %v", res.Err)
	}
	run(t, n1.a, n1.req("vm1", ActionMonitor, p, nil), CodeOK)
	time.Sleep(2 * testLease.LeaseTime)
	if rec := readLease(t, root, "vm1"); rec.Holder.Node != "n1" || rec.Released {
		t.Fatalf("lease %+v, want still n1's", rec)
	}
	run(t, n1.a, n1.req("vm1", ActionMigrateTo, p, nil), CodeErrArgs)
}

// The target dies in the middle of the migration: the source keeps running
// with its lease.
func TestVMMigrationTargetKilledKeepsSource(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n1 := newVMNode(t, "n1", t.TempDir(), root)
	n2 := newVMNode(t, "n2", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	p["migrate_bandwidth"] = "1K" // slow enough to be caught mid-way
	n1.cleanupVM(t, "vm1", p)
	n2.cleanupVM(t, "vm1", p)
	run(t, n1.a, n1.req("vm1", ActionStart, p, nil), CodeOK)
	uri := prepare(t, n2, "vm1", p)
	dstPid := qemuPid(t, n2, "vm1")

	done := make(chan Result, 1)
	go func() {
		done <- n1.a.Exec(context.Background(), n1.req("vm1", ActionMigrateTo, p, map[string]string{MetaMigrateURI: uri}))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, err := ReadVMMigration(n1.stateDir, "vm1"); err == nil && m.Status == "active" && m.TransferredBytes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the migration never became active")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(dstPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.Code != CodeErrGeneric || !strings.Contains(res.Err.Error(), "keeps running here") {
		t.Fatalf("migrate_to: %v %v", res.Code, res.Err)
	}
	run(t, n1.a, n1.req("vm1", ActionMonitor, p, nil), CodeOK)
	if rec := readLease(t, root, "vm1"); rec.Holder.Node != "n1" || rec.Released {
		t.Fatalf("lease %+v, want n1's", rec)
	}
	if m, _ := ReadVMMigration(n1.stateDir, "vm1"); !m.Done || m.Status != "failed" {
		t.Errorf("progress %+v", m)
	}
	// The target's leftover is gone; its stop is a no-op.
	run(t, n2.a, n2.req("vm1", ActionStop, p, nil), CodeOK)
	run(t, n2.a, n2.req("vm1", ActionMonitor, p, nil), CodeNotRunning)
}

// --- the real guest ---

// guestParams boots the busybox test guest, or skips.
func guestParams(t *testing.T) map[string]string {
	t.Helper()
	needVMTools(t)
	if testing.Short() {
		t.Skip("boots a guest under TCG: seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img, err := guestimage.Ensure(ctx, "")
	if err != nil {
		t.Skipf("no guest image: %v", err)
	}
	return map[string]string{
		"memory": "128M", "kernel": img.Kernel, "initrd": img.Initrd, "append": img.Cmdline,
		"disk": "ds1:vm1.qcow2", "stop_timeout": "10s",
	}
}

func waitConsoleLog(t *testing.T, path, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console never said %q; it holds:\n%s", want, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The real guest boots (its counter shows on the console log) and a
// poweroff from inside the guest stays down: StoppedByGuest.
func TestVMGuestBootAndPoweroff(t *testing.T) {
	p := guestParams(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n := newVMNode(t, "n1", t.TempDir(), root)
	n.cleanupVM(t, "vm1", p)
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	dir := filepath.Join(n.stateDir, "vm", "vm1")
	waitConsoleLog(t, filepath.Join(dir, "console.log"), "vigil-guest counter 2 ", 60*time.Second)
	run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeOK)

	c, err := net.Dial("unix", filepath.Join(dir, "console.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("poweroff\n")); err != nil {
		t.Fatal(err)
	}
	n.waitNotified(t, "vm1")
	deadline := time.Now().Add(20 * time.Second)
	var res Result
	for {
		res = n.a.Exec(context.Background(), n.req("vm1", ActionMonitor, p, nil))
		if res.Code != CodeOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res.Code != CodeNotRunning || !res.StoppedByGuest {
		t.Fatalf("after the guest's poweroff: %v %+v", res.Code, res)
	}
	if rec := readLease(t, root, "vm1"); !rec.Released {
		t.Errorf("lease %+v, want released", rec)
	}
}

// stop asks the real guest to power down (ACPI) and it does, well before
// stop_timeout; that is not the guest's own wish.
func TestVMGuestACPIStop(t *testing.T) {
	p := guestParams(t)
	p["stop_timeout"] = "30s"
	root := newTestDatastore(t, "vm1.qcow2")
	n := newVMNode(t, "n1", t.TempDir(), root)
	n.cleanupVM(t, "vm1", p)
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	dir := filepath.Join(n.stateDir, "vm", "vm1")
	waitConsoleLog(t, filepath.Join(dir, "console.log"), "vigil-guest counter 2 ", 60*time.Second)
	start := time.Now()
	run(t, n.a, n.req("vm1", ActionStop, p, nil), CodeOK)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("stop took %v: the guest did not power down on ACPI", d)
	}
	waitConsoleLog(t, filepath.Join(dir, "console.log"), "reason=acpi-power-button", time.Second)
	if res := run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeNotRunning); res.StoppedByGuest {
		t.Error("our own stop was taken for the guest's wish")
	}
}

// Live migration of the real guest: its counter goes on on the target with
// the same boot id (no restart), and the lease moves.
func TestVMGuestMigrationKeepsCounter(t *testing.T) {
	p := guestParams(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n1 := newVMNode(t, "n1", t.TempDir(), root)
	n2 := newVMNode(t, "n2", t.TempDir(), root)
	n1.cleanupVM(t, "vm1", p)
	n2.cleanupVM(t, "vm1", p)
	run(t, n1.a, n1.req("vm1", ActionStart, p, nil), CodeOK)
	srcLog := filepath.Join(n1.stateDir, "vm", "vm1", "console.log")
	waitConsoleLog(t, srcLog, "vigil-guest counter 3 ", 60*time.Second)
	b, _ := os.ReadFile(srcLog)
	boot := ""
	for _, line := range strings.Split(string(b), "\n") {
		if _, id, ok := strings.Cut(line, "vigil-guest counter 3 boot="); ok {
			boot = strings.TrimSpace(id)
		}
	}
	if boot == "" {
		t.Fatalf("no boot id in:\n%s", b)
	}

	uri := prepare(t, n2, "vm1", p)
	res := run(t, n1.a, n1.req("vm1", ActionMigrateTo, p, map[string]string{MetaMigrateURI: uri}), CodeOK)
	t.Logf("migrate_to: %s", res.Output)
	run(t, n2.a, n2.req("vm1", ActionMigrateFrom, p, map[string]string{MetaMigratePhase: MigratePhaseFinish}), CodeOK)
	dstLog := filepath.Join(n2.stateDir, "vm", "vm1", "console.log")
	waitConsoleLog(t, dstLog, "boot="+boot, 10*time.Second)
	if b, _ := os.ReadFile(dstLog); strings.Contains(string(b), "vigil-guest boot ") {
		t.Errorf("the guest booted again on the target:\n%s", b)
	}
	run(t, n2.a, n2.req("vm1", ActionMonitor, p, nil), CodeOK)
	if rec := readLease(t, root, "vm1"); rec.Holder.Node != "n2" {
		t.Errorf("lease %+v, want n2's", rec)
	}
}

// A datastore that is not mounted here (no marker: an empty mountpoint)
// cannot carry the VM's lease: start refuses with ERR_INSTALLED (another
// node may run it) and starts nothing.
func TestVMStartOnUnmountedDatastore(t *testing.T) {
	needVMTools(t)
	root := t.TempDir() // never initialized
	n := newVMNode(t, "n1", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	n.cleanupVM(t, "vm1", p)
	res := run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeErrInstalled)
	if !errors.Is(res.Err, datastore.ErrNotInitialized) || !strings.Contains(res.Err.Error(), "not usable on this node") {
		t.Errorf("err %v", res.Err)
	}
	if _, err := os.Stat(filepath.Join(n.stateDir, "vm", "vm1", "qemu.pid")); err == nil {
		t.Error("QEMU started")
	}
}

// A stop right after an agent restart (QEMU attached to, its lease not yet
// taken back) still leaves the lease released for the next node.
func TestVMStopAfterAgentRestartReleasesLease(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	state := t.TempDir()
	before := newVMNode(t, "n1", state, root)
	p := stubParams("vm1.qcow2")
	run(t, before.a, before.req("vm1", ActionStart, p, nil), CodeOK)
	pid := qemuPid(t, before, "vm1")
	before.a.detachAll()

	after := newVMNode(t, "n1", state, root)
	after.cleanupVM(t, "vm1", p)
	run(t, after.a, after.req("vm1", ActionStop, p, nil), CodeOK)
	waitGoneOrFail(t, pid)
	if rec := readLease(t, root, "vm1"); !rec.Released {
		t.Fatalf("lease %+v, want released", rec)
	}
}

// A node the cluster proved down (req.DownNodes) loses its disk lease at
// once: the next node need not wait out the lease time. Without the proof
// it must wait (TestVMDiskLeaseRefusesSecondNode: a live holder refuses).
func TestVMTakesLeaseFromNodeProvenDown(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n1 := newVMNode(t, "n1", t.TempDir(), root)
	// n2 would wait out a 60 s lease time, far past the start's 20 s
	// timeout: the start succeeds only by the proof.
	n2 := newVMNodeLease(t, "n2", t.TempDir(), root, datastore.Options{LeaseTime: 60 * time.Second, Settle: 250 * time.Millisecond})
	p := stubParams("vm1.qcow2")
	n2.cleanupVM(t, "vm1", p)
	run(t, n1.a, n1.req("vm1", ActionStart, p, nil), CodeOK)
	pid := qemuPid(t, n1, "vm1")
	// n1 is powered off: its QEMU dies and its agent renews nothing more.
	n1.a.detachAll()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGoneOrFail(t, pid)

	req := n2.req("vm1", ActionStart, p, nil)
	req.DownNodes = []string{"n1"}
	run(t, n2.a, req, CodeOK)
	if h := readLease(t, root, "vm1").Holder; h.Node != "n2" {
		t.Fatalf("lease holder %+v, want n2", h)
	}
}

// leave-running: the lease says so for its whole life, the agent reports
// the VM as kept (guarded until the lease's validity), and a node proven
// down by its watchdog alone is not taken from at once: the start waits
// for the lease to stand still, and the live holder keeps it (the start
// fails naming it). A fence device's proof still takes it at once.
func TestVMLeaveRunningLeaseIsNotTakenOnAWatchdogProof(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	n1 := newVMNode(t, "n1", t.TempDir(), root)
	n2 := newVMNode(t, "n2", t.TempDir(), root)
	p := stubParams("vm1.qcow2")
	p["isolation_response"] = IsolationLeaveRunning
	n1.cleanupVM(t, "vm1", p)
	n2.cleanupVM(t, "vm1", p)
	run(t, n1.a, n1.req("vm1", ActionStart, p, nil), CodeOK)
	if rec := readLease(t, root, "vm1"); !rec.KeepOnIsolation || rec.Holder.Node != "n1" {
		t.Fatalf("lease %+v, want n1's with KeepOnIsolation", rec)
	}
	until, ok := n1.a.KeepsRunning("vm1")
	if !ok || !until.After(time.Now()) {
		t.Fatalf("KeepsRunning: %v %v, want a guard in the future", until, ok)
	}
	if _, ok := n2.a.KeepsRunning("vm1"); ok {
		t.Fatal("n2 keeps a VM it does not run")
	}

	req := n2.req("vm1", ActionStart, p, nil)
	req.DownNodes, req.WatchdogDown = []string{"n1"}, []string{"n1"}
	res := run(t, n2.a, req, CodeErrGeneric)
	if !datastore.IsHeld(res.Err) || !strings.Contains(res.Err.Error(), "n1") {
		t.Fatalf("start on a watchdog proof: %v, want the lease held by n1", res.Err)
	}
	if _, ok := n1.a.KeepsRunning("vm1"); !ok {
		t.Fatal("n1 lost its VM to a start on a watchdog proof")
	}

	// A fence device's proof: n1 is off.
	pid := qemuPid(t, n1, "vm1")
	n1.a.detachAll()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGoneOrFail(t, pid)
	req.WatchdogDown = nil
	run(t, n2.a, req, CodeOK)
	if h := readLease(t, root, "vm1").Holder; h.Node != "n2" {
		t.Fatalf("lease holder %+v, want n2", h)
	}
}

// The isolation response: a stop the node runs on its own after losing
// quorum (Request.SelfStop) with isolation_response=poweroff quits QEMU
// without asking the guest (no ACPI event reaches it), and lets the disk
// lease go like any stop; an ordinary stop of the same VM still asks.
func TestVMIsolationResponsePowerOff(t *testing.T) {
	p := guestParams(t)
	p["stop_timeout"] = "30s"
	p["isolation_response"] = IsolationPowerOff
	root := newTestDatastore(t, "vm1.qcow2")
	n := newVMNode(t, "n1", t.TempDir(), root)
	n.cleanupVM(t, "vm1", p)
	dir := filepath.Join(n.stateDir, "vm", "vm1")
	logPath := filepath.Join(dir, "console.log")

	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	waitConsoleLog(t, logPath, "vigil-guest counter 2 ", 60*time.Second)
	req := n.req("vm1", ActionStop, p, nil)
	req.SelfStop = true
	run(t, n.a, req, CodeOK)
	if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "reason=acpi-power-button") {
		t.Fatalf("the isolation response powered off through the guest:\n%s", b)
	}
	if rec := readLease(t, root, "vm1"); !rec.Released {
		t.Errorf("lease %+v after the isolation response, want released", rec)
	}
	if res := run(t, n.a, n.req("vm1", ActionMonitor, p, nil), CodeNotRunning); res.StoppedByGuest {
		t.Error("the isolation response was taken for the guest's own wish")
	}

	// The same VM stopped by the cluster (not isolated) is shut down.
	if err := os.Remove(logPath); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	run(t, n.a, n.req("vm1", ActionStart, p, nil), CodeOK)
	waitConsoleLog(t, logPath, "vigil-guest counter 2 ", 60*time.Second)
	run(t, n.a, n.req("vm1", ActionStop, p, nil), CodeOK)
	waitConsoleLog(t, logPath, "reason=acpi-power-button", time.Second)
}

func TestVMIsolationResponseParam(t *testing.T) {
	for i, tc := range []struct {
		v    string
		ok   bool
		want string
	}{{"", true, IsolationShutdown}, {"shutdown", true, IsolationShutdown}, {"poweroff", true, IsolationPowerOff},
		{"leave-running", true, IsolationLeaveRunning}, {"reboot", false, ""}} {
		ds := func(string) (string, bool) { return "/srv/ds1", true }
		c, err := parseVMParams("vm1", map[string]string{"isolation_response": tc.v, "disk": "ds1:vm1.qcow2"}, ds)
		if tc.ok != (err == nil) || (tc.ok && c.isolation != tc.want) {
			t.Errorf("%d %q: isolation %q, err %v", i, tc.v, c.isolation, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "isolation_response")) {
			t.Errorf("%d %q: error %v does not name the parameter", i, tc.v, err)
		}
	}
	// Without a disk lease nothing makes leaving it running safe.
	if _, err := parseVMParams("vm1", map[string]string{"isolation_response": "leave-running", "disk": "/var/lib/vm1.qcow2"}, nil); err == nil || !strings.Contains(err.Error(), "needs a disk on a datastore") {
		t.Errorf("leave-running without a datastore disk: %v", err)
	}
}

// Survivors lists a QEMU that outlived its agent (a new agent on the same
// state folder has not attached to it yet), and nothing once it stopped.
func TestVMSurvivorsAfterAgentRestart(t *testing.T) {
	needVMTools(t)
	root := newTestDatastore(t, "vm1.qcow2")
	state := t.TempDir()
	first := newVMNode(t, "n1", state, root)
	p := stubParams("vm1.qcow2")
	run(t, first.a, first.req("vm1", ActionStart, p, nil), CodeOK)
	first.a.detachAll() // the agent dies; QEMU runs on
	again := newVMNode(t, "n1", state, root)
	again.cleanupVM(t, "vm1", p)
	if got := again.a.Survivors(); !slices.Equal(got, []string{"vm1"}) {
		t.Fatalf("survivors after an agent restart: %v, want [vm1]", got)
	}
	run(t, again.a, again.req("vm1", ActionStop, p, nil), CodeOK)
	if got := again.a.Survivors(); len(got) != 0 {
		t.Fatalf("survivors after the stop: %v", got)
	}
}
