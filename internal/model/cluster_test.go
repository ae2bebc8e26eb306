package model

import (
	"strings"
	"testing"
	"time"
)

func threeNodes() Cluster {
	return Cluster{
		Name: "prod",
		Nodes: []Node{
			{Name: "n1", ID: 1, Links: []string{"10.0.0.1:7946", "10.1.0.1:7946"}},
			{Name: "n2", ID: 2, Links: []string{"10.0.0.2:7946", "10.1.0.2:7946"}},
			{Name: "n3", ID: 3, Links: []string{"10.0.0.3:7946"}},
		},
	}
}

func TestClusterValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Cluster)
		want   string // substring of the error; "" = valid
	}{
		{"valid", func(c *Cluster) {}, ""},
		{"witness", func(c *Cluster) { c.Nodes[2].Role = RoleWitness }, ""},
		{"bad cluster name", func(c *Cluster) { c.Name = "Prod!" }, "cluster: name"},
		{"no nodes", func(c *Cluster) { c.Nodes = nil }, "no nodes"},
		{"bad node name", func(c *Cluster) { c.Nodes[0].Name = "-n1" }, "name \"-n1\""},
		{"zero id", func(c *Cluster) { c.Nodes[0].ID = 0 }, "id must be non-zero"},
		{"duplicate name", func(c *Cluster) { c.Nodes[1].Name = "n1" }, "name used twice"},
		{"duplicate id", func(c *Cluster) { c.Nodes[1].ID = 1 }, "id 1 already used by n1"},
		{"duplicate address", func(c *Cluster) { c.Nodes[1].Links[0] = "10.0.0.1:7946" }, "already used by n1"},
		{"no links", func(c *Cluster) { c.Nodes[0].Links = nil }, "needs 1 to 8 links"},
		{"nine links", func(c *Cluster) {
			c.Nodes[0].Links = nil
			for i := range 9 {
				c.Nodes[0].Links = append(c.Nodes[0].Links, "10.9.0."+string(rune('1'+i))+":7946")
			}
		}, "needs 1 to 8 links"},
		{"link without port", func(c *Cluster) { c.Nodes[0].Links[0] = "10.0.0.1" }, "want host:port"},
		{"port out of range", func(c *Cluster) { c.Nodes[0].Links[0] = "10.0.0.1:70000" }, "port must be 1-65535"},
		{"empty host", func(c *Cluster) { c.Nodes[0].Links[0] = ":7946" }, "host is empty"},
		{"negative votes", func(c *Cluster) { c.Nodes[0].Votes = -1 }, "votes must not be negative"},
		{"unknown role", func(c *Cluster) { c.Nodes[0].Role = "arbiter" }, "role \"arbiter\""},
		{"negative expected votes", func(c *Cluster) { c.Quorum.ExpectedVotes = -1 }, "expected_votes"},
		{"heartbeat too small", func(c *Cluster) { c.Timing.Heartbeat = Duration(time.Millisecond) }, "10ms floor"},
		{"timeout below three heartbeats", func(c *Cluster) {
			c.Timing.Heartbeat = Duration(500 * time.Millisecond)
			c.Timing.NodeTimeout = Duration(time.Second)
		}, "at least three heartbeats"},
		{"watchdog process", func(c *Cluster) { c.Watchdog.Backend = WatchdogProcess }, ""},
		{"watchdog device", func(c *Cluster) {
			c.Watchdog = WatchdogConfig{Backend: WatchdogDevice, Timeout: Duration(5 * time.Second)}
		}, ""},
		{"watchdog none ignores a short node timeout", func(c *Cluster) { c.Timing.NodeTimeout = Duration(600 * time.Millisecond) }, ""},
		{"watchdog unknown backend", func(c *Cluster) { c.Watchdog.Backend = "softdog" }, "backend \"softdog\""},
		{"watchdog device below 1s", func(c *Cluster) {
			c.Watchdog = WatchdogConfig{Backend: WatchdogDevice, Timeout: Duration(500 * time.Millisecond)}
		}, "at least 1s"},
		{"watchdog timeout floor", func(c *Cluster) {
			c.Watchdog = WatchdogConfig{Backend: WatchdogProcess, Timeout: Duration(50 * time.Millisecond)}
		}, "100ms floor"},
		{"watchdog lease above node timeout", func(c *Cluster) {
			c.Watchdog = WatchdogConfig{Backend: WatchdogProcess, Lease: Duration(2 * time.Second)}
		}, "must not exceed node_timeout"},
		{"watchdog default lease above a short node timeout", func(c *Cluster) {
			c.Watchdog.Backend = WatchdogProcess
			c.Timing.NodeTimeout = Duration(600 * time.Millisecond)
		}, "must not exceed node_timeout"},
		{"watchdog lease below two heartbeats", func(c *Cluster) {
			c.Watchdog = WatchdogConfig{Backend: WatchdogProcess, Lease: Duration(300 * time.Millisecond)}
		}, "two heartbeats"},
		{"watchdog device path without device backend", func(c *Cluster) {
			c.Watchdog = WatchdogConfig{Backend: WatchdogProcess, Device: "/dev/watchdog1"}
		}, "only used by"},
	}
	for i, tt := range tests {
		c := threeNodes()
		tt.mutate(&c)
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("#%d %s: unexpected error %v", i, tt.name, err)
		case tt.want != "" && err == nil:
			t.Errorf("#%d %s: no error, want one containing %q", i, tt.name, tt.want)
		case tt.want != "" && !strings.Contains(err.Error(), tt.want):
			t.Errorf("#%d %s: error %q, want it to contain %q", i, tt.name, err, tt.want)
		}
	}
}

func TestWatchdogDefaults(t *testing.T) {
	got := WatchdogConfig{Backend: WatchdogDevice}.WithDefaults()
	want := WatchdogConfig{Backend: WatchdogDevice, Timeout: Duration(DefaultWatchdogTimeout),
		Lease: Duration(DefaultWatchdogLease), Device: DefaultWatchdogDevice}
	if got != want {
		t.Fatalf("defaults: got %+v, want %+v", got, want)
	}
	if p := (WatchdogConfig{Backend: WatchdogProcess}).WithDefaults(); p.Device != "" {
		t.Fatalf("process backend got a device: %+v", p)
	}
}

func TestTimingDefaults(t *testing.T) {
	got := Timing{}.WithDefaults()
	if got.Heartbeat.D() != DefaultHeartbeat || got.NodeTimeout.D() != DefaultNodeTimeout {
		t.Fatalf("defaults: got %+v", got)
	}
	set := Timing{Heartbeat: Duration(50 * time.Millisecond)}.WithDefaults()
	if set.Heartbeat.D() != 50*time.Millisecond {
		t.Fatalf("a set value was overridden: %+v", set)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := d.UnmarshalJSON([]byte(`"250ms"`)); err != nil || d.D() != 250*time.Millisecond {
		t.Fatalf("250ms: got %v, %v", d, err)
	}
	for i, bad := range []string{`200`, `"soon"`, `null`} {
		var d Duration
		if err := d.UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("#%d %s: accepted as %v", i, bad, d)
		}
	}
	b, _ := Duration(time.Second).MarshalJSON()
	if string(b) != `"1s"` {
		t.Fatalf("marshal: %s", b)
	}
}
