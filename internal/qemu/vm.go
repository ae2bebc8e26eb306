package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vigil-ha/vigil/internal/qemu/qmp"
)

// ErrNotRunning says that no QEMU runs for a run directory.
var ErrNotRunning = errors.New("qemu: not running")

// ErrAlreadyRunning is matched by the error of a Start in a run directory
// whose QEMU still runs.
var ErrAlreadyRunning = errors.New("qemu: already running")

// ErrImageLocked is matched (errors.Is) by a StartError whose QEMU could not
// take a disk image's lock: another QEMU, here or on another host sharing
// the storage, has the image open.
var ErrImageLocked = errors.New("qemu: disk image locked by another process")

// StartError is a failed Start, with the tail of what QEMU said on stderr.
type StartError struct {
	Name   string
	Err    error
	Stderr string // last lines QEMU wrote during this start, trimmed
}

func (e *StartError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("qemu: start %s: %v", e.Name, e.Err)
	}
	return fmt.Sprintf("qemu: start %s: %v: %s", e.Name, e.Err, e.Stderr)
}

// Unwrap returns the cause, and ErrImageLocked when QEMU said so.
func (e *StartError) Unwrap() []error {
	errs := []error{e.Err}
	// QEMU: `Failed to get "write" lock` / `Failed to get shared "write"
	// lock`, followed by `Is another process using the image [path]?`.
	if strings.Contains(e.Stderr, "Failed to get") && strings.Contains(e.Stderr, "lock") {
		errs = append(errs, ErrImageLocked)
	}
	return errs
}

// stderrTail is how much of QEMU's log a StartError carries.
const stderrTail = 2048

// StartOptions tune Start.
type StartOptions struct {
	// Incoming is "" for a normal start, IncomingDefer for a migration
	// destination (then the VM waits in state "inmigrate").
	Incoming string
	// Binary is the QEMU executable; default qemu-system-x86_64 from PATH.
	Binary string
	// Logger; default slog.Default(). Start adds the VM name.
	Logger *slog.Logger
}

// DefaultBinary is the QEMU executable Start looks for in PATH.
const DefaultBinary = "qemu-system-x86_64"

// VM is a running QEMU: one this process started, or one it attached to.
// Its methods are safe for concurrent use.
type VM struct {
	name  string
	paths Paths
	pid   int
	log   *slog.Logger
	qmp   *qmp.Conn

	done chan struct{} // closed when the process is gone

	cmd   *exec.Cmd        // started here; nil when attached
	state *os.ProcessState // set before done is closed, when started here

	proc      *proc         // attached; nil when started here
	watchDone chan struct{} // closed when the attached watcher has stopped

	closeOnce sync.Once
}

// Start starts QEMU for spec with its run files in dir (created if needed),
// waits for its QMP socket, connects, and checks the VM's state: running for
// a normal start, inmigrate for a migration destination. ctx bounds only the
// start: QEMU outlives ctx, and outlives this process too.
//
// QEMU stays in the caller's process group: it survives an agent restart and
// dies with a kill of the whole group. If the start fails, QEMU is killed
// and the error is a *StartError with QEMU's stderr tail.
//
// Start refuses a dir whose QEMU is still running: Attach to it instead.
func Start(ctx context.Context, spec Spec, dir string, opts StartOptions) (*VM, error) {
	spec.Accel = ResolveAccel(spec.Accel)
	fail := func(err error) (*VM, error) { return nil, &StartError{Name: spec.Name, Err: err} }
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fail(err)
	}
	paths := NewPaths(dir)
	args, err := Args(spec, paths, opts.Incoming)
	if err != nil {
		return nil, err
	}
	bin := opts.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	if bin, err = exec.LookPath(bin); err != nil {
		return fail(err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("vm", spec.Name)

	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fail(err)
	}
	if pid, err := readPIDFile(paths.PIDFile); err == nil {
		if p, err := openProc(pid, paths.PIDFile); err == nil {
			p.close()
			return fail(fmt.Errorf("%w as pid %d in %s", ErrAlreadyRunning, pid, dir))
		}
	}
	// Left behind by a QEMU that was killed. QEMU would replace the
	// sockets itself; removing them first keeps the wait below from
	// connecting to a dead one.
	for _, f := range []string{paths.QMP, paths.Console, paths.PIDFile} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(err)
		}
	}

	logf, err := os.OpenFile(paths.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(logf, "%s vigil: starting %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	logStart, _ := logf.Seek(0, io.SeekCurrent)

	// NB: not CommandContext: ctx ends the start, not the VM. No Setsid,
	// no Pdeathsig (see the package comment). Output goes to a file, not a
	// pipe, so that QEMU can still write after this process is gone.
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fail(err)
	}
	v := &VM{
		name:  spec.Name,
		paths: paths,
		pid:   cmd.Process.Pid,
		log:   log,
		done:  make(chan struct{}),
		cmd:   cmd,
	}
	log.Info("qemu: started", "pid", v.pid, "accel", spec.Accel, "machine", spec.machine(), "incoming", opts.Incoming)
	go v.reap()

	if err := v.connect(ctx, opts.Incoming); err != nil {
		v.abort()
		return nil, &StartError{Name: spec.Name, Err: err, Stderr: tail(paths.Log, logStart)}
	}
	return v, nil
}

