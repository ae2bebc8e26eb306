package agents

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/qemu"
	"github.com/vigil-ha/vigil/internal/qemu/qmp"
)

// TypeVM is the built-in agent for KVM/QEMU virtual machines, vigil:vm.
const TypeVM = "vm"

// Notifier is implemented by agents that learn of a change of a resource
// between two monitors (vigil:vm hears QEMU's events: the guest shut down,
// paused, panicked, QEMU exited). The executor registers fn, and fn makes
// the resource's recurring monitor run at once, so that a failure is seen
// within milliseconds rather than at the next interval. fn must not block.
type Notifier interface {
	SetNotify(fn func(resource string))
}

// Meta keys of vigil:vm's migration actions (Request.Meta). See vmAgent
// for the order in which a controller uses them.
const (
	// MetaMigratePhase selects migrate_from's phase: MigratePhasePrepare
	// or MigratePhaseFinish (the default, as Pacemaker's single
	// migrate_from after migrate_to).
	MetaMigratePhase = "migrate_phase"
	// MetaMigrateListen is the address (no port) of the target node on
	// which migrate_from's prepare listens: the address the source can
	// reach it on.
	MetaMigrateListen = "migrate_listen"
	// MetaMigrateURI is the URI migrate_to sends to: what the target's
	// prepare returned in Result.Output ("tcp:10.0.0.2:49152").
	MetaMigrateURI = "migrate_uri"

	MigratePhasePrepare = "prepare"
	MigratePhaseFinish  = "finish"
)

// Timings of vigil:vm.
const (
	// vmAttachTimeout bounds re-attaching to a running QEMU's QMP socket.
	vmAttachTimeout = 5 * time.Second
	// vmQuitTimeout bounds a quit before SIGKILL.
	vmQuitTimeout = 5 * time.Second
	// vmReleaseTimeout bounds writing Released into a lease file.
	vmReleaseTimeout = 5 * time.Second
	// vmMigratePoll is how often migrate_to polls the migration's status
	// (and rewrites migration.json).
	vmMigratePoll = 100 * time.Millisecond
	// vmMemoryOverheadMiB is what QEMU needs beyond the guest's memory,
	// for the free-memory check before a start or an incoming migration.
	vmMemoryOverheadMiB = 64
	// vmDrainEvents bounds reading QEMU's last events after it exited.
	vmDrainEvents = 2 * time.Second
	// vmExitWait is how long a failed QMP command waits to see whether
	// QEMU is exiting.
	vmExitWait = 2 * time.Second
)

// Files of a VM's run directory besides QEMU's own (qemu.Paths).
const (
	vmGuestStoppedFile = "guest-stopped"
	vmMigrationFile    = "migration.json"
)

// vmAgent is vigil:vm: a KVM/QEMU virtual machine started, supervised and
// stopped through package qemu, one QEMU per resource, its run files in
// StateDir/vm/<resource>/ (QMP and console sockets, console.log, qemu.log,
// the pid file; see qemu.Paths).
//
// # The disk lease
//
// A VM whose disks live on a datastore holds the disk lease of its resource
// on the datastore of its first such disk (datastore.Acquire) for as long
// as its QEMU may write: start takes it before QEMU starts and refuses to
// start without it (the error names the holder), a goroutine per VM
// watches it, and if it is lost QEMU gets SIGKILL at once: the storage
// split-brain guard, which holds even if every other timing assumption
// fails. stop releases it (Released) once QEMU is gone, so the next node
// takes it without waiting. QEMU's own image locking stays on.
//
// The holder is this node's name and an incarnation that stays the same
// while the host runs (the kernel's boot id): an agent restarted while its
// QEMUs run finds their leases naming itself and takes them back at once
// (monitor and probe do so when they attach). A QEMU running here whose
// lease another holder has is killed.
//
// # Events
//
// The per-VM goroutine reads QEMU's QMP events and calls the Notifier
// function on SHUTDOWN, STOP, GUEST_PANICKED, BLOCK_IO_ERROR and on QEMU's
// exit, so the executor runs the monitor at once.
//
// # A guest that shuts itself down stays down
//
// As in vSphere HA, a guest powering itself off is the user's wish, not a
// failure: on a SHUTDOWN event with guest=true and reason guest-shutdown
// that no stop of ours caused, the agent writes a marker (guest-stopped in
// the run directory; start removes it), and monitor then returns
// CodeNotRunning with Result.StoppedByGuest set. The executor records the
// instance stopped without a failure and sets target-role=Stopped. A QEMU
// that crashed, was killed, or whose guest panicked or reset with
// -no-reboot is a failure, recovered as any other.
//
// NB: the marker is written from the event. If the agent is down at the
// moment the guest powers off, the event is lost, and the VM counts as
// failed (and is restarted): the safe side for availability.
//
// # Live migration (for the controller that drives it)
//
// A controller migrates an instance from S to T with three actions, each
// ordered only once the previous one succeeded:
//
//  1. migrate_from on T with Meta migrate_phase=prepare and
//     migrate_listen=<T's address reachable from S>: T checks it has the
//     disks and the memory, starts QEMU waiting for an incoming migration
//     and listens on tcp:<address>:<free port>. Result.Output is the URI
//     (one line, "tcp:10.0.0.2:49152"). T does not hold the lease yet.
//  2. migrate_to on S with Meta migrate_uri=<that URI>: S applies
//     migrate_bandwidth/migrate_downtime, migrates, and writes progress to
//     StateDir/vm/<resource>/migration.json (VMMigration; ReadVMMigration)
//     while it runs. On success S's QEMU has handed the guest over: S quits
//     it and writes Released into the disk lease. On failure, cancel or
//     timeout S's QEMU keeps running the guest, with its lease: the result
//     is an error and nothing was stopped.
//  3. migrate_from on T with migrate_phase=finish: T waits for its guest
//     to run and takes the lease (at once, S released it). If the lease is
//     held by anyone else, T kills its QEMU and fails: never twice.
//
// Then a stop on S (a no-op: nothing runs there) completes the move. After
// a failed step 2 the controller stops T (stop quits a QEMU still waiting
// for an incoming migration; it holds no lease).
//
// The executor passes Task.Config.Meta as Request.Meta, so the controller
// puts these keys into the migrate task's copy of the configuration.
type vmAgent struct {
	dir         string
	log         *slog.Logger
	datastores  DatastoreLookup
	leaseOpts   datastore.Options
	incarnation string

	mu     sync.Mutex
	vms    map[string]*vmRun // live QEMUs known to this process
	exits  map[string]string // why the last QEMU of a resource ended, unasked
	notify func(resource string)
}

