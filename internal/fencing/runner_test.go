package fencing

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/model"
)

func TestRunnerMetadataFenceDummy(t *testing.T) {
	t.Parallel()
	needFenceDummy(t)
	r := NewRunner(Options{})
	m, err := r.Metadata(testCtx(t), "fence_dummy")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "fence_dummy" || m.ShortDesc == "" {
		t.Errorf("metadata %+v", m)
	}
	for _, p := range []string{"type", "status_file", "power_timeout"} {
		if _, ok := m.Param(p); !ok {
			t.Errorf("no parameter %s", p)
		}
	}
	for _, a := range []string{"off", "on", "status", "monitor"} {
		if !m.HasAction(a) {
			t.Errorf("no action %s in %v", a, m.Actions)
		}
	}
	if m.HasAction("list") {
		t.Errorf("fence_dummy has no list action: %v", m.Actions)
	}
	// fence_dummy takes no plug: Vigil must not send one.
	if m.hostArg() != "" {
		t.Errorf("hostArg %q", m.hostArg())
	}
	// Cached: the same pointer.
	if m2, _ := r.Metadata(testCtx(t), fenceDummy); m2 != m {
		t.Error("metadata not cached per agent path")
	}
	if _, err := r.Metadata(testCtx(t), "fence_no_such_agent"); !errors.Is(err, ErrAgentNotFound) {
		t.Errorf("missing agent: %v", err)
	}
}

func TestRunnerValidate(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	ctx := testCtx(t)
	d := fileDevice(t, "dummy", "node1")
	if err := r.Validate(ctx, d); err != nil {
		t.Fatal(err)
	}
	d.Params["bogus"] = "1"
	d.Params["power_timeout"] = "soon"
	err := r.Validate(ctx, d)
	var pe *ParamError
	if !errors.As(err, &pe) || !slices.Equal(pe.Unknown, []string{"bogus"}) || len(pe.Invalid) != 1 {
		t.Fatalf("unknown param: %v", err)
	}
	if !strings.Contains(err.Error(), "unknown parameter(s) bogus") {
		t.Errorf("message %q", err)
	}
	if err := r.Validate(ctx, Device{Name: "x", Agent: "fence_nope", HostList: []string{"node1"}}); !errors.Is(err, ErrAgentNotFound) {
		t.Errorf("missing agent: %v", err)
	}
	if err := r.Validate(ctx, Device{Name: "x", Agent: "fence_dummy"}); !errors.Is(err, ErrInvalidDevice) {
		t.Errorf("no host list: %v", err)
	}
}

func TestRunFenceDummy(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	ctx := testCtx(t)
	d := fileDevice(t, "dummy", "node1")
	if st, res := r.Status(ctx, d, "node1"); st != PowerOn {
		t.Fatalf("status before off: %v %+v", st, res)
	}
	if res := r.Run(ctx, d, "off", "node1"); !res.OK() || res.Duration <= 0 {
		t.Fatalf("off: %+v", res)
	}
	if st, res := r.Status(ctx, d, "node1"); st != PowerOff || res.Code != StatusOff || !strings.Contains(res.Output, "OFF") {
		t.Fatalf("status after off: %v %+v", st, res)
	}
	if res := r.Monitor(ctx, d); !res.OK() {
		t.Fatalf("monitor: %+v", res)
	}
	if res := r.Run(ctx, d, "no-such-action", ""); res.OK() {
		t.Fatalf("unknown action succeeded: %+v", res)
	}
}

