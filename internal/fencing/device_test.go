package fencing

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/model"
)

func TestDeviceValidate(t *testing.T) {
	ok := Device{Name: "ipmi-1", Agent: "fence_ipmilan", HostList: []string{"node1"},
		Params: map[string]string{"ip": "10.0.0.1", "password": "s3cret", "lanplus": "1"}}
	mod := func(f func(*Device)) Device {
		d := ok
		d.Params = map[string]string{}
		for k, v := range ok.Params {
			d.Params[k] = v
		}
		f(&d)
		return d
	}
	tests := []struct {
		d    Device
		want string // substring of the error; "" = valid
	}{
		{ok, ""},
		{mod(func(d *Device) { d.Agent = "/usr/local/lib/vigil/fence_vigil_lab" }), ""},
		{mod(func(d *Device) { d.HostList = nil; d.HostMap = map[string]string{"node1": "outlet 3"} }), ""},
		{mod(func(d *Device) { d.MonitorInterval = model.Duration(time.Minute); d.Retries = -1 }), ""},
		{mod(func(d *Device) { d.Name = "" }), "id"},
		{mod(func(d *Device) { d.Name = "bad name" }), "id"},
		{mod(func(d *Device) { d.Agent = "" }), "no agent"},
		{mod(func(d *Device) { d.Agent = "../fence_x" }), "agent"},
		{mod(func(d *Device) { d.Agent = "/usr/sbin/../sbin/fence_x" }), "not clean"},
		{mod(func(d *Device) { d.Params["action"] = "on" }), "set by Vigil"},
		{mod(func(d *Device) { d.Params["Port"] = "3" }), "set by Vigil"},
		{mod(func(d *Device) { d.Params["nodename"] = "x" }), "set by Vigil"},
		{mod(func(d *Device) { d.Params["pcmk_host_list"] = "node1" }), "own fields"},
		{mod(func(d *Device) { d.Params["password"] = "x\naction=on" }), "line break"},
		{mod(func(d *Device) { d.Params["a=b"] = "x" }), "parameter name"},
		{mod(func(d *Device) { d.HostList = nil }), "which nodes"},
		{mod(func(d *Device) { d.HostList = []string{"Node_1"} }), "host_list"},
		{mod(func(d *Device) { d.HostList = []string{"node1", "node1"} }), "twice"},
		{mod(func(d *Device) { d.HostMap = map[string]string{"node2": ""} }), "host_map"},
		{mod(func(d *Device) { d.HostMap = map[string]string{"node2": "a\nb"} }), "host_map"},
		{mod(func(d *Device) { d.Delay = -1 }), "negative"},
		{mod(func(d *Device) { d.MonitorInterval = model.Duration(time.Millisecond) }), "below 1s"},
		{mod(func(d *Device) { d.Retries = 11 }), "retries"},
	}
	for i, tt := range tests {
		err := tt.d.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%d: %v", i, err)
		case tt.want != "" && err == nil:
			t.Errorf("%d: want an error with %q, got none", i, tt.want)
		case tt.want != "" && (!strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidDevice)):
			t.Errorf("%d: error %q: want ErrInvalidDevice with %q", i, err, tt.want)
		}
	}
}

func TestDeviceCanFence(t *testing.T) {
	d := Device{HostList: []string{"node1", "node2"}, HostMap: map[string]string{"node2": "outlet-2", "node3": "vm-3"}}
	tests := []struct {
		node, plug string
		ok         bool
	}{
		{"node1", "node1", true},
		{"node2", "outlet-2", true}, // the map wins over the list
		{"node3", "vm-3", true},
		{"node4", "", false},
	}
	for i, tt := range tests {
		plug, ok := d.CanFence(tt.node)
		if plug != tt.plug || ok != tt.ok {
			t.Errorf("%d: CanFence(%s) = %q, %v; want %q, %v", i, tt.node, plug, ok, tt.plug, tt.ok)
		}
	}
	if _, ok := (Device{}).CanFence("node1"); ok {
		t.Error("a device with neither host list nor map fences nothing")
	}
}

func TestDeviceDefaults(t *testing.T) {
	tests := []struct {
		d       Device
		timeout time.Duration
		retries int
	}{
		{Device{}, DefaultTimeout, DefaultRetries},
		{Device{Timeout: model.Duration(5 * time.Second), Retries: -1}, 5 * time.Second, 0},
		{Device{Retries: 4}, DefaultTimeout, 4},
	}
	for i, tt := range tests {
		if got := tt.d.timeout(); got != tt.timeout {
			t.Errorf("%d: timeout %s, want %s", i, got, tt.timeout)
		}
		if got := tt.d.retries(); got != tt.retries {
			t.Errorf("%d: retries %d, want %d", i, got, tt.retries)
		}
	}
}

