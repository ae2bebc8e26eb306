package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vigil-ha/vigil/internal/api"
)

func TestParseResourceArgs(t *testing.T) {
	for i, tc := range []struct {
		args       []string
		allowEmpty bool
		want       resourceArgs
		err        string
	}{
		{args: nil, want: resourceArgs{}},
		{
			args: strings.Fields("ip=192.0.2.10 cidr_netmask=24 op monitor interval=10s timeout=20s on-fail=restart op start timeout=30 meta resource-stickiness=100 target-role=Stopped utilization cpu=1 memory=512"),
			want: resourceArgs{
				params: map[string]string{"ip": "192.0.2.10", "cidr_netmask": "24"},
				ops: []api.Op{
					{Name: "monitor", Interval: "10s", Timeout: "20s", OnFail: "restart"},
					{Name: "start", Timeout: "30"},
				},
				meta: map[string]string{"resource-stickiness": "100", "target-role": "Stopped"},
				util: map[string]string{"cpu": "1", "memory": "512"},
			},
		},
		// Sections may come in any order and repeat.
		{
			args: strings.Fields("meta priority=5 a=1 op monitor interval=5 meta is-managed=false"),
			want: resourceArgs{
				params: nil,
				meta:   map[string]string{"priority": "5", "a": "1", "is-managed": "false"},
				ops:    []api.Op{{Name: "monitor", Interval: "5"}},
			},
		},
		// An op with no options is allowed (defaults apply).
		{args: []string{"op", "monitor"}, want: resourceArgs{ops: []api.Op{{Name: "monitor"}}}},
		// on_fail is accepted as a spelling of on-fail.
		{args: []string{"op", "stop", "on_fail=block"}, want: resourceArgs{ops: []api.Op{{Name: "stop", OnFail: "block"}}}},
		// Update removes with k=.
		{args: []string{"ip=", "meta", "target-role="}, allowEmpty: true, want: resourceArgs{params: map[string]string{"ip": ""}, meta: map[string]string{"target-role": ""}}},
		{args: []string{"ip="}, err: "empty value"},
		{args: []string{"op"}, err: "want op NAME"},
		{args: []string{"op", "interval=10s"}, err: "want op NAME"},
		{args: []string{"op", "meta"}, err: "want op NAME"},
		{args: []string{"op", "monitor", "depth=10"}, err: `unknown option "depth"`},
		{args: []string{"op", "monitor", "interval=1", "interval=2"}, err: "interval given twice"},
		{args: []string{"ip=1", "ip=2"}, err: "parameter ip given twice"},
		{args: []string{"bogus"}, err: `"bogus": want key=value`},
		{args: []string{"=x"}, err: "want key=value"},
	} {
		got, err := parseResourceArgs(tc.args, tc.allowEmpty)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("#%d %q: %v", i, tc.args, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("#%d %q:\n got %+v\nwant %+v", i, tc.args, got, tc.want)
		}
	}
}

