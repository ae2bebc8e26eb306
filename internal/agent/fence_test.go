package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/fencing"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// baseFencing: ipmi1 fences n1, pdu fences n1 and n2 (plugs 1 and 2);
// n1 has levels ipmi1, then pdu.
func baseFencing() fenceConfig {
	return fenceConfig{
		Devices: map[string]fencing.Device{
			"ipmi1": {Name: "ipmi1", Agent: "fence_ipmilan", Params: map[string]string{"ip": "10.0.0.1"}, HostList: []string{"n1"}},
			"pdu":   {Name: "pdu", Agent: "fence_apc", HostMap: map[string]string{"n1": "1", "n2": "2"}},
		},
		Topology: fencing.Topology{"n1": {{"ipmi1"}, {"pdu"}}},
	}
}

func TestFenceMutations(t *testing.T) {
	for i, tc := range []struct {
		name   string
		mutate func(fc *fenceConfig) error
		check  func(fc *fenceConfig) bool
		err    string
		code   string
	}{
		{
			name: "create maps pcs options to fields, the rest to params",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "ipmi3", Agent: "fence_ipmilan", Options: map[string]string{
					"ip": "10.0.0.3", "username": "admin", "pcmk_host_list": "n3", "pcmk_delay_base": "5s", "pcmk_delay_max": "10",
					"timeout": "30s", "retries": "0", "monitor_interval": "1m", "power-timeout": "20",
				}})
			},
			check: func(fc *fenceConfig) bool {
				d := fc.Devices["ipmi3"]
				return d.Agent == "fence_ipmilan" && slices.Equal(d.HostList, []string{"n3"}) && d.Delay.D() == 5*time.Second &&
					d.DelayMax.D() == 10*time.Second && d.Timeout.D() == 30*time.Second && d.Retries == -1 &&
					d.MonitorInterval.D() == time.Minute && len(d.Params) == 3 && d.Params["power-timeout"] == "20"
			},
		},
		{
			name: "host map with ; and =, host_list alias",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "pdu2", Agent: "fence_apc", Options: map[string]string{
					"pcmk_host_map": "n1:a1;n2=b:2, n3:c", "host_list": "n1;n2 n3",
				}})
			},
			check: func(fc *fenceConfig) bool {
				d := fc.Devices["pdu2"]
				return d.HostMap["n1"] == "a1" && d.HostMap["n2"] == "b:2" && d.HostMap["n3"] == "c" && slices.Equal(d.HostList, []string{"n1", "n2", "n3"})
			},
		},
		{
			name: "create duplicate",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "pdu", Agent: "fence_apc"})
			},
			err: "already exists", code: api.CodeConflict,
		},
		{
			name: "unsupported pcmk option",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_apc", Options: map[string]string{"pcmk_monitor_timeout": "5s"}})
			},
			err: "option pcmk_monitor_timeout is not supported",
		},
		{
			name: "bad duration",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_apc", Options: map[string]string{"pcmk_delay_base": "soon"}})
			},
			err: `pcmk_delay_base: "soon"`,
		},
		{
			name: "bad retries",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_apc", Options: map[string]string{"retries": "-1"}})
			},
			err: "want a number of retries",
		},
		{
			name: "bad host map",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_apc", Options: map[string]string{"pcmk_host_map": "n1"}})
			},
			err: `"n1": want node:plug`,
		},
		{
			name: "empty value on create",
			mutate: func(fc *fenceConfig) error {
				return createDevice(fc, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_apc", Options: map[string]string{"ip": ""}})
			},
			err: "empty value",
		},
		{
			name: "update: k= removes a param and resets a field",
			mutate: func(fc *fenceConfig) error {
				if err := updateDevice(fc, "ipmi1", api.UpdateFenceDeviceRequest{Options: map[string]string{"timeout": "90s", "ip": "", "lanplus": "1"}}); err != nil {
					return err
				}
				return updateDevice(fc, "ipmi1", api.UpdateFenceDeviceRequest{Options: map[string]string{"timeout": ""}})
			},
			check: func(fc *fenceConfig) bool {
				d := fc.Devices["ipmi1"]
				_, has := d.Params["ip"]
				return !has && d.Params["lanplus"] == "1" && d.Timeout == 0
			},
		},
		{
			name: "update unknown",
			mutate: func(fc *fenceConfig) error {
				return updateDevice(fc, "nope", api.UpdateFenceDeviceRequest{Options: map[string]string{"a": "b"}})
			},
			err: `no fence device named "nope"`, code: api.CodeNotFound,
		},
		{
			name: "update removing an unset param",
			mutate: func(fc *fenceConfig) error {
				return updateDevice(fc, "ipmi1", api.UpdateFenceDeviceRequest{Options: map[string]string{"colour": ""}})
			},
			err: "parameter colour is not set",
		},
		{
			name:   "delete a device in use names the level",
			mutate: func(fc *fenceConfig) error { return deleteDevice(fc, "pdu") },
			err:    "fence device pdu is used by level 2 of n1", code: api.CodeConflict,
		},
		{
			name: "delete an unused device",
			mutate: func(fc *fenceConfig) error {
				if err := removeLevel(fc, "n1", 2); err != nil {
					return err
				}
				return deleteDevice(fc, "pdu")
			},
			check: func(fc *fenceConfig) bool {
				_, ok := fc.Devices["pdu"]
				return !ok && len(fc.Topology["n1"]) == 1
			},
		},
		{
			name: "add level 1 for n2",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n2", 1, api.FenceLevelRequest{Devices: []string{"pdu"}})
			},
			check: func(fc *fenceConfig) bool { return slices.Equal(fc.Topology["n2"][0], []string{"pdu"}) },
		},
		{
			name: "levels are dense",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n2", 2, api.FenceLevelRequest{Devices: []string{"pdu"}})
			},
			err: "add level 1 first",
		},
		{
			name: "same level again is no change",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n1", 1, api.FenceLevelRequest{Devices: []string{"ipmi1"}})
			},
			check: func(fc *fenceConfig) bool { return len(fc.Topology["n1"]) == 2 },
		},
		{
			name: "an existing level with other devices needs replace",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n1", 1, api.FenceLevelRequest{Devices: []string{"ipmi1", "pdu"}})
			},
			err: "level 1 of n1 exists", code: api.CodeConflict,
		},
		{
			name: "replace a level: both devices must succeed",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n1", 1, api.FenceLevelRequest{Devices: []string{"ipmi1", "pdu"}, Replace: true})
			},
			check: func(fc *fenceConfig) bool { return slices.Equal(fc.Topology["n1"][0], []string{"ipmi1", "pdu"}) },
		},
		{
			name: "a device that cannot fence the node",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n2", 1, api.FenceLevelRequest{Devices: []string{"ipmi1"}})
			},
			err: "device ipmi1 cannot fence n2",
		},
		{
			name: "unknown device in a level",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n2", 1, api.FenceLevelRequest{Devices: []string{"nope"}})
			},
			err: `no fence device named "nope"`, code: api.CodeNotFound,
		},
		{
			name: "unknown node in a level",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n9", 1, api.FenceLevelRequest{Devices: []string{"pdu"}})
			},
			err: `unknown node "n9"`, code: api.CodeNotFound,
		},
		{
			name: "level 10",
			mutate: func(fc *fenceConfig) error {
				return setLevel(fc, testNodes, "n1", 10, api.FenceLevelRequest{Devices: []string{"pdu"}})
			},
			err: "want 1 to 9",
		},
		{
			name:   "removing level 1 moves level 2 up",
			mutate: func(fc *fenceConfig) error { return removeLevel(fc, "n1", 1) },
			check: func(fc *fenceConfig) bool {
				return len(fc.Topology["n1"]) == 1 && slices.Equal(fc.Topology["n1"][0], []string{"pdu"})
			},
		},
		{
			name:   "remove every level",
			mutate: func(fc *fenceConfig) error { return removeLevel(fc, "n1", 0) },
			check: func(fc *fenceConfig) bool {
				_, ok := fc.Topology["n1"]
				return !ok
			},
		},
		{
			name:   "remove a level that does not exist",
			mutate: func(fc *fenceConfig) error { return removeLevel(fc, "n1", 3) },
			err:    "n1 has no fence level 3 (it has 2)", code: api.CodeNotFound,
		},
		{
			name:   "remove levels of a node without",
			mutate: func(fc *fenceConfig) error { return removeLevel(fc, "n2", 0) },
			err:    "n2 has no fence levels", code: api.CodeNotFound,
		},
	} {
		fc := baseFencing().clone()
		before := fenceOps(fenceConfig{}, fc)
		err := tc.mutate(&fc)
		if err == nil {
			err = fc.Topology.Validate(fc.Devices, testNodes)
		}
		if !expectErr(t, i, tc.name, err, tc.err, tc.code) {
			continue
		}
		if !tc.check(&fc) {
			t.Errorf("#%d %s: check failed: %+v", i, tc.name, fc)
		}
		if ops := fenceOps(fenceConfig{}, baseFencing()); !slices.EqualFunc(ops, before, func(a, b store.Op) bool { return a.Key == b.Key && string(a.Value) == string(b.Value) }) {
			t.Fatalf("#%d %s: the mutation changed the original", i, tc.name)
		}
	}
}

