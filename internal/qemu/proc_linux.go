package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is a handle on a QEMU that this process did not start (Attach): it
// cannot wait(2) for it, so it watches a pidfd, which becomes readable when
// the process exits and, unlike a pid, is never recycled. Where pidfds are
// missing (Linux < 5.3, some sandboxes) it falls back to polling /proc,
// comparing the start time so that a recycled pid reads as gone.
type proc struct {
	pid   int
	start uint64   // clock ticks since boot, /proc/<pid>/stat field 22
	pidfd *os.File // nil: poll /proc

	stop      chan struct{} // closed by close
	closeOnce sync.Once
}

// pollInterval is how often the /proc fallback looks.
const pollInterval = 100 * time.Millisecond

// openProc takes hold of pid and checks, after the pidfd is open (so that
// the check and the handle refer to the same process), that it is a QEMU
// writing pidFile: a pid file left by a QEMU killed with SIGKILL may name a
// pid that now belongs to anything else.
func openProc(pid int, pidFile string) (*proc, error) {
	p := &proc{pid: pid, stop: make(chan struct{})}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	switch {
	case err == nil:
		p.pidfd = os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
	case errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("%w: pid %d is gone", ErrNotRunning, pid)
	}
	st, err := readStat(pid)
	if err != nil || st.state == 'Z' || st.state == 'X' {
		p.close()
		return nil, fmt.Errorf("%w: pid %d is gone", ErrNotRunning, pid)
	}
	p.start = st.start
	args, err := readCmdline(pid)
	if err != nil || !ownsPIDFile(args, pidFile) {
		p.close()
		return nil, fmt.Errorf("%w: pid %d is not the QEMU of %s (recycled pid?)", ErrNotRunning, pid, pidFile)
	}
	return p, nil
}

// wait blocks until the process has exited (true) or close was called
// (false).
func (p *proc) wait() bool {
	if p.pidfd != nil {
		if rc, err := p.pidfd.SyscallConn(); err == nil {
			if rc.Read(func(fd uintptr) bool { return pidfdReadable(int(fd)) }) == nil {
				return true
			}
			// Closed, or not pollable here: then poll /proc instead.
		}
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return false
		default:
		}
		if !p.alive() {
			return true
		}
		select {
		case <-p.stop:
			return false
		case <-t.C:
		}
	}
}

func pidfdReadable(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// alive reports whether the process still runs (not a zombie).
func (p *proc) alive() bool {
	st, err := readStat(p.pid)
	return err == nil && st.start == p.start && st.state != 'Z' && st.state != 'X'
}

// kill sends SIGKILL, through the pidfd when there is one.
func (p *proc) kill() error {
	if p.pidfd != nil {
		rc, err := p.pidfd.SyscallConn()
		if err == nil {
			var serr error
			if cerr := rc.Control(func(fd uintptr) {
				serr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
			}); cerr == nil {
				if errors.Is(serr, unix.ESRCH) {
					return nil // already gone
				}
				return serr
			}
		}
	}
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// close stops wait and releases the pidfd.
func (p *proc) close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		if p.pidfd != nil {
			p.pidfd.Close()
		}
	})
}

type stat struct {
	state byte
	start uint64
}

// readStat reads /proc/<pid>/stat. The comm field may hold spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return stat{}, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return stat{state: f[0][0], start: start}, nil
}

func readCmdline(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
}

// ownsPIDFile reports whether a command line is QEMU's with -pidfile
// pidFile: no other process has that on its command line.
func ownsPIDFile(args []string, pidFile string) bool {
	if len(args) == 0 || !strings.Contains(args[0], "qemu") {
		return false
	}
	for i := 1; i+1 < len(args); i++ {
		if (args[i] == "-pidfile" || args[i] == "--pidfile") && args[i+1] == pidFile {
			return true
		}
	}
	return false
}

// readPIDFile returns the pid in QEMU's pid file.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("%w: no pid file %s", ErrNotRunning, path)
		}
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: malformed %q", path, b)
	}
	return pid, nil
}