func TestDeviceJSON(t *testing.T) {
	d := Device{Name: "pdu", Agent: "fence_apc", Params: map[string]string{"ip": "pdu1"},
		HostList: []string{"node1"}, HostMap: map[string]string{"node2": "4"},
		Delay: model.Duration(5 * time.Second), DelayMax: model.Duration(time.Second),
		Timeout: model.Duration(30 * time.Second), Retries: 1, MonitorInterval: model.Duration(time.Minute)}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"pdu","agent":"fence_apc","params":{"ip":"pdu1"},"host_list":["node1"],"host_map":{"node2":"4"},"delay":"5s","delay_max":"1s","timeout":"30s","retries":1,"monitor_interval":"1m0s"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	var back Device
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("round trip: %+v, want %+v", back, d)
	}
}

// testDevices: ipmi-N fences node N; pdu fences node1 and node2 through
// outlets; lab fences every node.
func testDevices() map[string]Device {
	return map[string]Device{
		"ipmi-1": {Name: "ipmi-1", Agent: "fence_ipmilan", HostList: []string{"node1"}},
		"ipmi-2": {Name: "ipmi-2", Agent: "fence_ipmilan", HostList: []string{"node2"}},
		"pdu":    {Name: "pdu", Agent: "fence_apc", HostMap: map[string]string{"node1": "1", "node2": "2"}},
		"lab":    {Name: "lab", Agent: "/opt/fence_vigil_lab", HostList: []string{"node1", "node2", "node3"}},
	}
}

func TestTopologyValidate(t *testing.T) {
	nodes := []string{"node1", "node2", "node3"}
	tests := []struct {
		topo Topology
		want string
	}{
		{Topology{}, ""},
		{Topology{"node1": {{"ipmi-1"}, {"pdu"}}, "node2": {{"ipmi-2", "pdu"}}}, ""},
		{Topology{"node4": {{"lab"}}}, "not in the cluster"},
		{Topology{"node1": {}}, "0 levels"},
		{Topology{"node1": {{"ipmi-1"}, {}}}, "level 2 is empty"},
		{Topology{"node1": {{"ipmi-1", "ipmi-1"}}}, "twice"},
		{Topology{"node1": {{"nope"}}}, "no device nope"},
		{Topology{"node3": {{"pdu"}}}, "cannot fence"},
		{Topology{"node1": {{"lab"}, {"lab"}, {"lab"}, {"lab"}, {"lab"}, {"lab"}, {"lab"}, {"lab"}, {"lab"}, {"lab"}}}, "10 levels"},
		{Topology{"Node1": {{"lab"}}}, "Node1"},
	}
	for i, tt := range tests {
		err := tt.topo.Validate(testDevices(), nodes)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%d: %v", i, err)
		case tt.want != "" && err == nil:
			t.Errorf("%d: want an error with %q, got none", i, tt.want)
		case tt.want != "" && (!strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidTopology)):
			t.Errorf("%d: error %q: want ErrInvalidTopology with %q", i, err, tt.want)
		}
	}
	// Without a node list, only the devices are checked.
	if err := (Topology{"node9": {{"lab"}}}).Validate(testDevices(), nil); err == nil || !strings.Contains(err.Error(), "cannot fence") {
		t.Errorf("nil nodes: %v", err)
	}
}

func TestPlan(t *testing.T) {
	topo := Topology{"node1": {{"ipmi-1"}, {"pdu", "lab"}}, "node2": {{"nope"}}, "node3": {}}
	tests := []struct {
		node    string
		topo    Topology
		want    [][]DeviceRef
		wantErr error
	}{
		// The topology, with plugs from the host map.
		{"node1", topo, [][]DeviceRef{{{"ipmi-1", "node1"}}, {{"pdu", "1"}, {"lab", "node1"}}}, nil},
		// A level naming a missing device is an error, not a skipped level.
		{"node2", topo, nil, ErrInvalidTopology},
		// No (or an empty) topology for the node: one level per capable
		// device, by name (Pacemaker's default).
		{"node3", topo, [][]DeviceRef{{{"lab", "node3"}}}, nil},
		{"node2", nil, [][]DeviceRef{{{"ipmi-2", "node2"}}, {{"lab", "node2"}}, {{"pdu", "2"}}}, nil},
		{"node9", nil, nil, ErrNoDevice},
	}
	for i, tt := range tests {
		got, err := Plan(tt.node, tt.topo, testDevices())
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("%d: Plan(%s) error %v, want %v", i, tt.node, err, tt.wantErr)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%d: Plan(%s) = %v, want %v", i, tt.node, got, tt.want)
		}
	}
}

