package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/model"
)

// How often `resource move --wait` asks for progress: moveWaitPoll while
// only the progress bar needs it (the source rewrites the progress every
// 100 ms), moveWaitFast once the migration it follows nears its end, so
// that the wait ends within moveWaitFast of the cluster recording the VM
// on its new node rather than up to a whole moveWaitPoll later. Fast polls
// last at most moveWaitFastFor (a finish normally takes a few hundred
// milliseconds; one that hangs is not worth 50 requests a second).
const (
	moveWaitPoll    = 200 * time.Millisecond
	moveWaitFast    = 20 * time.Millisecond
	moveWaitFastFor = 2 * time.Second
)

// waitMove follows a move of id to node until the resource runs there,
// showing the live migration's progress when the DC live-migrates it. It
// fails when a live migration to node ends without the resource running
// there (it then still runs on its source), or at the deadline of ctx.
func waitMove(ctx context.Context, out io.Writer, c *api.Client, id, node string) error {
	tty := isTerminal(out)
	var seen *api.MigrationStatus // the live migration, once seen
	var last api.MigrationProgress
	lastLine := ""
	var fastSince time.Time // when the fast polls began
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if tty && lastLine != "" {
				fmt.Fprintln(out)
			}
			return fmt.Errorf("waiting for %s to run on %s: %w", id, node, context.Cause(ctx))
		case <-t.C:
		}
		ms, err := c.Migration(ctx, id)
		if err == nil && ms.Active && seen != nil && (!ms.Started.Equal(seen.Started) || ms.Step == model.MigrateAbort || ms.Step == model.MigrateCleanup) {
			// The migration we followed failed (the DC may already be
			// trying again, up to migration-threshold): report it.
			if tty && lastLine != "" {
				fmt.Fprintln(out)
			}
			why := ms.Error
			if ms.Started.Equal(seen.Started) || why == "" {
				why = firstNonEmpty(ms.Error, seen.Error, last.Error, "see `vigil resource show "+id+"`")
			}
			retry := ""
			if !ms.Started.Equal(seen.Started) {
				retry = " (the cluster is trying again)"
			}
			if seen.Step == model.MigrateFinish || last.Done && last.Status == "completed" {
				// The source had handed the guest over: the target is
				// stopped and the VM started afresh.
				return fmt.Errorf("live migration of %s to %s failed after %s handed it over: %s; the cluster starts it afresh%s", id, node, seen.Source, why, retry)
			}
			return fmt.Errorf("live migration of %s to %s failed: %s; it keeps running on %s%s", id, node, why, seen.Source, retry)
		}
		if err == nil && ms.Active && ms.Target == node {
			if seen == nil {
				fmt.Fprintf(out, "live migration of %s: %s → %s\n", id, ms.Source, ms.Target)
			}
			seen = &ms
			if ms.Step == model.MigrateFinish && last.Done {
				// The source wrote its last figures before the transfer's
				// result: nothing more to show.
			} else if p, ok := sourceProgress(ctx, c, ms, id); ok {
				last = p
				if line := progressLine(p, 30); line != lastLine {
					lastLine = line
					if tty {
						fmt.Fprintf(out, "\r\033[K%s", line)
					} else {
						fmt.Fprintln(out, line)
					}
				}
			}
		}
		// The move is over when no migration is in progress, or, sooner,
		// when the migration to node is in its finish step and the target
		// is recorded started: only the finish's success records that (the
		// DC deletes the migration record in its next round).
		if err == nil && (!ms.Active || ms.Step == model.MigrateFinish && ms.Target == node) {
			on, where, rerr := runsOn(ctx, c, id, node)
			switch {
			case rerr != nil:
			case on:
				if tty && lastLine != "" {
					fmt.Fprintln(out)
				}
				if seen != nil {
					// The final figures, from the source's last write.
					if p, ok := sourceProgress(ctx, c, *seen, id); ok {
						last = p
					}
					if last.Status == "completed" {
						fmt.Fprintf(out, "%s live-migrated to %s in %v (downtime %v, %s sent)\n", id, node,
							last.TotalTime.Round(time.Millisecond), last.Downtime.Round(time.Millisecond), bytesIEC(last.TransferredBytes))
						return nil
					}
				}
				fmt.Fprintf(out, "%s runs on %s\n", id, node)
				return nil
			case seen != nil && !ms.Active:
				if tty && lastLine != "" {
					fmt.Fprintln(out)
				}
				why := seen.Error
				if why == "" {
					why = last.Error
				}
				if why == "" {
					why = targetFailure(ctx, c, id, node)
				}
				return fmt.Errorf("live migration of %s to %s failed: %s; it runs on %s", id, node, why, orNowhere(where))
			}
		}
		d := movePoll(seen, last)
		if d == moveWaitFast {
			if fastSince.IsZero() {
				fastSince = time.Now()
			} else if time.Since(fastSince) > moveWaitFastFor {
				d = moveWaitPoll
			}
		}
		t.Reset(d)
	}
}