// vmRun is one live QEMU and the goroutine that watches it.
type vmRun struct {
	res string
	vm  *qemu.VM
	log *slog.Logger

	mu sync.Mutex
	// lease is the disk lease held for this QEMU; nil when the VM has no
	// datastore disk, or for an incoming migration not yet finished.
	lease *datastore.Lease
	// expected: an action of ours is ending QEMU (stop, the end of a
	// migration): its exit and its SHUTDOWN are not news.
	expected bool
	// migrating: a migration is in progress (source or destination), whose
	// STOP events are not news.
	migrating bool
	// leaseErr is why the lease was lost (QEMU was then killed).
	leaseErr error

	leaseSet chan struct{} // a lease was set: watch its Lost
	quit     chan struct{} // let go of QEMU without stopping it
	done     chan struct{} // the goroutine has ended
}

func newVM(dir string, log *slog.Logger, opts Options) (*vmAgent, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("agents: vigil:vm state dir: %w", err)
	}
	inc := opts.Incarnation
	if inc == "" {
		inc = hostIncarnation()
	}
	return &vmAgent{
		dir: dir, log: log, datastores: opts.Datastores, leaseOpts: opts.DiskLease,
		incarnation: inc, vms: map[string]*vmRun{}, exits: map[string]string{},
	}, nil
}

// hostIncarnation returns the kernel's boot id: it stays the same while
// the host runs (across agent restarts, whose QEMUs keep running) and
// changes when it reboots (when its QEMUs are gone). Without one, a random
// id: an agent restart then waits out its own leases' time.
func hostIncarnation() string {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s
		}
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var vmMeta = &Metadata{
	Name:       TypeVM,
	Version:    "1.0",
	OCFVersion: "1.1",
	ShortDesc:  "A KVM/QEMU virtual machine",
	LongDesc: "Built-in agent: runs a QEMU (KVM when /dev/kvm is usable, else TCG) supervised over QMP, " +
		"its run files in StateDir/vm/<resource>. A VM with disks on a datastore holds the disk lease of " +
		"the resource there while it runs, and is killed if it loses it. stop asks the guest to power " +
		"down (ACPI), then quits QEMU after stop_timeout. A guest that powers itself off stays down " +
		"(target-role=Stopped). Supports live migration (allow-migrate=true).",
	Params: []Param{
		{Name: "cpus", Type: "integer", Default: "1", ShortDesc: "Virtual CPUs"},
		{Name: "memory", Type: "string", Default: "128M", ShortDesc: "Guest memory: 512M, 2G (a bare number is MiB)"},
		{Name: "disk", Type: "string", ShortDesc: "Disks, comma-separated: DATASTORE:path or /absolute/path, format from the extension (.qcow2, .raw, .img) or a :qcow2/:raw suffix; the disk lease is taken on the first disk's datastore"},
		{Name: "nic", Type: "string", Default: "none", ShortDesc: "NICs, comma-separated: none, user, bridge:BRIDGE, tap:TAP (MACs are derived from the resource id)"},
		{Name: "machine", Type: "string", Default: "q35", ShortDesc: "QEMU machine type (none: a device-less stand-in for tests)"},
		{Name: "kernel", Type: "string", ShortDesc: "Kernel for a direct boot (DATASTORE:path or absolute path)"},
		{Name: "initrd", Type: "string", ShortDesc: "Initrd for a direct boot"},
		{Name: "append", Type: "string", ShortDesc: "Kernel command line for a direct boot"},
		{Name: "extra_args", Type: "string", ShortDesc: "Extra QEMU arguments, split at whitespace (escape hatch)"},
		{Name: "accel", Type: "select", Default: "auto", Options: []string{"auto", "kvm", "tcg"}, ShortDesc: "Accelerator: auto is kvm when /dev/kvm is usable, else tcg"},
		{Name: "stop_timeout", Type: "string", Default: "60s", ShortDesc: "How long stop waits for the guest to power down (ACPI) before quitting QEMU; 0 quits at once"},
		{Name: "isolation_response", Type: "select", Default: IsolationShutdown, Options: []string{IsolationShutdown, IsolationPowerOff, IsolationLeaveRunning},
			ShortDesc: "What the VM's node does with it when cut off from the cluster (no quorum): shutdown (ACPI, then quit after stop_timeout) or poweroff (quit at once), after which the node writes on the datastore that it released the VM and the cluster restarts it elsewhere at once; or leave-running (needs a datastore disk): the VM keeps running there while its disk lease holds, and no other node may start it meanwhile"},
		{Name: "migrate_bandwidth", Type: "string", ShortDesc: "Live migration bandwidth limit in bytes per second (100M, 1G; QEMU's default 128M)"},
		{Name: "migrate_downtime", Type: "string", ShortDesc: "Longest pause the live migration aims for at the switch (300ms is QEMU's default)"},
	},
	Actions: []ActionSpec{
		{Name: ActionStart, Timeout: 60 * time.Second},
		{Name: ActionStop, Timeout: 90 * time.Second},
		{Name: ActionMonitor, Timeout: 20 * time.Second, Interval: 10 * time.Second},
		{Name: ActionMigrateTo, Timeout: 300 * time.Second},
		{Name: ActionMigrateFrom, Timeout: 60 * time.Second},
		{Name: ActionMetaData, Timeout: 5 * time.Second},
		{Name: ActionValidateAll, Timeout: 20 * time.Second},
	},
}

