package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
)

// TestForceStartArgs: force-start refuses without a node or without --yes
// before it asks the cluster anything (the config given does not exist:
// reaching for it would show in the error).
func TestForceStartArgs(t *testing.T) {
	for i, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"resource", "force-start", "vm1", "--node", "n2"}, "outside the cluster"},
		{[]string{"resource", "force-start", "vm1", "--node", "n2"}, "re-run with --yes"},
		{[]string{"resource", "force-start", "vm1", "--yes"}, "--node: name the node"},
		{[]string{"resource", "force-start", "--node", "n2", "--yes"}, "accepts 1 arg(s)"},
		{[]string{"resource", "force-start", "vm1", "vm2", "--node", "n2", "--yes"}, "accepts 1 arg(s)"},
		{[]string{"resource", "force-start", "vm1", "--node", "n2", "--yes", "--timeout", "0s"}, "want a positive duration"},
	} {
		_, _, err := run(t, append([]string{"--config", "/nonexistent/vigil.yaml"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "/nonexistent") {
			t.Errorf("#%d %q: err %v, want %q", i, tc.args, err, tc.want)
		}
	}
	// A well-formed command gets as far as looking for the cluster.
	_, _, err := run(t, "--config", "/nonexistent/vigil.yaml", "resource", "force-start", "vm1", "--node", "n2", "--yes")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/vigil.yaml") {
		t.Errorf("force-start vm1 --node n2 --yes: %v", err)
	}
}

func TestWriteForceResult(t *testing.T) {
	var b bytes.Buffer
	ok := api.ForceResult{Resource: "vm1", Agent: "vigil:vm", Node: "n2", Action: "start", Output: "started (pid 42, tcg)", Duration: 1500 * time.Millisecond}
	writeForceResult(&b, ok)
	for _, want := range []string{"vigil:vm start of vm1 on n2: OK after 1.5s", "started (pid 42, tcg)", "no record of this start"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("success does not say %q:\n%s", want, b.String())
		}
	}
	held := api.ForceResult{Resource: "vm1", Agent: "vigil:vm", Node: "n2", Action: "start", RC: 1, RCName: "ERR_GENERIC",
		Error: "agents: vigil:vm: start vm1: disk lease of vm1 is held by n1 (renewed 0.4 s ago)"}
	b.Reset()
	writeForceResult(&b, held)
	if !strings.Contains(b.String(), "rc 1 (ERR_GENERIC)") {
		t.Errorf("failure:\n%s", b.String())
	}
	if why := forceWhy(held); !strings.Contains(why, "held by n1") {
		t.Errorf("forceWhy: %q", why)
	}
}
