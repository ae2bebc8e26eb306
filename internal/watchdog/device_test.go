//go:build linux

package watchdog

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const hwEnv = "VIGIL_TEST_HW_WATCHDOG"

func TestDeviceSeconds(t *testing.T) {
	for i, tc := range []struct {
		in   time.Duration
		secs int
		ok   bool
	}{
		{999 * time.Millisecond, 0, false},
		{time.Second, 1, true},
		{2500 * time.Millisecond, 2, true}, // down: never slower than asked
		{60 * time.Second, 60, true},
		{-time.Second, 0, false},
		{100000 * time.Second, 0, false},
	} {
		secs, err := deviceSeconds(tc.in)
		if (err == nil) != tc.ok || secs != tc.secs {
			t.Errorf("%d: deviceSeconds(%s) = %d, %v", i, tc.in, secs, err)
		}
	}
}

func TestDeviceEffective(t *testing.T) {
	for i, tc := range []struct {
		set, got int
		want     time.Duration
		ok       bool
	}{
		{2, 2, 2 * time.Second, true},
		{5, 4, 4 * time.Second, true}, // hardware granularity, shorter: fine
		{2, 3, 0, false},              // longer than the cluster assumes
		{2, 0, 0, false},
	} {
		d, err := effective(tc.set, tc.got)
		if (err == nil) != tc.ok || d != tc.want {
			t.Errorf("%d: effective(%d, %d) = %s, %v", i, tc.set, tc.got, d, err)
		}
	}
}

func TestDeviceSupport(t *testing.T) {
	if err := checkSupport(unix.WDIOF_MAGICCLOSE | unix.WDIOF_SETTIMEOUT | unix.WDIOF_KEEPALIVEPING); err != nil {
		t.Error(err)
	}
	if err := checkSupport(unix.WDIOF_SETTIMEOUT); err == nil {
		t.Error("device without magic close accepted")
	}
	if err := checkSupport(unix.WDIOF_MAGICCLOSE); err == nil {
		t.Error("device without settable timeout accepted")
	}
	if got := identity([]uint8{'s', 'o', 'f', 't', 0, 'x'}); got != "soft" {
		t.Errorf("identity %q", got)
	}
}

func TestDeviceNotAWatchdog(t *testing.T) {
	// /dev/null opens but answers no watchdog ioctl: refused, never armed.
	if _, err := OpenDevice("/dev/null", 2*time.Second); err == nil {
		t.Fatal("/dev/null accepted as a watchdog")
	}
	if _, err := OpenDevice("/nonexistent/watchdog", 2*time.Second); err == nil {
		t.Fatal("missing device accepted")
	}
}

// TestDeviceHardware arms the machine's real watchdog: only when asked.
// If the test dies between Pet and Close, the machine resets.
func TestDeviceHardware(t *testing.T) {
	if os.Getenv(hwEnv) != "1" {
		t.Skipf("arms the machine's watchdog (a crash here resets the machine): set %s=1 to run", hwEnv)
	}
	if _, err := os.Stat(DefaultDevice); err != nil {
		t.Skipf("no watchdog device: %v", err)
	}
	w, err := OpenDevice(DefaultDevice, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if w.Timeout() > 5*time.Second || w.Timeout() < time.Second {
		t.Errorf("timeout %s", w.Timeout())
	}
	for range 3 {
		time.Sleep(time.Second)
		if err := w.Pet(); err != nil {
			t.Error(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Pet(); err == nil {
		t.Error("Pet after Close succeeded")
	}
}