// connect waits for QEMU's QMP socket, connects and checks the state.
func (v *VM) connect(ctx context.Context, incoming string) error {
	d := qmp.Dialer{Logger: v.log}
	for {
		select {
		case <-v.done:
			return fmt.Errorf("exited during start (%v)", v.state)
		default:
		}
		c, err := d.Dial(ctx, v.paths.QMP)
		if err == nil {
			v.qmp = c
			break
		}
		// ENOENT or ECONNREFUSED until QEMU listens; EOF if it exits
		// during its start.
		select {
		case <-v.done:
			return fmt.Errorf("exited during start (%v)", v.state)
		case <-ctx.Done():
			return fmt.Errorf("wait for QMP: %w (last: %v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	want := StateRunning
	if incoming != "" {
		want = StateInMigrate
	}
	st, err := v.status(ctx)
	if err != nil {
		return err
	}
	if st != want {
		return fmt.Errorf("state %s, want %s", st, want)
	}
	return nil
}

// abort kills a QEMU whose start failed and waits (briefly) until it is gone.
func (v *VM) abort() {
	if v.qmp != nil {
		v.qmp.Close()
	}
	v.Kill()
	select {
	case <-v.done:
	case <-time.After(5 * time.Second):
		v.log.Error("qemu: process did not exit after SIGKILL", "pid", v.pid)
	}
}

// reap waits for the child (no zombie is left) and marks the VM gone.
func (v *VM) reap() {
	err := v.cmd.Wait()
	v.state = v.cmd.ProcessState
	v.log.Info("qemu: exited", "pid", v.pid, "status", v.state.String(), "err", err)
	close(v.done)
}

// tail returns the end of QEMU's log written since offset, trimmed.
func tail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	from := max(offset, fi.Size()-stderrTail)
	b := make([]byte, fi.Size()-from)
	n, _ := f.ReadAt(b, from)
	s := strings.TrimSpace(string(b[:n]))
	if from > offset {
		s = "…" + s
	}
	return s
}

// Running reports whether a QEMU started for dir still runs (its pid file
// names a live QEMU that writes that very pid file), without attaching to
// it. A pid file that cannot be read for another reason than its absence
// counts as running: the caller uses this to keep from forgetting a guest.
func Running(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return true
	}
	paths := NewPaths(dir)
	pid, err := readPIDFile(paths.PIDFile)
	if errors.Is(err, ErrNotRunning) {
		return false
	}
	if err != nil {
		return true
	}
	p, err := openProc(pid, paths.PIDFile)
	if err != nil {
		return !errors.Is(err, ErrNotRunning)
	}
	p.close()
	return true
}

// Attach takes hold of the QEMU running for run directory dir, after an
// agent restart: it reads the pid file, checks that the pid is still that
// QEMU (not a recycled pid), and connects to QMP. It returns an error
// matching ErrNotRunning when no such QEMU runs.
//
// NB: QMP serves one client at a time; if another still holds the socket
// (the previous agent is not quite dead), Attach waits until ctx ends.
func Attach(ctx context.Context, dir string) (*VM, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("qemu: attach %s: %w", dir, err)
	}
	paths := NewPaths(dir)
	pid, err := readPIDFile(paths.PIDFile)
	if err != nil {
		return nil, fmt.Errorf("qemu: attach %s: %w", dir, err)
	}
	p, err := openProc(pid, paths.PIDFile)
	if err != nil {
		return nil, fmt.Errorf("qemu: attach %s: %w", dir, err)
	}
	name := guestName(pid)
	v := &VM{
		name:      name,
		paths:     paths,
		pid:       pid,
		log:       slog.Default().With("vm", name),
		done:      make(chan struct{}),
		proc:      p,
		watchDone: make(chan struct{}),
	}
	go v.watch()
	c, err := (&qmp.Dialer{Logger: v.log}).Dial(ctx, paths.QMP)
	if err != nil {
		v.closeWatch()
		return nil, fmt.Errorf("qemu: attach %s: %w", dir, err)
	}
	v.qmp = c
	v.log.Info("qemu: attached", "pid", pid, "dir", dir)
	return v, nil
}