// movePoll is the wait before the next poll of a move: moveWaitFast once
// the live migration followed nears its end (its finish step, or the
// source's progress done or due within a slow poll), moveWaitPoll
// otherwise (while it transfers, before it shows, and for a move by a
// stop and a start).
func movePoll(seen *api.MigrationStatus, p api.MigrationProgress) time.Duration {
	if seen == nil {
		return moveWaitPoll
	}
	if seen.Step == model.MigrateFinish || p.Done || p.Status == "completed" {
		return moveWaitFast
	}
	if p.Status == "active" && p.ThroughputMbps > 0 {
		eta := time.Duration(float64(p.RemainingBytes) * 8 / (p.ThroughputMbps * 1e6) * float64(time.Second))
		if eta < moveWaitPoll {
			return moveWaitFast
		}
	}
	return moveWaitPoll
}

// sourceProgress asks the migration's source node for its progress file,
// and keeps it only if it is this migration's (not an earlier one's).
func sourceProgress(ctx context.Context, c *api.Client, ms api.MigrationStatus, id string) (api.MigrationProgress, bool) {
	if len(ms.SourceAPI) == 0 {
		return api.MigrationProgress{}, false
	}
	src, err := c.WithEndpoints(ms.SourceAPI).Migration(ctx, id)
	if err != nil || src.Progress == nil {
		return api.MigrationProgress{}, false
	}
	// The DC's clock and the source's: allow them to differ a little.
	if !ms.Started.IsZero() && src.Progress.Started.Before(ms.Started.Add(-5*time.Second)) {
		return api.MigrationProgress{}, false
	}
	return *src.Progress, true
}

// runsOn reports whether id is started on node, and where it is started.
func runsOn(ctx context.Context, c *api.Client, id, node string) (bool, []string, error) {
	d, err := c.Resource(ctx, id)
	if err != nil {
		return false, nil, err
	}
	var where []string
	on := false
	for _, in := range d.Instances {
		if in.State == "started" && in.Node != "" {
			where = append(where, in.Node)
			on = on || in.Node == node
		}
	}
	return on, where, nil
}

// targetFailure is why the last migration to node failed, as the target's
// record keeps it (the DC's abort stop writes it there).
func targetFailure(ctx context.Context, c *api.Client, id, node string) string {
	if d, err := c.Resource(ctx, id); err == nil {
		for _, r := range d.Records {
			if r.Node == node && r.FailureReason != "" {
				return r.FailureReason
			}
		}
	}
	return "see `vigil resource show " + id + "`"
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func orNowhere(nodes []string) string {
	if len(nodes) == 0 {
		return "no node (see `vigil status`)"
	}
	return strings.Join(nodes, ", ")
}

// progressLine renders a migration's progress as one line with a bar of
// width cells: "[#####-----]  50%  64.0 MiB sent, 64.0 MiB left, dirty 120
// pages/s, 800 Mbit/s, ETA 1s".
func progressLine(p api.MigrationProgress, width int) string {
	frac := 0.0
	if p.TotalBytes > 0 {
		frac = 1 - float64(min(p.RemainingBytes, p.TotalBytes))/float64(p.TotalBytes)
	}
	if p.Status == "completed" {
		frac = 1
	}
	n := int(frac * float64(width))
	bar := "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "]"
	s := fmt.Sprintf("%s %3.0f%%  %s sent, %s left, dirty %d pages/s, %.0f Mbit/s", bar, frac*100,
		bytesIEC(p.TransferredBytes), bytesIEC(p.RemainingBytes), p.DirtyPagesRate, p.ThroughputMbps)
	if p.ThroughputMbps > 0 && p.RemainingBytes > 0 && !p.Done {
		eta := time.Duration(float64(p.RemainingBytes) * 8 / (p.ThroughputMbps * 1e6) * float64(time.Second))
		s += ", ETA " + eta.Round(100*time.Millisecond).String()
	}
	if p.Status != "" && p.Status != "active" {
		s += " (" + p.Status + ")"
	}
	return s
}

func bytesIEC(b uint64) string {
	const k = 1024
	switch {
	case b >= k*k*k:
		return fmt.Sprintf("%.1f GiB", float64(b)/(k*k*k))
	case b >= k*k:
		return fmt.Sprintf("%.1f MiB", float64(b)/(k*k))
	case b >= k:
		return fmt.Sprintf("%.1f KiB", float64(b)/k)
	}
	return fmt.Sprintf("%d B", b)
}

// isTerminal reports whether w is a terminal (the bar is redrawn in place
// there; elsewhere each change is a line of its own).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