func TestParseLocation(t *testing.T) {
	for i, tc := range []struct {
		args string
		want api.Location
		err  string
	}{
		{args: "l1 web prefers n1", want: api.Location{ID: "l1", Resource: "web", Node: "n1", Score: "INFINITY"}},
		{args: "l1 web prefers n1=50", want: api.Location{ID: "l1", Resource: "web", Node: "n1", Score: "50"}},
		{args: "l1 web avoids n2", want: api.Location{ID: "l1", Resource: "web", Node: "n2", Score: "-INFINITY"}},
		{args: "l1 web avoids n2=+200", want: api.Location{ID: "l1", Resource: "web", Node: "n2", Score: "-200"}},
		{args: "l1 web avoids n2=-200", err: "positive score"},
		{args: "l1 web prefers n1=lots", err: `score "lots"`},
		{args: "l1 web prefers n1 n2", err: "one node per constraint"},
		{args: "l1 web prefers =5", err: "no node given"},
		{args: "l1 web rule 100 rack eq a", want: api.Location{ID: "l1", Resource: "web", Score: "100",
			Rule: &api.Rule{Expressions: []api.Expression{{Attribute: "rack", Op: "eq", Value: "a"}}}}},
		{args: "l1 web rule score=-INFINITY #uname eq n3", want: api.Location{ID: "l1", Resource: "web", Score: "-INFINITY",
			Rule: &api.Rule{Expressions: []api.Expression{{Attribute: "#uname", Op: "eq", Value: "n3"}}}}},
		{args: "l1 web rule -inf ssd not_defined", err: "defined|not_defined ATTR"},
		{args: "l1 web rule -500 not_defined ssd", want: api.Location{ID: "l1", Resource: "web", Score: "-500",
			Rule: &api.Rule{Expressions: []api.Expression{{Attribute: "ssd", Op: "not_defined"}}}}},
		// Without a score a rule is INFINITY.
		{args: "l1 web rule cpu gte 4", want: api.Location{ID: "l1", Resource: "web", Score: "INFINITY",
			Rule: &api.Rule{Expressions: []api.Expression{{Attribute: "cpu", Op: "gte", Value: "4"}}}}},
		{args: "l1 web rule 10 cpu like 4", err: `rule operator "like"`},
		{args: "l1 web rule 10 cpu gte 4 and ram gte 8", err: "one expression"},
		{args: "l1 web rule score=big cpu gte 4", err: `"score=big"`},
		{args: "l1 web", err: "want ID RESOURCE"},
		{args: "l1 web likes n1", err: `"likes"`},
	} {
		got, err := parseLocation(strings.Fields(tc.args))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("#%d %q: %v", i, tc.args, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("#%d %q:\n got %+v\nwant %+v", i, tc.args, got, tc.want)
		}
	}
}

func TestParseColocationAndOrder(t *testing.T) {
	f := false
	for i, tc := range []struct {
		args string
		want any
		err  string
	}{
		{args: "colo c1 web with db", want: api.Colocation{ID: "c1", Resource: "web", With: "db", Score: "INFINITY"}},
		{args: "colo c1 web with db -INFINITY", want: api.Colocation{ID: "c1", Resource: "web", With: "db", Score: "-INFINITY"}},
		{args: "colo c1 web with db score=200", want: api.Colocation{ID: "c1", Resource: "web", With: "db", Score: "200"}},
		{args: "colo c1 web with db always", err: `score "always"`},
		{args: "colo c1 web db", err: "want ID RESOURCE with WITH"},
		{args: "colo c1 web with db 1 2", err: "want ID RESOURCE with WITH"},
		{args: "order o1 db then web", want: api.Order{ID: "o1", First: "db", Then: "web"}},
		{args: "order o1 db then web kind=optional symmetrical=false", want: api.Order{ID: "o1", First: "db", Then: "web", Kind: "Optional", Symmetrical: &f}},
		{args: "order o1 db then web kind=Serialize", err: `kind "Serialize"`},
		{args: "order o1 db then web symmetrical=maybe", err: `symmetrical "maybe"`},
		{args: "order o1 db then web later", err: `"later"`},
		{args: "order o1 db web", err: "want ID FIRST then THEN"},
	} {
		fields := strings.Fields(tc.args)
		var got any
		var err error
		if fields[0] == "colo" {
			got, err = parseColocation(fields[1:])
		} else {
			got, err = parseOrder(fields[1:])
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("#%d %q: %v", i, tc.args, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("#%d %q:\n got %+v\nwant %+v", i, tc.args, got, tc.want)
		}
	}
}

func TestParseCloneArgs(t *testing.T) {
	for i, tc := range []struct {
		args   string
		of     string
		want   api.CloneRequest
		errSub string
	}{
		{args: "web", of: "web"},
		{args: "web max=2", of: "web", want: api.CloneRequest{Max: 2}},
		{args: "web web-all clone-max=3", of: "web", want: api.CloneRequest{ID: "web-all", Max: 3}},
		{args: "web max=-1", errSub: "want a number"},
		{args: "web a b", errSub: `"b"`},
		{args: "web interleave=true", errSub: "interleave"},
	} {
		of, got, err := parseCloneArgs(strings.Fields(tc.args))
		if tc.errSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.errSub)
			}
			continue
		}
		if err != nil || of != tc.of || got != tc.want {
			t.Errorf("#%d %q: %q %+v %v", i, tc.args, of, got, err)
		}
	}
}

