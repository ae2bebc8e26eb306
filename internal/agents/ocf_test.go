package agents

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOCFDummyLifecycle runs the real heartbeat Dummy script: start,
// monitor, a monitor failure when its state file disappears, and
// idempotent stop.
func TestOCFDummyLifecycle(t *testing.T) {
	needOCF(t, ocfDummy)
	r := newTestRegistry(t)
	a := mustGet(t, r, "ocf:heartbeat:Dummy")
	req := func(action string) Request {
		return Request{Resource: "d1", Action: action, Params: map[string]string{"fake": "x"}, Node: "n1"}
	}
	run(t, a, req(ActionMonitor), CodeNotRunning) // probe of a never-started resource
	run(t, a, req(ActionStart), CodeOK)
	run(t, a, req(ActionStart), CodeOK) // idempotent
	mon := req(ActionMonitor)
	mon.Interval = 10 * time.Second
	run(t, a, mon, CodeOK)

	// Dummy keeps its state in $HA_RSCTMP/Dummy-<instance>.state.
	state := filepath.Join(r.opts.StateDir, "ocf", "rsctmp", "Dummy-d1.state")
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("Dummy state file not under StateDir: %v", err)
	}
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	run(t, a, mon, CodeNotRunning) // the monitor failure the executor acts on

	run(t, a, req(ActionStart), CodeOK)
	run(t, a, req(ActionStop), CodeOK)
	run(t, a, req(ActionStop), CodeOK) // idempotent
	run(t, a, req(ActionMonitor), CodeNotRunning)
	run(t, a, req(ActionValidateAll), CodeOK)
	noZombies(t)
}

// TestOCFStateDirsIsolateNodes: two lab nodes on one machine, with their
// own StateDirs, do not see each other's resources.
func TestOCFStateDirsIsolateNodes(t *testing.T) {
	needOCF(t, ocfDummy)
	n1 := mustGet(t, newTestRegistry(t), "ocf:heartbeat:Dummy")
	n2 := mustGet(t, newTestRegistry(t), "ocf:heartbeat:Dummy")
	r := Request{Resource: "shared", Action: ActionStart}
	run(t, n1, r, CodeOK)
	r.Action = ActionMonitor
	run(t, n1, r, CodeOK)
	run(t, n2, r, CodeNotRunning)
	r.Action = ActionStop
	run(t, n1, r, CodeOK)
}

func TestOCFMetadata(t *testing.T) {
	needOCF(t, ocfDummy)
	a := mustGet(t, newTestRegistry(t), "ocf:heartbeat:Dummy")
	m, err := a.Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "Dummy" || m.ShortDesc == "" {
		t.Errorf("name %q shortdesc %q", m.Name, m.ShortDesc)
	}
	for _, name := range []string{"state", "fake"} {
		if _, ok := m.Param(name); !ok {
			t.Errorf("param %q missing: %+v", name, m.Params)
		}
	}
	if p, _ := m.Param("state"); !p.Unique || p.Required || p.Type != "string" {
		t.Errorf("state param = %+v", p)
	}
	mon, ok := m.Action(ActionMonitor)
	if !ok || mon.Interval != 10*time.Second || mon.Timeout != 20*time.Second {
		t.Errorf("monitor action = %+v", mon)
	}
	m2, _ := a.Metadata(context.Background())
	if m2 != m {
		t.Error("meta-data not cached")
	}
	if err := m.Validate(map[string]string{"fake": "y"}); err != nil {
		t.Error(err)
	}
}

// TestOCFValidate: bad parameters are refused at create time, with every
// offending name in the message.
func TestOCFValidate(t *testing.T) {
	const ipaddr2 = DefaultOCFRoot + "/resource.d/heartbeat/IPaddr2"
	needOCF(t, ipaddr2)
	a := mustGet(t, newTestRegistry(t), "ocf:heartbeat:IPaddr2")
	m, err := a.Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.Param("ip"); !ok || !p.Required {
		t.Fatalf("ip param = %+v", p)
	}
	tests := []struct {
		params map[string]string
		want   []string // substrings of the error; nil = valid
	}{
		{map[string]string{"ip": "192.0.2.10", "cidr_netmask": "24", "arp_count": "3", "lvs_support": "no"}, nil},
		{map[string]string{"cidr_netmask": "24"}, []string{`missing required parameter "ip"`}},
		{map[string]string{"ip": ""}, []string{`missing required parameter "ip"`}},
		{map[string]string{"ip": "192.0.2.10", "colour": "red", "zz": "1"}, []string{`unknown parameter "colour", "zz"`}},
		{map[string]string{"ip": "192.0.2.10", "arp_count": "five"}, []string{`arp_count: "five" is not an integer`}},
		{map[string]string{"ip": "192.0.2.10", "lvs_support": "maybe"}, []string{`lvs_support: "maybe" is not a boolean`}},
		{map[string]string{"bogus": "1"}, []string{"IPaddr2", `missing required parameter "ip"`, `unknown parameter "bogus"`}},
	}
	for i, tt := range tests {
		err := m.Validate(tt.params)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%d: %v", i, err)
			}
			continue
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidParams) {
			t.Errorf("%d: err = %v, want a *ValidationError", i, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%d: %q does not contain %q", i, err, w)
			}
		}
	}
}

