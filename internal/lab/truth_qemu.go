package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-ha/vigil/internal/qemu"
	"github.com/vigil-ha/vigil/internal/qemu/qmp"
)

// The ground truth of a vigil:vm instance is its QEMU's run state, not the
// mere life of a QEMU process. During a live migration two QEMUs of one
// instance live at once, and only one runs the guest: the destination waits
// in "inmigrate" until the whole state has arrived, and the source, its
// vCPUs stopped for the final copy ("finish-migrate"), stays "postmigrate"
// until vigil:vm quits it. Counting those two would make every migration a
// "never twice" violation.
//
// The run state is QEMU's own answer to query-status. The driver's monitor
// (qemu.Paths.QMP, a -chardev socket + -mon) serves one client at a time
// and vigil:vm holds it for as long as QEMU runs: a second client connects
// but never gets a greeting. So the lab reads the state over a second QMP
// monitor of its own, which a test adds with the resource's extra_args
// (TruthQMPArgs). A QEMU without one, or one whose state cannot be read
// while it lives, counts as active: the sampler must never miss a double
// run, so only the positive knowledge that QEMU is in a migration state
// leaves an instance out.

// TruthQMPSocket is the ground truth's own QMP socket in a VM's run dir.
const TruthQMPSocket = "truth-qmp.sock"

// TruthQMPArgs is a vigil:vm extra_args value giving QEMU the second QMP
// monitor the ground truth reads run states from. The path is relative:
// vigil:vm starts QEMU in the VM's run dir, so each node's QEMU binds its
// own socket, though every node shares the resource's parameters (and the
// lab host's file system).
const TruthQMPArgs = "-qmp unix:" + TruthQMPSocket + ",server=on,wait=off"

// Timings of the QEMU ground truth: the sampler runs every 50ms, so a
// reading normally costs one query on a cached connection (well under a
// millisecond); the bounds only matter when QEMU is slow to answer.
const (
	// truthQMPGreeting bounds waiting for a new QEMU's greeting: its
	// monitor greets only once the main loop runs, after the accelerator
	// is set up and the kernel loaded, which takes a while under TCG on a
	// loaded host. Giving up early would count a destination still
	// starting as active while the source runs: a false violation.
	truthQMPGreeting = 10 * time.Second
	// truthQMPBind bounds waiting for a new QEMU to bind its socket (it
	// writes its pid file a moment before); a QEMU we have known for
	// longer that refuses connections is not retried, it counts as active
	// at once.
	truthQMPBind = 5 * time.Second
	// truthQMPQuery bounds one query-status. The migration's final
	// stop-and-copy holds QEMU's big lock (the monitor waits) for the
	// downtime, 300ms by default.
	truthQMPQuery = 2 * time.Second
)

// qemuActive reports whether the QEMU of a vigil:vm instance runs its
// guest: its pid file (written by QEMU once it runs) names a live process
// whose command line is a QEMU's with that very pid file, and that QEMU is
// not known to be in a migration state (inmigrate, finish-migrate,
// postmigrate). See TruthQMPArgs.
func qemuActive(pidFile string) (bool, error) {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("qemu pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false, nil // being written
	}
	cmd, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false, nil
	}
	start, ok := liveStart(pid)
	if !ok {
		return false, nil // gone, or a zombie
	}
	args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
	if !strings.Contains(string(cmd), "qemu") || !containsArg(args, pidFile) {
		return false, nil // the pid was recycled
	}
	sock := truthSocket(pid, args)
	if sock == "" {
		return true, nil // no way to read the run state: it lives
	}
	st, err := probeFor(qemuKey{pid, start}, sock).state()
	if err != nil {
		// Unknown state: active unless the process is gone meanwhile
		// (a QEMU that exits closes its monitor first).
		return processAlive(pid, start), nil
	}
	return runStateActive(st), nil
}

// runStateActive says whether a QEMU in run state st runs its guest, or
// holds it (paused, crashed, shut down but not quit): every state but the
// migration ones, in which the guest runs on the other end or not yet.
func runStateActive(st qemu.RunState) bool {
	switch st {
	case qemu.StateInMigrate, qemu.StateFinishMigrate, qemu.StatePostMigrate:
		return false
	}
	return true
}