func TestParseMetadataAndCheck(t *testing.T) {
	xml := `<?xml version="1.0" ?>
<resource-agent name="fence_test" shortdesc="Test agent" >
<longdesc>long</longdesc>
<parameters>
	<parameter name="action" unique="0" required="1"><content type="string" default="reboot" /><shortdesc lang="en">Fencing action</shortdesc></parameter>
	<parameter name="ip" unique="0" required="1"><content type="string" /><shortdesc lang="en">Address</shortdesc></parameter>
	<parameter name="plug" unique="0" required="1" obsoletes="port"><content type="string" /></parameter>
	<parameter name="port" unique="0" required="1" deprecated="1"><content type="string" /></parameter>
	<parameter name="power_timeout" unique="0" required="0"><content type="second" default="20" /></parameter>
	<parameter name="lanplus" unique="0" required="0"><content type="boolean" /></parameter>
	<parameter name="method" unique="0" required="0"><content type="select" default="onoff"><option value="onoff" /><option value="cycle" /></content></parameter>
</parameters>
<actions>
	<action name="on" automatic="0"/>
	<action name="off" />
	<action name="status" />
	<action name="metadata" />
</actions>
</resource-agent>`
	m, err := ParseMetadata([]byte(xml))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "fence_test" || m.ShortDesc != "Test agent" || len(m.Params) != 7 {
		t.Fatalf("parsed %+v", m)
	}
	if p, _ := m.Param("power-timeout"); p.Type != "second" || p.Default != "20" {
		t.Errorf("power_timeout: %+v", p)
	}
	if p, _ := m.Param("port"); !p.Deprecated || !p.Required {
		t.Errorf("port: %+v", p)
	}
	if p, _ := m.Param("method"); !reflect.DeepEqual(p.Options, []string{"onoff", "cycle"}) {
		t.Errorf("method: %+v", p)
	}
	if !reflect.DeepEqual(m.Actions, []string{"on", "off", "status", "metadata"}) || !m.HasAction("status") || m.HasAction("list") {
		t.Errorf("actions %v", m.Actions)
	}
	if m.hostArg() != "plug" {
		t.Errorf("hostArg %q", m.hostArg())
	}

	dev := func(p map[string]string) Device { return Device{Name: "d", Agent: "fence_test", Params: p} }
	tests := []struct {
		params                    map[string]string
		unknown, missing, invalid int
	}{
		{map[string]string{"ip": "10.0.0.1"}, 0, 0, 0}, // action and plug are Vigil's
		{map[string]string{"ip": "a", "power-timeout": "5", "lanplus": "yes", "method": "cycle"}, 0, 0, 0},
		{map[string]string{"ip": "a", "ipaddr": "b"}, 1, 0, 0},
		{map[string]string{}, 0, 1, 0},
		{map[string]string{"ip": ""}, 0, 1, 0},
		{map[string]string{"ip": "a", "power_timeout": "soon", "lanplus": "maybe", "method": "kick"}, 0, 0, 3},
	}
	for i, tt := range tests {
		err := m.check(dev(tt.params))
		var pe *ParamError
		if tt.unknown+tt.missing+tt.invalid == 0 {
			if err != nil {
				t.Errorf("%d: %v", i, err)
			}
			continue
		}
		if !errors.As(err, &pe) || !errors.Is(err, ErrInvalidParams) {
			t.Errorf("%d: want a ParamError, got %v", i, err)
			continue
		}
		if len(pe.Unknown) != tt.unknown || len(pe.Missing) != tt.missing || len(pe.Invalid) != tt.invalid {
			t.Errorf("%d: %v", i, err)
		}
	}

	noOff := &Metadata{Name: "x", Actions: []string{"on", "status"}}
	if err := noOff.check(dev(nil)); err == nil || !strings.Contains(err.Error(), "cannot fence") {
		t.Errorf("agent without off: %v", err)
	}
	if _, err := ParseMetadata([]byte("<resource-agent>")); err == nil {
		t.Error("truncated XML parsed")
	}
}