func TestFenceOps(t *testing.T) {
	from := baseFencing()
	to := from.clone()
	delete(to.Devices, "ipmi1")
	to.Topology["n1"] = [][]string{{"pdu"}}
	d := to.Devices["pdu"]
	d.Timeout = model.Duration(time.Minute)
	to.Devices["pdu"] = d
	to.Devices["new"] = fencing.Device{Name: "new", Agent: "fence_x", HostList: []string{"n3"}}
	ops := fenceOps(from, to)
	got := fenceChanges(from, ops)
	want := []string{"- config/fencing/devices/ipmi1", "+ config/fencing/devices/new", "~ config/fencing/devices/pdu", "~ config/fencing/levels/n1"}
	if !slices.Equal(got, want) {
		t.Fatalf("changes %q, want %q", got, want)
	}
	if len(fenceOps(from, from.clone())) != 0 {
		t.Fatal("no change gave ops")
	}
}

// fakeFenceAgent writes a fence agent named fence_test into a folder of
// its own (returned): its metadata requires ip and knows power_timeout (a
// number).
func fakeFenceAgent(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
action=
while IFS= read -r l; do
	case $l in action=*) action=${l#action=} ;; esac
done
case $action in
metadata)
	cat <<'XML'
<?xml version="1.0" ?>
<resource-agent name="fence_test" shortdesc="test agent">
<parameters>
	<parameter name="action" required="1"><content type="string" default="reboot" /></parameter>
	<parameter name="plug" required="0"><content type="string" /></parameter>
	<parameter name="ip" required="1"><content type="string" /></parameter>
	<parameter name="power_timeout" required="0"><content type="second" default="20" /></parameter>