// fakeOCF installs a script as <root>/resource.d/test/<name> and returns a
// registry whose OCF root is root.
func fakeOCF(t *testing.T, name, script string) (*Registry, string) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "resource.d", "test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return NewRegistry(Options{OCFRoot: root, StateDir: t.TempDir()}), root
}

// TestOCFEnvironment: the agent sees what Pacemaker's executor would give it.
func TestOCFEnvironment(t *testing.T) {
	r, root := fakeOCF(t, "Env", `env | sort; exit ${OCF_RESKEY_rc:-0}`)
	a := mustGet(t, r, "ocf:test:Env")
	res := run(t, a, Request{
		Resource: "r1", Action: ActionMonitor,
		Params:   map[string]string{"ip": "192.0.2.1", "rc": "7"},
		Meta:     map[string]string{"target-role": "Started", "interval": "1"},
		Interval: 10 * time.Second, Timeout: 15 * time.Second, Node: "n2",
		MigrateSource: "n1", MigrateTarget: "n2",
	}, CodeNotRunning)
	stateDir := r.opts.StateDir
	for _, want := range []string{
		"OCF_ROOT=" + root, "OCF_RA_VERSION_MAJOR=1", "OCF_RA_VERSION_MINOR=1",
		"OCF_RESOURCE_INSTANCE=r1", "OCF_RESOURCE_TYPE=Env", "OCF_RESOURCE_PROVIDER=test",
		"OCF_RESKEY_ip=192.0.2.1",
		"OCF_RESKEY_CRM_meta_target_role=Started",
		"OCF_RESKEY_CRM_meta_interval=10000", "OCF_RESKEY_CRM_meta_timeout=15000",
		"OCF_RESKEY_CRM_meta_on_node=n2",
		"OCF_RESKEY_CRM_meta_migrate_source=n1", "OCF_RESKEY_CRM_meta_migrate_target=n2",
		"HA_RSCTMP=" + filepath.Join(stateDir, "ocf", "rsctmp"),
		"HA_VARRUN=" + filepath.Join(stateDir, "ocf", "run"),
		"PATH=" + ocfPath,
	} {
		if !strings.Contains(res.Output, want+"\n") {
			t.Errorf("environment lacks %s:\n%s", want, res.Output)
		}
	}
	for i, c := range []Code{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 190, 191, 42} {
		res := a.Exec(context.Background(), Request{Resource: "r1", Action: ActionStart, Params: map[string]string{"rc": strconv.Itoa(int(c))}})
		if res.Code != c || res.Err != nil {
			t.Errorf("%d: exit %d gave %v (%v)", i, int(c), res.Code, res.Err)
		}
	}
	if res := a.Exec(context.Background(), Request{Resource: "r1", Action: ActionStart, Params: map[string]string{"a-b": "1"}}); res.Code != CodeErrArgs || res.Err == nil {
		t.Errorf("bad parameter name: %v %v", res.Code, res.Err)
	}
}

// TestOCFTimeoutKillsProcessGroup: an agent that hangs is killed at its
// timeout, together with the processes it started, even ones that ignore
// SIGTERM.
func TestOCFTimeoutKillsProcessGroup(t *testing.T) {
	for _, tc := range []struct {
		name, trap string
		max        time.Duration
	}{
		{"term", "", killGrace},
		{"term-ignored", "trap '' TERM", killGrace + 2*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "child.pid")
			r, _ := fakeOCF(t, "Hang", tc.trap+"\nsleep 300 &\necho $! > "+pidFile+"\necho started\nsleep 300\n")
			a := mustGet(t, r, "ocf:test:Hang")
			start := time.Now()
			res := a.Exec(context.Background(), Request{Resource: "h1", Action: ActionStart, Timeout: 500 * time.Millisecond})
			took := time.Since(start)
			if res.Code != CodeTimeout || res.Err == nil {
				t.Fatalf("got %v (%v), want TIMEOUT", res.Code, res.Err)
			}
			if took < 500*time.Millisecond || took > 500*time.Millisecond+tc.max {
				t.Errorf("took %v", took)
			}
			if !strings.Contains(res.Output, "started") {
				t.Errorf("output %q", res.Output)
			}
			child := pidOfDead(t, pidFile)
			waitDead(t, child)
			noZombies(t)
		})
	}
}