// Rule 3: success is confirmed off: off exits 0, then status says off.
func TestFenceConfirmedByStatus(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	d := fileDevice(t, "dummy", "node1")
	devs := map[string]Device{"dummy": d}
	levels, err := Plan("node1", nil, devs)
	if err != nil {
		t.Fatal(err)
	}
	o := r.Fence(testCtx(t), "node1", levels, devs)
	if !o.OK || o.Level != 1 || !slices.Equal(o.Devices, []string{"dummy"}) || o.Confirmed != ConfirmedStatusOff || o.Err != "" {
		t.Fatalf("outcome %+v", o)
	}
	if len(o.Attempts) != 2 || o.Attempts[0].Action != "off" || o.Attempts[1].Action != "status" || o.Attempts[1].Code != StatusOff {
		t.Fatalf("attempts %+v", o.Attempts)
	}
	if b, _ := os.ReadFile(d.Params["status_file"]); string(b) != "off" {
		t.Errorf("status file %q", b)
	}
	if !strings.Contains(o.String(), "node1 fenced at level 1 by dummy (status off)") {
		t.Errorf("String() = %q", o.String())
	}
}

// Rule 4: a failing device is retried Retries times, then its level fails;
// rule 6: with every level failed, OK is false and every attempt is listed.
func TestFenceFailRetries(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	d := failDevice(t, "broken", "node1") // Retries 0: the default, 2
	devs := map[string]Device{"broken": d}
	o := r.Fence(testCtx(t), "node1", [][]DeviceRef{{{"broken", "node1"}}}, devs)
	if o.OK || o.Level != 0 || len(o.Devices) != 0 || o.Confirmed != "" {
		t.Fatalf("outcome %+v", o)
	}
	if len(o.Attempts) != 1+DefaultRetries {
		t.Fatalf("%d attempts, want %d: %+v", len(o.Attempts), 1+DefaultRetries, o.Attempts)
	}
	for i, a := range o.Attempts {
		if a.Action != "off" || a.Code != 1 || a.Err == "" || a.Level != 1 || a.Device != "broken" {
			t.Errorf("attempt %d: %+v", i, a)
		}
	}
	if !strings.Contains(o.Err, "level 1: device broken: off exited 1 (3 tries)") {
		t.Errorf("Err %q", o.Err)
	}
	if !strings.Contains(o.String(), "NOT fenced") {
		t.Errorf("String() = %q", o.String())
	}
}

// Rule 2: a failing level 1 falls through to level 2.
func TestFenceLevelFallThrough(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	bad := failDevice(t, "ipmi", "node1")
	bad.Retries = 1
	good := fileDevice(t, "pdu", "node1")
	devs := map[string]Device{"ipmi": bad, "pdu": good}
	topo := Topology{"node1": {{"ipmi"}, {"pdu"}}}
	if err := topo.Validate(devs, []string{"node1"}); err != nil {
		t.Fatal(err)
	}
	levels, err := Plan("node1", topo, devs)
	if err != nil {
		t.Fatal(err)
	}
	o := r.Fence(testCtx(t), "node1", levels, devs)
	if !o.OK || o.Level != 2 || !slices.Equal(o.Devices, []string{"pdu"}) || o.Confirmed != ConfirmedStatusOff {
		t.Fatalf("outcome %+v", o)
	}
	var got []string
	for _, a := range o.Attempts {
		got = append(got, strconv.Itoa(a.Level)+":"+a.Device+":"+a.Action)
	}
	want := []string{"1:ipmi:off", "1:ipmi:off", "2:pdu:off", "2:pdu:status"}
	if !slices.Equal(got, want) {
		t.Errorf("attempts %v, want %v", got, want)
	}
}

// Rule 2: every device of a level must succeed; the first failure ends the
// level, and a level of one good and one bad device fails.
func TestFenceLevelNeedsAllDevices(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	good := fileDevice(t, "psu-a", "node1")
	bad := failDevice(t, "psu-b", "node1")
	bad.Retries = -1
	devs := map[string]Device{"psu-a": good, "psu-b": bad}
	o := r.Fence(testCtx(t), "node1", [][]DeviceRef{{{"psu-a", "node1"}, {"psu-b", "node1"}}}, devs)
	if o.OK || len(o.Attempts) != 3 || !strings.Contains(o.Err, "device psu-b") {
		t.Fatalf("outcome %+v", o)
	}
	// Both devices fine: both are run, the level succeeds.
	good2 := fileDevice(t, "psu-b", "node1")
	devs["psu-b"] = good2
	good = fileDevice(t, "psu-a", "node1")
	devs["psu-a"] = good
	o = r.Fence(testCtx(t), "node1", [][]DeviceRef{{{"psu-a", "node1"}, {"psu-b", "node1"}}}, devs)
	if !o.OK || !slices.Equal(o.Devices, []string{"psu-a", "psu-b"}) || len(o.Attempts) != 4 {
		t.Fatalf("outcome %+v", o)
	}
}

