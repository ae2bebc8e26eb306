package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
)

func TestParseFenceOptions(t *testing.T) {
	for i, tc := range []struct {
		args       []string
		allowEmpty bool
		want       map[string]string
		err        string
	}{
		{args: nil, want: nil},
		{
			args: []string{"ip=10.0.0.1", "username=admin", "pcmk_host_list=n1,n2", "pcmk_host_map=n1:1;n2:2", "pcmk_delay_base=5s", "retries=0"},
			want: map[string]string{"ip": "10.0.0.1", "username": "admin", "pcmk_host_list": "n1,n2", "pcmk_host_map": "n1:1;n2:2", "pcmk_delay_base": "5s", "retries": "0"},
		},
		// A value may hold '=' (a host map written n1=plug1).
		{args: []string{"pcmk_host_map=n1=a;n2=b"}, want: map[string]string{"pcmk_host_map": "n1=a;n2=b"}},
		{args: []string{"ip="}, allowEmpty: true, want: map[string]string{"ip": ""}},
		{args: []string{"ip="}, err: "empty value"},
		{args: []string{"ip=1", "ip=2"}, err: "option ip given twice"},
		{args: []string{"lanplus"}, err: `"lanplus": want key=value`},
		{args: []string{"=1"}, err: "want key=value"},
	} {
		got, err := parseFenceOptions(tc.args, tc.allowEmpty)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("#%d %q: %v %v, want %v", i, tc.args, got, err, tc.want)
		}
	}
}

func TestParseLevelAdd(t *testing.T) {
	for i, tc := range []struct {
		args    []string
		node    string
		level   int
		devices []string
		err     string
	}{
		{args: []string{"n1", "1", "ipmi1"}, node: "n1", level: 1, devices: []string{"ipmi1"}},
		{args: []string{"n1", "2", "pdu-a,pdu-b"}, node: "n1", level: 2, devices: []string{"pdu-a", "pdu-b"}},
		// pcs also takes the devices as separate words.
		{args: []string{"n1", "9", "pdu-a", "pdu-b,pdu-c"}, node: "n1", level: 9, devices: []string{"pdu-a", "pdu-b", "pdu-c"}},
		{args: []string{"n1", "0", "x"}, err: `level "0": want a number from 1`},
		{args: []string{"n1", "10", "x"}, err: `level "10"`},
		{args: []string{"n1", "one", "x"}, err: `level "one"`},
		// pcs order (LEVEL NODE): say which comes first.
		{args: []string{"1", "n1", "x"}, err: "the node comes first"},
		{args: []string{"n1", "1", "a,,b"}, err: "empty device name"},
		{args: []string{"n1", "1", "a,a"}, err: "device a given twice"},
		{args: []string{"n1", "1"}, err: "want NODE LEVEL DEVICE"},
	} {
		node, level, devices, err := parseLevelAdd(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || node != tc.node || level != tc.level || !reflect.DeepEqual(devices, tc.devices) {
			t.Errorf("#%d %q: %s %d %q %v", i, tc.args, node, level, devices, err)
		}
	}
}

// TestFenceArgsRefusedBeforeAsking: malformed fence commands fail before
// any node is contacted (there is none here).
func TestFenceArgsRefusedBeforeAsking(t *testing.T) {
	for i, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fence", "create", "ipmi1"}, "requires at least 2 arg"},
		{[]string{"fence", "create", "ipmi1", "fence_ipmilan", "lanplus"}, `"lanplus": want key=value`},
		{[]string{"fence", "create", "ipmi1", "fence_ipmilan", "ip="}, "empty value"},
		{[]string{"fence", "update", "ipmi1"}, "requires at least 2 arg"},
		{[]string{"fence", "level", "add", "n1", "12", "ipmi1"}, `level "12"`},
		{[]string{"fence", "level", "remove", "n1", "x"}, `level "x"`},
		{[]string{"fence", "n1", "n2"}, "accepts at most 1 arg"},
		{[]string{"fence", "history", "n1", "n2"}, "accepts at most 1 arg"},
	} {
		_, _, err := run(t, append([]string{"--config", "/nonexistent/vigil.yaml"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.want)
		}
	}
	// A well-formed command gets as far as looking for the cluster.
	_, _, err := run(t, "--config", "/nonexistent/vigil.yaml", "fence", "n2", "--yes", "--reason", "test")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/vigil.yaml") {
		t.Errorf("fence n2: %v", err)
	}
}

func TestWriteFenceOutput(t *testing.T) {
	var b bytes.Buffer
	writeStatus(&b, api.Status{
		Cluster: "c", Node: "n1",
		Nodes: []api.NodeStatus{
			{Name: "n1", Self: true, State: "member", Role: "node", Raft: "voter", Protection: "fence: ipmi1 (level 1), pdu (level 2)"},
			{Name: "n3", State: "lost", Role: "node", Raft: "voter", Protection: "none"},
		},
		FenceRequests: []api.FenceRequest{{Target: "n3", By: "operator via n1", At: time.Unix(0, 0), Reason: "hung"}},
		Warnings:      []string{"n3 has no fence device and no watchdog: if it is lost, its resources wait for 'vigil fence confirm n3'"},
	})
	out := b.String()
	for _, want := range []string{"PROTECTION", "fence: ipmi1 (level 1), pdu (level 2)", "Fence requests in flight:", "n3: asked by operator via n1", "WARNING: n3 has no fence device"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}

	b.Reset()
	writeFenceHistory(&b, api.FenceHistory{Events: []api.FenceEvent{
		{ID: "1-n2", Target: "n2", By: "dc n1", How: "device", OK: true, Level: 2, Devices: []string{"pdu"}, Confirmed: "status off", Duration: 1500 * time.Millisecond, Reason: "lost"},
		{ID: "2-n3", Target: "n3", By: "operator via n1", How: "device", Error: "level 1: device ipmi3: off exited 1", Attempts: []string{"level 1 ipmi3 off: rc 1"}},
	}}, true)
	out = b.String()
	for _, want := range []string{"TARGET", "status off", "1.5s", "NO", "error: level 1: device ipmi3: off exited 1", "level 1 ipmi3 off: rc 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("history does not say %q:\n%s", want, out)
		}
	}
	if e := newestEvent(api.FenceHistory{Events: []api.FenceEvent{{ID: "1-n2", Target: "n2"}, {ID: "3-n3", Target: "n3"}, {ID: "2-n2", Target: "n2"}}}, "n2", "1-n2"); e.ID != "2-n2" {
		t.Errorf("newest event after 1-n2: %+v", e)
	}
}