// pidOfDead reads a pid file whose process may already be gone.
func pidOfDead(t *testing.T, path string) procID {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	info, err := readProc(pid)
	if err != nil {
		return procID{pid: pid} // gone already
	}
	return procID{pid, info.start}
}

func TestOCFCanceled(t *testing.T) {
	r, _ := fakeOCF(t, "Hang", "sleep 300\n")
	a := mustGet(t, r, "ocf:test:Hang")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	res := a.Exec(ctx, Request{Resource: "h1", Action: ActionStart, Timeout: time.Minute})
	if res.Code != CodeCanceled {
		t.Fatalf("got %v (%v), want CANCELED", res.Code, res.Err)
	}
	if res.Code.Recovery() != RecoveryNone {
		t.Fatal("a canceled action is not a failure")
	}
}

// TestOCFDaemonSurvivesStart: a daemon an agent leaves behind on a normal
// exit is neither killed nor waited for.
func TestOCFDaemonSurvivesStart(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "daemon.pid")
	r, _ := fakeOCF(t, "Daemon", "sleep 300 &\necho $! > "+pidFile+"\nexit 0\n")
	a := mustGet(t, r, "ocf:test:Daemon")
	start := time.Now()
	run(t, a, Request{Resource: "d1", Action: ActionStart}, CodeOK)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("start waited for the daemon: %v", took)
	}
	d := pidOf(t, pidFile)
	if !procAlive(d.pid, d.start) {
		t.Fatal("daemon killed at a normal exit")
	}
	if err := killProc(d); err != nil {
		t.Fatal(err)
	}
	waitDead(t, d)
}

func TestUnknownAgent(t *testing.T) {
	r := newTestRegistry(t)
	tests := []struct {
		spec, want string
	}{
		{"ocf:heartbeat:Foo", "no OCF agent heartbeat/Foo under /usr/lib/ocf/resource.d"},
		{"ocf:nosuchprovider:Dummy", `no OCF provider "nosuchprovider" under /usr/lib/ocf/resource.d`},
		{"vigil:vm2", "no built-in agent vigil:vm2"},
		{"systemd:sshd", `unknown class "systemd"`},
	}
	for i, tt := range tests {
		_, err := r.Get(tt.spec)
		if !errors.Is(err, ErrUnknownAgent) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%d: Get(%q) = %v, want ErrUnknownAgent containing %q", i, tt.spec, err, tt.want)
		}
	}
	if _, err := r.Get("ocf:../../bin:sh"); !errors.Is(err, ErrBadSpec) {
		t.Errorf("path escape: %v", err)
	}

	// An agent removed after Get is reported as not found.
	fr, root := fakeOCF(t, "Gone", "exit 0\n")
	a := mustGet(t, fr, "ocf:test:Gone")
	if err := os.Remove(filepath.Join(root, "resource.d", "test", "Gone")); err != nil {
		t.Fatal(err)
	}
	if res := a.Exec(context.Background(), Request{Resource: "g", Action: ActionStart}); res.Code != CodeNotFound || res.Err == nil {
		t.Errorf("removed agent: %v (%v)", res.Code, res.Err)
	}
}

func TestList(t *testing.T) {
	needOCF(t, ocfDummy)
	specs, err := newTestRegistry(t).List()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ocf:heartbeat:Dummy", "ocf:heartbeat:IPaddr2", "vigil:dummy", "vigil:process"} {
		found := false
		for _, s := range specs {
			found = found || s == want
		}
		if !found {
			t.Errorf("List lacks %s", want)
		}
	}
	for _, s := range specs {
		if strings.Contains(s, ":.") {
			t.Errorf("List has hidden file %s", s)
		}
	}
	r := NewRegistry(Options{OCFRoot: filepath.Join(t.TempDir(), "none"), StateDir: t.TempDir()})
	if specs, err := r.List(); err != nil || len(specs) != 4 {
		t.Errorf("no OCF root: %v %v", specs, err)
	}
}