func (a *vmAgent) meta() *Metadata { return vmMeta }

// Metadata returns the built-in meta-data.
func (a *vmAgent) Metadata(context.Context) (*Metadata, error) { return vmMeta, nil }

// ValidateParams checks what the meta-data cannot: sizes, disks, NICs and
// that every datastore named is known (agents.ParamValidator): known to the
// configuration being validated when ctx carries it (WithDatastores), else
// to this node's.
func (a *vmAgent) ValidateParams(ctx context.Context, params map[string]string) error {
	_, err := parseVMParams("vm", params, datastoresFor(ctx, a.datastores))
	return err
}

// SetNotify implements Notifier.
func (a *vmAgent) SetNotify(fn func(resource string)) {
	a.mu.Lock()
	a.notify = fn
	a.mu.Unlock()
}

func (a *vmAgent) fire(res string) {
	a.mu.Lock()
	fn := a.notify
	a.mu.Unlock()
	if fn != nil {
		fn(res)
	}
}

// Exec runs one action.
func (a *vmAgent) Exec(ctx context.Context, req Request) Result {
	res := runBuiltin(ctx, a, req)
	lvl := slog.LevelDebug
	if res.Code != CodeOK && !(req.Action == ActionMonitor && res.Code == CodeNotRunning) {
		lvl = slog.LevelInfo
	}
	a.log.Log(ctx, lvl, "vm action", "resource", req.Resource, "action", req.Action,
		"code", res.Code, "duration", res.Duration, "err", res.Err)
	return res
}

func (a *vmAgent) action(ctx context.Context, req Request) (Result, bool) {
	switch req.Action {
	case ActionStart:
		return a.start(ctx, req), true
	case ActionStop:
		return a.stop(ctx, req), true
	case ActionMonitor:
		return a.monitor(ctx, req), true
	case ActionMigrateTo:
		return a.migrateTo(ctx, req), true
	case ActionMigrateFrom:
		switch req.Meta[MetaMigratePhase] {
		case MigratePhasePrepare:
			return a.migratePrepare(ctx, req), true
		case "", MigratePhaseFinish:
			return a.migrateFinish(ctx, req), true
		}
		return Result{Code: CodeErrArgs, Err: fmt.Errorf("agents: vigil:vm: migrate_from: %s %q: want %s or %s",
			MetaMigratePhase, req.Meta[MetaMigratePhase], MigratePhasePrepare, MigratePhaseFinish)}, true
	}
	return Result{}, false
}

// runDir returns the VM's run directory, refusing one whose socket paths
// would not fit a unix socket address.
func (a *vmAgent) runDir(res string) (string, error) {
	dir, err := filepath.Abs(filepath.Join(a.dir, res))
	if err != nil {
		return "", err
	}
	p := qemu.NewPaths(dir)
	for _, s := range []string{p.QMP, p.Console} {
		if len(s) > 107 {
			return "", installErr("agents: vigil:vm: run directory %s is too long: socket path %s is %d bytes, unix sockets allow 107 (use a shorter state folder)", dir, s, len(s))
		}
	}
	return dir, nil
}

// holder is who this node is in lease files.
func (a *vmAgent) holder(req Request) datastore.Holder {
	node := req.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	return datastore.Holder{Node: node, Incarnation: a.incarnation}
}

// config parses the request's parameters and finds the run directory.
func (a *vmAgent) config(req Request) (vmConfig, string, Result, bool) {
	cfg, err := parseVMParams(req.Resource, req.Params, a.datastores)
	if err != nil {
		return cfg, "", Result{Code: codeOfParamErr(err), Err: err}, false
	}
	dir, err := a.runDir(req.Resource)
	if err != nil {
		return cfg, "", Result{Code: codeOfParamErr(err), Err: err}, false
	}
	return cfg, dir, Result{}, true
}

// --- start ---

