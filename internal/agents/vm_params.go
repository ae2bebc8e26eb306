package agents

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/qemu"
)

// DatastoreLookup maps a datastore's name to its path on this node (where
// the shared folder is mounted); ok is false for a datastore this node does
// not know. The node agent builds it from the replicated configuration.
type DatastoreLookup func(name string) (path string, ok bool)

// Defaults of vigil:vm's parameters.
const (
	vmDefaultMemoryMiB   = 128
	vmDefaultStopTimeout = 60 * time.Second
)

// vmConfig is a vigil:vm resource's parameters, resolved on this node.
type vmConfig struct {
	spec qemu.Spec
	// leaseDS and leaseRoot name the datastore of the VM's first disk on
	// a datastore, and its path here: the disk lease lives there. Both
	// are empty for a VM without a disk on a datastore (no disk lease).
	leaseDS, leaseRoot string
	stopTimeout        time.Duration
	migrate            qemu.MigrationParams
	// isolation is the VM's isolation response: IsolationShutdown or
	// IsolationPowerOff (what a stop the node runs on its own after losing
	// quorum does, Request.SelfStop), or IsolationLeaveRunning.
	isolation string
}

// The isolation responses of vigil:vm (its isolation_response parameter):
// what happens to the VM when its node is cut off from the cluster.
const (
	// IsolationShutdown: the guest is asked to power down (ACPI), and
	// QEMU quits after stop_timeout (vSphere HA's "shut down and restart
	// VMs"). The cluster restarts it elsewhere once it is down.
	IsolationShutdown = "shutdown"
	// IsolationPowerOff: QEMU quits at once, like pulling the plug; the
	// fastest recovery elsewhere, at the guest's expense.
	IsolationPowerOff = "poweroff"
	// IsolationLeaveRunning: the VM keeps running on the isolated node for
	// as long as its disk lease holds (vSphere HA's "leave powered on").
	// The lease records it (datastore.Record.KeepOnIsolation): no other
	// node takes the disk over on a watchdog proof alone, and the node
	// keeps petting its watchdog only while the lease outlasts the
	// watchdog's reset. It needs a disk on a datastore.
	IsolationLeaveRunning = "leave-running"
)

// paramError is a parameter problem with the code it deserves:
// CodeErrConfigured when no node could run the resource with these
// parameters, CodeErrInstalled when this node cannot (a datastore not known
// or a local file missing here; another node may do).
type paramError struct {
	code Code
	err  error
}

func (e *paramError) Error() string { return e.err.Error() }
func (e *paramError) Unwrap() error { return e.err }

func configErr(format string, args ...any) error {
	return &paramError{CodeErrConfigured, fmt.Errorf(format, args...)}
}

func installErr(format string, args ...any) error {
	return &paramError{CodeErrInstalled, fmt.Errorf(format, args...)}
}

// codeOfParamErr returns the code a parameter error deserves.
func codeOfParamErr(err error) Code {
	var pe *paramError
	if errors.As(err, &pe) {
		return pe.code
	}
	return CodeErrConfigured
}

