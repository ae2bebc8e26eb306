package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vigil-ha/vigil/internal/fencing/labagent"
)

// Power: every lab node has a "power descriptor" that the project's lab
// fence agent (internal/fencing/labagent) uses to really power it off:
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
	return filepath.Join(root, "internal", "fencing", "labagent", "fence_vigil_lab"), nil
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
func (l *Lab) PoweredOff(name string) bool { return labagent.PoweredOff(l.PowerDir(), name) }

// writePower records a freshly started node's process group for the lab
// fence agent. Called with p.mu held, after the process started.
func (l *Lab) writePower(p *NodeProc, pid int) error {
	return labagent.WritePower(l.PowerDir(), p.Name, pid, p.Netns, ownAddrs(p)...)
}

// ownAddrs lists the addresses a netns host owns from boot (its link
// addresses, as `ip -o addr` prints them).
func ownAddrs(p *NodeProc) []string {
	if p.Netns == "" {
		return nil
	}
	out := make([]string, len(p.Addrs))
	for i := range p.Addrs {
		out[i] = p.Host(i) + "/24"
	}
	return out
}

// dropForeignAddrs deletes every global address of a netns host that it
// does not own from boot (the virtual IPs its agent added): a powered-off
// machine answers for none, and a rebooted one starts without them.
func (l *Lab) dropForeignAddrs(p *NodeProc) {
	if p.Netns == "" {
		return
	}
	out, err := exec.Command("ip", "-n", p.Netns, "-o", "addr", "show", "scope", "global").Output()
	if err != nil {
		l.t.Errorf("lab: list the addresses of %s: %v", p.Name, err)
		return
	}
	own := ownAddrs(p)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || slices.Contains(own, f[3]) {
			continue
		}
		dev, _, _ := strings.Cut(f[1], "@")
		if err := run("", "ip", "-n", p.Netns, "addr", "del", f[3], "dev", dev); err != nil {
			l.t.Errorf("lab: power off %s: %v", p.Name, err)
		}
	}
}

// reboot prepares a node that did not stop cleanly for its next start: its
// volatile run folder is emptied and the power-off marker removed.
func (l *Lab) reboot(p *NodeProc) {
	_ = os.Remove(filepath.Join(l.PowerDir(), p.Name+".off"))
	if p.cmd == nil || p.exitErr == nil {
		return // first start, or a clean stop
	}
	l.dropForeignAddrs(p)
	if err := os.RemoveAll(l.RunDir(p.Name)); err != nil {
		l.t.Errorf("lab: reboot %s: empty its run folder: %v", p.Name, err)
	}
	p.mark("%s: rebooting (did not stop cleanly: run folder emptied)", p.Name)
}
