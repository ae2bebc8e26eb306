package lab

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Helpers for the fencing end-to-end tests.

// CutBetween drops all traffic between hosts a and b on every link (and
// nothing else): a's and b's namespaces each drop packets from and to the
// other's addresses, in the lab's own nftables table, so both still reach
// every third host (a witness). Heal, or HealBetween, undoes it; like
// Partition's blocks, it is part of the table Partition replaces.
func (l *Lab) CutBetween(a, b string) {
	l.t.Helper()
	l.needNetns("CutBetween")
	pa, pb := l.Node(a), l.Node(b)
	if pa == pb {
		l.t.Fatalf("lab: cut between %s and itself", a)
	}
	l.nftMu.Lock()
	for _, pair := range [][2]*NodeProc{{pa, pb}, {pb, pa}} {
		p, q := pair[0], pair[1]
		if l.nets.blocked[p.Name] == nil {
			l.nets.blocked[p.Name] = map[string]bool{}
		}
		for i := 0; i < l.opts.Links; i++ {
			l.nets.blocked[p.Name][q.Host(i)] = true
		}
	}
	l.nftMu.Unlock()
	for _, p := range []*NodeProc{pa, pb} {
		p.mark("cut between %s and %s", a, b)
		l.applyFirewall(p)
	}
}

// HealBetween ends CutBetween(a, b).
func (l *Lab) HealBetween(a, b string) {
	l.t.Helper()
	l.needNetns("HealBetween")
	pa, pb := l.Node(a), l.Node(b)
	l.nftMu.Lock()
	for _, pair := range [][2]*NodeProc{{pa, pb}, {pb, pa}} {
		p, q := pair[0], pair[1]
		for i := 0; i < l.opts.Links; i++ {
			delete(l.nets.blocked[p.Name], q.Host(i))
		}
	}
	l.nftMu.Unlock()
	for _, p := range []*NodeProc{pa, pb} {
		p.mark("heal between %s and %s", a, b)
		l.applyFirewall(p)
	}
}

// GroupAlive returns the live (not zombie) processes whose process group is
// pgid: after a node's power-off, the processes of its last run that are
// left (there must be none).
func GroupAlive(pgid int) []int {
	if pgid <= 1 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[0] state, f[1] ppid, f[2] pgrp
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// NetnsPids returns the processes in host name's network namespace (nil on
// loopback, or when it cannot be listed).
func (l *Lab) NetnsPids(name string) []int {
	p := l.Node(name)
	if p.Netns == "" {
		return nil
	}
	out, err := exec.Command("ip", "netns", "pids", p.Netns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}