// parseVMParams turns a vigil:vm resource's parameters into a QEMU spec.
// name is the resource id, which becomes the VM's name. ds resolves
// datastore names; it may be nil (then only absolute paths work).
//
// It checks syntax and that every datastore is known here, but touches no
// file: whether images exist is the start's business.
func parseVMParams(name string, params map[string]string, ds DatastoreLookup) (vmConfig, error) {
	var c vmConfig
	var errs []error
	bad := func(err error) { errs = append(errs, err) }

	c.spec = qemu.Spec{Name: name, CPUs: 1, MemoryMiB: vmDefaultMemoryMiB, Machine: "q35", Accel: qemu.AccelAuto}
	if v := strings.TrimSpace(params["cpus"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			bad(configErr("cpus: %q is not a positive number", v))
		} else {
			c.spec.CPUs = n
		}
	}
	if v := strings.TrimSpace(params["memory"]); v != "" {
		mib, err := parseMemory(v)
		if err != nil {
			bad(configErr("memory: %v", err))
		} else {
			c.spec.MemoryMiB = mib
		}
	}
	if v := strings.TrimSpace(params["machine"]); v != "" {
		c.spec.Machine = v
	}
	if v := strings.TrimSpace(params["accel"]); v != "" {
		c.spec.Accel = v
	}

	if v := strings.TrimSpace(params["disk"]); v != "" {
		for i, item := range strings.Split(v, ",") {
			d, dsName, root, err := parseDisk(strings.TrimSpace(item), ds)
			if err != nil {
				bad(fmt.Errorf("disk %d: %w", i, err))
				continue
			}
			c.spec.Disks = append(c.spec.Disks, d)
			if c.leaseRoot == "" && dsName != "" {
				c.leaseDS, c.leaseRoot = dsName, root
			}
		}
	}

	if v := strings.TrimSpace(params["nic"]); v != "" {
		for i, item := range strings.Split(v, ",") {
			n, err := parseNIC(strings.TrimSpace(item))
			if err != nil {
				bad(configErr("nic %d: %v", i, err))
				continue
			}
			if n.Mode == qemu.NICNone {
				continue
			}
			n.MAC = vmMAC(name, i)
			c.spec.NICs = append(c.spec.NICs, n)
		}
	}

	for _, f := range []struct {
		param string
		dst   *string
	}{{"kernel", &c.spec.Kernel}, {"initrd", &c.spec.Initrd}} {
		v := strings.TrimSpace(params[f.param])
		if v == "" {
			continue
		}
		p, _, _, err := resolvePath(v, ds)
		if err != nil {
			bad(fmt.Errorf("%s: %w", f.param, err))
			continue
		}
		*f.dst = p
	}
	c.spec.Append = params["append"]
	c.spec.ExtraArgs = strings.Fields(params["extra_args"])

	c.stopTimeout = vmDefaultStopTimeout
	if params["stop_timeout"] != "" {
		d, err := durationParam(params, "stop_timeout")
		if err != nil {
			bad(configErr("stop_timeout: %q is not a duration", params["stop_timeout"]))
		} else {
			c.stopTimeout = d
		}
	}
	switch v := strings.TrimSpace(params["isolation_response"]); v {
	case "", IsolationShutdown:
		c.isolation = IsolationShutdown
	case IsolationPowerOff:
		c.isolation = v
	case IsolationLeaveRunning:
		c.isolation = v
		if c.leaseRoot == "" && len(errs) == 0 {
			bad(configErr("isolation_response: %s needs a disk on a datastore: its disk lease is what makes leaving the VM running safe", v))
		}
	default:
		bad(configErr("isolation_response: %q: want %s, %s or %s", v, IsolationShutdown, IsolationPowerOff, IsolationLeaveRunning))
	}
	if v := strings.TrimSpace(params["migrate_bandwidth"]); v != "" {
		b, err := parseBytes(v, 1<<20)
		if err != nil || b <= 0 {
			bad(configErr("migrate_bandwidth: %q: want bytes per second, such as 100M or 1G", v))
		} else {
			c.migrate.MaxBandwidth = b
		}
	}
	if params["migrate_downtime"] != "" {
		d, err := durationParam(params, "migrate_downtime")
		if err != nil || d <= 0 {
			bad(configErr("migrate_downtime: %q is not a positive duration", params["migrate_downtime"]))
		} else {
			c.migrate.DowntimeLimit = d
		}
	}

	if len(errs) == 0 {
		if err := c.spec.Validate(); err != nil {
			errs = append(errs, configErr("%v", err))
		}
	}
	if len(errs) > 0 {
		return c, joinParamErrs(errs)
	}
	return c, nil
}

// joinParamErrs joins errors into one that wraps ErrInvalidParams, keeping
// the most severe code: a configuration error (no node can run it) over an
// installation one (this node cannot).
func joinParamErrs(errs []error) error {
	code := CodeErrInstalled
	msgs := make([]string, len(errs))
	for i, e := range errs {
		if codeOfParamErr(e) == CodeErrConfigured {
			code = CodeErrConfigured
		}
		msgs[i] = e.Error()
	}
	return &paramError{code, fmt.Errorf("%w for vigil:vm: %s", ErrInvalidParams, strings.Join(msgs, "; "))}
}

// parseMemory parses a memory size into MiB: a number with an optional
// unit K, M, G or T (binary units; "MiB", "MB" and "M" all mean MiB). A
// bare number is MiB, as for QEMU's -m.
func parseMemory(s string) (int, error) {
	b, err := parseBytes(s, 1<<20)
	if err != nil {
		return 0, err
	}
	if b <= 0 || b%(1<<20) != 0 {
		return 0, fmt.Errorf("%q: want a whole number of MiB, such as 128M or 1G", s)
	}
	if b/(1<<20) > 1<<30 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int(b / (1 << 20)), nil
}