func (a *vmAgent) start(ctx context.Context, req Request) Result {
	cfg, dir, bad, ok := a.config(req)
	if !ok {
		return bad
	}
	res := req.Resource
	r, err := a.lookup(ctx, res, dir)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	if r != nil {
		st, err := r.vm.Status(ctx)
		if err != nil && exited(r) {
			r, err, st = nil, nil, ""
		}
		switch {
		case r == nil:
		case err != nil:
			return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: start %s: QEMU runs (pid %d) but does not answer: %w", res, r.vm.Pid(), err)}
		case vmActive(st):
			// Idempotent: it runs already; make sure it holds its lease.
			if err := a.ensureLease(ctx, r, cfg, req); err != nil {
				return Result{Code: CodeErrGeneric, Err: err}
			}
			return Result{Code: CodeOK, Output: fmt.Sprintf("already running (%s)", st)}
		default:
			// A leftover that runs no guest (a finished migration's
			// source, an incoming migration nobody finished, a stopped
			// guest with -no-shutdown): quit it and start afresh.
			a.log.Info("vigil:vm: start: quitting a leftover QEMU first", "resource", res, "state", st)
			if err := a.halt(ctx, r, 0); err != nil {
				return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: start %s: leftover QEMU in state %s: %w", res, st, err)}
			}
			a.forget(r)
		}
	}
	if err := checkMemory(cfg.spec.MemoryMiB); err != nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: start %s: %w", res, err)}
	}
	a.clearGuestStopped(res, dir)

	lease, code, err := a.acquire(ctx, cfg, req)
	if err != nil {
		return Result{Code: code, Err: fmt.Errorf("agents: vigil:vm: start %s: %w", res, err)}
	}
	if err := checkFiles(cfg); err != nil {
		a.release(res, lease)
		return Result{Code: codeOfParamErr(err), Err: err}
	}
	vm, err := qemu.Start(ctx, cfg.spec, dir, qemu.StartOptions{Logger: a.log})
	if err != nil {
		a.release(res, lease)
		if errors.Is(err, qemu.ErrImageLocked) {
			err = fmt.Errorf("%w (another QEMU has a disk open, here or on another host)", err)
		}
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: start %s: %w", res, err)}
	}
	a.adopt(res, vm, lease, false)
	return Result{Code: CodeOK, Output: fmt.Sprintf("started (pid %d, %s)", vm.Pid(), qemu.ResolveAccel(cfg.spec.Accel))}
}

// vmActive reports whether a run state means the guest is (or is about to
// be) running here.
func vmActive(st qemu.RunState) bool {
	switch st {
	case qemu.StateRunning, qemu.StatePaused, qemu.StateSuspended, qemu.StateDebug,
		qemu.StateFinishMigrate, qemu.StateSaveVM, qemu.StateRestoreVM, qemu.StateColo,
		qemu.StateIOError, qemu.StateGuestPanicked, qemu.StateWatchdog, qemu.StateInternalError:
		return true
	}
	return false
}

// acquire takes the disk lease of the VM (nil without a datastore disk).
// The code says what a failure means: CodeErrInstalled when the datastore
// is not usable here (another node may do), CodeErrGeneric otherwise,
// including when another holder has the lease.
func (a *vmAgent) acquire(ctx context.Context, cfg vmConfig, req Request) (*datastore.Lease, Code, error) {
	if cfg.leaseRoot == "" {
		if len(cfg.spec.Disks) > 0 {
			a.log.Warn("vigil:vm: no disk on a datastore: the VM runs without a disk lease (only QEMU's image locks guard its disks)", "resource", req.Resource)
		}
		return nil, CodeOK, nil
	}
	l, err := a.acquireLease(ctx, cfg, req)
	switch {
	case err == nil:
		a.log.Info("vigil:vm: disk lease taken", "resource", req.Resource, "datastore", cfg.leaseDS)
		return l, CodeOK, nil
	case datastore.IsHeld(err):
		return nil, CodeErrGeneric, err
	case errors.Is(err, datastore.ErrNotInitialized), errors.Is(err, datastore.ErrForeign):
		return nil, CodeErrInstalled, fmt.Errorf("datastore %s (%s) is not usable on this node: %w", cfg.leaseDS, cfg.leaseRoot, err)
	}
	return nil, CodeErrGeneric, fmt.Errorf("take the disk lease on datastore %s: %w", cfg.leaseDS, err)
}

// ensureLease makes sure a QEMU running here holds its disk lease, taking
// it when it does not (after an agent restart, or when a migration's
// target finds its guest running). If someone else holds it, QEMU is
// killed at once: the disk belongs to them.
func (a *vmAgent) ensureLease(ctx context.Context, r *vmRun, cfg vmConfig, req Request) error {
	r.mu.Lock()
	has := r.lease != nil
	r.mu.Unlock()
	if has || cfg.leaseRoot == "" {
		return nil
	}
	l, _, err := a.acquire(ctx, cfg, req)
	if err != nil {
		if datastore.IsHeld(err) {
			a.log.Error("vigil:vm: QEMU runs here without its disk lease, which another node holds: KILLING QEMU (storage split-brain guard)",
				"resource", r.res, "pid", r.vm.Pid(), "err", err)
			r.mu.Lock()
			r.leaseErr = err
			r.mu.Unlock()
			_ = r.vm.Kill()
		}
		return fmt.Errorf("agents: vigil:vm: %s runs here without its disk lease: %w", r.res, err)
	}
	r.setLease(l)
	return nil
}