// watch marks an attached VM gone when its process exits.
func (v *VM) watch() {
	defer close(v.watchDone)
	if v.proc.wait() {
		v.log.Info("qemu: exited", "pid", v.pid)
		close(v.done)
	}
}

func (v *VM) closeWatch() {
	v.proc.close()
	<-v.watchDone
}

// guestName reads the VM name back from QEMU's "-name guest=NAME".
func guestName(pid int) string {
	args, err := readCmdline(pid)
	if err != nil {
		return ""
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-name" {
			opt, _, _ := strings.Cut(args[i+1], ",")
			return strings.TrimPrefix(opt, "guest=")
		}
	}
	return ""
}

// Name is the VM's name.
func (v *VM) Name() string { return v.name }

// Pid is QEMU's process id.
func (v *VM) Pid() int { return v.pid }

// Paths are the VM's run files.
func (v *VM) Paths() Paths { return v.paths }

// QMP is the VM's QMP connection, for commands this package does not wrap.
func (v *VM) QMP() *qmp.Conn { return v.qmp }

// Events returns QEMU's events (see qmp.Conn.Events: buffered, the oldest
// dropped when nobody reads, closed when the connection is gone). Only one
// consumer should read it.
func (v *VM) Events() <-chan qmp.Event { return v.qmp.Events() }

// Done is closed when the QEMU process is gone. After Close, it is closed
// only for a VM that this process started.
func (v *VM) Done() <-chan struct{} { return v.done }

// Wait blocks until the QEMU process is gone (nil) or ctx ends.
func (v *VM) Wait(ctx context.Context) error {
	select {
	case <-v.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qemu: wait for %s to exit: %w", v.name, ctx.Err())
	}
}

// ProcessState is the exit status of a QEMU this process started, once
// Done is closed; nil otherwise (and always for an attached VM).
func (v *VM) ProcessState() *os.ProcessState {
	select {
	case <-v.done:
		return v.state
	default:
		return nil
	}
}

// Close lets go of the VM without stopping it: the QMP connection is closed
// and an attached VM is no longer watched. QEMU keeps running; Attach finds
// it again.
func (v *VM) Close() error {
	v.closeOnce.Do(func() {
		v.qmp.Close()
		if v.proc != nil {
			v.closeWatch()
		}
	})
	return nil
}

// Kill sends SIGKILL to QEMU and returns at once; Done tells when it is gone.
// Killing a QEMU that is already gone is not an error. Kill works after
// Close too (then, for an attached VM, through the pid and its start time).
func (v *VM) Kill() error {
	var err error
	if v.cmd != nil {
		err = v.cmd.Process.Kill()
		if errors.Is(err, os.ErrProcessDone) {
			err = nil
		}
	} else {
		err = v.proc.kill()
	}
	if err != nil {
		return fmt.Errorf("qemu: kill %s (pid %d): %w", v.name, v.pid, err)
	}
	return nil
}

// RunState is QEMU's run state, as query-status reports it.
type RunState string

