package qemu

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-ha/vigil/internal/qemu/qmp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Skip(DefaultBinary + " not installed")
	}
}

// stub is the near-free stand-in for a VM: no machine, 16 MiB, TCG.
func stub(name string) Spec {
	return Spec{Name: name, MemoryMiB: 16, Machine: MachineNone, Accel: AccelTCG}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var quiet = slog.New(slog.DiscardHandler)

// start starts a VM in a fresh directory and kills it at cleanup.
func start(t *testing.T, spec Spec, opts StartOptions) *VM {
	t.Helper()
	needQEMU(t)
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	v, err := Start(testCtx(t), spec, t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, v)
	return v
}

func cleanup(t *testing.T, v *VM) {
	t.Cleanup(func() {
		v.Kill()
		select {
		case <-v.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("pid %d still running", v.Pid())
		}
		v.Close()
	})
}

func waitDone(t *testing.T, v *VM) {
	t.Helper()
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("pid %d did not exit", v.Pid())
	}
}

// waitEvent reads events until one named name; it fails the test if the
// channel closes or nothing comes.
func waitEvent(t *testing.T, events <-chan qmp.Event, name string) qmp.Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("events closed before %s", name)
			}
			if ev.Name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event", name)
		}
	}
}

func TestStartStatusQuit(t *testing.T) {
	v := start(t, stub("quit"), StartOptions{})
	ctx := testCtx(t)

	st, err := v.Status(ctx)
	if err != nil || st != StateRunning {
		t.Fatalf("status %q, %v", st, err)
	}
	b, err := os.ReadFile(v.Paths().PIDFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(v.Pid()) {
		t.Errorf("pid file %q (%v), pid %d", b, err, v.Pid())
	}
	for _, p := range []string{v.Paths().QMP, v.Paths().Console, v.Paths().ConsoleLog, v.Paths().Log} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	// The console socket takes a client (a test's way into the guest's
	// serial input).
	if c, err := net.Dial("unix", v.Paths().Console); err != nil {
		t.Error(err)
	} else {
		c.Close()
	}

	if err := v.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, v.Events(), EventShutdown)
	sd, ok := ShutdownOf(ev)
	if !ok || sd.Guest || sd.Reason != "host-qmp-quit" {
		t.Errorf("SHUTDOWN %+v (%s)", sd, ev.Data)
	}
	waitDone(t, v)
	if ps := v.ProcessState(); ps == nil || ps.ExitCode() != 0 {
		t.Errorf("process state %v", ps)
	}
	if _, err := os.Stat(v.Paths().PIDFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after a clean exit: %v", err)
	}
}

func TestKillDetected(t *testing.T) {
	v := start(t, stub("kill"), StartOptions{})
	if err := v.Kill(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, v)
	if _, err := v.Status(testCtx(t)); !errors.Is(err, qmp.ErrClosed) {
		t.Errorf("status after kill: %v, want ErrClosed", err)
	}
	if err := v.Kill(); err != nil {
		t.Errorf("second kill: %v", err)
	}
}

func TestPauseContEvents(t *testing.T) {
	v := start(t, stub("pause"), StartOptions{})
	ctx := testCtx(t)
	if err := v.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, v.Events(), EventStop)
	if st, _ := v.Status(ctx); st != StatePaused {
		t.Errorf("status %s, want paused", st)
	}
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, v.Events(), EventResume)
}

// The agent restarts: it lets go of the VM (as its death would), and finds
// it again through the run directory.
func TestAttachAfterAgentRestart(t *testing.T) {
	v := start(t, stub("attach"), StartOptions{})
	dir := v.Paths().Dir
	v.Close()

	ctx := testCtx(t)
	a, err := Attach(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Pid() != v.Pid() || a.Name() != "attach" {
		t.Errorf("attached pid %d name %q, want %d attach", a.Pid(), a.Name(), v.Pid())
	}
	if st, err := a.Status(ctx); err != nil || st != StateRunning {
		t.Fatalf("status %q, %v", st, err)
	}
	if err := a.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, a.Events(), EventStop)

	// A second Start in the same directory is refused.
	if _, err := Start(ctx, stub("attach"), dir, StartOptions{Logger: quiet}); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second start: %v", err)
	}

	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, a) // seen through the pidfd, not wait(2)
	if a.ProcessState() != nil {
		t.Errorf("attached VM has a process state")
	}
}

