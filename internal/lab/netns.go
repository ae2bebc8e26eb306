package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Prefix starts the name of every namespace a lab creates: "vl" + the lab id
// + "-" + the host name (or "hub").
const Prefix = "vl"

// netState is what the lab has done to the network, so that faults can be
// rendered as one nftables table per host and healed exactly.
type netState struct {
	down    map[string]map[int]bool // host -> links set down
	dropped map[string]map[int]bool // host -> links whose traffic is dropped
	blocked map[string]map[string]bool
	// blocked: host -> peer IPs whose traffic the host drops (partitions)
	tables map[string]bool // hosts whose namespace holds our table
}

// NetnsUnavailable returns why Netns labs cannot run here, or "".
func NetnsUnavailable() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "iproute2's ip is not installed"
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return "no network namespace support"
	}
	return ""
}

// nsName is the namespace of a host (or "hub").
func (l *Lab) nsName(host string) string { return Prefix + l.id + "-" + host }

func (l *Lab) hubNS() string { return l.nsName("hub") }

// tableName is the lab's nftables table (in each faulty host's namespace).
func (l *Lab) tableName() string { return "vigil_lab_" + l.id }

// run runs a command for the network plumbing and returns its error with
// its output.
func run(stdin string, argv ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// setupNetns creates the hub with one bridge per link, and a namespace per
// host joined to each bridge by a veth pair.
func (l *Lab) setupNetns() {
	l.t.Helper()
	writeOwner(l.id)
	l.nets = &netState{
		down:    map[string]map[int]bool{},
		dropped: map[string]map[int]bool{},
		blocked: map[string]map[string]bool{},
		tables:  map[string]bool{},
	}
	hub := l.hubNS()
	must := func(argv ...string) {
		l.t.Helper()
		if err := run("", argv...); err != nil {
			l.t.Fatalf("lab: network setup: %v", err)
		}
	}
	must("ip", "netns", "add", hub)
	var hubCmds []string
	hubCmds = append(hubCmds, "link set lo up")
	for i := 0; i < l.opts.Links; i++ {
		hubCmds = append(hubCmds,
			fmt.Sprintf("link add br%d type bridge", i),
			fmt.Sprintf("link set br%d up", i))
	}
	for _, p := range l.hosts {
		must("ip", "netns", "add", p.Netns)
		for i := 0; i < l.opts.Links; i++ {
			hubCmds = append(hubCmds,
				fmt.Sprintf("link add %s type veth peer name l%d netns %s", hubEnd(p, i), i, p.Netns),
				fmt.Sprintf("link set %s master br%d up", hubEnd(p, i), i))
		}
	}
	if err := run(strings.Join(hubCmds, "\n")+"\n", "ip", "-n", hub, "-batch", "-"); err != nil {
		l.t.Fatalf("lab: network setup: %v", err)
	}
	for _, p := range l.hosts {
		cmds := []string{"link set lo up"}
		for i := 0; i < l.opts.Links; i++ {
			cmds = append(cmds,
				fmt.Sprintf("addr add %s/24 dev l%d", p.Host(i), i),
				fmt.Sprintf("link set l%d up", i))
		}
		if err := run(strings.Join(cmds, "\n")+"\n", "ip", "-n", p.Netns, "-batch", "-"); err != nil {
			l.t.Fatalf("lab: network setup of %s: %v", p.Name, err)
		}
	}
}

// hubEnd names the hub's end of host p's veth on link i.
func hubEnd(p *NodeProc, link int) string { return fmt.Sprintf("h%dl%d", p.Index, link) }

// teardownNetns kills whatever still runs in the lab's namespaces and
// deletes them (their veths and tables go with them).
func (l *Lab) teardownNetns() error {
	var errs []string
	names := []string{}
	for _, p := range l.hosts {
		names = append(names, p.Netns)
	}
	for _, c := range l.clients {
		names = append(names, c.Netns)
	}
	names = append(names, l.hubNS())
	for _, ns := range names {
		killNetnsPids(ns)
		if l.nets != nil && l.nets.tables[strings.TrimPrefix(ns, Prefix+l.id+"-")] {
			_ = run("", "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", l.tableName())
		}
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network teardown: %s", strings.Join(errs, "; "))
	}
	return nil
}

// killNetnsPids SIGKILLs every process in a namespace.
func killNetnsPids(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// deleteNetns deletes a namespace if it exists.
func deleteNetns(ns string) error {
	if _, err := os.Stat("/run/netns/" + ns); os.IsNotExist(err) {
		return nil
	}
	var err error
	for try := 0; try < 5; try++ {
		if err = run("", "ip", "netns", "del", ns); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// needNetns fails the test unless the lab is in Netns mode.
func (l *Lab) needNetns(what string) {
	l.t.Helper()
	if !l.opts.Netns {
		l.t.Fatalf("lab: %s needs Options.Netns (network faults never touch the host's own network)", what)
	}
}

func (l *Lab) checkLink(name string, link int) *NodeProc {
	l.t.Helper()
	p := l.Node(name)
	if link < 0 || link >= l.opts.Links {
		l.t.Fatalf("lab: link %d: the lab has links 0..%d", link, l.opts.Links-1)
	}
	return p
}

// CutLink sets a host's veth on link i down (inside its namespace): the
// "cable pulled" fault. The host sees the carrier go; peers see silence.
func (l *Lab) CutLink(name string, link int) {
	l.t.Helper()
	l.needNetns("CutLink")
	p := l.checkLink(name, link)
	l.setLink(p, link, false)
}

// HealLink sets a host's veth on link i up again.
func (l *Lab) HealLink(name string, link int) {
	l.t.Helper()
	l.needNetns("HealLink")
	p := l.checkLink(name, link)
	l.setLink(p, link, true)
}

func (l *Lab) setLink(p *NodeProc, link int, up bool) {
	l.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	p.mark("link %d %s", link, state)
	if err := run("", "ip", "-n", p.Netns, "link", "set", fmt.Sprintf("l%d", link), state); err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	l.nftMu.Lock()
	defer l.nftMu.Unlock()
	setFlag(l.nets.down, p.Name, link, !up)
}

// Drop drops all traffic in and out of a host's interface on link i with
// nftables in the host's namespace: the "firewall drop" fault. The link
// stays up; packets vanish silently.
func (l *Lab) Drop(name string, link int) {
	l.t.Helper()
	l.needNetns("Drop")
	p := l.checkLink(name, link)
	l.nftMu.Lock()
	setFlag(l.nets.dropped, p.Name, link, true)
	l.nftMu.Unlock()
	p.mark("drop link %d", link)
	l.applyFirewall(p)
}

// Undrop ends Drop on a host's link i.
func (l *Lab) Undrop(name string, link int) {
	l.t.Helper()
	l.needNetns("Undrop")
	p := l.checkLink(name, link)
	l.nftMu.Lock()
	setFlag(l.nets.dropped, p.Name, link, false)
	l.nftMu.Unlock()
	p.mark("undrop link %d", link)
	l.applyFirewall(p)
}

// Isolate drops all of a host's traffic on every link (firewall, links stay
// up). The host still reaches itself, so its own API answers, and a CLI
// call on it shows its own view: the isolated minority.
func (l *Lab) Isolate(name string) {
	l.t.Helper()
	l.needNetns("Isolate")
	p := l.Node(name)
	l.nftMu.Lock()
	for i := 0; i < l.opts.Links; i++ {
		setFlag(l.nets.dropped, p.Name, i, true)
	}
	l.nftMu.Unlock()
	p.mark("isolate")
	l.applyFirewall(p)
}

// Partition splits the hosts into groups that cannot reach each other on
// any link (hosts named in no group form one more group). It replaces any
// earlier partition; Drop, CutLink and Isolate stay as they are.
func (l *Lab) Partition(groups ...[]string) {
	l.t.Helper()
	l.needNetns("Partition")
	group := map[string]int{}
	for gi, g := range groups {
		for _, n := range g {
			l.Node(n)
			if _, dup := group[n]; dup {
				l.t.Fatalf("lab: partition: %s is in two groups", n)
			}
			group[n] = gi + 1
		}
	}
	l.nftMu.Lock()
	for _, p := range l.hosts {
		blocked := map[string]bool{}
		for _, q := range l.hosts {
			if group[p.Name] != group[q.Name] {
				for i := 0; i < l.opts.Links; i++ {
					blocked[q.Host(i)] = true
				}
			}
		}
		l.nets.blocked[p.Name] = blocked
	}
	l.nftMu.Unlock()
	for _, p := range l.hosts {
		p.mark("partition %v", groups)
		l.applyFirewall(p)
	}
}

// Heal undoes every network fault: all links up, no drops, no partition.
func (l *Lab) Heal() {
	l.t.Helper()
	l.needNetns("Heal")
	for _, p := range l.hosts {
		l.nftMu.Lock()
		var down []int
		for i := range l.nets.down[p.Name] {
			down = append(down, i)
		}
		delete(l.nets.dropped, p.Name)
		delete(l.nets.blocked, p.Name)
		l.nftMu.Unlock()
		sort.Ints(down)
		for _, i := range down {
			l.setLink(p, i, true)
		}
		p.mark("heal")
		l.applyFirewall(p)
	}
}

func setFlag(m map[string]map[int]bool, host string, link int, on bool) {
	if m[host] == nil {
		m[host] = map[int]bool{}
	}
	if on {
		m[host][link] = true
	} else {
		delete(m[host], link)
	}
}

// applyFirewall replaces the lab's table in p's namespace with one that
// renders p's current drops and blocks, atomically (one nft transaction),
// or removes it when there is nothing to drop.
func (l *Lab) applyFirewall(p *NodeProc) {
	l.t.Helper()
	l.nftMu.Lock()
	defer l.nftMu.Unlock()
	var in, out []string
	var links []int
	for i := range l.nets.dropped[p.Name] {
		links = append(links, i)
	}
	sort.Ints(links)
	for _, i := range links {
		in = append(in, fmt.Sprintf("iifname \"l%d\" drop", i))
		out = append(out, fmt.Sprintf("oifname \"l%d\" drop", i))
	}
	var ips []string
	for ip := range l.nets.blocked[p.Name] {
		ips = append(ips, ip)
	}
	slices.Sort(ips)
	if len(ips) > 0 {
		set := "{ " + strings.Join(ips, ", ") + " }"
		in = append(in, "ip saddr "+set+" drop")
		out = append(out, "ip daddr "+set+" drop")
	}
	table := "inet " + l.tableName()
	if !l.nets.tables[p.Name] && len(in) == 0 {
		return
	}
	if _, err := exec.LookPath("nft"); err != nil {
		l.t.Skip("lab: nftables (nft) is not installed; firewall faults need it")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table %s {}\ndelete table %s\n", table, table)
	if len(in) > 0 {
		fmt.Fprintf(&b, "table %s {\n", table)
		fmt.Fprintf(&b, "  chain input {\n    type filter hook input priority 0; policy accept;\n    %s\n  }\n", strings.Join(in, "\n    "))
		fmt.Fprintf(&b, "  chain output {\n    type filter hook output priority 0; policy accept;\n    %s\n  }\n", strings.Join(out, "\n    "))
		b.WriteString("}\n")
	}
	if err := run(b.String(), "ip", "netns", "exec", p.Netns, "nft", "-f", "-"); err != nil {
		l.t.Fatalf("lab: firewall of %s: %v\nruleset:\n%s", p.Name, err, b.String())
	}
	l.nets.tables[p.Name] = len(in) > 0
}