// release writes Released into a lease (QEMU no longer uses the disk), so
// the next holder need not wait; on failure the lease expires in place.
func (a *vmAgent) release(res string, l *datastore.Lease) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), vmReleaseTimeout)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		a.log.Warn("vigil:vm: could not release the disk lease; it expires in place", "resource", res, "err", err)
		return
	}
	a.log.Info("vigil:vm: disk lease released", "resource", res)
}

// releaseStale releases a lease that still names this node while no QEMU
// runs here (an agent restarted after its QEMU died): the next node then
// need not wait for it to expire. Best effort.
func (a *vmAgent) releaseStale(ctx context.Context, cfg vmConfig, req Request) {
	if cfg.leaseRoot == "" {
		return
	}
	rec, err := datastore.Read(ctx, cfg.leaseRoot, req.Resource)
	if err != nil || rec.Released || rec.Tentative || rec.Holder != a.holder(req) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, vmReleaseTimeout)
	defer cancel()
	opts := a.leaseOpts
	opts.KeepOnIsolation = rec.KeepOnIsolation
	l, err := datastore.Acquire(actx, cfg.leaseRoot, req.Resource, a.holder(req), opts)
	if err != nil {
		return
	}
	a.release(req.Resource, l)
}

// checkFiles checks that the images and kernel files exist: a missing
// image on a datastore is a configuration error (every node sees the same
// folder), a missing local file concerns this node only.
func checkFiles(cfg vmConfig) error {
	check := func(what, path string, onDatastore bool) error {
		if _, err := os.Stat(path); err != nil {
			if onDatastore {
				return configErr("agents: vigil:vm: %s %s: %v", what, path, err)
			}
			return installErr("agents: vigil:vm: %s %s: %v", what, path, err)
		}
		return nil
	}
	for _, d := range cfg.spec.Disks {
		if err := check("disk", d.Path, cfg.leaseRoot != "" && strings.HasPrefix(d.Path, cfg.leaseRoot+"/")); err != nil {
			return err
		}
	}
	for _, p := range []struct{ what, path string }{{"kernel", cfg.spec.Kernel}, {"initrd", cfg.spec.Initrd}} {
		if p.path == "" {
			continue
		}
		if err := check(p.what, p.path, false); err != nil {
			return err
		}
	}
	return nil
}

// checkMemory checks that the host has the memory for a guest of mib MiB
// and QEMU's overhead (MemAvailable, /proc/meminfo).
func checkMemory(mib int) error {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil // not Linux, or no /proc: let QEMU tell
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			var kib int64
			if _, err := fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kib); err != nil {
				return nil
			}
			need := int64(mib+vmMemoryOverheadMiB) << 10
			if kib < need {
				return fmt.Errorf("not enough memory here: %d MiB available, the VM needs %d MiB and QEMU about %d MiB more", kib>>10, mib, vmMemoryOverheadMiB)
			}
			return nil
		}
	}
	return nil
}

// --- supervision ---

// adopt registers a live QEMU and starts the goroutine that watches it.
func (a *vmAgent) adopt(res string, vm *qemu.VM, lease *datastore.Lease, migrating bool) *vmRun {
	r := &vmRun{
		res: res, vm: vm, log: a.log.With("resource", res), lease: lease, migrating: migrating,
		leaseSet: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	a.mu.Lock()
	a.vms[res] = r
	delete(a.exits, res)
	a.mu.Unlock()
	go a.supervise(r)
	return r
}

// lookup returns the live QEMU of res: the one this process knows, or one
// found through the pid file in dir and attached to (after an agent
// restart). It returns nil when none runs.
func (a *vmAgent) lookup(ctx context.Context, res, dir string) (*vmRun, error) {
	a.mu.Lock()
	r := a.vms[res]
	a.mu.Unlock()
	if r != nil {
		select {
		case <-r.vm.Done():
			<-r.done // its goroutine records the exit
		default:
			return r, nil
		}
	}
	actx, cancel := context.WithTimeout(ctx, vmAttachTimeout)
	defer cancel()
	vm, err := qemu.Attach(actx, dir)
	if errors.Is(err, qemu.ErrNotRunning) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agents: vigil:vm: attach to the QEMU of %s: %w", res, err)
	}
	a.log.Info("vigil:vm: attached to a running QEMU", "resource", res, "pid", vm.Pid())
	st, err := vm.Status(ctx)
	return a.adopt(res, vm, nil, err == nil && st == qemu.StateInMigrate), nil
}

// setLease hands the goroutine a lease to watch.
func (r *vmRun) setLease(l *datastore.Lease) {
	r.mu.Lock()
	r.lease = l
	r.mu.Unlock()
	select {
	case r.leaseSet <- struct{}{}:
	default:
	}
}

// takeLease removes the lease from the run and returns it.
func (r *vmRun) takeLease() *datastore.Lease {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lease
	r.lease = nil
	return l
}

// expect marks QEMU's coming exit as ours.
func (r *vmRun) expect() {
	r.mu.Lock()
	r.expected = true
	r.mu.Unlock()
}

