//go:build linux

package watchdog

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDevice is the Linux watchdog device.
const DefaultDevice = "/dev/watchdog"

// device is the Linux watchdog device backend.
type device struct {
	mu      sync.Mutex
	f       *os.File // nil once closed
	path    string
	timeout time.Duration
}

// OpenDevice opens and thereby arms the watchdog device at path with the
// given timeout, rounded down to whole seconds (drivers count in seconds;
// rounding up would make the watchdog slower than the cluster assumes).
// It refuses a timeout below one second, a device that cannot be
// disarmed only on purpose (no magic close: closing its file, as a crash
// does, would disarm it), and a device that keeps a longer timeout than
// asked. On such a failure the device is disarmed again: OpenDevice runs
// at start-up, before any resource is active.
//
// NB: with the driver's nowayout option set, nothing disarms the device:
// after Close the machine resets unless someone reopens it within the
// timeout.
func OpenDevice(path string, timeout time.Duration) (Watchdog, error) {
	secs, err := deviceSeconds(timeout)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog: open %s: %w", path, err)
	}
	d := &device{f: f, path: path}
	fd := int(f.Fd())
	fail := func(err error) (Watchdog, error) {
		if cerr := d.disarm(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	info, err := unix.IoctlGetWatchdogInfo(fd)
	if err != nil {
		return fail(fmt.Errorf("watchdog: %s: get support: %w", path, err))
	}
	if err := checkSupport(info.Options); err != nil {
		return fail(fmt.Errorf("watchdog: %s (%s): %w", path, identity(info.Identity[:]), err))
	}
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err != nil {
		return fail(fmt.Errorf("watchdog: %s: set timeout %ds: %w", path, secs, err))
	}
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return fail(fmt.Errorf("watchdog: %s: get timeout: %w", path, err))
	}
	if d.timeout, err = effective(secs, got); err != nil {
		return fail(fmt.Errorf("watchdog: %s: %w", path, err))
	}
	if err := d.Pet(); err != nil {
		return fail(err)
	}
	return d, nil
}

// deviceSeconds converts a timeout into the whole seconds a driver takes,
// rounding down.
func deviceSeconds(timeout time.Duration) (int, error) {
	secs := timeout / time.Second
	if secs < 1 {
		return 0, fmt.Errorf("watchdog: timeout %s: a device needs at least 1s", timeout)
	}
	if secs > 1<<16 {
		return 0, fmt.Errorf("watchdog: timeout %s too long", timeout)
	}
	return int(secs), nil
}

// effective checks the timeout the driver kept against the one set.
func effective(set, got int) (time.Duration, error) {
	switch {
	case got <= 0:
		return 0, fmt.Errorf("device reports timeout %ds", got)
	case got > set:
		return 0, fmt.Errorf("device keeps timeout %ds, longer than %ds", got, set)
	}
	return time.Duration(got) * time.Second, nil
}

// checkSupport checks the driver's WDIOC_GETSUPPORT options.
func checkSupport(options uint32) error {
	switch {
	case options&unix.WDIOF_MAGICCLOSE == 0:
		return errors.New("no magic close: a crash would disarm it")
	case options&unix.WDIOF_SETTIMEOUT == 0:
		return errors.New("its timeout cannot be set")
	}
	return nil
}

func identity(b []uint8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	return string(b[:n])
}

func (d *device) Pet() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return ErrClosed
	}
	err := unix.IoctlWatchdogKeepalive(int(d.f.Fd()))
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		// A driver without the ioctl: any write but 'V' pets.
		_, err = d.f.Write([]byte{0})
	}
	if err != nil {
		return fmt.Errorf("watchdog: pet %s: %w", d.path, err)
	}
	return nil
}

// Close writes the magic character and closes the device, which disarms
// it. Only on a clean stop: see the package documentation.
func (d *device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return ErrClosed
	}
	return d.disarm()
}

func (d *device) disarm() error {
	_, werr := d.f.Write([]byte{'V'})
	cerr := d.f.Close()
	d.f = nil
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("watchdog: disarm %s (it may stay armed): %w", d.path, err)
	}
	return nil
}

func (d *device) Timeout() time.Duration { return d.timeout }