func TestAttachRefusesStrangers(t *testing.T) {
	ctx := testCtx(t)
	empty := t.TempDir()
	if _, err := Attach(ctx, empty); !errors.Is(err, ErrNotRunning) {
		t.Errorf("empty dir: %v, want ErrNotRunning", err)
	}

	// A pid file naming a live process that is not this dir's QEMU, as
	// after a SIGKILL and pid reuse.
	stale := t.TempDir()
	os.WriteFile(NewPaths(stale).PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	if _, err := Attach(ctx, stale); !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "recycled") {
		t.Errorf("stranger's pid: %v, want ErrNotRunning", err)
	}

	// Another VM's QEMU is not ours either.
	other := start(t, stub("other"), StartOptions{})
	os.WriteFile(NewPaths(stale).PIDFile, []byte(strconv.Itoa(other.Pid())), 0o600)
	if _, err := Attach(ctx, stale); !errors.Is(err, ErrNotRunning) {
		t.Errorf("other VM's pid: %v, want ErrNotRunning", err)
	}

	// A stale pid file does not stop a new Start.
	v, err := Start(ctx, stub("fresh"), stale, StartOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, v)
}

func TestStartFailureCarriesStderr(t *testing.T) {
	needQEMU(t)
	spec := stub("bad")
	spec.ExtraArgs = []string{"-device", "no-such-device"}
	start := time.Now()
	_, err := Start(testCtx(t), spec, t.TempDir(), StartOptions{Logger: quiet})
	var se *StartError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *StartError", err)
	}
	if !strings.Contains(se.Stderr, "no-such-device") {
		t.Errorf("stderr %q", se.Stderr)
	}
	if errors.Is(err, ErrImageLocked) {
		t.Errorf("not a lock conflict: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v to notice", d)
	}
}

func TestStartContextBoundsTheStart(t *testing.T) {
	needQEMU(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Start(ctx, stub("canceled"), t.TempDir(), StartOptions{Logger: quiet})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want canceled", err)
	}
}

func createImage(t *testing.T, size string) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, size).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	return path
}

// Promise 1's last guard: QEMU's image lock stops a second writer.
func TestImageLockConflict(t *testing.T) {
	img := createImage(t, "16M")
	spec := stub("lock1")
	spec.Disks = []Disk{{Path: img, Format: FormatQcow2}}
	start(t, spec, StartOptions{})

	spec.Name = "lock2"
	v, err := Start(testCtx(t), spec, t.TempDir(), StartOptions{Logger: quiet})
	if err == nil {
		cleanup(t, v)
		t.Fatal("second VM started on a locked image")
	}
	if !errors.Is(err, ErrImageLocked) {
		t.Errorf("err = %v, want ErrImageLocked", err)
	}
	if !strings.Contains(err.Error(), `Failed to get "write" lock`) ||
		!strings.Contains(err.Error(), "Is another process using the image") {
		t.Errorf("err = %v, want QEMU's lock message", err)
	}
}