func (r *vmRun) setMigrating(on bool) {
	r.mu.Lock()
	r.migrating = on
	r.mu.Unlock()
}

// supervise watches one QEMU: its events, its exit and its lease.
func (a *vmAgent) supervise(r *vmRun) {
	defer close(r.done)
	events := r.vm.Events()
	var lost <-chan error
	watchLease := func() {
		r.mu.Lock()
		if r.lease != nil {
			lost = r.lease.Lost()
		}
		r.mu.Unlock()
	}
	watchLease()
	for {
		select {
		case <-r.quit:
			return
		case <-r.leaseSet:
			watchLease()
		case err, ok := <-lost:
			if !ok || err == nil {
				lost = nil // released or closed by us
				continue
			}
			lost = nil
			a.leaseLost(r, err)
		case ev, ok := <-events:
			if !ok {
				events = nil // the connection is gone; Done follows
				continue
			}
			a.onEvent(r, ev)
		case <-r.vm.Done():
			// Read what QEMU said last (its SHUTDOWN may still be queued).
			if events != nil {
				t := time.NewTimer(vmDrainEvents)
			drain:
				for {
					select {
					case ev, ok := <-events:
						if !ok {
							break drain
						}
						a.onEvent(r, ev)
					case <-t.C:
						break drain
					}
				}
				t.Stop()
			}
			a.onExit(r)
			return
		}
	}
}

// leaseLost kills QEMU at once: another node may take the lease Margin
// after the loss, and then write the disk.
func (a *vmAgent) leaseLost(r *vmRun, err error) {
	r.mu.Lock()
	r.leaseErr = err
	r.lease = nil
	r.mu.Unlock()
	r.log.Error("vigil:vm: DISK LEASE LOST: KILLING QEMU NOW (storage split-brain guard)", "pid", r.vm.Pid(), "err", err)
	if kerr := r.vm.Kill(); kerr != nil {
		r.log.Error("vigil:vm: kill after lease loss failed", "err", kerr)
	}
	a.fire(r.res)
}

// onEvent reacts to one QMP event.
func (a *vmAgent) onEvent(r *vmRun, ev qmp.Event) {
	r.mu.Lock()
	expected, migrating := r.expected, r.migrating
	r.mu.Unlock()
	switch ev.Name {
	case qemu.EventShutdown:
		sd, _ := qemu.ShutdownOf(ev)
		if expected {
			return
		}
		if sd.Guest && sd.Reason == "guest-shutdown" {
			r.log.Info("vigil:vm: the guest shut itself down: it stays down (target-role=Stopped)", "reason", sd.Reason)
			a.markGuestStopped(r, sd)
		} else {
			r.log.Warn("vigil:vm: QEMU is shutting down unasked", "guest", sd.Guest, "reason", sd.Reason)
		}
		a.fire(r.res)
	case qemu.EventStop:
		if expected || migrating {
			return
		}
		r.log.Warn("vigil:vm: the guest was paused")
		a.fire(r.res)
	case qemu.EventGuestPanicked:
		r.log.Warn("vigil:vm: the guest panicked", "data", string(ev.Data))
		a.fire(r.res)
	case qemu.EventBlockIOError:
		r.log.Warn("vigil:vm: disk I/O error", "data", string(ev.Data))
		a.fire(r.res)
	}
}

// onExit handles QEMU's exit. One of ours (stop, migration) is the
// action's business; any other is news: QEMU no longer writes the disk, so
// the lease is released at once (the next node need not wait for it).
func (a *vmAgent) onExit(r *vmRun) {
	r.mu.Lock()
	expected, leaseErr := r.expected, r.leaseErr
	r.mu.Unlock()
	if expected {
		return
	}
	why := "QEMU exited"
	if ps := r.vm.ProcessState(); ps != nil {
		why += " (" + ps.String() + ")"
	}
	if leaseErr != nil {
		why = "QEMU killed: " + leaseErr.Error()
	}
	if _, ok := a.guestStopped(r.vm.Paths().Dir); ok {
		why = "the guest shut itself down"
	}
	lvl := slog.LevelWarn
	if why == "the guest shut itself down" {
		lvl = slog.LevelInfo
	}
	r.log.Log(context.Background(), lvl, "vigil:vm: "+why, "pid", r.vm.Pid())
	a.release(r.res, r.takeLease())
	_ = r.vm.Close()
	a.mu.Lock()
	if a.vms[r.res] == r {
		delete(a.vms, r.res)
		a.exits[r.res] = why
	}
	a.mu.Unlock()
	a.fire(r.res)
}

// forget drops a QEMU that an action ended: it waits for its goroutine,
// releases the lease and closes the connection.
func (a *vmAgent) forget(r *vmRun) { a.forgetTo(r, "") }

// forgetTo is forget, handing the lease over to node instead of releasing
// it when node is set (a live migration's target: datastore.Lease.HandOver).
func (a *vmAgent) forgetTo(r *vmRun, node string) {
	<-r.done
	if l := r.takeLease(); node != "" && l != nil {
		ctx, cancel := context.WithTimeout(context.Background(), vmReleaseTimeout)
		if err := l.HandOver(ctx, node); err != nil {
			a.log.Warn("vigil:vm: could not hand the disk lease over; it expires in place", "resource", r.res, "to", node, "err", err)
		} else {
			a.log.Info("vigil:vm: disk lease handed over", "resource", r.res, "to", node)
		}
		cancel()
	} else {
		a.release(r.res, l)
	}
	_ = r.vm.Close()
	a.mu.Lock()
	if a.vms[r.res] == r {
		delete(a.vms, r.res)
	}
	delete(a.exits, r.res)
	a.mu.Unlock()
}

