package qemu

import "github.com/vigil-ha/vigil/internal/qemu/qmp"

// QMP event names the vm agent cares about.
const (
	// EventShutdown: QEMU is shutting down (or, with -no-shutdown, the
	// guest stopped); see ShutdownOf for who asked.
	EventShutdown = "SHUTDOWN"
	// EventPowerdown: system_powerdown was delivered to the guest.
	EventPowerdown = "POWERDOWN"
	EventReset     = "RESET"
	EventStop      = "STOP"
	EventResume    = "RESUME"
	// EventGuestPanicked needs a pvpanic device or Hyper-V crash MSRs in
	// the guest (add one through Spec.ExtraArgs).
	EventGuestPanicked = "GUEST_PANICKED"
	EventBlockIOError  = "BLOCK_IO_ERROR"
	EventMigration     = "MIGRATION"
)

// Shutdown is the data of a SHUTDOWN event.
type Shutdown struct {
	// Guest is true when the guest asked (powered off, rebooted with
	// -no-reboot, triple-faulted), false when the host did (quit, a
	// signal).
	Guest bool `json:"guest"`
	// Reason is QAPI ShutdownCause: "host-qmp-quit", "host-signal",
	// "guest-shutdown", "guest-reset", "guest-panic", ...
	Reason string `json:"reason"`
}

// ShutdownOf returns the data of a SHUTDOWN event; ok is false for any
// other event.
func ShutdownOf(ev qmp.Event) (s Shutdown, ok bool) {
	if ev.Name != EventShutdown {
		return Shutdown{}, false
	}
	if err := ev.DecodeData(&s); err != nil {
		return Shutdown{}, false
	}
	return s, true
}
