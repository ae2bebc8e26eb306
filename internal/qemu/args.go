package qemu

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Paths are a VM's run files, all in one directory.
type Paths struct {
	Dir string
	// QMP is the QMP monitor socket (one client at a time).
	QMP string
	// Console is the serial console socket: what a client writes reaches
	// the guest's serial input, and the guest's output goes to the client
	// (when one is connected) and always to ConsoleLog.
	Console    string
	ConsoleLog string
	// PIDFile is written by QEMU once it runs and removed on a clean exit.
	PIDFile string
	// Log receives QEMU's stdout and stderr, appended across starts.
	Log string
}

// NewPaths returns the run file paths in dir. It touches nothing.
func NewPaths(dir string) Paths {
	return Paths{
		Dir:        dir,
		QMP:        filepath.Join(dir, "qmp.sock"),
		Console:    filepath.Join(dir, "console.sock"),
		ConsoleLog: filepath.Join(dir, "console.log"),
		PIDFile:    filepath.Join(dir, "qemu.pid"),
		Log:        filepath.Join(dir, "qemu.log"),
	}
}

// Incoming values for Args and StartOptions.
const (
	// IncomingDefer starts a migration destination that waits, paused,
	// for MigrateIncoming to say where to listen. Migration parameters can
	// be set in between.
	IncomingDefer = "defer"
)

// maxSocketPath is the room in sockaddr_un.sun_path, less the NUL.
const maxSocketPath = 107

// Args builds QEMU's command line (without the binary) for spec, with its
// run files at paths. incoming is "" for a normal start, IncomingDefer for a
// migration destination, or a migration URI given to -incoming directly.
//
// Args is pure: accel "auto" becomes "-accel kvm -accel tcg", which lets
// QEMU fall back by itself; Start resolves auto first (ResolveAccel).
//
// NB: the QMP monitor is configured as -chardev plus -mon rather than -qmp,
// because only the -chardev syntax lets a path contain a comma (doubled).
func Args(spec Spec, paths Paths, incoming string) ([]string, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	for _, p := range []string{paths.QMP, paths.Console} {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("qemu: spec %q: socket path %q is not absolute", spec.Name, p)
		}
		if len(p) > maxSocketPath {
			return nil, fmt.Errorf("qemu: spec %q: socket path %q is %d bytes, more than unix sockets allow (%d)",
				spec.Name, p, len(p), maxSocketPath)
		}
	}

	machine := spec.machine()
	a := []string{
		"-name", "guest=" + esc(spec.Name),
		"-machine", esc(machine),
	}
	switch spec.Accel {
	case "", AccelAuto:
		a = append(a, "-accel", "kvm", "-accel", "tcg")
	default:
		a = append(a, "-accel", spec.Accel)
	}
	a = append(a,
		"-smp", strconv.Itoa(spec.cpus()),
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-msg", "timestamp=on",
		"-chardev", "socket,id=qmp,path="+esc(paths.QMP)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "socket,id=ser0,path="+esc(paths.Console)+",server=on,wait=off,logfile="+
			esc(paths.ConsoleLog)+",logappend=on",
		"-serial", "chardev:ser0",
		"-pidfile", paths.PIDFile,
	)

	for i, d := range spec.Disks {
		file, node := fmt.Sprintf("file%d", i), fmt.Sprintf("disk%d", i)
		driver := "file"
		if strings.HasPrefix(d.Path, "/dev/") {
			driver = "host_device"
		}
		ro := ""
		if d.ReadOnly {
			ro = ",read-only=on"
		}
		a = append(a,
			"-blockdev", "driver="+driver+",node-name="+file+",filename="+esc(d.Path)+ro,
			"-blockdev", "driver="+string(d.Format)+",node-name="+node+",file="+file+ro,
		)
		if machine != MachineNone {
			a = append(a, "-device", "virtio-blk-pci,id=virtio-"+node+",drive="+node)
		}
	}

	for i, n := range spec.NICs {
		id := fmt.Sprintf("net%d", i)
		var netdev string
		switch n.Mode {
		case NICUser:
			netdev = "user,id=" + id
		case NICBridge:
			netdev = "bridge,id=" + id + ",br=" + n.Bridge
		case NICTap:
			netdev = "tap,id=" + id + ",ifname=" + n.Tap + ",script=no,downscript=no"
		default:
			continue
		}
		dev := "virtio-net-pci,id=nic" + strconv.Itoa(i) + ",netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + strings.ToLower(n.MAC)
		}
		a = append(a, "-netdev", netdev, "-device", dev)
	}

	if spec.Kernel != "" {
		a = append(a, "-kernel", spec.Kernel)
		if spec.Initrd != "" {
			a = append(a, "-initrd", spec.Initrd)
		}
		if spec.Append != "" {
			a = append(a, "-append", spec.Append)
		}
	}
	if incoming != "" {
		a = append(a, "-incoming", incoming)
	}
	a = append(a, spec.ExtraArgs...)
	return a, nil
}

// esc escapes a value inside a QEMU option string, where a comma separates
// options and a doubled comma stands for a comma.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }
