package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/qemu"
)

// VMMigration is the progress of a live migration, as the source's
// vigil:vm writes it to StateDir/vm/<resource>/migration.json while
// migrate_to runs (rewritten every 100 ms, atomically), and once more when
// it ends. The CLI's progress bar reads it through the API.
type VMMigration struct {
	Resource string    `json:"resource"`
	URI      string    `json:"uri"`
	Target   string    `json:"target,omitempty"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	// Status is QEMU's: setup, active, completed, failed, cancelled...
	Status string `json:"status"`
	// Done is set in the last write: the migration has ended (see Status
	// and Error).
	Done bool `json:"done,omitempty"`
	// RAM bytes: in total, sent so far, still to send.
	TotalBytes       uint64  `json:"total_bytes"`
	TransferredBytes uint64  `json:"transferred_bytes"`
	RemainingBytes   uint64  `json:"remaining_bytes"`
	DirtyPagesRate   uint64  `json:"dirty_pages_rate"`
	Passes           uint64  `json:"passes"`
	ThroughputMbps   float64 `json:"throughput_mbps"`
	// ExpectedDowntime while active; Downtime and TotalTime once
	// completed.
	ExpectedDowntime time.Duration `json:"expected_downtime_ns,omitempty"`
	Downtime         time.Duration `json:"downtime_ns,omitempty"`
	TotalTime        time.Duration `json:"total_time_ns,omitempty"`
	Error            string        `json:"error,omitempty"`
}

// ReadVMMigration reads the latest progress of a migration of resource
// from this node's state folder (Options.StateDir).
func ReadVMMigration(stateDir, resource string) (VMMigration, error) {
	var m VMMigration
	if err := validResource(resource); err != nil {
		return m, fmt.Errorf("%w %q", err, resource)
	}
	b, err := os.ReadFile(filepath.Join(stateDir, TypeVM, resource, vmMigrationFile))
	if err != nil {
		return m, fmt.Errorf("agents: read migration progress of %s: %w", resource, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("agents: read migration progress of %s: %w", resource, err)
	}
	return m, nil
}

func (m *VMMigration) update(info qemu.MigrationInfo) {
	m.Updated = time.Now()
	m.Status = string(info.Status)
	m.TotalBytes, m.TransferredBytes, m.RemainingBytes = info.TotalBytes, info.TransferredBytes, info.RemainingBytes
	m.DirtyPagesRate, m.Passes, m.ThroughputMbps = info.DirtyPagesRate, info.Passes, info.ThroughputMbps
	m.ExpectedDowntime, m.Downtime, m.TotalTime = info.ExpectedDowntime, info.Downtime, info.TotalTime
	m.Error = info.Error
}

// --- migrate_from, phase prepare: on the target ---

func (a *vmAgent) migratePrepare(ctx context.Context, req Request) Result {
	cfg, dir, bad, ok := a.config(req)
	if !ok {
		return bad
	}
	res := req.Resource
	listen := strings.TrimSpace(req.Meta[MetaMigrateListen])
	if listen == "" || net.ParseIP(strings.Trim(listen, "[]")) == nil {
		return Result{Code: CodeErrArgs, Err: fmt.Errorf("agents: vigil:vm: migrate_from prepare of %s: meta %s %q: want this node's IP address", res, MetaMigrateListen, listen)}
	}
	r, err := a.lookup(ctx, res, dir)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	if r != nil {
		st, err := r.vm.Status(ctx)
		if err == nil && vmActive(st) {
			return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_from prepare of %s: the VM already runs here (%s)", res, st)}
		}
		// A leftover (an earlier attempt's destination, a source that
		// migrated away): it runs no guest.
		if err := a.halt(ctx, r, 0); err != nil {
			return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_from prepare of %s: leftover QEMU: %w", res, err)}
		}
		a.forget(r)
	}
	// The target must have the disks (its datastore mounted) and the
	// memory before the source starts sending.
	if err := checkFiles(cfg); err != nil {
		return Result{Code: codeOfParamErr(err), Err: fmt.Errorf("agents: vigil:vm: migrate_from prepare of %s: %w", res, err)}
	}
	if err := checkMemory(cfg.spec.MemoryMiB); err != nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_from prepare of %s: %w", res, err)}
	}
	a.clearGuestStopped(res, dir)
	vm, err := qemu.Start(ctx, cfg.spec, dir, qemu.StartOptions{Incoming: qemu.IncomingDefer, Logger: a.log})
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_from prepare of %s: %w", res, err)}
	}
	r = a.adopt(res, vm, nil, true)
	fail := func(err error) Result {
		_ = a.halt(context.Background(), r, 0)
		a.forget(r)
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_from prepare of %s: %w", res, err)}
	}
	host := listen
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	if err := vm.MigrateIncoming(ctx, "tcp:"+host+":0"); err != nil {
		return fail(err)
	}
	info, err := vm.MigrationStatus(ctx)
	if err != nil {
		return fail(err)
	}
	if len(info.Listening) == 0 {
		return fail(fmt.Errorf("QEMU reports no listening address"))
	}
	uri := info.Listening[0]
	a.log.Info("vigil:vm: waiting for an incoming migration", "resource", res, "uri", uri, "source", req.MigrateSource)
	return Result{Code: CodeOK, Output: uri}
}

// --- migrate_to: on the source ---

func (a *vmAgent) migrateTo(ctx context.Context, req Request) Result {
	cfg, dir, bad, ok := a.config(req)
	if !ok {
		return bad
	}
	res := req.Resource
	uri := strings.TrimSpace(req.Meta[MetaMigrateURI])
	if !strings.HasPrefix(uri, "tcp:") && !strings.HasPrefix(uri, "unix:") {
		return Result{Code: CodeErrArgs, Err: fmt.Errorf("agents: vigil:vm: migrate_to of %s: meta %s %q: want the URI the target's prepare returned (tcp:ADDR:PORT)", res, MetaMigrateURI, uri)}
	}
	r, err := a.lookup(ctx, res, dir)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	if r == nil {
		return Result{Code: CodeNotRunning, Err: fmt.Errorf("agents: vigil:vm: migrate_to of %s: the VM does not run here", res)}
	}
	st, err := r.vm.Status(ctx)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_to of %s: %w", res, err)}
	}
	if st != qemu.StateRunning && st != qemu.StatePaused {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_to of %s: the guest is %s, not running", res, st)}
	}
	// Only the holder of the disk lease may hand it over.
	if err := a.ensureLease(ctx, r, cfg, req); err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}

	r.setMigrating(true)
	prog := VMMigration{Resource: res, URI: uri, Target: req.MigrateTarget, Started: time.Now()}
	progPath := filepath.Join(dir, vmMigrationFile)
	write := func(info qemu.MigrationInfo, done bool) {
		prog.update(info)
		prog.Done = done
		b, _ := json.Marshal(prog)
		if err := writeFileAtomic(progPath, b); err != nil {
			a.log.Warn("vigil:vm: cannot write migration progress", "resource", res, "err", err)
		}
	}
	// keep says why the guest stays here; the migration is over.
	keep := func(code Code, err error) Result {
		r.setMigrating(false)
		a.fire(res) // let the monitor confirm the source still runs
		return Result{Code: code, Err: fmt.Errorf("agents: vigil:vm: migrate_to of %s: %w; the VM keeps running here", res, err)}
	}

	if err := r.vm.SetMigrationParams(ctx, cfg.migrate); err != nil {
		write(qemu.MigrationInfo{Status: qemu.MigrationFailed, Error: err.Error()}, true)
		return keep(CodeErrGeneric, err)
	}
	a.log.Info("vigil:vm: migrating", "resource", res, "uri", uri, "target", req.MigrateTarget,
		"bandwidth", cfg.migrate.MaxBandwidth, "downtime", cfg.migrate.DowntimeLimit)
	if err := r.vm.Migrate(ctx, uri); err != nil {
		write(qemu.MigrationInfo{Status: qemu.MigrationFailed, Error: err.Error()}, true)
		return keep(CodeErrGeneric, err)
	}
	info, err := a.followMigration(ctx, r, write)
	if err != nil {
		// Our deadline or the caller: cancel; the source keeps the guest.
		cctx, cancel := context.WithTimeout(context.Background(), vmQuitTimeout)
		defer cancel()
		if cerr := r.vm.MigrateCancel(cctx); cerr != nil {
			a.log.Warn("vigil:vm: migrate_cancel failed", "resource", res, "err", cerr)
		}
		last, werr := r.vm.WaitMigration(cctx, vmMigratePoll)
		if werr == nil && last.Status == qemu.MigrationCompleted {
			// Completed while we gave up: the guest runs on the target.
			info, err = last, nil
		} else {
			last.Error = "canceled: " + err.Error()
			write(last, true)
			return keep(codeOf(ctx), err)
		}
	}
	if info.Status != qemu.MigrationCompleted {
		write(info, true)
		msg := info.Error
		if msg == "" {
			msg = "status " + string(info.Status)
		}
		return keep(CodeErrGeneric, fmt.Errorf("migration to %s failed: %s", uri, msg))
	}
	write(info, true)

	// The guest runs on the target now; this QEMU sits in postmigrate with
	// its disks inactive. Quit it and hand the lease over.
	r.expect()
	if err := a.halt(context.Background(), r, 0); err != nil {
		a.log.Error("vigil:vm: the migrated source QEMU does not exit; its lease is not released", "resource", res, "err", err)
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_to of %s: migrated, but the source QEMU is still there: %w", res, err)}
	}
	// The lease goes to the target alone: the guest runs there already,
	// and nobody else may take the disk before the target's finish does.
	a.forgetTo(r, req.MigrateTarget)
	a.log.Info("vigil:vm: migrated", "resource", res, "target", req.MigrateTarget,
		"total", info.TotalTime, "downtime", info.Downtime, "bytes", info.TransferredBytes)
	return Result{Code: CodeOK, Output: fmt.Sprintf("migrated to %s in %v, downtime %v, %d bytes sent",
		uri, info.TotalTime, info.Downtime, info.TransferredBytes)}
}

// followMigration polls the migration until it ends, writing progress.
func (a *vmAgent) followMigration(ctx context.Context, r *vmRun, write func(qemu.MigrationInfo, bool)) (qemu.MigrationInfo, error) {
	t := time.NewTicker(vmMigratePoll)
	defer t.Stop()
	for {
		info, err := r.vm.MigrationStatus(ctx)
		if err != nil {
			return info, err
		}
		if info.Status.Finished() && info.Status != qemu.MigrationNone {
			return info, nil
		}
		write(info, false)
		select {
		case <-ctx.Done():
			return info, context.Cause(ctx)
		case <-r.vm.Done():
			return info, fmt.Errorf("QEMU exited during the migration")
		case <-t.C:
		}
	}
}

// --- migrate_from, phase finish: on the target ---

func (a *vmAgent) migrateFinish(ctx context.Context, req Request) Result {
	cfg, dir, bad, ok := a.config(req)
	if !ok {
		return bad
	}
	res := req.Resource
	r, err := a.lookup(ctx, res, dir)
	if err != nil {
		return Result{Code: CodeErrGeneric, Err: err}
	}
	if r == nil {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_from finish of %s: no QEMU here (the incoming migration failed?): %s", res, a.notRunning(res, dir).Output)}
	}
	fail := func(err error) Result {
		return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:vm: migrate_from finish of %s: %w", res, err)}
	}
	// Wait for the guest to run here: the source's migrate_to has
	// completed, QEMU resumes the guest a moment later.
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := r.vm.Status(ctx)
		if err != nil {
			return fail(err)
		}
		if st == qemu.StateRunning || st == qemu.StatePaused {
			break
		}
		if st != qemu.StateInMigrate {
			return fail(fmt.Errorf("the guest is %s after the migration", st))
		}
		select {
		case <-ctx.Done():
			return ctxResult(ctx)
		case <-r.vm.Done():
			return fail(fmt.Errorf("QEMU exited before the guest ran"))
		case <-t.C:
		}
	}
	r.setMigrating(false)
	if err := a.ensureLease(ctx, r, cfg, req); err != nil {
		// ensureLease killed QEMU if another holder has the lease.
		return fail(err)
	}
	a.log.Info("vigil:vm: incoming migration finished; the guest runs here", "resource", res, "source", req.MigrateSource)
	return Result{Code: CodeOK}
}