// detachAll lets go of every QEMU without stopping it, as an agent that
// exits does: connections closed, leases no longer renewed nor released.
// For tests that restart the agent.
func (a *vmAgent) detachAll() {
	a.mu.Lock()
	runs := make([]*vmRun, 0, len(a.vms))
	for _, r := range a.vms {
		runs = append(runs, r)
	}
	a.vms = map[string]*vmRun{}
	a.mu.Unlock()
	for _, r := range runs {
		close(r.quit)
		<-r.done
		if l := r.takeLease(); l != nil {
			_ = l.Close()
		}
		_ = r.vm.Close()
	}
}

// --- the guest-stopped marker ---

// vmGuestStopped is the content of the guest-stopped marker.
type vmGuestStopped struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

func (a *vmAgent) markGuestStopped(r *vmRun, sd qemu.Shutdown) {
	b, _ := json.Marshal(vmGuestStopped{Reason: sd.Reason, At: time.Now()})
	p := filepath.Join(r.vm.Paths().Dir, vmGuestStoppedFile)
	if err := writeFileAtomic(p, b); err != nil {
		r.log.Error("vigil:vm: cannot record the guest's shutdown (it will count as a failure)", "err", err)
	}
}

func (a *vmAgent) guestStopped(dir string) (vmGuestStopped, bool) {
	var m vmGuestStopped
	b, err := os.ReadFile(filepath.Join(dir, vmGuestStoppedFile))
	if err != nil || json.Unmarshal(b, &m) != nil {
		return m, false
	}
	return m, true
}

