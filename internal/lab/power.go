package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Power: every lab node has a "power descriptor" that the project's lab
// fence agent (scripts/lab/fence_vigil_lab) uses to really power it off:
// <PowerDir>/<node>.pgid holds "PGID STARTTIME" (the agent is its process
// group's leader, and all it starts stays in that group), and in netns mode
// <node>.netns names its namespace (every process in it dies too).
//
// A node that did not stop cleanly (killed, fenced, crashed) comes back as
// from a reboot: its run folder (volatile state, a tmpfs on a real host) is
// emptied before it starts again. A clean stop (SIGTERM, exit 0) is an agent
// restart and keeps it.

// PowerDir is the folder of the lab's power descriptors.
func (l *Lab) PowerDir() string { return filepath.Join(l.dir, "power") }

// FenceAgent is the absolute path of the project's lab fence agent.
func FenceAgent() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "scripts", "lab", "fence_vigil_lab"), nil
}

// FenceCreateArgs returns the CLI arguments that configure the lab fence
// agent as device NAME for every node of the lab:
// `vigil fence create NAME /abs/fence_vigil_lab power_dir=… pcmk_host_list=…`.
func (l *Lab) FenceCreateArgs(name string, extra ...string) []string {
	l.t.Helper()
	agent, err := FenceAgent()
	if err != nil {
		l.t.Fatalf("lab: fence agent: %v", err)
	}
	args := []string{"fence", "create", name, agent, "power_dir=" + l.PowerDir(), "power_timeout=5",
		"pcmk_host_list=" + strings.Join(l.NodeNames(), ",")}
	return append(args, extra...)
}

// PoweredOff reports whether the lab fence agent powered the node off
// (its .off marker), since its last start.
func (l *Lab) PoweredOff(name string) bool {
	_, err := os.Stat(filepath.Join(l.PowerDir(), name+".off"))
	return err == nil
}

// writePower records a freshly started node's process group for the lab
// fence agent. Called with p.mu held, after the process started.
func (l *Lab) writePower(p *NodeProc, pid int) error {
	if err := os.MkdirAll(l.PowerDir(), 0o755); err != nil {
		return err
	}
	start := procStartTime(pid)
	if err := os.WriteFile(filepath.Join(l.PowerDir(), p.Name+".pgid"), fmt.Appendf(nil, "%d %s\n", pid, start), 0o644); err != nil {
		return err
	}
	if p.Netns != "" {
		if err := os.WriteFile(filepath.Join(l.PowerDir(), p.Name+".netns"), []byte(p.Netns+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// reboot prepares a node that did not stop cleanly for its next start: its
// volatile run folder is emptied and the power-off marker removed.
func (l *Lab) reboot(p *NodeProc) {
	_ = os.Remove(filepath.Join(l.PowerDir(), p.Name+".off"))
	if p.cmd == nil || p.exitErr == nil {
		return // first start, or a clean stop
	}
	if err := os.RemoveAll(l.RunDir(p.Name)); err != nil {
		l.t.Errorf("lab: reboot %s: empty its run folder: %v", p.Name, err)
	}
	p.mark("%s: rebooting (did not stop cleanly: run folder emptied)", p.Name)
}

// procStartTime returns field 22 of /proc/PID/stat ("" if unreadable).
func procStartTime(pid int) string {
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
	return f[19] // field 22 overall: fields after the comm start at 3
}
