package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/fencing/labagent"
	"github.com/vigil-ha/vigil/internal/pki"
)

func newDemoCmd(g *globals) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local three-node cluster on loopback and show a failover",
		Long: `Start three agents on 127.0.0.1 with their data in a temporary folder, give
every node a fence device (the project's lab fence agent, which powers a demo
node off by killing its agent and everything it started), create a service
group, kill the node that runs it with SIGKILL, and show the cluster fence that
node and restart the group elsewhere, with the time it took. Everything is
removed at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), g, keep)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary folder (configs and logs) at the end")
	return cmd
}

// demoNode is one agent process of the demo.
type demoNode struct {
	name string
	cfg  string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

type demo struct {
	g     *globals
	dir   string
	bin   string
	nodes map[string]*demoNode
	order []string
	t0    time.Time
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.g.stdout, "[%6.2fs] %s\n", time.Since(d.t0).Seconds(), fmt.Sprintf(format, args...))
}

func runDemo(ctx context.Context, g *globals, keep bool) error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find own binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "vigil-demo-")
	if err != nil {
		return fmt.Errorf("demo: temporary folder: %w", err)
	}
	d := &demo{g: g, dir: dir, bin: bin, nodes: map[string]*demoNode{}, t0: time.Now()}
	defer func() {
		d.stopAll()
		if keep {
			fmt.Fprintf(g.stdout, "kept %s (configs and logs)\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()

	fmt.Fprintf(g.stdout, "Vigil demo: three nodes on loopback, data in %s\n\n", dir)
	setup := []string{"cluster", "setup", "demo", "--dir", dir, "--run-dir", "run/{node}"}
	for i := 1; i <= 3; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		name := "n" + strconv.Itoa(i)
		setup = append(setup, "--node", fmt.Sprintf("%s=127.0.0.1:%d", name, port))
		d.order = append(d.order, name)
	}
	if out, err := exec.CommandContext(ctx, bin, setup...).CombinedOutput(); err != nil {
		return fmt.Errorf("demo: cluster setup: %v: %s", err, out)
	}
	for _, n := range d.order {
		if err := d.start(n); err != nil {
			return err
		}
	}
	d.say("started agents %v", d.order)

	c, err := d.client(d.order...)
	if err != nil {
		return err
	}
	st, err := d.waitFor(ctx, 30*time.Second, "the cluster to form", c, func(st api.Status) bool {
		return st.Quorum.Quorate && st.DC != "" && countState(st, api.NodeMember) == 3
	})
	if err != nil {
		return err
	}
	d.say("cluster formed: DC %s, %s", st.DC, st.Quorum.Reason)

	// A fence device for every node: the project's lab agent "powers off" a
	// demo node by killing its agent and everything it started, and reports
	// the power state honestly, like an IPMI or PDU agent would.
	agentPath, err := labagent.Install(d.dir)
	if err != nil {
		return err
	}
	if _, err := c.CreateFenceDevice(ctx, api.CreateFenceDeviceRequest{Name: "lab", Agent: agentPath, Options: map[string]string{
		"power_dir": d.powerDir(), "power_timeout": "5", "pcmk_host_list": strings.Join(d.order, ","),
	}}); err != nil {
		return fmt.Errorf("demo: fence device: %w", err)
	}
	d.say("fence device lab configured for %s (%s)", strings.Join(d.order, ", "), labagent.Name)

	// A service group: a state resource and a supervised process, kept
	// together and started in order.
	for _, r := range []api.CreateResourceRequest{
		{Group: "app", Resource: api.Resource{ID: "app-state", Agent: "vigil:dummy"}},
		{Group: "app", Resource: api.Resource{ID: "app-daemon", Agent: "vigil:process",
			Params: map[string]string{"command": "while :; do sleep 1; done"},
			Ops:    []api.Op{{Name: "monitor", Interval: "2s"}}}},
	} {
		res, err := c.CreateResource(ctx, r)
		if err != nil {
			return fmt.Errorf("demo: create %s: %w", r.Resource.ID, err)
		}
		d.say("created %s (%s) in group app: committed at epoch %d", r.Resource.ID, r.Resource.Agent, res.Epoch)
	}
	st, err = d.waitFor(ctx, 30*time.Second, "the group to start", c, func(st api.Status) bool {
		return resourceNode(st, "app-daemon") != "" && resourceNode(st, "app-state") == resourceNode(st, "app-daemon")
	})
	if err != nil {
		return err
	}
	victim := resourceNode(st, "app-daemon")
	d.say("group app runs on %s", victim)

	var others []string
	for _, n := range d.order {
		if n != victim {
			others = append(others, n)
		}
	}
	oc, err := d.client(others...)
	if err != nil {
		return err
	}
	killed := time.Now()
	d.kill(victim)
	d.say("killed %s with SIGKILL (it ran the group%s)", victim, map[bool]string{true: " and was the DC", false: ""}[victim == st.DC])
	st, err = d.waitFor(ctx, 30*time.Second, victim+" to be lost", oc, func(st api.Status) bool {
		return nodeState(st, victim) == api.NodeLost && st.DC != "" && st.DC != victim
	})
	if err != nil {
		return err
	}
	d.say("%s lost %.2fs after the kill; DC is %s, which fences it", victim, time.Since(killed).Seconds(), st.DC)
	st, err = d.waitFor(ctx, 30*time.Second, "the group to run elsewhere", oc, func(st api.Status) bool {
		n := resourceNode(st, "app-daemon")
		return n != "" && n != victim && resourceNode(st, "app-state") == n && resourceState(st, "app-daemon") == "started"
	})
	if err != nil {
		return err
	}
	if hist, err := oc.FenceHistory(ctx, victim); err == nil && len(hist.Events) > 0 {
		ev := hist.Events[len(hist.Events)-1]
		d.say("%s fenced: %s by %s, confirmed %s", victim, map[bool]string{true: "ok", false: "FAILED"}[ev.OK], strings.Join(ev.Devices, ","), ev.Confirmed)
	}
	moved := resourceNode(st, "app-daemon")
	d.say("group app running again on %s, %.2fs after the kill (never on two nodes: only after %s was confirmed off)", moved, time.Since(killed).Seconds(), victim)

	// A killed node comes back as from a reboot: its volatile run folder
	// (a tmpfs under /run on a real host) is empty.
	if err := os.RemoveAll(filepath.Join(d.dir, "run", victim)); err != nil {
		return fmt.Errorf("demo: reboot %s: %w", victim, err)
	}
	if err := d.start(victim); err != nil {
		return err
	}
	vc, err := d.client(victim)
	if err != nil {
		return err
	}
	st, err = d.waitFor(ctx, 30*time.Second, victim+" to rejoin", vc, func(st api.Status) bool {
		return countState(st, api.NodeMember) == 3
	})
	if err != nil {
		return err
	}
	time.Sleep(time.Second) // let the DC see it probed: stickiness keeps app put
	if st, err = vc.Status(ctx); err != nil {
		return err
	}
	d.say("%s restarted and rejoined; app stays on %s (stickiness)", victim, resourceNode(st, "app-daemon"))
	fmt.Fprintln(g.stdout)
	writeStatus(g.stdout, st)
	return nil
}

func (d *demo) start(name string) error {
	n := d.nodes[name]
	if n == nil {
		n = &demoNode{name: name, cfg: filepath.Join(d.dir, name+".yaml"), log: filepath.Join(d.dir, name+".log")}
		d.nodes[name] = n
	}
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("demo: log file: %w", err)
	}
	cmd := exec.Command(d.bin, "agent", "--config", n.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("demo: start %s: %w", name, err)
	}
	if err := labagent.WritePower(d.powerDir(), name, cmd.Process.Pid, ""); err != nil {
		return fmt.Errorf("demo: power descriptor of %s: %w", name, err)
	}
	n.cmd = cmd
	n.done = make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(n.done) }()
	return nil
}

func (d *demo) powerDir() string { return filepath.Join(d.dir, "power") }

func (d *demo) kill(name string) {
	n := d.nodes[name]
	if n == nil || n.cmd == nil {
		return
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

func (d *demo) stopAll() {
	for _, n := range d.nodes {
		if n.cmd == nil {
			continue
		}
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-n.done
		}
		n.cmd = nil
	}
}

// client returns an API client that asks the given nodes, in order.
func (d *demo) client(names ...string) (*api.Client, error) {
	var addrs []string
	var f *config.File
	for _, n := range names {
		var err error
		if f, err = config.Load(filepath.Join(d.dir, n+".yaml")); err != nil {
			return nil, err
		}
		addrs = append(addrs, f.Self().Links...)
	}
	key, err := pki.LoadKey(f.KeyPath())
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(key)
	if err != nil {
		return nil, err
	}
	return api.NewClient(addrs, pki.APIToken(key), pki.ClientTLS(ca, nil, "")), nil
}

// waitFor polls the status until cond holds, reporting what it waited for
// and the last answer when it gives up.
func (d *demo) waitFor(ctx context.Context, limit time.Duration, what string, c *api.Client, cond func(api.Status) bool) (api.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last api.Status
	var lastErr error
	for {
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(qctx)
		qcancel()
		if err == nil {
			last = st
			if cond(st) {
				return st, nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("demo: waited %s for %s; last status %+v, last error %v (logs in %s)",
				limit, what, last, lastErr, d.dir)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// resourceNode returns where an instance is started ("" if nowhere).
func resourceNode(st api.Status, id string) string {
	for _, r := range st.Resources {
		if r.Instance == id && r.State == "started" {
			return r.Node
		}
	}
	return ""
}

func resourceState(st api.Status, id string) string {
	for _, r := range st.Resources {
		if r.Instance == id {
			return r.State
		}
	}
	return ""
}

func countState(st api.Status, state string) int {
	n := 0
	for _, ns := range st.Nodes {
		if ns.State == state {
			n++
		}
	}
	return n
}

func nodeState(st api.Status, name string) string {
	for _, ns := range st.Nodes {
		if ns.Name == name {
			return ns.State
		}
	}
	return ""
}

// freePort finds a port that is free for both TCP and UDP on loopback.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("demo: find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("demo: no port free for both TCP and UDP")
}
