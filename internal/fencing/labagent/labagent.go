// Package labagent carries fence_vigil_lab, the project's own fence agent
// for labs and the demo: it really powers off a lab node (kills its agent's
// process group, and in network-namespace labs everything in its
// namespace) and reports its power status honestly. It speaks the standard
// fence-agents protocol, so Vigil drives it like any Debian fence agent. The
// script is embedded so that `vigil demo` can install it without the
// source tree.
package labagent

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Name is the agent's file name.
const Name = "fence_vigil_lab"

// Script is the agent (POSIX sh).
//
//go:embed fence_vigil_lab
var Script []byte

// Install writes the agent into dir (mode 0755) and returns its path.
func Install(dir string) (string, error) {
	p := filepath.Join(dir, Name)
	if err := os.WriteFile(p, Script, 0o755); err != nil {
		return "", fmt.Errorf("install %s: %w", Name, err)
	}
	return p, nil
}

// WritePower records a node's power descriptor in dir: "<node>.pgid"
// holds its process group and that process's start time (so a recycled
// PGID is never mistaken for the node), and "<node>.netns" its network
// namespace when it has one, followed by the addresses the node owns from
// boot ("198.18.0.1/24"): powering the node off deletes every other global
// address in the namespace (virtual IPs), since a machine that is off
// answers for none. It also clears a previous power-off marker.
func WritePower(dir, node string, pgid int, netns string, own ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dir, node+".off"))
	if err := os.WriteFile(filepath.Join(dir, node+".pgid"), fmt.Appendf(nil, "%d %s\n", pgid, startTime(pgid)), 0o644); err != nil {
		return err
	}
	if netns != "" {
		line := strings.Join(append([]string{netns}, own...), " ")
		return os.WriteFile(filepath.Join(dir, node+".netns"), []byte(line+"\n"), 0o644)
	}
	return nil
}

// PoweredOff reports whether the agent powered node off (its marker).
func PoweredOff(dir, node string) bool {
	_, err := os.Stat(filepath.Join(dir, node+".off"))
	return err == nil
}

// startTime returns field 22 of /proc/PID/stat ("" if unreadable).
func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // fields after "(comm)" start at field 3
}
