// Package watchdog resets a node whose agent stopped petting it: the last
// line of Vigil's self-fencing (see package lease for when to pet).
//
// Two backends implement Watchdog:
//
//   - OpenDevice: the Linux watchdog device (/dev/watchdog). The machine
//     resets when it is not petted in time. Opening it arms it.
//   - StartProcess: a supervisor process for labs and containers, where
//     resetting the machine is not an option. It SIGKILLs the agent's
//     process group (the agent and everything it started) when not petted
//     in time, or when the agent dies without disarming it.
//
// Both are disarmed only by Close, and only Close disarms them: a crash, a
// SIGKILL, a panic or a hang leaves them armed, which is the point. Call
// Close only on a clean stop, when no resource is active on the node (all
// stopped, or the node left the cluster): a Close with a resource running
// throws away the guarantee the cluster relies on to recover it elsewhere.
//
// Pet from one goroutine, after checking that the lease is valid (or that
// no resource is active), several times per Timeout (Timeout/4 is a good
// period).
package watchdog

import (
	"errors"
	"time"
)

// Watchdog resets the node unless petted at least every Timeout.
type Watchdog interface {
	// Pet postpones the reset by Timeout from now.
	Pet() error
	// Close disarms the watchdog and releases it. Call it only on a clean
	// stop with no resource active: see the package documentation. After
	// Close, Pet fails with ErrClosed.
	Close() error
	// Timeout is the effective timeout: never longer than the one asked
	// for (a device may round it down).
	Timeout() time.Duration
}

// Errors.
var (
	ErrClosed = errors.New("watchdog: closed")
	// ErrFired means the watchdog fired (or, for the process backend, its
	// supervisor is gone): the node is being reset.
	ErrFired = errors.New("watchdog: fired")
)
