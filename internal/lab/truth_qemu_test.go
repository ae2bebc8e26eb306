package lab

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/qemu"
)

// startTruthQEMU starts a device-less QEMU (machine none, 16 MiB, TCG) in
// a fresh run dir through the driver, as vigil:vm does, with the ground
// truth's QMP monitor when truthQMP; it is killed at cleanup.
func startTruthQEMU(t *testing.T, name string, incoming string, truthQMP bool) (*qemu.VM, string) {
	t.Helper()
	spec := qemu.Spec{Name: name, MemoryMiB: 16, Machine: qemu.MachineNone, Accel: qemu.AccelTCG}
	if truthQMP {
		spec.ExtraArgs = strings.Fields(TruthQMPArgs)
	}
	dir := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := qemu.Start(ctx, spec, dir, qemu.StartOptions{Incoming: incoming, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.Kill()
		select {
		case <-v.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("QEMU %s (pid %d) still runs", name, v.Pid())
		}
		v.Close()
	})
	return v, v.Paths().PIDFile
}

func wantQEMUActive(t *testing.T, what, pidFile string, want bool) {
	t.Helper()
	got, err := qemuActive(pidFile)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Errorf("%s: counted active %v, want %v", what, got, want)
	}
}

// The ground truth leaves out exactly the QEMUs it knows to be in a
// migration state: a destination waiting for its guest and a source that
// handed it over. A QEMU running its guest counts, and so does a
// destination whose state it cannot read (no truth monitor): the exclusion
// rests on QEMU's answer, not on the command line.
func TestTruthQEMURunState(t *testing.T) {
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		t.Skip(qemu.DefaultBinary + " is not installed")
	}
	src, srcPID := startTruthQEMU(t, "src", "", true)
	dst, dstPID := startTruthQEMU(t, "dst", qemu.IncomingDefer, true)
	_, blindPID := startTruthQEMU(t, "blind", qemu.IncomingDefer, false)

	wantQEMUActive(t, "a QEMU started without -incoming", srcPID, true)
	wantQEMUActive(t, "a QEMU waiting with -incoming (inmigrate)", dstPID, false)
	wantQEMUActive(t, "a QEMU waiting with -incoming, without the truth's monitor", blindPID, true)
	wantQEMUActive(t, "no QEMU (no pid file)", filepath.Join(t.TempDir(), "qemu.pid"), false)

	// The sampler's cost: a cached connection per QEMU, one query.
	const n = 20
	t0 := time.Now()
	for range n {
		if on, err := qemuActive(srcPID); !on || err != nil {
			t.Fatalf("source: %v, %v", on, err)
		}
	}
	t.Logf("one reading of a running QEMU: %v", time.Since(t0)/n)

	// Hand the guest over: now the source is out and the destination in.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	uri := "unix:" + filepath.Join(dst.Paths().Dir, "migrate.sock")
	if err := dst.MigrateIncoming(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if err := src.Migrate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	if info, err := src.WaitMigration(ctx, 20*time.Millisecond); err != nil || info.Status != qemu.MigrationCompleted {
		t.Fatalf("migration: %+v, %v", info, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := dst.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st == qemu.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination %s after the migration, want running", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, _ := src.Status(ctx); st != qemu.StatePostMigrate {
		t.Fatalf("source %s after the migration, want postmigrate", st)
	}
	wantQEMUActive(t, "the source after the handover (postmigrate)", srcPID, false)
	wantQEMUActive(t, "the destination after the handover (running)", dstPID, true)

	// A killed QEMU leaves its pid file behind: it runs nothing.
	if err := dst.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dst.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the destination did not exit")
	}
	if _, err := os.Stat(dstPID); err != nil {
		t.Fatalf("the killed QEMU's pid file: %v", err)
	}
	wantQEMUActive(t, "a killed QEMU", dstPID, false)
}

func TestTruthSocket(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{strings.Fields("qemu -pidfile /r/qemu.pid " + TruthQMPArgs), "/proc/42/cwd/" + TruthQMPSocket},
		{[]string{"qemu", "-qmp", "unix:/a,,b/q.sock,server=on,wait=off"}, "/a,b/q.sock"},
		{[]string{"qemu", "--qmp", "unix:/q.sock"}, "/q.sock"},
		{[]string{"qemu", "-qmp", "tcp:127.0.0.1:4444,server=on"}, ""},
		{[]string{"qemu", "-chardev", "socket,id=qmp,path=/r/qmp.sock,server=on,wait=off", "-mon", "chardev=qmp,mode=control"}, ""},
		{[]string{"qemu", "-qmp"}, ""},
	} {
		if got := truthSocket(42, c.args); got != c.want {
			t.Errorf("truthSocket(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}
