//go:build !linux

package watchdog

import (
	"errors"
	"time"
)

// DefaultDevice is the Linux watchdog device.
const DefaultDevice = "/dev/watchdog"

// OpenDevice is only implemented on Linux.
func OpenDevice(path string, timeout time.Duration) (Watchdog, error) {
	return nil, errors.New("watchdog: device backend needs Linux")
}
