package qemu

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guestSpec returns a spec that boots the tiny test guest built by
// scripts/guest-image.sh into the directory named by VIGIL_GUEST_IMAGE, or
// skips the test. The guest prints "vigil-guest boot <id>" on its serial
// console and powers off on the ACPI power button or on a "poweroff" line
// read from the console.
func guestSpec(t *testing.T, name string) Spec {
	t.Helper()
	needQEMU(t)
	if testing.Short() {
		t.Skip("boots a guest: seconds under TCG")
	}
	dir := os.Getenv("VIGIL_GUEST_IMAGE")
	if dir == "" {
		t.Skip("VIGIL_GUEST_IMAGE not set (see scripts/guest-image.sh)")
	}
	if _, err := os.Stat(filepath.Join(dir, "stamp")); err != nil {
		t.Skipf("no complete guest image in %s: %v", dir, err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		kernel = filepath.Join(dir, "vmlinuz")
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	return Spec{
		Name: name, MemoryMiB: 128, Machine: "q35", Accel: AccelAuto,
		Kernel: kernel, Initrd: filepath.Join(dir, "initramfs.cpio.gz"),
		Append: strings.TrimSpace(string(cmdline)),
	}
}

// waitConsole waits until the console log holds want.
func waitConsole(t *testing.T, v *VM, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(v.Paths().ConsoleLog)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console never said %q; it holds:\n%s", want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bootGuest boots the test guest and waits until its init runs its
// loops (the power button watcher starts a moment after the boot line).
func bootGuest(t *testing.T, name string) *VM {
	t.Helper()
	v := start(t, guestSpec(t, name), StartOptions{})
	waitConsole(t, v, "vigil-guest counter 2 ", 30*time.Second)
	return v
}

// console connects to the guest's serial console and checks that the guest
// reads it; images built before the console reader was fixed do not.
func console(t *testing.T, v *VM) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", v.Paths().Console)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(v.Paths().ConsoleLog); strings.Contains(string(b), "unknown command: hello") {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Skip("the guest does not read its console: rebuild the image with scripts/guest-image.sh")
	return nil
}

// The ACPI power button: the guest shuts itself down, and says so.
func TestGuestPowerdown(t *testing.T) {
	v := bootGuest(t, "gpower")
	if err := v.Shutdown(testCtx(t), 8*time.Second); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, v.Events(), EventPowerdown)
	ev := waitEvent(t, v.Events(), EventShutdown)
	if sd, _ := ShutdownOf(ev); !sd.Guest || sd.Reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN %s, want the guest's own", ev.Data)
	}
	if ps := v.ProcessState(); ps == nil || !ps.Success() {
		t.Errorf("process state %v", ps)
	}
}

// What is written to the console socket reaches the guest's serial input.
func TestGuestConsoleInput(t *testing.T) {
	v := bootGuest(t, "gconsole")
	c := console(t, v)
	if _, err := c.Write([]byte("poweroff\n")); err != nil {
		t.Fatal(err)
	}
	if err := v.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitConsole(t, v, "vigil-guest poweroff reason=console", time.Second)
	ev := waitEvent(t, v.Events(), EventShutdown)
	if sd, _ := ShutdownOf(ev); !sd.Guest || sd.Reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN %s, want the guest's own", ev.Data)
	}
}
