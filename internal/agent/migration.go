package agent

import (
	"context"
	"errors"
	"io/fs"

	"github.com/vigil-ha/vigil/internal/agents"
	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/store"
)

// Migration implements api.MigrationBackend: the DC's record of a live
// migration of id (replicated, so any node knows it) and this node's own
// progress file, which only the source writes. The CLI asks any node, then
// the source (SourceAPI) for the progress: no node relays for another.
func (b backend) Migration(ctx context.Context, id string) (api.MigrationStatus, error) {
	a := b.a
	out := api.MigrationStatus{Resource: id, Node: a.cfg.Node}
	var m controller.Migration
	var found bool
	var err error
	var members []store.Member
	a.node.Read(func(s *store.State) {
		m, found, err = controller.ReadMigration(s, id)
		members = s.Members()
	})
	if err != nil {
		return out, err
	}
	if found {
		out.Active, out.Source, out.Target, out.Step, out.Started, out.Error = true, m.Source, m.Target, m.Step, m.Started, m.Error
		for _, mb := range members {
			if mb.Name == m.Source {
				out.SourceAPI = mb.Links
			}
		}
	}
	p, err := agents.ReadVMMigration(a.cfg.RunPath(), id)
	switch {
	case err == nil:
		out.Progress = &api.MigrationProgress{
			URI: p.URI, Target: p.Target, Started: p.Started, Updated: p.Updated, Status: p.Status, Done: p.Done,
			TotalBytes: p.TotalBytes, TransferredBytes: p.TransferredBytes, RemainingBytes: p.RemainingBytes,
			DirtyPagesRate: p.DirtyPagesRate, Passes: p.Passes, ThroughputMbps: p.ThroughputMbps,
			ExpectedDowntime: p.ExpectedDowntime, Downtime: p.Downtime, TotalTime: p.TotalTime, Error: p.Error,
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		a.log.Debug("no readable migration progress", "resource", id, "err", err)
	}
	return out, nil
}