</parameters>
<actions>
	<action name="on" />
	<action name="off" />
	<action name="status" />
	<action name="metadata" />
</actions>
</resource-agent>
XML
	exit 0 ;;
esac
exit 1
`
	if err := os.WriteFile(filepath.Join(dir, "fence_test"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestFencingAPI drives the fencing backend on a real one-voter store:
// devices and levels are configuration (they move the epoch), every refused
// change leaves the epoch where it was, and fence requests are status.
func TestFencingAPI(t *testing.T) {
	a := testAgent(t)
	a.fencer = fencing.NewRunner(fencing.Options{SearchPath: []string{fakeFenceAgent(t)}})
	b := backend{a}
	ctx := context.Background()
	must := func(res api.WriteResult, err error) api.WriteResult {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	e0 := a.epoch()
	res := must(b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "ipmi2", Agent: "fence_test", Options: map[string]string{"ip": "10.0.0.2", "pcmk_host_list": "n2"}}))
	if res.Epoch != e0+1 || !slices.Equal(res.Changes, []string{"+ config/fencing/devices/ipmi2"}) {
		t.Fatalf("create: %+v (epoch was %d)", res, e0)
	}
	must(b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "pdu", Agent: "fence_test", Options: map[string]string{"ip": "10.0.0.9", "pcmk_host_map": "n1:1;n2:2", "pcmk_delay_base": "2s"}}))
	must(b.SetFenceLevel(ctx, "n2", 1, api.FenceLevelRequest{Devices: []string{"ipmi2"}}))
	must(b.SetFenceLevel(ctx, "n2", 2, api.FenceLevelRequest{Devices: []string{"pdu"}}))
	epoch := a.epoch()
	if epoch != e0+4 {
		t.Fatalf("epoch %d after 4 changes from %d", epoch, e0)
	}

	for i, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"unknown agent", func() error {
			_, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_nope", Options: map[string]string{"pcmk_host_list": "n3"}})
			return err
		}, "unknown fence agent on n1: fence_nope"},
		{"unknown parameter", func() error {
			_, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_test", Options: map[string]string{"ip": "1", "colour": "red", "pcmk_host_list": "n3"}})
			return err
		}, "unknown parameter(s) colour"},
		{"missing required parameter", func() error {
			_, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_test", Options: map[string]string{"pcmk_host_list": "n3"}})
			return err
		}, "missing required parameter(s) ip"},
		{"bad parameter value", func() error {
			_, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_test", Options: map[string]string{"ip": "1", "power_timeout": "long", "pcmk_host_list": "n3"}})
			return err
		}, `power_timeout: "long" is not a number`},
		{"no host list", func() error {
			_, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_test", Options: map[string]string{"ip": "1"}})
			return err
		}, "say which nodes it can fence"},
		{"host list names a stranger", func() error {
			_, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "x", Agent: "fence_test", Options: map[string]string{"ip": "1", "pcmk_host_list": "n3,n9"}})
			return err
		}, "n9 is not a node of this cluster"},
		{"bad device name", func() error {
			_, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "a/b", Agent: "fence_test", Options: map[string]string{"ip": "1", "pcmk_host_list": "n3"}})
			return err
		}, `id "a/b"`},
		{"update: unknown parameter", func() error {
			_, err := b.UpdateFenceDevice(ctx, "pdu", api.UpdateFenceDeviceRequest{Options: map[string]string{"colour": "red"}})
			return err
		}, "unknown parameter(s) colour"},
		{"update: host map drops a node a level uses", func() error {
			_, err := b.UpdateFenceDevice(ctx, "pdu", api.UpdateFenceDeviceRequest{Options: map[string]string{"pcmk_host_map": "n1:1"}})
			return err
		}, "device pdu cannot fence it"},
		{"delete a device in use", func() error {
			_, err := b.DeleteFenceDevice(ctx, "ipmi2")
			return err
		}, "used by level 1 of n2"},
		{"level for an unknown node", func() error {
			_, err := b.SetFenceLevel(ctx, "n9", 1, api.FenceLevelRequest{Devices: []string{"pdu"}})
			return err
		}, `unknown node "n9"`},
		{"level with a device that cannot fence", func() error {
			_, err := b.SetFenceLevel(ctx, "n1", 1, api.FenceLevelRequest{Devices: []string{"ipmi2"}})
			return err
		}, "cannot fence n1"},
	} {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("#%d %s: err %v, want %q", i, tc.name, err, tc.want)
		}
		if got := a.epoch(); got != epoch {
			t.Fatalf("#%d %s: epoch moved from %d to %d", i, tc.name, epoch, got)
		}
	}
	// The same level again writes nothing.
	if res := must(b.SetFenceLevel(ctx, "n2", 1, api.FenceLevelRequest{Devices: []string{"ipmi2"}})); !res.Unchanged || res.Epoch != epoch {
		t.Fatalf("no-op level: %+v", res)
	}

	// Reading back.
	ds, err := b.FenceDevices(ctx)
	if err != nil || len(ds) != 2 || ds[1].Name != "pdu" || ds[1].Delay != "2s" || ds[1].Timeout != "1m" || ds[1].Retries != 2 ||
		!slices.Equal(ds[1].Levels, []string{"level 2 of n2"}) || ds[1].HostMap["n2"] != "2" {
		t.Fatalf("devices: %+v %v", ds, err)
	}
	if _, err := b.FenceDevice(ctx, "nope"); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("show unknown: %v", err)
	}
	ls, err := b.FenceLevels(ctx, "")
	want := []api.FenceLevel{
		{Node: "n1", Level: 1, Devices: []string{"pdu"}, Default: true},
		{Node: "n2", Level: 1, Devices: []string{"ipmi2"}},
		{Node: "n2", Level: 2, Devices: []string{"pdu"}},
	}
	if err != nil || !slices.EqualFunc(ls, want, func(x, y api.FenceLevel) bool {
		return x.Node == y.Node && x.Level == y.Level && x.Default == y.Default && slices.Equal(x.Devices, y.Devices)
	}) {
		t.Fatalf("levels %+v %v, want %+v", ls, err, want)
	}

	// Status: n1 by the pdu (default level), n2 by its levels, n3 by
	// nothing but its watchdog once it reports one.
	st := api.Status{Nodes: []api.NodeStatus{{Name: "n1", Role: "node"}, {Name: "n2", Role: "node"}, {Name: "n3", Role: "node"}}}
	v, _, err := a.readView()
	if err != nil {
		t.Fatal(err)
	}
	b.addFenceStatus(&st, v)
	if st.Nodes[0].Protection != "fence: pdu (level 1)" || st.Nodes[1].Protection != "fence: ipmi2 (level 1), pdu (level 2)" || st.Nodes[2].Protection != "none" {
		t.Fatalf("protection: %+v", st.Nodes)
	}
	if len(st.Warnings) != 1 || st.Warnings[0] != "n3 has no fence device and no watchdog: if it is lost, its resources wait for 'vigil fence confirm n3'" {
		t.Fatalf("warnings: %q", st.Warnings)
	}
	// Manual fence requests: refused for what the DC would never do.
	for i, tc := range []struct {
		node, want, code string
	}{
		{"n9", `unknown node "n9"`, api.CodeNotFound},
		{"n1", "it is the DC", api.CodeConflict},
		{"n3", "no fence device can fence it", api.CodeConflict},
	} {
		if _, err := b.RequestFence(ctx, tc.node, api.FenceNodeRequest{}); !api.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("#%d fence %s: %v, want %s %q", i, tc.node, err, tc.code, tc.want)
		}
	}
	if _, err := b.RequestFence(ctx, "n2", api.FenceNodeRequest{Reason: "two\nlines"}); !api.IsCode(err, api.CodeBadRequest) {
		t.Errorf("two-line reason: %v", err)
	}
	fr, err := b.RequestFence(ctx, "n2", api.FenceNodeRequest{Reason: "disk hung"})
	if err != nil || fr.Replaced || fr.DC != "n1" || fr.Request.By != "operator via n1" || fr.Request.Reason != "disk hung" ||
		!slices.Equal(fr.Plan, []string{"level 1: ipmi2", "level 2: pdu"}) {
		t.Fatalf("fence n2: %+v %v", fr, err)
	}
	if fr, err = b.RequestFence(ctx, "n2", api.FenceNodeRequest{}); err != nil || !fr.Replaced {
		t.Fatalf("fence n2 again: %+v %v", fr, err)
	}
	if a.epoch() != epoch {
		t.Fatal("a fence request moved the configuration epoch")
	}
	a.node.Read(func(s *store.State) {
		reqs, _ := clusterstate.FenceRequests(s)
		if len(reqs) != 1 || reqs[0].Target != "n2" || reqs[0].By != "operator via n1" {
			t.Fatalf("requests: %+v", reqs)
		}
	})

	// n3 reports a watchdog, n1 too; the last fencing of n2 failed.
	rec3 := model.NodeRecord{V: 1, Name: "n3", BootID: 7, Watchdog: &model.WatchdogInfo{Backend: "process", Timeout: 2 * time.Second, Lease: 5 * time.Second}}
	rec1 := rec3
	rec1.Name = "n1"
	fail := model.FenceEvent{V: 1, ID: "00000000000000000001-n2", Target: "n2", By: "dc n1", How: "device", Error: "level 1: device ipmi2: off exited 1", Started: time.Unix(1, 0)}
	if _, err := a.node.Propose(ctx, store.Txn{Ops: []store.Op{
		{Key: clusterstate.NodeKey("n3"), Value: clusterstate.Encode(rec3)},
		{Key: clusterstate.NodeKey("n1"), Value: clusterstate.Encode(rec1)},
		{Key: clusterstate.FenceEventKey(fail.ID), Value: clusterstate.Encode(fail)},
	}}); err != nil {
		t.Fatal(err)
	}
	st = api.Status{Nodes: []api.NodeStatus{{Name: "n1", Role: "node"}, {Name: "n2", Role: "node"}, {Name: "n3", Role: "node"}, {Name: "w", Role: "witness"}}}
	if v, _, err = a.readView(); err != nil {
		t.Fatal(err)
	}
	b.addFenceStatus(&st, v)
	if st.Nodes[0].Protection != "fence: pdu (level 1); watchdog (process 2s)" || st.Nodes[2].Protection != "watchdog (process 2s)" || st.Nodes[3].Protection != "" {
		t.Fatalf("protection: %+v", st.Nodes)
	}
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "the last attempt to fence n2 failed") || !strings.Contains(st.Warnings[0], "off exited 1") ||
		!strings.Contains(st.Warnings[0], "stay blocked") {
		t.Fatalf("warnings: %q", st.Warnings)
	}
	if len(st.FenceRequests) != 1 || st.FenceRequests[0].Target != "n2" {
		t.Fatalf("fence requests in status: %+v", st.FenceRequests)
	}
	// n3 is lost with a watchdog: a request is answered by the watchdog.
	if fr, err = b.RequestFence(ctx, "n3", api.FenceNodeRequest{}); err != nil || len(fr.Plan) != 1 || !strings.HasPrefix(fr.Plan[0], "watchdog (process 2s)") {
		t.Fatalf("fence n3 with a watchdog: %+v %v", fr, err)
	}
	h, err := b.FenceHistory(ctx, "n2")
	if err != nil || len(h.Events) != 1 || h.Events[0].Error == "" || len(h.Requests) != 1 {
		t.Fatalf("history of n2: %+v %v", h, err)
	}
	if h, err = b.FenceHistory(ctx, ""); err != nil || len(h.Requests) != 2 {
		t.Fatalf("history: %+v %v", h, err)
	}

	// Fencing disabled: refused, and status says the devices do not count.
	must(b.SetProperty(ctx, model.PropStonithEnabled, "false"))
	if _, err := b.RequestFence(ctx, "n2", api.FenceNodeRequest{}); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "stonith-enabled=false") {
		t.Fatalf("fence with stonith disabled: %v", err)
	}
	if v, _, err = a.readView(); err != nil {
		t.Fatal(err)
	}
	st = api.Status{Nodes: []api.NodeStatus{{Name: "n2", Role: "node"}}}
	b.addFenceStatus(&st, v)
	if !strings.HasPrefix(st.Nodes[0].Protection, "none (fence devices disabled") || len(st.Nodes[0].Fencing) != 2 {
		t.Fatalf("protection with stonith disabled: %+v", st.Nodes[0])
	}

	// Delete: levels first, then the device.
	must(b.RemoveFenceLevel(ctx, "n2", 1))
	must(b.DeleteFenceDevice(ctx, "ipmi2"))
	if ls, _ := b.FenceLevels(ctx, "n2"); len(ls) != 1 || ls[0].Devices[0] != "pdu" || ls[0].Default {
		t.Fatalf("n2 levels after removing level 1: %+v", ls)
	}
	var dv controller.View
	a.node.Read(func(s *store.State) { dv, err = controller.ReadView(s) })
	if _, ok := dv.Devices["ipmi2"]; err != nil || ok {
		t.Fatalf("ipmi2 still there: %v", err)
	}
}

// TestFenceDeviceWithFenceDummy validates against an unmodified Debian fence
// agent's metadata.
func TestFenceDeviceWithFenceDummy(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/fence_dummy"); err != nil {
		t.Skip("/usr/sbin/fence_dummy is absent: install Debian's fence-agents to run this test")
	}
	a := testAgent(t)
	a.fencer = fencing.NewRunner(fencing.Options{})
	b := backend{a}
	ctx := context.Background()
	status := filepath.Join(t.TempDir(), "status")
	epoch := a.epoch()
	if _, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "dummy", Agent: "fence_dummy",
		Options: map[string]string{"type": "file", "status_file": status, "colour": "red", "pcmk_host_list": "n2"}}); err == nil || !strings.Contains(err.Error(), "unknown parameter(s) colour") {
		t.Fatalf("unknown parameter: %v", err)
	}
	if a.epoch() != epoch {
		t.Fatal("a refused device moved the epoch")
	}
	if _, err := b.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "dummy", Agent: "fence_dummy",
		Options: map[string]string{"type": "file", "status_file": status, "pcmk_host_list": "n2", "pcmk_delay_max": "1s"}}); err != nil {
		t.Fatal(err)
	}
}