// liveStart returns the start time (field 22 of /proc/<pid>/stat) of a live,
// non-zombie process.
func liveStart(pid int) (uint64, bool) {
	f := procStat(pid) // f[0] is field 3 (state)
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, err == nil
}

func containsArg(args []string, s string) bool {
	for _, a := range args {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

// truthSocket returns the path to dial for QEMU pid's first "-qmp unix:"
// monitor (the driver's own is a -chardev, never a -qmp), or "" if it has
// none. A relative path is QEMU's working directory's, reached through
// /proc/<pid>/cwd: that also keeps the path short enough for a unix
// socket address wherever the run dir is.
func truthSocket(pid int, args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-qmp" && args[i] != "--qmp" {
			continue
		}
		path, ok := strings.CutPrefix(args[i+1], "unix:")
		if !ok {
			continue
		}
		path = qemuOptValue(path)
		if path == "" {
			continue
		}
		if !filepath.IsAbs(path) {
			path = "/proc/" + strconv.Itoa(pid) + "/cwd/" + path
		}
		return path
	}
	return ""
}

// qemuOptValue returns the first value of a QEMU option string: up to the
// first single comma, a doubled comma standing for a comma.
func qemuOptValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				b.WriteByte(',')
				i++
				continue
			}
			break
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// qemuKey names one QEMU process: a pid and its start time, so that a
// recycled pid never reuses another QEMU's connection.
type qemuKey struct {
	pid   int
	start uint64
}

// qemuProbe is the ground truth's QMP connection to one QEMU, kept across
// samples: a handshake per sample would cost more than the query.
type qemuProbe struct {
	key  qemuKey
	sock string
	seen time.Time // when the lab first met this QEMU

	// mu serializes dials and queries. Dials must not overlap: the monitor
	// serves one client, and a second dial would only wait out its time.
	mu   sync.Mutex
	conn *qmp.Conn
}

// qemuProbes holds a probe per live QEMU, across labs and samplers.
var qemuProbes = struct {
	sync.Mutex
	m map[qemuKey]*qemuProbe
}{m: map[qemuKey]*qemuProbe{}}

// probeFor returns the probe of QEMU k, created on first use. It forgets
// the probes of QEMUs that are gone: their connections closed with them.
func probeFor(k qemuKey, sock string) *qemuProbe {
	qemuProbes.Lock()
	defer qemuProbes.Unlock()
	for key := range qemuProbes.m {
		if key != k && !processAlive(key.pid, key.start) {
			delete(qemuProbes.m, key)
		}
	}
	p := qemuProbes.m[k]
	if p == nil || p.sock != sock {
		p = &qemuProbe{key: k, sock: sock, seen: time.Now()}
		qemuProbes.m[k] = p
	}
	return p
}

// truthQMPLog swallows the QMP client's notes (dropped events: the ground
// truth reads no events).
var truthQMPLog = slog.New(slog.DiscardHandler)

// state asks QEMU for its run state, connecting first if needed.
func (p *qemuProbe) state() (qemu.RunState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.conn.Err() != nil {
		p.conn = nil // QEMU closed it: it is exiting
	}
	if p.conn == nil {
		c, err := p.dial()
		if err != nil {
			return "", err
		}
		p.conn = c
	}
	ctx, cancel := context.WithTimeout(context.Background(), truthQMPQuery)
	defer cancel()
	var r struct {
		Status qemu.RunState `json:"status"`
	}
	// A query that times out leaves the connection usable: the late reply
	// is dropped by its id.
	if err := p.conn.Execute(ctx, "query-status", nil, &r); err != nil {
		return "", fmt.Errorf("ground truth: run state of QEMU %d: %w", p.key.pid, err)
	}
	return r.Status, nil
}

// dial connects to the probe's socket. A new QEMU writes its pid file a
// moment before it binds its sockets, so a refused or missing socket is
// retried for a while after the lab first met it, as long as it lives.
func (p *qemuProbe) dial() (*qmp.Conn, error) {
	d := qmp.Dialer{EventBuffer: 1, Logger: truthQMPLog}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), truthQMPGreeting)
		c, err := d.Dial(ctx, p.sock)
		cancel()
		if err == nil {
			return c, nil
		}
		notYet := errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist)
		if !notYet || time.Since(p.seen) > truthQMPBind || !processAlive(p.key.pid, p.key.start) {
			return nil, fmt.Errorf("ground truth: QMP of QEMU %d: %w", p.key.pid, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
