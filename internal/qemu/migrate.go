package qemu

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Live migration, as QEMU does it: the destination is started with
// Incoming: IncomingDefer (state inmigrate) and told where to listen with
// MigrateIncoming; the source is told where to send with Migrate, which
// returns at once. The source copies RAM while the guest runs, then pauses
// the guest for the last dirty pages (at most about DowntimeLimit, if the
// bandwidth allows), and the destination resumes it. Afterwards the source
// sits in state postmigrate: the caller confirms the destination runs, then
// quits the source. On failure the source keeps running and the destination
// exits.
//
// Disks are not copied: they must be on storage both hosts reach. The
// destination opens them inactive, without their write locks, and takes the
// locks over from the source at the switch.

// MigrationParams are the migration parameters Vigil sets; a zero field
// leaves QEMU's value.
type MigrationParams struct {
	// MaxBandwidth in bytes per second (QEMU's default is 128 MiB/s).
	MaxBandwidth int64
	// DowntimeLimit is the longest pause QEMU aims for at the switch
	// (QEMU's default is 300 ms); it has millisecond resolution.
	DowntimeLimit time.Duration
}

// SetMigrationParams sets migration parameters (migrate-set-parameters), on
// the source before Migrate, or during a migration.
func (v *VM) SetMigrationParams(ctx context.Context, p MigrationParams) error {
	if p.MaxBandwidth < 0 || p.DowntimeLimit < 0 {
		return fmt.Errorf("qemu: set migration parameters of %s: negative value in %+v", v.name, p)
	}
	args := struct {
		MaxBandwidth  int64 `json:"max-bandwidth,omitempty"`
		DowntimeLimit int64 `json:"downtime-limit,omitempty"`
	}{p.MaxBandwidth, p.DowntimeLimit.Milliseconds()}
	if p.DowntimeLimit > 0 && args.DowntimeLimit == 0 {
		args.DowntimeLimit = 1
	}
	return v.exec(ctx, "set migration parameters of", "migrate-set-parameters", args)
}

// MigrateIncoming makes a destination started with IncomingDefer listen on
// uri ("tcp:ADDR:PORT", "tcp:[::1]:PORT", "unix:PATH").
func (v *VM) MigrateIncoming(ctx context.Context, uri string) error {
	return v.exec(ctx, "migrate-incoming", "migrate-incoming", map[string]string{"uri": uri})
}

// Migrate starts migrating to the destination listening on uri and returns
// once the migration has started; follow it with MigrationStatus or
// WaitMigration. A destination that cannot be reached makes the migration
// fail (status failed) rather than this call.
func (v *VM) Migrate(ctx context.Context, uri string) error {
	return v.exec(ctx, "migrate", "migrate", map[string]string{"uri": uri})
}

// MigrateCancel cancels the migration in progress (migrate_cancel); the
// source keeps running. Its status goes through cancelling to cancelled.
func (v *VM) MigrateCancel(ctx context.Context) error {
	return v.exec(ctx, "cancel migration of", "migrate_cancel", nil)
}

// MigrationStatus is QAPI MigrationStatus.
type MigrationStatus string

// Migration statuses.
const (
	MigrationNone       MigrationStatus = "none" // no migration yet
	MigrationSetup      MigrationStatus = "setup"
	MigrationActive     MigrationStatus = "active"
	MigrationCancelling MigrationStatus = "cancelling"
	MigrationCancelled  MigrationStatus = "cancelled"
	MigrationCompleted  MigrationStatus = "completed"
	MigrationFailed     MigrationStatus = "failed"
	// Less common: postcopy, pre-switchover (with the pause-before-
	// switchover capability), device state, waiting for a VFIO unplug.
	MigrationPostcopyActive MigrationStatus = "postcopy-active"
	MigrationPreSwitchover  MigrationStatus = "pre-switchover"
	MigrationDevice         MigrationStatus = "device"
	MigrationWaitUnplug     MigrationStatus = "wait-unplug"
)

// Finished reports whether the migration has ended: completed, failed or
// cancelled (or never started).
func (s MigrationStatus) Finished() bool {
	switch s {
	case MigrationNone, MigrationCompleted, MigrationFailed, MigrationCancelled:
		return true
	}
	return false
}