func (a *vmAgent) clearGuestStopped(res, dir string) {
	if err := os.Remove(filepath.Join(dir, vmGuestStoppedFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("vigil:vm: cannot remove the guest-stopped marker", "resource", res, "err", err)
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// --- stop ---

func (a *vmAgent) stop(ctx context.Context, req Request) Result {
	res := req.Resource
	dir, err := a.runDir(res)
	if err != nil {
		return Result{Code: codeOfParamErr(err), Err: err}
	}
	// A stop must not fail on a bad parameter: defaults then, no lease.
	cfg, perr := parseVMParams(res, req.Params, a.datastores)
	if perr != nil {
		cfg = vmConfig{stopTimeout: vmDefaultStopTimeout, isolation: IsolationShutdown}
	}
	r, err := a.lookup(ctx, res, dir)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	if r == nil {
		a.releaseStale(ctx, cfg, req)
		return Result{Code: CodeOK}
	}
	st, _ := r.vm.Status(ctx)
	acpi := time.Duration(0)
	if req.SelfStop && cfg.isolation == IsolationPowerOff {
		r.log.Warn("vigil:vm: isolation response: powering the VM off (no quorum)")
	} else if st == qemu.StateRunning {
		acpi = cfg.stopTimeout
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			acpi = min(acpi, left-min(left/3, 10*time.Second))
		}
	}
	r.expect()
	if err := a.halt(ctx, r, acpi); err != nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: stop %s: %w", res, err)}
	}
	a.forget(r)
	// A QEMU attached to after an agent restart whose lease was never
	// taken back still has it naming this node: release it too.
	a.releaseStale(ctx, cfg, req)
	return Result{Code: CodeOK}
}

// halt ends QEMU for sure: with acpi > 0 it asks the guest to power down
// and waits that long (qemu.VM.Shutdown), else it quits QEMU at once; SIGKILL
// if that fails. It returns nil once QEMU is gone.
func (a *vmAgent) halt(ctx context.Context, r *vmRun, acpi time.Duration) error {
	r.expect()
	if acpi > 0 {
		return r.vm.Shutdown(ctx, acpi)
	}
	qctx, cancel := context.WithTimeout(ctx, vmQuitTimeout)
	err := r.vm.Quit(qctx)
	cancel()
	if err == nil {
		return nil
	}
	r.log.Warn("vigil:vm: quit failed; sending SIGKILL", "err", err)
	if err := r.vm.Kill(); err != nil {
		return err
	}
	select {
	case <-r.vm.Done():
		return nil
	case <-time.After(vmQuitTimeout):
		return fmt.Errorf("QEMU (pid %d) still there %v after SIGKILL", r.vm.Pid(), vmQuitTimeout)
	}
}

// --- monitor ---

func (a *vmAgent) monitor(ctx context.Context, req Request) Result {
	res := req.Resource
	dir, err := a.runDir(res)
	if err != nil {
		return Result{Code: codeOfParamErr(err), Err: err}
	}
	r, err := a.lookup(ctx, res, dir)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	if r == nil {
		return a.notRunning(res, dir)
	}
	st, err := r.vm.Status(ctx)
	if err != nil {
		if exited(r) {
			return a.notRunning(res, dir)
		}
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: monitor %s: %w", res, err)}
	}
	if vmActive(st) {
		// A guest that runs here must hold its disk lease (taken back
		// after an agent restart; a QEMU whose lease is someone else's
		// is killed).
		if cfg, perr := parseVMParams(res, req.Params, a.datastores); perr == nil {
			if err := a.ensureLease(ctx, r, cfg, req); err != nil {
				return Result{Code: CodeErrGeneric, Err: err}
			}
		}
	}
	switch st {
	case qemu.StateRunning, qemu.StateFinishMigrate, qemu.StateSaveVM, qemu.StateRestoreVM, qemu.StateColo:
		return Result{Code: CodeOK}
	case qemu.StatePaused, qemu.StateSuspended:
		// Running, with a warning: someone paused it on purpose; restarting
		// it would lose its state.
		return Result{Code: CodeDegraded, Output: fmt.Sprintf("the guest is %s", st)}
	case qemu.StatePostMigrate:
		return Result{Code: CodeNotRunning, Output: "migrated away: this QEMU (postmigrate) runs no guest"}
	case qemu.StateShutdown:
		out := a.notRunning(res, dir)
		out.Output = "the guest is shut down (QEMU waits, -no-shutdown)"
		return out
	case qemu.StateInMigrate:
		// May become active here if a migration completes: not stopped.
		return Result{Code: CodeErrGeneric, Output: "QEMU waits for an incoming migration that was not finished"}
	}
	return Result{Code: CodeErrGeneric, Output: fmt.Sprintf("the guest is in state %s", st)}
}

// exited tells, after a QMP command failed, whether QEMU is gone: a QEMU
// that exits closes its QMP socket a moment before the kernel reports the
// process gone, so a closed connection waits for that moment. It returns
// once the run's goroutine has recorded the exit.
func exited(r *vmRun) bool {
	select {
	case <-r.vm.Done():
	case <-time.After(vmExitWait):
		return false
	}
	<-r.done
	return true
}

// notRunning is the monitor's answer when no guest runs: with the
// guest-stopped marker, StoppedByGuest.
func (a *vmAgent) notRunning(res, dir string) Result {
	if m, ok := a.guestStopped(dir); ok {
		return Result{Code: CodeNotRunning, StoppedByGuest: true,
			Output: fmt.Sprintf("the guest shut itself down (%s at %s): it stays down", m.Reason, m.At.UTC().Format(time.RFC3339))}
	}
	a.mu.Lock()
	why := a.exits[res]
	a.mu.Unlock()
	return Result{Code: CodeNotRunning, Output: why}
}

// acquireLease takes the disk lease: at once from a holder the cluster has
// proven down (req.DownNodes: fenced, reset by its watchdog or confirmed
// off), else by the delta-lease rule (the holder's counter still for the
// lease time on this node's clock). A node proven down runs nothing, and
// AcquireFenced takes the lease only while the file still names exactly
// the holder read here, so a node that came back and renewed in between
// keeps it.
//
// A holder whose lease says it keeps the VM running when isolated
// (leave-running) and that is proven down only by its watchdog's timing
// is not taken from at once: the watchdog does not reset a node that may
// keep petting it while its lease holds. The lease must then stand still.
func (a *vmAgent) acquireLease(ctx context.Context, cfg vmConfig, req Request) (*datastore.Lease, error) {
	opts := a.leaseOpts
	opts.KeepOnIsolation = cfg.isolation == IsolationLeaveRunning
	if len(req.DownNodes) > 0 {
		rec, err := datastore.Read(ctx, cfg.leaseRoot, req.Resource)
		if err == nil && !rec.Released && rec.Holder.Node != "" && rec.Holder != a.holder(req) && slices.Contains(req.DownNodes, rec.Holder.Node) {
			if rec.KeepOnIsolation && slices.Contains(req.WatchdogDown, rec.Holder.Node) {
				a.log.Warn("vigil:vm: the disk lease's holder is proven down by its watchdog only, and may have left the VM running (leave-running): waiting for the lease to stand still",
					"resource", req.Resource, "holder", rec.Holder.Node)
			} else {
				a.log.Info("vigil:vm: taking the disk lease from a node proven down", "resource", req.Resource, "holder", rec.Holder.Node)
				return datastore.AcquireFenced(ctx, cfg.leaseRoot, req.Resource, a.holder(req), rec.Holder, opts)
			}
		}
	}
	return datastore.Acquire(ctx, cfg.leaseRoot, req.Resource, a.holder(req), opts)
}

// Survivors implements SurvivorLister: the resources whose QEMU runs in
// this node's state folder, attached or not (one that outlived an agent
// restart is not attached until a probe or monitor looks).
func (a *vmAgent) Survivors() []string {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && qemu.Running(filepath.Join(a.dir, e.Name())) {
			out = append(out, e.Name())
		}
	}
	return out
}

// KeepsRunning implements IsolationKeeper: a VM running here under a disk
// lease that says leave-running is left running when this node is
// isolated, and guarded until the lease's validity.
func (a *vmAgent) KeepsRunning(resource string) (time.Time, bool) {
	a.mu.Lock()
	r := a.vms[resource]
	a.mu.Unlock()
	if r == nil {
		return time.Time{}, false
	}
	r.mu.Lock()
	l := r.lease
	r.mu.Unlock()
	if l == nil || !l.Record().KeepOnIsolation || l.Err() != nil {
		return time.Time{}, false
	}
	return l.ValidUntil(), true
}