// Rule 5: a hanging agent is killed with its process group at the timeout
// and counts as failed.
func TestRunHangingAgentKilledAtTimeout(t *testing.T) {
	t.Parallel()
	agent := scriptAgent(t, "fence_hang", `sleep 100 & echo $! >"$0.child"; sleep 100`, "exit 2", "off", "status", "metadata")
	d := Device{Name: "hang", Agent: agent, HostList: []string{"node1"}, Timeout: model.Duration(300 * time.Millisecond), Retries: -1}
	r := NewRunner(Options{})
	res := r.Run(testCtx(t), d, "off", "node1")
	if !res.TimedOut || !errors.Is(res.Err, ErrTimeout) || res.Code != -1 || res.Duration > 10*time.Second {
		t.Fatalf("result %+v", res)
	}
	b, err := os.ReadFile(agent + ".child")
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if !waitDead([]int{child}) {
		t.Errorf("the agent's child %d outlived the timeout", child)
	}

	// An agent that ignores SIGTERM (and whose children inherit that) gets
	// SIGKILL after the grace period.
	deaf := scriptAgent(t, "fence_deaf", `trap '' TERM; sleep 100 & echo $! >"$0.child"; sleep 100`, "exit 2", "off", "status", "metadata")
	dd := d
	dd.Agent = deaf
	res = r.Run(testCtx(t), dd, "off", "node1")
	if !res.TimedOut || res.Duration > 10*time.Second {
		t.Fatalf("deaf agent: %+v", res)
	}
	b, err = os.ReadFile(deaf + ".child")
	if err != nil {
		t.Fatal(err)
	}
	child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	if !waitDead([]int{child}) {
		t.Errorf("the deaf agent's child %d outlived the timeout", child)
	}

	// In Fence: counted failed, and the next level is tried.
	good := fileDevice(t, "pdu", "node1")
	devs := map[string]Device{"hang": d, "pdu": good}
	o := r.Fence(testCtx(t), "node1", [][]DeviceRef{{{"hang", "node1"}}, {{"pdu", "node1"}}}, devs)
	if !o.OK || o.Level != 2 || !o.Attempts[0].TimedOut || !strings.Contains(o.Attempts[0].Err, "timed out") {
		t.Fatalf("outcome %+v", o)
	}
}

// Rule 3: off exiting 0 is not enough where status can be asked.
func TestFenceNotConfirmed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status string
		want   string
	}{
		{"echo Status: ON; exit 0", "status says on (exit 0)"},
		{"exit 1", "status unknown (exit 1)"},
		{"sleep 100", "timed out"},
	}
	for i, tt := range tests {
		agent := scriptAgent(t, "fence_liar", "exit 0", tt.status, "off", "status", "metadata")
		d := Device{Name: "liar", Agent: agent, HostList: []string{"node1"}, Retries: 1, Timeout: model.Duration(300 * time.Millisecond)}
		o := NewRunner(Options{}).Fence(testCtx(t), "node1", [][]DeviceRef{{{"liar", "node1"}}}, map[string]Device{"liar": d})
		if o.OK || len(o.Attempts) != 4 || !strings.Contains(o.Err, tt.want) || !strings.Contains(o.Attempts[1].Err, "not confirmed") {
			t.Errorf("%d: outcome %+v", i, o)
		}
	}
}

