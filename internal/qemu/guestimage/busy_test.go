package guestimage

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// migrationState is the part of QMP query-migrate this test reads.
type migrationState struct {
	Status string `json:"status"`
	RAM    *struct {
		Transferred    uint64 `json:"transferred"`
		Remaining      uint64 `json:"remaining"`
		DirtyPagesRate uint64 `json:"dirty-pages-rate"`
		DirtySyncCount uint64 `json:"dirty-sync-count"`
		PageSize       uint64 `json:"page-size"`
	} `json:"ram"`
}

func (g *guest) queryMigrate() migrationState {
	g.t.Helper()
	var m migrationState
	if err := json.Unmarshal(g.qmpCall("query-migrate", nil), &m); err != nil {
		g.t.Fatal(err)
	}
	return m
}

// dirtyRate live-migrates the guest into a sink (exec:cat >/dev/null) at
// 32 MiB/s with a 1 ms downtime limit, which only an almost idle guest can
// meet, until QEMU has measured the guest's dirty page rate (its own dirty
// tracking, as a real migration sees it) over a few passes; then it cancels
// the migration, and the guest runs on. It returns the rate in MiB/s, or
// completed = true when the migration completed first (the guest dirtied
// almost nothing; it is then paused, as a migrated source is).
func (g *guest) dirtyRate() (mibPerSec float64, completed bool) {
	g.t.Helper()
	g.qmpCall("migrate-set-parameters", map[string]int64{"max-bandwidth": 32 << 20, "downtime-limit": 1})
	g.qmpCall("migrate", map[string]string{"uri": "exec:cat >/dev/null"})
	deadline := time.Now().Add(90 * time.Second)
	var rate float64
	for {
		m := g.queryMigrate()
		if m.Status == "completed" {
			return 0, true
		}
		if m.Status != "active" && m.Status != "setup" {
			g.t.Fatalf("migration status %q", m.Status)
		}
		if m.RAM != nil && m.RAM.DirtySyncCount >= 4 && m.RAM.DirtyPagesRate > 0 {
			rate = float64(m.RAM.DirtyPagesRate*max(m.RAM.PageSize, 4096)) / (1 << 20)
			g.t.Logf("migration pass %d: %.1f MiB sent, %.1f MiB to send, dirty rate %.1f MiB/s",
				m.RAM.DirtySyncCount, float64(m.RAM.Transferred)/(1<<20), float64(m.RAM.Remaining)/(1<<20), rate)
			break
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("no dirty rate measured within 90s: %+v", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	g.qmpCall("migrate_cancel", nil)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m := g.queryMigrate()
		if m.Status == "cancelled" {
			break
		}
		if m.Status == "completed" || time.Now().After(deadline) {
			g.t.Fatalf("migration %q after migrate_cancel", m.Status)
		}
	}
	return rate, false
}

// The busy mode really dirties memory, continuously: with vigil.busy=16 on
// the kernel command line a live migration finds about 16 MiB dirty again
// at every pass and cannot finish within a 1 ms downtime; the guest keeps
// counting. After "busy 0" on the console the same migration finds the
// guest nearly idle. (QMP calc-dirty-rate is no help here: its
// page-sampling mode compares page contents and its dirty-bitmap mode
// crashes QEMU 7.2 under TCG.)
func TestBusyDirtiesMemory(t *testing.T) {
	p := testImage(t)
	g := bootCmdline(t, p, p.BusyCmdline(16))
	g.waitFor(`"vigil-guest busy 16 MiB"`, bootTimeout, func(log string) bool {
		return strings.Contains(log, "vigil-guest busy 16 MiB boot=")
	})
	g.waitCounter(2, 30*time.Second)
	if strings.Contains(g.console(), "vigil-guest busy error") {
		t.Fatalf("busy mode failed:\n%s", g.console())
	}

	busy, completed := g.dirtyRate()
	if completed {
		t.Fatal("the busy guest's migration completed with a 1 ms downtime limit: it dirties (almost) nothing")
	}
	if busy < 8 {
		t.Errorf("busy guest (16 MiB): dirty rate %.1f MiB/s, want ≥ 8", busy)
	}
	// The guest runs on after the cancelled migration.
	n, _ := lastCounter(g.console())
	g.waitCounter(n+2, 30*time.Second)

	g.typeLine("busy 0")
	g.waitFor(`"vigil-guest busy 0 MiB"`, 30*time.Second, func(log string) bool {
		return strings.Contains(log, "vigil-guest busy 0 MiB boot=")
	})
	time.Sleep(2 * time.Second) // the pass the loop was in ends
	idle, completed := g.dirtyRate()
	t.Logf("dirty rate: busy (16 MiB) %.1f MiB/s; after \"busy 0\": %.2f MiB/s (completed: %v)", busy, idle, completed)
	if !completed && idle > busy/4 {
		t.Errorf("after \"busy 0\": dirty rate %.1f MiB/s, busy %.1f MiB/s", idle, busy)
	}
}

// lastCounter is the last counter of the current boot in log, or 0.
func lastCounter(log string) (n int, boot string) {
	cs := counters(log)
	if len(cs) == 0 {
		return 0, ""
	}
	return cs[len(cs)-1].n, cs[len(cs)-1].boot
}

// A size that is not a number, or too large for the guest's /tmp, is
// refused with a message, and the guest runs on.
func TestBusyBadSize(t *testing.T) {
	t.Parallel()
	p := testImage(t)
	g := bootCmdline(t, p, p.Cmdline+" "+BusyParam+"=lots")
	g.waitCounter(1, bootTimeout)
	g.typeLine("busy 4096")
	g.waitFor("two busy errors", 30*time.Second, func(log string) bool {
		return strings.Count(log, "vigil-guest busy error: ") == 2
	})
	log := g.console()
	for _, want := range []string{"'lots' is not a size in MiB", "4096 MiB does not fit in /tmp"} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	n, _ := lastCounter(log)
	g.waitCounter(n+1, 30*time.Second)
	g.qmp("quit")
	g.waitExit(15 * time.Second)
}
