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
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/pki"
)

func newDemoCmd(g *globals) *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local three-node cluster on loopback and show a failover",
		Long: `Start three agents on 127.0.0.1 with their data in a temporary folder, write a
configuration change, kill the coordinator (the DC) with SIGKILL and show the
others detect it and elect a new DC, then restart it and show that nothing
acknowledged was lost. Everything is removed at the end.`,
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
	setup := []string{"cluster", "setup", "demo", "--dir", dir}
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

	res, err := c.SetProperty(ctx, "demo.greeting", "hello from the demo")
	if err != nil {
		return fmt.Errorf("demo: write: %w", err)
	}
	d.say("wrote demo.greeting (epoch %d): acknowledged only after a quorum committed it", res.Epoch)

	victim := st.DC
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
	d.say("killed %s, the DC, with SIGKILL", victim)
	if _, err := d.waitFor(ctx, 30*time.Second, victim+" to be lost", oc, func(st api.Status) bool {
		return nodeState(st, victim) == api.NodeLost
	}); err != nil {
		return err
	}
	d.say("%s marked lost by the others %.2fs after the kill", victim, time.Since(killed).Seconds())
	st, err = d.waitFor(ctx, 30*time.Second, "a new DC", oc, func(st api.Status) bool {
		return st.DC != "" && st.DC != victim && st.Quorum.Quorate
	})
	if err != nil {
		return err
	}
	d.say("new DC %s elected %.2fs after the kill; quorum kept (%s)", st.DC, time.Since(killed).Seconds(), st.Quorum.Reason)
	res, err = oc.SetProperty(ctx, "demo.after-failover", "written with two of three nodes")
	if err != nil {
		return fmt.Errorf("demo: write after failover: %w", err)
	}
	d.say("wrote demo.after-failover (epoch %d) with two of three nodes", res.Epoch)

	if err := d.start(victim); err != nil {
		return err
	}
	d.say("restarted %s from its data folder", victim)
	vc, err := d.client(victim)
	if err != nil {
		return err
	}
	if _, err := d.waitFor(ctx, 30*time.Second, victim+" to rejoin and catch up", vc, func(st api.Status) bool {
		return countState(st, api.NodeMember) == 3 && st.Epoch >= res.Epoch
	}); err != nil {
		return err
	}
	p, err := vc.Property(ctx, "demo.after-failover")
	if err != nil {
		return fmt.Errorf("demo: read back on %s: %w", victim, err)
	}
	d.say("%s rejoined and has every acknowledged write: demo.after-failover = %q", victim, p.Value)
	st, err = vc.Status(ctx)
	if err != nil {
		return err
	}
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
	n.cmd = cmd
	n.done = make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(n.done) }()
	return nil
}

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