// Rule 3: an agent without status: off's exit 0 is the documented success,
// and the outcome says so.
func TestFenceAgentWithoutStatus(t *testing.T) {
	t.Parallel()
	agent := scriptAgent(t, "fence_nostatus", "exit 0", "exit 0", "off", "on", "metadata")
	d := Device{Name: "ns", Agent: agent, HostList: []string{"node1"}}
	o := NewRunner(Options{}).Fence(testCtx(t), "node1", [][]DeviceRef{{{"ns", "node1"}}}, map[string]Device{"ns": d})
	if !o.OK || o.Confirmed != ConfirmedNoStatus || len(o.Attempts) != 1 {
		t.Fatalf("outcome %+v", o)
	}
}

// The protocol: parameters on stdin (never argv), the plug under the name
// the agent's metadata knows (port here), nodename, action last.
func TestRunStdinProtocol(t *testing.T) {
	t.Parallel()
	agent := scriptAgent(t, "fence_rec", `echo "args:$#"; exit 0`, "exit 2", "off", "status", "metadata")
	d := Device{Name: "rec", Agent: agent, HostMap: map[string]string{"node1": "vm-1"}, Params: map[string]string{"secret": "hunter2"}}
	o := NewRunner(Options{}).Fence(testCtx(t), "node1", [][]DeviceRef{{{"rec", "vm-1"}}}, map[string]Device{"rec": d})
	if !o.OK || !strings.Contains(o.Attempts[0].Output, "args:0") {
		t.Fatalf("outcome %+v", o)
	}
	b, err := os.ReadFile(agent + ".stdin")
	if err != nil {
		t.Fatal(err)
	}
	want := "action=metadata\n" +
		"secret=hunter2\naction=off\nport=vm-1\nnodename=node1\n" +
		"secret=hunter2\naction=status\nport=vm-1\nnodename=node1\n"
	if string(b) != want {
		t.Errorf("stdin:\n%s\nwant:\n%s", b, want)
	}
}

// constSource is a rand.Source that always returns the same number.
type constSource uint64

func (s constSource) Uint64() uint64 { return uint64(s) }

// Rule 1: the delay (base + random up to max) comes before the first
// action, and ends early, without fencing, when ctx ends.
func TestFenceDelay(t *testing.T) {
	t.Parallel()
	const seed = 0x9e3779b97f4a7c15
	r := NewRunner(Options{Rand: constSource(seed)})
	d := fileDevice(t, "dummy", "node1")
	d.Delay = model.Duration(100 * time.Millisecond)
	d.DelayMax = model.Duration(200 * time.Millisecond)
	devs := map[string]Device{"dummy": d}
	levels := [][]DeviceRef{{{"dummy", "node1"}}}
	want := 100*time.Millisecond + time.Duration(rand.New(constSource(seed)).Int64N(int64(200*time.Millisecond)+1))
	o := r.Fence(testCtx(t), "node1", levels, devs)
	if !o.OK || o.Delay.D() != want || o.Duration.D() < want {
		t.Fatalf("outcome %+v, want delay %s", o, want)
	}

	d.Delay = model.Duration(time.Hour)
	devs["dummy"] = d
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	o = r.Fence(ctx, "node1", levels, devs)
	if o.OK || len(o.Attempts) != 0 || !strings.Contains(o.Err, "delay") || o.Duration.D() > time.Minute {
		t.Fatalf("canceled delay: %+v", o)
	}
}

func TestFenceNothingToTry(t *testing.T) {
	t.Parallel()
	r := NewRunner(Options{})
	if o := r.Fence(testCtx(t), "node1", nil, nil); o.OK || !strings.Contains(o.Err, "no device") {
		t.Errorf("empty plan: %+v", o)
	}
	o := r.Fence(testCtx(t), "node1", [][]DeviceRef{{{"gone", "node1"}}}, map[string]Device{})
	if o.OK || len(o.Attempts) != 1 || !strings.Contains(o.Err, "no such device") {
		t.Errorf("missing device: %+v", o)
	}
}
