package main

import (
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
)

// The progress bar of `resource move --wait`: share of memory sent, bytes
// sent and left, dirty rate, throughput and ETA.
func TestProgressLine(t *testing.T) {
	cases := []struct {
		p    api.MigrationProgress
		want string
	}{
		{api.MigrationProgress{Status: "active", TotalBytes: 128 << 20, TransferredBytes: 64 << 20, RemainingBytes: 64 << 20, DirtyPagesRate: 120, ThroughputMbps: 800},
			"[#####-----]  50%  64.0 MiB sent, 64.0 MiB left, dirty 120 pages/s, 800 Mbit/s, ETA 700ms"},
		{api.MigrationProgress{Status: "completed", Done: true, TotalBytes: 128 << 20, TransferredBytes: 130 << 20, TotalTime: time.Second},
			"[##########] 100%  130.0 MiB sent, 0 B left, dirty 0 pages/s, 0 Mbit/s (completed)"},
		{api.MigrationProgress{Status: "setup"},
			"[----------]   0%  0 B sent, 0 B left, dirty 0 pages/s, 0 Mbit/s (setup)"},
	}
	for i, c := range cases {
		if got := progressLine(c.p, 10); got != c.want {
			t.Errorf("#%d:\n got %q\nwant %q", i, got, c.want)
		}
	}
}
