package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerDir holds one file per live Netns lab, named after its id, with the
// pid and start time of the test process that owns it.
const ownerDir = "/run/vigil-lab"

// StaleAge is how old a lab namespace without an owner record must be before
// CleanupStale removes it.
const StaleAge = 30 * time.Minute

var labNS = regexp.MustCompile(`^` + Prefix + `([0-9a-f]{6})-[a-z0-9]+$`)

// CleanupStale removes what dead labs left behind: every namespace named
// vl<6 hex>-<host> whose owning test process (recorded in /run/vigil-lab)
// is gone, after SIGKILLing the processes still in it; and namespaces with
// no owner record that are older than StaleAge. Labs of live test processes,
// such as another package's tests running in parallel, are left alone. It
// returns the namespaces it deleted.
func CleanupStale() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var removed []string
	var errs []string
	ids := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		ns := fields[0]
		m := labNS.FindStringSubmatch(ns)
		if m == nil {
			continue
		}
		id := m[1]
		if ownerAlive(id, ns) {
			continue
		}
		ids[id] = true
		killNetnsPids(ns)
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		removed = append(removed, ns)
	}
	for id := range ids {
		removeOwner(id)
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return removed, nil
}

// ownerAlive reports whether lab id's owner process still runs; without an
// owner record, whether namespace ns is younger than StaleAge.
func ownerAlive(id, ns string) bool {
	raw, err := os.ReadFile(filepath.Join(ownerDir, id))
	if err != nil {
		fi, err := os.Stat("/run/netns/" + ns)
		return err == nil && time.Since(fi.ModTime()) < StaleAge
	}
	var pid int
	var start string
	if _, err := fmt.Sscan(string(raw), &pid, &start); err != nil {
		return false
	}
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	f := procStat(pid)
	// A zombie is dead; a different start time means the pid was reused.
	return len(f) >= 20 && f[0] != "Z" && f[19] == start
}

// procStat returns the fields of /proc/PID/stat after the command name:
// [0] is the state (field 3), [19] the start time in clock ticks since boot
// (field 22), which with the pid names one process.
func procStat(pid int) []string {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// procStart returns a process's start time (see procStat), or "".
func procStart(pid int) string {
	if f := procStat(pid); len(f) >= 20 {
		return f[19]
	}
	return ""
}

func writeOwner(id string) {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return
	}
	rec := fmt.Sprintf("%d %s\n", os.Getpid(), procStart(os.Getpid()))
	_ = os.WriteFile(filepath.Join(ownerDir, id), []byte(rec), 0o644)
}

func removeOwner(id string) { _ = os.Remove(filepath.Join(ownerDir, id)) }