// TestNegativeScoreIsNotAFlag checks that `-INFINITY` reaches the
// constraint parser instead of being read as a flag: the command fails
// later, on the missing key file, not on flag parsing.
func TestNegativeScoreIsNotAFlag(t *testing.T) {
	for i, args := range [][]string{
		{"--api", "127.0.0.1:1", "--key-file", "/nonexistent/key", "constraint", "colocation", "add", "c1", "a", "with", "b", "-INFINITY"},
		{"--api", "127.0.0.1:1", "--key-file", "/nonexistent/key", "constraint", "location", "add", "l1", "a", "rule", "-100", "#uname", "eq", "n1"},
	} {
		_, _, err := run(t, args...)
		if err == nil || strings.Contains(err.Error(), "flag") || !strings.Contains(err.Error(), "nonexistent") {
			t.Errorf("#%d: %v", i, err)
		}
	}
	// A parse error comes before any connection.
	_, _, err := run(t, "--api", "127.0.0.1:1", "--key-file", "/nonexistent/key", "constraint", "colocation", "add", "c1", "a", "b")
	if err == nil || !strings.Contains(err.Error(), "want ID RESOURCE with WITH") {
		t.Errorf("parse error: %v", err)
	}
}

func TestCreateRefusesBadArgsBeforeConnecting(t *testing.T) {
	_, _, err := run(t, "--api", "127.0.0.1:1", "--key-file", "/nonexistent/key", "resource", "create", "web", "vigil:dummy", "op", "monitor", "every=10s")
	if err == nil || !strings.Contains(err.Error(), `unknown option "every"`) {
		t.Fatalf("got %v", err)
	}
}

func TestWriteResourceStatus(t *testing.T) {
	var b strings.Builder
	writeResourceStatus(&b, api.Status{
		Resources: []api.ResourceStatus{
			{Instance: "web", Resource: "web", Agent: "vigil:dummy", State: "started", Node: "n2"},
			{Instance: "db", Resource: "db", Agent: "ocf:heartbeat:Dummy", State: "unknown", Node: "n3", Note: "waiting for fencing"},
			{Instance: "x", Resource: "x", Agent: "vigil:dummy", State: "stopped", Note: "disabled"},
		},
		Failures: []api.Record{{Instance: "web", Node: "n1", State: "failed", FailCount: 2, LastOp: "monitor", LastRC: 7, Output: "gone\nnot running"}},
		Blocked:  []api.Blocked{{Instance: "db", Reason: "unknown on n3 (waiting for fencing)"}},
		Pending:  []api.PendingTask{{ID: "t1", Instance: "web", Node: "n2", Action: "stop", Reason: "moving"}},
	})
	got := b.String()
	for _, want := range []string{
		"web  (vigil:dummy)          started on n2\n",
		"db   (ocf:heartbeat:Dummy)  unknown on n3 (waiting for fencing)\n",
		"x    (vigil:dummy)          stopped (disabled)\n",
		"web on n1: failed, fail count 2 (last monitor rc=7): not running\n",
		"db: unknown on n3 (waiting for fencing)\n",
		"stop web on n2 (t1): moving\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, got)
		}
	}
}

func TestWriteResultNamesSideEffects(t *testing.T) {
	var b strings.Builder
	writeResult(&b, "deleted web", api.WriteResult{Epoch: 9, Changes: []string{
		"- config/constraints/location/cli-prefer-web", "- config/groups/stack", "- config/resources/web", "~ config/nodes/n1",
	}})
	want := "deleted web (epoch 9)\n  also removed constraint location cli-prefer-web\n  also removed group stack\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}
