package agents

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// procInfo is what Vigil reads of /proc/<pid>/stat.
type procInfo struct {
	state byte   // R, S, D, Z, X, ...
	ppid  int    // field 4
	pgid  int    // field 5
	start uint64 // field 22: start time in clock ticks since boot
}

// errNoProc: no such process.
var errNoProc = errors.New("agents: no such process")

// readProc reads /proc/<pid>/stat. The comm field (2) may hold spaces and
// parentheses, so the fields are counted from the last ')'.
func readProc(pid int) (procInfo, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return procInfo{}, errNoProc
		}
		return procInfo{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (procInfo, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, fmt.Errorf("agents: malformed /proc stat")
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return procInfo{}, fmt.Errorf("agents: malformed /proc stat")
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgid, err2 := strconv.Atoi(string(f[2]))
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procInfo{}, fmt.Errorf("agents: malformed /proc stat: %w", err)
	}
	return procInfo{state: f[0][0], ppid: ppid, pgid: pgid, start: start}, nil
}

// procAlive reports whether pid is a live (not zombie) process that
// started at start, i.e. the same process, not a recycled PID.
func procAlive(pid int, start uint64) bool {
	p, err := readProc(pid)
	return err == nil && p.start == start && p.state != 'Z' && p.state != 'X'
}

// procID names one process across PID reuse.
type procID struct {
	pid   int
	start uint64
}

// descendants returns the live descendants of pid, found through the
// parent links in /proc.
func descendants(pid int) []procID {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	kids := map[int][]procID{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		info, err := readProc(p)
		if err != nil || info.state == 'Z' {
			continue
		}
		kids[info.ppid] = append(kids[info.ppid], procID{p, info.start})
	}
	var out []procID
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, k := range kids[p] {
			out = append(out, k)
			queue = append(queue, k.pid)
		}
	}
	return out
}