// A real machine with devices: the -device lines Args builds are accepted.
func TestStartPCWithDiskAndNIC(t *testing.T) {
	img := createImage(t, "16M")
	v := start(t, Spec{
		Name: "pc", MemoryMiB: 64, Machine: "pc", Accel: AccelAuto,
		Disks: []Disk{{Path: img, Format: FormatQcow2}},
		NICs:  []NIC{{Mode: NICUser, MAC: "52:54:00:12:34:56"}},
	}, StartOptions{})
	if st, err := v.Status(testCtx(t)); err != nil || st != StateRunning {
		t.Fatalf("status %q, %v", st, err)
	}
	// Shutdown: the BIOS ignores the power button, so quit does it.
	if err := v.Shutdown(testCtx(t), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitDone(t, v)
}

func TestShutdownFallsBackToQuit(t *testing.T) {
	v := start(t, stub("shutdown"), StartOptions{})
	begin := time.Now()
	if err := v.Shutdown(testCtx(t), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitDone(t, v)
	waitEvent(t, v.Events(), EventPowerdown)
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if err := v.Shutdown(testCtx(t), time.Second); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}

// With a context that has already run out, Shutdown still kills.
func TestShutdownKillsWhenContextEnds(t *testing.T) {
	v := start(t, stub("hurry"), StartOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := v.Shutdown(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	waitDone(t, v)
	if ps := v.ProcessState(); ps == nil || ps.Success() {
		t.Errorf("process state %v, want killed", ps)
	}
}

// listenURI has dst listen on a kernel-chosen loopback port and returns
// the URI for the source.
func listenURI(t *testing.T, dst *VM) string {
	t.Helper()
	ctx := testCtx(t)
	if err := dst.MigrateIncoming(ctx, "tcp:127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	info, err := dst.MigrationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Listening) != 1 || strings.HasSuffix(info.Listening[0], ":0") {
		t.Fatalf("destination listens on %q", info.Listening)
	}
	return info.Listening[0]
}

func TestMigration(t *testing.T) {
	src := start(t, stub("mig"), StartOptions{})
	dst := start(t, stub("mig"), StartOptions{Incoming: IncomingDefer})
	ctx := testCtx(t)

	if st, _ := dst.Status(ctx); st != StateInMigrate {
		t.Errorf("destination status %s, want inmigrate", st)
	}
	if info, err := src.MigrationStatus(ctx); err != nil || info.Status != MigrationNone {
		t.Errorf("before: %+v, %v", info, err)
	}
	if err := src.SetMigrationParams(ctx, MigrationParams{MaxBandwidth: 1 << 30, DowntimeLimit: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	var p struct {
		MaxBandwidth  int64 `json:"max-bandwidth"`
		DowntimeLimit int64 `json:"downtime-limit"`
	}
	if err := src.QMP().Execute(ctx, "query-migrate-parameters", nil, &p); err != nil {
		t.Fatal(err)
	}
	if p.MaxBandwidth != 1<<30 || p.DowntimeLimit != 100 {
		t.Errorf("parameters %+v", p)
	}

	if err := src.Migrate(ctx, listenURI(t, dst)); err != nil {
		t.Fatal(err)
	}
	info, err := src.WaitMigration(ctx, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != MigrationCompleted {
		t.Fatalf("migration %+v", info)
	}
	if info.TotalBytes != 16<<20 || info.TransferredBytes == 0 || info.RemainingBytes != 0 || info.TotalTime <= 0 {
		t.Errorf("completed migration info %+v", info)
	}

	if st, _ := src.Status(ctx); st != StatePostMigrate {
		t.Errorf("source status %s, want postmigrate", st)
	}
	waitEvent(t, dst.Events(), EventResume)
	if st, _ := dst.Status(ctx); st != StateRunning {
		t.Errorf("destination status %s, want running", st)
	}
	if err := src.Quit(ctx); err != nil {
		t.Fatal(err)
	}
}

// Disks on shared storage: the destination opens the image without its
// lock, takes it over at the switch, and then keeps out a third QEMU.
func TestMigrationHandsOverImageLock(t *testing.T) {
	img := createImage(t, "16M")
	spec := stub("shared")
	spec.Disks = []Disk{{Path: img, Format: FormatQcow2}}
	src := start(t, spec, StartOptions{})
	dst := start(t, spec, StartOptions{Incoming: IncomingDefer})
	ctx := testCtx(t)

	if err := src.Migrate(ctx, listenURI(t, dst)); err != nil {
		t.Fatal(err)
	}
	if info, err := src.WaitMigration(ctx, 20*time.Millisecond); err != nil || info.Status != MigrationCompleted {
		t.Fatalf("migration %+v, %v", info, err)
	}
	waitEvent(t, dst.Events(), EventResume)
	if err := src.Quit(ctx); err != nil {
		t.Fatal(err)
	}

	_, err := Start(ctx, spec, t.TempDir(), StartOptions{Logger: quiet})
	if !errors.Is(err, ErrImageLocked) {
		t.Fatalf("third VM: %v, want ErrImageLocked", err)
	}
}

func TestMigrationToDeadDestination(t *testing.T) {
	src := start(t, stub("deaddst"), StartOptions{})
	ctx := testCtx(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now

	if err := src.Migrate(ctx, "tcp:"+addr); err != nil {
		t.Fatal(err)
	}
	info, err := src.WaitMigration(ctx, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != MigrationFailed || !strings.Contains(info.Error, "Connection refused") {
		t.Errorf("migration %+v", info)
	}
	if st, _ := src.Status(ctx); st != StateRunning {
		t.Errorf("source status %s, want running", st)
	}
}

func TestMigrateCancel(t *testing.T) {
	src := start(t, stub("cancel"), StartOptions{})
	dst := start(t, stub("cancel"), StartOptions{Incoming: IncomingDefer})
	ctx := testCtx(t)

	// Slow enough that the migration is still running when canceled.
	if err := src.SetMigrationParams(ctx, MigrationParams{MaxBandwidth: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := src.Migrate(ctx, listenURI(t, dst)); err != nil {
		t.Fatal(err)
	}
	if info, err := src.MigrationStatus(ctx); err != nil || info.Status.Finished() {
		t.Fatalf("migration %+v, %v", info, err)
	}
	if err := src.MigrateCancel(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := src.WaitMigration(ctx, 20*time.Millisecond)
	if err != nil || info.Status != MigrationCancelled {
		t.Fatalf("migration %+v, %v", info, err)
	}
	if st, _ := src.Status(ctx); st != StateRunning {
		t.Errorf("source status %s, want running", st)
	}
	// The destination gives up on a broken stream and exits.
	waitDone(t, dst)
}