// parseBytes parses a size: a number with an optional unit B, K, M, G or T
// (binary, with an optional "iB" or "B": "1G", "1GiB", "1GB" are all
// 2^30); a bare number is in units of bare.
func parseBytes(s string, bare int64) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	unit := strings.ToUpper(strings.TrimSpace(s[i:]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "IB"), "B")
	mult := map[string]int64{"": bare, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
	if strings.ToUpper(strings.TrimSpace(s[i:])) == "B" {
		mult[""] = 1
	}
	m, ok := mult[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit (want K, M, G or T)", s)
	}
	if n > (1<<62)/m {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * m, nil
}

// parseDisk parses one disk: DATASTORE:relative/path or an absolute path,
// optionally followed by ":raw" or ":qcow2" (else the format comes from the
// extension: .qcow2 is qcow2, .raw and .img are raw). It returns the disk
// and, for a disk on a datastore, the datastore's name and path here.
func parseDisk(item string, ds DatastoreLookup) (qemu.Disk, string, string, error) {
	if item == "" {
		return qemu.Disk{}, "", "", configErr("empty disk")
	}
	var format qemu.DiskFormat
	for _, f := range []qemu.DiskFormat{qemu.FormatRaw, qemu.FormatQcow2} {
		if rest, ok := strings.CutSuffix(item, ":"+string(f)); ok {
			item, format = rest, f
			break
		}
	}
	path, dsName, root, err := resolvePath(item, ds)
	if err != nil {
		return qemu.Disk{}, "", "", err
	}
	if format == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".qcow2":
			format = qemu.FormatQcow2
		case ".raw", ".img":
			format = qemu.FormatRaw
		default:
			return qemu.Disk{}, "", "", configErr("%q: cannot tell the format from the name: add :qcow2 or :raw", item)
		}
	}
	return qemu.Disk{Path: path, Format: format}, dsName, root, nil
}

// resolvePath resolves DATASTORE:relative/path (through ds) or an absolute
// path. A relative path must stay inside its datastore.
func resolvePath(s string, ds DatastoreLookup) (path, dsName, root string, err error) {
	if filepath.IsAbs(s) {
		return filepath.Clean(s), "", "", nil
	}
	name, rel, ok := strings.Cut(s, ":")
	if !ok || name == "" || rel == "" {
		return "", "", "", configErr("%q: want DATASTORE:path/in/datastore or an absolute path", s)
	}
	rel = filepath.Clean(rel)
	if filepath.IsAbs(rel) || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || rel == ".vigil" || strings.HasPrefix(rel, ".vigil/") {
		return "", "", "", configErr("%q: the path must be relative to the datastore and stay inside it (not under .vigil)", s)
	}
	if ds == nil {
		return "", "", "", installErr("%q: datastore %q is not known on this node (no datastores configured)", s, name)
	}
	root, ok = ds(name)
	if !ok {
		return "", "", "", installErr("%q: datastore %q is not known on this node", s, name)
	}
	return filepath.Join(root, rel), name, root, nil
}

// parseNIC parses none, user, bridge:BR or tap:NAME.
func parseNIC(s string) (qemu.NIC, error) {
	mode, arg, _ := strings.Cut(s, ":")
	switch qemu.NICMode(mode) {
	case qemu.NICNone, qemu.NICUser:
		if arg != "" {
			return qemu.NIC{}, fmt.Errorf("%q: %s takes no argument", s, mode)
		}
		return qemu.NIC{Mode: qemu.NICMode(mode)}, nil
	case qemu.NICBridge:
		if arg == "" {
			return qemu.NIC{}, fmt.Errorf("%q: want bridge:BRIDGE", s)
		}
		return qemu.NIC{Mode: qemu.NICBridge, Bridge: arg}, nil
	case qemu.NICTap:
		if arg == "" {
			return qemu.NIC{}, fmt.Errorf("%q: want tap:TAPNAME", s)
		}
		return qemu.NIC{Mode: qemu.NICTap, Tap: arg}, nil
	}
	return qemu.NIC{}, fmt.Errorf("%q: want none, user, bridge:BRIDGE or tap:TAPNAME", s)
}

// vmMAC derives a stable, locally administered unicast MAC for a VM's NIC
// from the resource id and the NIC's index: the guest keeps its address
// (and its DHCP lease, its neighbours' ARP entries) across restarts,
// failovers and migrations. It uses QEMU's 52:54:00 prefix.
func vmMAC(name string, i int) string {
	h := sha256.Sum256([]byte(name + "/" + strconv.Itoa(i)))
	return net.HardwareAddr{0x52, 0x54, 0x00, h[0], h[1], h[2]}.String()
}
