package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// output runs a command and returns its trimmed standard output ("" on
// any error).
func output(dir, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// readMachine describes this host.
func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), LoadFrom: loadAvg()}
	if n, err := strconv.Atoi(output("", "nproc")); err == nil {
		m.CPUs = n
	}
	hypervisor := false
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch k {
			case "model name":
				if m.Model == "" {
					m.Model = v
				}
			case "flags":
				if strings.Contains(" "+v+" ", " hypervisor ") {
					hypervisor = true
				}
			}
		}
		f.Close()
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
						m.RAM = fmt.Sprintf("%.1f GiB", kb/(1<<20))
					}
				}
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	vm := output("", "systemd-detect-virt", "--vm")
	ct := output("", "systemd-detect-virt", "--container")
	switch {
	case vm != "" && vm != "none":
		m.VM = "yes (systemd-detect-virt --vm: " + vm + ")"
	case hypervisor:
		m.VM = "yes (hypervisor CPU flag)"
	case vm == "none":
		m.VM = "no (systemd-detect-virt --vm: none)"
	default:
		m.VM = "no hypervisor CPU flag"
	}
	if ct != "" && ct != "none" {
		m.VM += "; in a container (" + ct + ")"
	}
	return m
}

// loadAvg returns the three load averages of /proc/loadavg.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// readCommit describes the checkout at root.
func readCommit(root string) Commit {
	c := Commit{Short: output(root, "git", "rev-parse", "--short", "HEAD")}
	if st := output(root, "git", "status", "--porcelain"); st != "" {
		c.Changed = strings.Split(st, "\n")
	}
	return c
}
