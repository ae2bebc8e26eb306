package lab_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
)

// Watchdog self-fencing with the process backend and no fence device
// (issue 4, "what it must show" 2, watchdog case): a hung (SIGSTOPped) node
// is killed by its supervisor, with the resource it ran, and the resource
// starts elsewhere only after the lease + watchdog bound; a never-twice
// sampler runs throughout.
func TestWatchdogPausedNodeSelfFences(t *testing.T) {
	l, dc := fenceLab(t, lab.Options{Nodes: 3, SetupArgs: []string{"--watchdog", "process"}})
	const id = "spin"
	w := l.WatchNeverTwice(t, id)
	victim := l.Other(dc)
	createSpin(t, l, dc, id, victim)
	waitStarted(t, l, dc, id, settle, is(victim))
	b, err := os.ReadFile(filepath.Join(l.RunDir(victim), "process", id+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	oldPid, _ := strconv.Atoi(strings.Fields(string(b))[0])
	before := newestID(t, l, dc, victim)

	pauseAt := time.Now()
	l.Pause(victim)
	var goneAt, newAt time.Duration
	l.WaitFor(id+" running elsewhere", fencedWithin+settle, func() (bool, string) {
		oldAlive := pidAlive(oldPid)
		if !oldAlive && goneAt == 0 {
			goneAt = time.Since(pauseAt)
		}
		for _, n := range l.Others(victim) {
			if l.ActiveOnDisk(n, id) {
				if oldAlive {
					t.Errorf("%s runs on %s while the old process %d on the paused %s is alive", id, n, oldPid, victim)
				}
				newAt = time.Since(pauseAt)
				return true, ""
			}
		}
		return false, fmt.Sprintf("old process %d alive=%v; not yet elsewhere", oldPid, oldAlive)
	})
	to := waitStarted(t, l, dc, id, settle, notIn(victim))
	ev := waitFenceEvent(t, l, dc, victim, before, "watchdog fencing of "+victim, settle, func(e api.FenceEvent) bool { return e.OK && e.How == "watchdog" })
	t.Logf("fencing event: %s", eventLine(ev))
	t.Logf("FIGURE watchdog: SIGSTOP->old process gone %s, ->running on %s %s", goneAt.Round(time.Millisecond), to, newAt.Round(time.Millisecond))
	// 2s watchdog: the process dies about then; the DC waits lease +
	// 2×watchdog + margin after a majority's loss.
	if goneAt == 0 || newAt < goneAt {
		t.Errorf("old process gone at %s, new one at %s", goneAt, newAt)
	}
	if !strings.Contains(l.Log(victim), "watchdog fired") {
		t.Errorf("the victim's log does not show the supervisor firing")
	}
	if v := w.Violations(); len(v) > 0 {
		t.Errorf("never-twice: %v", v)
	}
}

// An isolated node (every link cut) running a resource stops it itself
// before its lease ends and stays up (it pets while nothing runs); the
// majority treats it as reset after the lease + watchdog bound and starts
// the resource; healed, the node rejoins, probes, and the resource stays
// single.
func TestWatchdogIsolatedNodeStopsItself(t *testing.T) {
	l, dc := fenceLab(t, lab.Options{Nodes: 3, Netns: true, SetupArgs: []string{"--watchdog", "process"}})
	const id = "spin"
	w := l.WatchNeverTwice(t, id)
	victim := l.Other(dc)
	createSpin(t, l, dc, id, victim)
	waitStarted(t, l, dc, id, settle, is(victim))
	runs := l.Node(victim).Runs()

	isoAt := time.Now()
	l.Isolate(victim)
	var stoppedAt time.Duration
	l.WaitFor(id+" stopped on the isolated "+victim, lostWithin, func() (bool, string) {
		if l.ActiveOnDisk(victim, id) {
			return false, "still active"
		}
		stoppedAt = time.Since(isoAt)
		return true, ""
	})
	to := waitStarted(t, l, dc, id, fencedWithin+settle, notIn(victim))
	t.Logf("FIGURE isolate->stopped on %s %s, ->running on %s %s", victim, stoppedAt.Round(time.Millisecond), to, time.Since(isoAt).Round(time.Millisecond))
	if !strings.Contains(lastRun(l, victim), "SELF-STOP") {
		t.Errorf("%s did not log its self-stop", victim)
	}
	if !l.Node(victim).Running() || l.Node(victim).Runs() != runs {
		t.Fatalf("the isolated node's agent died: it had nothing active and should keep petting")
	}

	l.Heal()
	l.WaitFor(victim+" rejoined and probed again", formTimeout, func() (bool, string) {
		log := lastRun(l, victim)
		return strings.Contains(log, "rejoin=true"), "no rejoin yet"
	})
	l.Always(id+" stays on "+to+" only", quiet, func() (bool, string) { return onlyOn(l, id, to) })
	if v := w.Violations(); len(v) > 0 {
		t.Errorf("never-twice: %v", v)
	}
}