// Run states (QAPI RunState).
const (
	StateRunning       RunState = "running"
	StatePaused        RunState = "paused"
	StatePrelaunch     RunState = "prelaunch"
	StateInMigrate     RunState = "inmigrate"
	StatePostMigrate   RunState = "postmigrate"
	StateFinishMigrate RunState = "finish-migrate"
	StateShutdown      RunState = "shutdown"
	StateGuestPanicked RunState = "guest-panicked"
	StateIOError       RunState = "io-error"
	StateInternalError RunState = "internal-error"
	StateSuspended     RunState = "suspended"
	StateWatchdog      RunState = "watchdog"
	StateDebug         RunState = "debug"
	StateSaveVM        RunState = "save-vm"
	StateRestoreVM     RunState = "restore-vm"
	StateColo          RunState = "colo"
)

// Status asks QEMU for the VM's run state.
func (v *VM) Status(ctx context.Context) (RunState, error) {
	st, err := v.status(ctx)
	if err != nil {
		return "", fmt.Errorf("qemu: status of %s: %w", v.name, err)
	}
	return st, nil
}

func (v *VM) status(ctx context.Context) (RunState, error) {
	var r struct {
		Status RunState `json:"status"`
	}
	if err := v.qmp.Execute(ctx, "query-status", nil, &r); err != nil {
		return "", err
	}
	return r.Status, nil
}

// exec runs a QMP command whose return value does not matter.
func (v *VM) exec(ctx context.Context, what, command string, args any) error {
	if err := v.qmp.Execute(ctx, command, args, nil); err != nil {
		return fmt.Errorf("qemu: %s %s: %w", what, v.name, err)
	}
	return nil
}

// Powerdown asks the guest to shut down (an ACPI power button press) and
// returns at once. A guest without ACPI, or one that ignores it, keeps
// running; Shutdown handles that.
func (v *VM) Powerdown(ctx context.Context) error {
	return v.exec(ctx, "powerdown", "system_powerdown", nil)
}

// Pause stops the guest's CPUs (QMP stop).
func (v *VM) Pause(ctx context.Context) error { return v.exec(ctx, "pause", "stop", nil) }

// Cont resumes a paused guest, and starts a migration destination's guest
// when the migration was set up to leave it paused.
func (v *VM) Cont(ctx context.Context) error { return v.exec(ctx, "cont", "cont", nil) }

// Quit tells QEMU to exit at once (the guest is not asked) and waits until
// the process is gone or ctx ends.
func (v *VM) Quit(ctx context.Context) error {
	// QEMU may exit before its reply leaves: a closed connection is fine.
	if err := v.qmp.Execute(ctx, "quit", nil, nil); err != nil && !errors.Is(err, qmp.ErrClosed) {
		return fmt.Errorf("qemu: quit %s: %w", v.name, err)
	}
	return v.Wait(ctx)
}

// quitTimeout bounds Shutdown's quit step; killWait bounds its wait for a
// killed QEMU to be gone.
const (
	quitTimeout = 5 * time.Second
	killWait    = 5 * time.Second
)

// Shutdown stops the VM for sure, and returns nil only once the process is
// gone: it asks the guest to power down and waits up to timeout; then tells
// QEMU to quit; then sends SIGKILL. When ctx ends first it still sends
// SIGKILL and waits a few seconds for it to take, so that a caller who gives
// up does not leave a VM running behind its back.
func (v *VM) Shutdown(ctx context.Context, timeout time.Duration) error {
	select {
	case <-v.done:
		return nil
	default:
	}
	if err := v.Powerdown(ctx); err != nil {
		v.log.Warn("qemu: shutdown: powerdown failed", "err", err)
	} else {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := v.Wait(wctx)
		cancel()
		if err == nil {
			v.log.Info("qemu: shutdown: guest powered down")
			return nil
		}
		v.log.Info("qemu: shutdown: guest did not power down in time", "timeout", timeout)
	}

	if ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, quitTimeout)
		err := v.Quit(qctx)
		cancel()
		if err == nil {
			v.log.Info("qemu: shutdown: quit")
			return nil
		}
		v.log.Warn("qemu: shutdown: quit failed", "err", err)
	}

	if err := v.Kill(); err != nil {
		return fmt.Errorf("qemu: shutdown %s: %w", v.name, err)
	}
	select {
	case <-v.done:
		v.log.Warn("qemu: shutdown: killed")
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("qemu: shutdown %s: pid %d still there %v after SIGKILL", v.name, v.pid, killWait)
	}
}