// MigrationInfo is what query-migrate reports. Fields QEMU leaves out for a
// status stay zero.
type MigrationInfo struct {
	Status MigrationStatus
	// RAM: bytes in total, sent so far, still to send (all pages, zero
	// pages included in Total and Remaining).
	TotalBytes       uint64
	TransferredBytes uint64
	RemainingBytes   uint64
	// DirtyPagesRate is how many pages per second the guest dirties, as
	// measured in the last pass (0 until a pass completed).
	DirtyPagesRate uint64
	// Passes is how many times the dirty bitmap was synced (1 = first
	// pass still running).
	Passes uint64
	// ThroughputMbps is the last measured transfer rate in megabits per
	// second.
	ThroughputMbps float64
	// ExpectedDowntime (while active): the pause QEMU expects at the
	// switch with the current rate.
	ExpectedDowntime time.Duration
	// Downtime (completed): the guest's real pause; TotalTime and
	// SetupTime: from the start of the migration.
	Downtime  time.Duration
	TotalTime time.Duration
	SetupTime time.Duration
	// Error is QEMU's description of a failure.
	Error string
	// Listening (destination, after MigrateIncoming) holds the URIs it
	// listens on, with the real port when the URI said port 0. QEMU
	// reports no status then, so Status is none.
	Listening []string
}

// MigrationStatus asks QEMU how the migration goes (query-migrate), on the
// source or the destination.
func (v *VM) MigrationStatus(ctx context.Context) (MigrationInfo, error) {
	var r struct {
		Status           MigrationStatus `json:"status"`
		ExpectedDowntime int64           `json:"expected-downtime"`
		Downtime         int64           `json:"downtime"`
		TotalTime        int64           `json:"total-time"`
		SetupTime        int64           `json:"setup-time"`
		ErrorDesc        string          `json:"error-desc"`
		SocketAddress    []struct {
			Type string `json:"type"`
			Host string `json:"host"`
			Port string `json:"port"`
			Path string `json:"path"`
		} `json:"socket-address"`
		RAM *struct {
			Total          uint64  `json:"total"`
			Transferred    uint64  `json:"transferred"`
			Remaining      uint64  `json:"remaining"`
			DirtyPagesRate uint64  `json:"dirty-pages-rate"`
			DirtySyncCount uint64  `json:"dirty-sync-count"`
			Mbps           float64 `json:"mbps"`
		} `json:"ram"`
	}
	if err := v.qmp.Execute(ctx, "query-migrate", nil, &r); err != nil {
		return MigrationInfo{}, fmt.Errorf("qemu: migration status of %s: %w", v.name, err)
	}
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	info := MigrationInfo{
		Status:           r.Status,
		ExpectedDowntime: ms(r.ExpectedDowntime),
		Downtime:         ms(r.Downtime),
		TotalTime:        ms(r.TotalTime),
		SetupTime:        ms(r.SetupTime),
		Error:            r.ErrorDesc,
	}
	if info.Status == "" { // QEMU answers {} before any migration
		info.Status = MigrationNone
	}
	for _, a := range r.SocketAddress {
		switch a.Type {
		case "inet":
			info.Listening = append(info.Listening, "tcp:"+net.JoinHostPort(a.Host, a.Port))
		case "unix":
			info.Listening = append(info.Listening, "unix:"+a.Path)
		}
	}
	if r.RAM != nil {
		info.TotalBytes = r.RAM.Total
		info.TransferredBytes = r.RAM.Transferred
		info.RemainingBytes = r.RAM.Remaining
		info.DirtyPagesRate = r.RAM.DirtyPagesRate
		info.Passes = r.RAM.DirtySyncCount
		info.ThroughputMbps = r.RAM.Mbps
	}
	return info, nil
}

// WaitMigration polls MigrationStatus every interval until the migration
// has finished (see MigrationStatus.Finished) or ctx ends, and returns the
// last status. A failed or cancelled migration is not an error here: check
// Status. Use it on the source: a listening destination reports no status
// (none), which counts as finished.
func (v *VM) WaitMigration(ctx context.Context, interval time.Duration) (MigrationInfo, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		info, err := v.MigrationStatus(ctx)
		if err != nil || info.Status.Finished() {
			return info, err
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("qemu: wait for migration of %s: %w (status %s)", v.name, ctx.Err(), info.Status)
		case <-t.C:
		}
	}
}
