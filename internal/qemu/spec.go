package qemu

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"

	"golang.org/x/sys/unix"
)

// Spec describes a VM. The zero values of CPUs, Machine and Accel mean the
// defaults (1, "q35", "auto").
type Spec struct {
	// Name is the VM's name: letters, digits, '.', '_', '-', up to 64
	// characters, starting with a letter or digit.
	Name      string
	CPUs      int
	MemoryMiB int
	// Machine is a QEMU machine type: "q35" (default), "pc", a versioned
	// type such as "pc-q35-7.2", or "none", a machine without CPU-visible
	// devices: disks become block nodes only (opened and locked, not
	// attached to anything) and NICs and kernel boot are refused. "none"
	// with 16 MiB is a near-free stand-in for a VM in tests.
	Machine string
	// Accel is "auto" (default: kvm when /dev/kvm is usable, else tcg),
	// "kvm" or "tcg".
	Accel string
	Disks []Disk
	NICs  []NIC
	// Kernel, Initrd and Append boot a kernel directly (absolute paths).
	Kernel string
	Initrd string
	Append string
	// ExtraArgs are appended to the command line as they are: an escape
	// hatch for what Spec does not model. -daemonize and -pidfile are
	// refused, as they would break process tracking.
	ExtraArgs []string
}

// DiskFormat is a disk image format.
type DiskFormat string

// Disk image formats. No probing: a raw image whose content looks like a
// qcow2 header must not be opened as qcow2 (a guest could write such a
// header to reach host files through a backing file).
const (
	FormatQcow2 DiskFormat = "qcow2"
	FormatRaw   DiskFormat = "raw"
)

// Disk is a disk image, attached as a virtio-blk device.
type Disk struct {
	// Path is absolute. A path under /dev/ is opened as a host block
	// device (shared storage: LVM, iSCSI, multipath), anything else as a
	// file.
	Path     string
	Format   DiskFormat
	ReadOnly bool
}

// NICMode says how a NIC reaches the network.
type NICMode string

// NIC modes.
const (
	// NICUser is QEMU's user-mode network (slirp): no host setup, no
	// inbound connections; for tests and demos.
	NICUser NICMode = "user"
	// NICBridge attaches to a host bridge through qemu-bridge-helper
	// (which must be allowed to use the bridge in
	// /etc/qemu/bridge.conf).
	NICBridge NICMode = "bridge"
	// NICTap uses an existing tap device, set up by someone else.
	NICTap NICMode = "tap"
	// NICNone is a placeholder: no device is created.
	NICNone NICMode = "none"
)

// NIC is a virtio-net network interface.
type NIC struct {
	Mode   NICMode
	Bridge string // for NICBridge
	Tap    string // for NICTap: the tap interface name
	// MAC is optional ("52:54:00:12:34:56"); QEMU picks one when empty.
	// Give one for a VM that migrates or fails over, so that the guest
	// keeps its address.
	MAC string
}

// Accelerators.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// MachineNone is the machine type without devices.
const MachineNone = "none"

const defaultMachine = "q35"

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	machineRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	ifnameRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,15}$`)
)

// maxCPUs is a sanity bound, not QEMU's limit (which depends on machine
// type and accelerator; QEMU reports that one itself).
const maxCPUs = 1024

// Validate checks the spec, reporting every problem found.
func (s Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if !nameRE.MatchString(s.Name) {
		bad("name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
	}
	if s.CPUs < 0 || s.CPUs > maxCPUs {
		bad("cpus %d: want 1-%d (0 means 1)", s.CPUs, maxCPUs)
	}
	if s.MemoryMiB <= 0 {
		bad("memory %d MiB: want more than 0", s.MemoryMiB)
	}
	machine := s.machine()
	if !machineRE.MatchString(machine) {
		bad("machine %q: not a machine type name", s.Machine)
	}
	none := machine == MachineNone
	if none && s.CPUs > 1 {
		bad("machine none: has 1 CPU, not %d", s.CPUs)
	}
	switch s.Accel {
	case "", AccelAuto, AccelKVM, AccelTCG:
	default:
		bad("accel %q: want auto, kvm or tcg", s.Accel)
	}

	for i, d := range s.Disks {
		if !filepath.IsAbs(d.Path) {
			bad("disk %d: path %q is not absolute", i, d.Path)
		}
		if d.Format != FormatQcow2 && d.Format != FormatRaw {
			bad("disk %d: format %q: want qcow2 or raw", i, d.Format)
		}
	}

	macs := map[string]int{}
	for i, n := range s.NICs {
		switch n.Mode {
		case NICUser:
		case NICBridge:
			if !ifnameRE.MatchString(n.Bridge) {
				bad("nic %d: bridge %q: want an interface name", i, n.Bridge)
			}
		case NICTap:
			if !ifnameRE.MatchString(n.Tap) {
				bad("nic %d: tap %q: want an interface name", i, n.Tap)
			}
		case NICNone:
			continue
		default:
			bad("nic %d: mode %q: want user, bridge, tap or none", i, n.Mode)
			continue
		}
		if none {
			bad("nic %d: machine none has no bus for a NIC", i)
		}
		if n.MAC != "" {
			hw, err := net.ParseMAC(n.MAC)
			switch {
			case err != nil || len(hw) != 6:
				bad("nic %d: mac %q: want six colon-separated hex bytes", i, n.MAC)
			case hw[0]&1 != 0:
				bad("nic %d: mac %s is a multicast address", i, n.MAC)
			default:
				if j, dup := macs[hw.String()]; dup {
					bad("nic %d: mac %s already used by nic %d", i, n.MAC, j)
				}
				macs[hw.String()] = i
			}
		}
	}

	if s.Kernel == "" && (s.Initrd != "" || s.Append != "") {
		bad("initrd and append need a kernel")
	}
	for _, p := range []struct{ what, path string }{{"kernel", s.Kernel}, {"initrd", s.Initrd}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			bad("%s path %q is not absolute", p.what, p.path)
		}
	}
	if none && s.Kernel != "" {
		bad("machine none cannot boot a kernel")
	}
	for _, a := range []string{"-daemonize", "--daemonize", "-pidfile", "--pidfile"} {
		if slices.Contains(s.ExtraArgs, a) {
			bad("extra args: %s is managed by vigil", a)
		}
	}

	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("qemu: spec %q: %w", s.Name, err)
	}
	return nil
}

func (s Spec) machine() string {
	if s.Machine == "" {
		return defaultMachine
	}
	return s.Machine
}

func (s Spec) cpus() int { return max(s.CPUs, 1) }

// ResolveAccel turns "auto" (or "") into "kvm" when /dev/kvm is usable by
// this process and "tcg" otherwise; other values are returned unchanged.
// Start resolves before building the command line, so that the command line
// (and the log) says which accelerator the VM really runs on.
func ResolveAccel(accel string) string {
	if accel != "" && accel != AccelAuto {
		return accel
	}
	if unix.Access("/dev/kvm", unix.R_OK|unix.W_OK) == nil {
		return AccelKVM
	}
	return AccelTCG
}
