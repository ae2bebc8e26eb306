package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
)

// End-to-end tests of the resource manager (issue 3) through the real
// binary on three real nodes. Where a resource runs is read from the
// agents' state on disk (lab.Truth), not only from what Vigil says.

const (
	// settle bounds a resource action round trip: a scheduler round, a
	// task, an agent run, a result (plus slack for a loaded machine).
	settle = 30 * time.Second
	// quiet is how long "nothing happens" checks watch.
	quiet = 5 * time.Second
)

// resLab builds and starts a 3-node loopback lab and waits for it to form
// and for every node to be probed (a resource created before that would
// just wait). It returns the lab and the DC.
func resLab(t *testing.T) (*lab.Lab, string) {
	t.Helper()
	if _, err := os.Stat("/usr/lib/ocf/resource.d/heartbeat/Dummy"); err != nil {
		t.Logf("note: no resource-agents installed (%v); OCF tests will fail", err)
	}
	l := newCluster(t, lab.Options{Nodes: 3})
	l.StartAll()
	dc := l.WaitFormed(formTimeout)
	// The DC places nothing on a node before its executor has probed.
	l.WaitFor("every node probed", settle, func() (bool, string) {
		for _, n := range l.NodeNames() {
			if !l.LogContains(n, "probed; ready for tasks") {
				return false, n + " has not logged \"probed; ready for tasks\""
			}
		}
		return true, ""
	})
	return l, dc
}

// vigil runs a CLI call on node and fails the test if it fails. A call
// refused because the cluster is between coordinators ("no leader", which
// the CLI asks to try again shortly) is retried for up to 15s, and logged:
// such a refusal happens before anything is proposed.
func vigil(t *testing.T, l *lab.Lab, node string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(lab.Scale(15 * time.Second))
	for {
		out, err := l.CLI(ctxFor(t, 30*time.Second), node, args...)
		if err == nil {
			return out
		}
		if strings.Contains(err.Error(), "no leader") && time.Now().Before(deadline) {
			t.Logf("retrying (transient): %v", err)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		l.DumpLogs(30)
		t.Fatalf("%v", err)
	}
}

// resIn returns instance id's entry in st.Resources.
func resIn(st api.Status, id string) (api.ResourceStatus, bool) {
	for _, r := range st.Resources {
		if r.Instance == id {
			return r, true
		}
	}
	return api.ResourceStatus{}, false
}

// failCount returns the fail count st shows for id on node (0 if none).
func failCount(st api.Status, id, node string) int64 {
	for _, f := range st.Failures {
		if f.Instance == id && f.Node == node {
			return f.FailCount
		}
	}
	return 0
}

// resSummary renders st's resources, blocked and pending on one line.
func resSummary(st api.Status) string {
	var parts []string
	for _, r := range st.Resources {
		s := r.Instance + "=" + r.State
		if r.Node != "" {
			s += "@" + r.Node
		}
		if r.Note != "" {
			s += "(" + r.Note + ")"
		}
		parts = append(parts, s)
	}
	for _, b := range st.Blocked {
		parts = append(parts, fmt.Sprintf("blocked[%s: %s]", b.Instance, b.Reason))
	}
	for _, f := range st.Failures {
		parts = append(parts, fmt.Sprintf("failure[%s@%s %s fc=%d]", f.Instance, f.Node, f.State, f.FailCount))
	}
	for _, p := range st.Pending {
		parts = append(parts, fmt.Sprintf("pending[%s %s@%s]", p.Action, p.Instance, p.Node))
	}
	if st.ResourceError != "" {
		parts = append(parts, "resource_error="+st.ResourceError)
	}
	return fmt.Sprintf("dc=%s epoch=%d %s", st.DC, st.Epoch, strings.Join(parts, " "))
}

// waitRes polls node's status until cond holds, and returns it.
func waitRes(t *testing.T, l *lab.Lab, node, what string, timeout time.Duration, cond func(api.Status) bool) api.Status {
	t.Helper()
	var last api.Status
	l.WaitFor(node+": "+what, timeout, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(5*time.Second))
		defer cancel()
		st, err := l.Status(ctx, node)
		if err != nil {
			return false, err.Error()
		}
		last = st
		return cond(st), resSummary(st)
	})
	return last
}

// startedOn reports whether st shows id started on node (any node if "").
func startedOn(st api.Status, id, node string) bool {
	r, ok := resIn(st, id)
	return ok && r.State == "started" && (node == "" || r.Node == node)
}

// waitStarted waits until id is started on exactly one node by ground truth
// and status (asked of ask) agrees, and returns the node. accept (nil: any)
// filters the node.
func waitStarted(t *testing.T, l *lab.Lab, ask, id string, timeout time.Duration, accept func(string) bool) string {
	t.Helper()
	var node string
	l.WaitFor(id+" started on one node (truth and status agree)", timeout, func() (bool, string) {
		on := l.ActiveOn(id)
		ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(5*time.Second))
		defer cancel()
		st, err := l.Status(ctx, ask)
		if err != nil {
			return false, fmt.Sprintf("truth %v; %v", on, err)
		}
		why := fmt.Sprintf("truth %s@%v; %s", id, on, resSummary(st))
		if len(on) != 1 || !startedOn(st, id, on[0]) {
			return false, why
		}
		if accept != nil && !accept(on[0]) {
			return false, why
		}
		node = on[0]
		return true, ""
	})
	return node
}

// resourceDetail returns `vigil resource show ID --output json`.
func resourceDetail(t *testing.T, l *lab.Lab, node, id string) api.ResourceDetail {
	t.Helper()
	var d api.ResourceDetail
	out := vigil(t, l, node, "resource", "show", id, "--output", "json")
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("resource show %s: %v: %q", id, err, out)
	}
	return d
}

// recordOn returns id's record on node in d.
func recordOn(d api.ResourceDetail, id, node string) (api.Record, bool) {
	for _, r := range d.Records {
		if r.Instance == id && r.Node == node {
			return r, true
		}
	}
	return api.Record{}, false
}

func notIn(nodes ...string) func(string) bool {
	return func(n string) bool { return !slices.Contains(nodes, n) }
}

func is(node string) func(string) bool { return func(n string) bool { return n == node } }

// ---------------------------------------------------------------------------
// 1. A real OCF agent: started, monitored, failure restarts in place, then
// moves after migration-threshold; fail counts shown and cleaned up.

func TestOCFDummyMonitorFailureRestartsThenMoves(t *testing.T) {
	l, dc := resLab(t)
	const id = "d1"
	l.WatchNeverTwice(t, id)
	vigil(t, l, dc, "resource", "create", id, "ocf:heartbeat:Dummy",
		"op", "monitor", "interval=2s", "timeout=20s", "meta", "migration-threshold=2")
	first := waitStarted(t, l, dc, id, settle, nil)
	t.Logf("%s started on %s", id, first)
	stateFile := func(node string) string {
		return filepath.Join(l.RunDir(node), "ocf", "rsctmp", "Dummy-"+id+".state")
	}
	if _, err := os.Stat(stateFile(first)); err != nil {
		t.Fatalf("the real Dummy agent's state file: %v", err)
	}

	// First failure: restart in place, fail count 1.
	if err := os.Remove(stateFile(first)); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	waitRes(t, l, dc, id+" fail count 1 on "+first, settle, func(st api.Status) bool {
		return failCount(st, id, first) == 1
	})
	t.Logf("failure seen after %s", time.Since(removed).Round(time.Millisecond))
	on := waitStarted(t, l, dc, id, settle, func(n string) bool { return true })
	if on != first {
		t.Fatalf("after one failure (threshold 2) %s runs on %s, want it restarted in place on %s", id, on, first)
	}
	t.Logf("restarted in place on %s %s after the state file was removed", on, time.Since(removed).Round(time.Millisecond))
	// Status still shows fail count 1 once it runs again.
	st := waitRes(t, l, dc, "fail count 1 shown while started", settle, func(st api.Status) bool {
		return failCount(st, id, first) == 1 && startedOn(st, id, first)
	})
	_ = st

	// Second failure: fail count 2 = migration-threshold: it moves.
	if err := os.Remove(stateFile(first)); err != nil {
		t.Fatal(err)
	}
	removed = time.Now()
	second := waitStarted(t, l, dc, id, settle, notIn(first))
	t.Logf("after the second failure %s moved %s -> %s in %s", id, first, second, time.Since(removed).Round(time.Millisecond))
	st = waitRes(t, l, dc, "fail count 2 on "+first, settle, func(st api.Status) bool {
		return failCount(st, id, first) == 2
	})
	text := vigil(t, l, dc, "status")
	if !regexp.MustCompile(`(?m)^\s*` + id + ` on ` + first + `: .*fail count 2`).MatchString(text) {
		t.Errorf("`vigil status` does not show fail count 2 of %s on %s:\n%s", id, first, text)
	}
	show := vigil(t, l, dc, "resource", "show", id)
	if !regexp.MustCompile(`(?m)^\s*` + id + `\s+` + first + `\s+\S+\s+2\s`).MatchString(show) {
		t.Errorf("`vigil resource show %s` does not show fail count 2 on %s:\n%s", id, first, show)
	}
	if r, ok := recordOn(resourceDetail(t, l, dc, id), id, first); !ok || r.FailCount != 2 {
		t.Errorf("resource show --output json: record on %s = %+v (found %v), want fail count 2", first, r, ok)
	}

	// Cleanup resets the fail count; stickiness keeps it where it is.
	vigil(t, l, dc, "resource", "cleanup", id)
	waitRes(t, l, dc, "fail counts reset by cleanup", settle, func(st api.Status) bool {
		for _, n := range l.NodeNames() {
			if failCount(st, id, n) != 0 {
				return false
			}
		}
		return startedOn(st, id, second)
	})
	if r, ok := recordOn(resourceDetail(t, l, dc, id), id, first); ok && r.FailCount != 0 {
		t.Errorf("after cleanup the record on %s still has fail count %d", first, r.FailCount)
	}
	if on := l.ActiveOn(id); !slices.Equal(on, []string{second}) {
		t.Errorf("after cleanup %s is active on %v, want it left on %s", id, on, second)
	}

	// Stopped: disable it and the real agent's state file goes.
	vigil(t, l, dc, "resource", "disable", id)
	l.WaitFor(id+" stopped everywhere", settle, func() (bool, string) {
		on := l.ActiveOn(id)
		return len(on) == 0, fmt.Sprintf("active on %v", on)
	})
	waitRes(t, l, dc, id+" shown stopped", settle, func(st api.Status) bool {
		r, ok := resIn(st, id)
		return ok && r.State == "stopped"
	})
}

// ---------------------------------------------------------------------------
// 2. Constraints and groups.

// TestLocationAcrossStandby: a location preference places the resource;
// standby drains the node; after unstandby stickiness (default 100) keeps a
// resource whose preference is weaker (50) where it is, while an INFINITY
// preference brings its resource back.
func TestLocationAcrossStandby(t *testing.T) {
	l, dc := resLab(t)
	l.WatchNeverTwice(t, "weak", "strong")
	vigil(t, l, dc, "resource", "create", "weak", "vigil:dummy", "op", "monitor", "interval=2s", "--disabled")
	vigil(t, l, dc, "resource", "create", "strong", "vigil:dummy", "op", "monitor", "interval=2s", "--disabled")
	vigil(t, l, dc, "constraint", "location", "add", "weak-on-n2", "weak", "prefers", "n2=50")
	vigil(t, l, dc, "constraint", "location", "add", "strong-on-n2", "strong", "prefers", "n2")
	vigil(t, l, dc, "resource", "enable", "weak")
	vigil(t, l, dc, "resource", "enable", "strong")
	waitStarted(t, l, dc, "weak", settle, is("n2"))
	waitStarted(t, l, dc, "strong", settle, is("n2"))

	vigil(t, l, dc, "node", "standby", "n2")
	w := waitStarted(t, l, dc, "weak", settle, notIn("n2"))
	s := waitStarted(t, l, dc, "strong", settle, notIn("n2"))
	t.Logf("n2 in standby: weak on %s, strong on %s", w, s)

	vigil(t, l, dc, "node", "unstandby", "n2")
	waitStarted(t, l, dc, "strong", settle, is("n2"))
	// weak's preference (50) is below its stickiness (100): it stays.
	l.Always("weak stays on "+w+" after unstandby (stickiness 100 > location 50)", quiet, func() (bool, string) {
		on := l.ActiveOn("weak")
		return slices.Equal(on, []string{w}), fmt.Sprintf("weak active on %v", on)
	})

	// Node loss: n2 is SIGKILLed; once confirmed down, strong runs
	// elsewhere; weak does not move. When n2 comes back (rebooted, /run
	// empty), strong returns to it and weak still stays.
	ask := l.Other("n2")
	l.Kill("n2")
	waitRes(t, l, ask, "strong unknown on n2", lostWithin+settle, func(st api.Status) bool {
		r, _ := resIn(st, "strong")
		return r.State == "unknown" && r.Node == "n2"
	})
	vigil(t, l, ask, "fence", "confirm", "n2", "--yes")
	s = waitStarted(t, l, ask, "strong", settle, notIn("n2"))
	t.Logf("n2 lost and confirmed down: strong on %s", s)
	if on := l.ActiveOn("weak"); !slices.Equal(on, []string{w}) {
		t.Errorf("weak active on %v after n2's loss, want it left on %s", on, w)
	}
	l.WipeRunDir("n2")
	l.Start("n2")
	l.WaitFormed(formTimeout)
	waitStarted(t, l, ask, "strong", formTimeout, is("n2"))
	if on := l.ActiveOn("weak"); !slices.Equal(on, []string{w}) {
		t.Errorf("weak active on %v after n2 came back, want it left on %s", on, w)
	}
}

// checkColocation checks, at a steady state, B with A and C apart from A by
// ground truth, and returns A's node.
func checkColocation(t *testing.T, l *lab.Lab, dc, phase string, avoid ...string) string {
	t.Helper()
	a := waitStarted(t, l, dc, "A", settle, notIn(avoid...))
	b := waitStarted(t, l, dc, "B", settle, is(a))
	c := waitStarted(t, l, dc, "C", settle, notIn(append([]string{a}, avoid...)...))
	t.Logf("%s: A on %s, B on %s (with A), C on %s (apart from A)", phase, a, b, c)
	return a
}

// TestColocationAcrossStandbyAndLoss: B with A (+INFINITY) and C apart from
// A (-INFINITY) hold at first, across standby of A's node, and across the
// SIGKILL of A's node followed by fence confirm.
func TestColocationAcrossStandbyAndLoss(t *testing.T) {
	l, dc := resLab(t)
	w := l.WatchNeverTwice(t, "A", "B", "C")
	for _, id := range []string{"A", "B", "C"} {
		vigil(t, l, dc, "resource", "create", id, "vigil:dummy", "op", "monitor", "interval=2s", "--disabled")
	}
	vigil(t, l, dc, "constraint", "colocation", "add", "B-with-A", "B", "with", "A", "INFINITY")
	vigil(t, l, dc, "constraint", "colocation", "add", "C-apart-A", "C", "with", "A", "-INFINITY")
	for _, id := range []string{"A", "B", "C"} {
		vigil(t, l, dc, "resource", "enable", id)
	}
	// C is never on A's node, at any sample (A and C are placed so
	// that this holds without a transient overlap: C moves away before A
	// arrives, or A goes elsewhere).
	apart := make(chan string, 1)
	stopApart := make(chan struct{})
	go func() {
		defer close(apart)
		for {
			s := l.Truth("A", "C")
			for _, n := range s.Active["A"] {
				if slices.Contains(s.Active["C"], n) {
					apart <- fmt.Sprintf("%s: A and C both active on %s", s.At.Format("15:04:05.000"), n)
					return
				}
			}
			select {
			case <-stopApart:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	a := checkColocation(t, l, dc, "initial")

	vigil(t, l, dc, "node", "standby", a)
	a2 := checkColocation(t, l, dc, "standby of "+a, a)
	vigil(t, l, dc, "node", "unstandby", a)
	// Stickiness: nothing moves back.
	l.Always("A stays on "+a2+" after unstandby", 3*time.Second, func() (bool, string) {
		on := l.ActiveOn("A")
		return slices.Equal(on, []string{a2}), fmt.Sprintf("A on %v", on)
	})
	checkColocation(t, l, dc, "after unstandby")

	// Lose A's node. Ask a survivor from now on.
	victim := a2
	ask := l.Other(victim)
	l.Kill(victim)
	killed := time.Now()
	waitRes(t, l, ask, "A and B unknown on "+victim, lostWithin+settle, func(st api.Status) bool {
		ra, _ := resIn(st, "A")
		rb, _ := resIn(st, "B")
		return ra.State == "unknown" && ra.Node == victim && rb.State == "unknown" && rb.Node == victim
	})
	t.Logf("%s killed; A and B unknown after %s", victim, time.Since(killed).Round(time.Millisecond))
	vigil(t, l, ask, "fence", "confirm", victim, "--yes")
	confirmed := time.Now()
	checkColocation(t, l, ask, "after SIGKILL of "+victim+" and fence confirm", victim)
	t.Logf("A, B, C settled %s after fence confirm", time.Since(confirmed).Round(time.Millisecond))
	close(stopApart)
	if msg, ok := <-apart; ok && msg != "" {
		t.Errorf("anti-affinity violated by ground truth: %s", msg)
	}
	_ = w
}

// stateMtime returns the mtime of vigil:dummy id's state file on node.
func stateMtime(t *testing.T, l *lab.Lab, node, id string) time.Time {
	t.Helper()
	fi, err := os.Stat(filepath.Join(l.RunDir(node), "dummy", id+".state"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// TestOrderConstraint: with "A then B", B starts only after A has started,
// even when B is enabled first and A's start is slow.
func TestOrderConstraint(t *testing.T) {
	l, dc := resLab(t)
	l.WatchNeverTwice(t, "A", "B")
	vigil(t, l, dc, "resource", "create", "A", "vigil:dummy", "op_sleep=2s", "--disabled")
	vigil(t, l, dc, "resource", "create", "B", "vigil:dummy", "--disabled")
	vigil(t, l, dc, "constraint", "order", "add", "A-then-B", "A", "then", "B")
	vigil(t, l, dc, "resource", "enable", "B")
	// B alone must not start: A is not running (mandatory order).
	l.Always("B waits for A (disabled)", 3*time.Second, func() (bool, string) {
		on := l.ActiveOn("B")
		return len(on) == 0, fmt.Sprintf("B active on %v while A is disabled", on)
	})
	vigil(t, l, dc, "resource", "enable", "A")
	na := waitStarted(t, l, dc, "A", settle, nil)
	nb := waitStarted(t, l, dc, "B", settle, nil)
	ta, tb := stateMtime(t, l, na, "A"), stateMtime(t, l, nb, "B")
	t.Logf("A started on %s at %s, B on %s at %s (B %s after A)", na, ta.Format("15:04:05.000"), nb, tb.Format("15:04:05.000"), tb.Sub(ta).Round(time.Millisecond))
	if tb.Before(ta) {
		t.Errorf("B's start finished at %s, before A's at %s", tb.Format("15:04:05.000"), ta.Format("15:04:05.000"))
	}
	d := resourceDetail(t, l, dc, "B")
	ra, _ := recordOn(resourceDetail(t, l, dc, "A"), "A", na)
	rb, _ := recordOn(d, "B", nb)
	if !rb.Changed.After(ra.Changed) {
		t.Errorf("records: B changed at %s, not after A at %s", rb.Changed, ra.Changed)
	}

	// Across standby of A's node: B never runs without A (mandatory,
	// symmetrical: B stops before A stops and starts after A starts).
	stop := make(chan struct{})
	broke := make(chan string, 1)
	go func() {
		defer close(broke)
		for {
			s := l.Truth("A", "B")
			if len(s.Active["B"]) > 0 && len(s.Active["A"]) == 0 {
				broke <- fmt.Sprintf("%s: B active on %v while A runs nowhere", s.At.Format("15:04:05.000"), s.Active["B"])
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	vigil(t, l, dc, "node", "standby", na)
	na2 := waitStarted(t, l, dc, "A", settle, notIn(na))
	nb2 := waitStarted(t, l, dc, "B", settle, nil)
	if ta2, tb2 := stateMtime(t, l, na2, "A"), stateMtime(t, l, nb2, "B"); tb2.Before(ta2) {
		t.Errorf("standby of %s: B (on %s) last started at %s, before A's start on %s at %s", na, nb2, tb2.Format("15:04:05.000"), na2, ta2.Format("15:04:05.000"))
	}
	t.Logf("standby of %s: A on %s, B on %s", na, na2, nb2)
	vigil(t, l, dc, "node", "unstandby", na)
	close(stop)
	if msg, ok := <-broke; ok {
		t.Errorf("order A then B broken by ground truth: %s", msg)
	}

	// Across the loss of A's node: after fence confirm, A is started
	// again, and B, if it has to start again, starts after A.
	ask := l.Other(na2)
	l.Kill(na2)
	waitRes(t, l, ask, "A unknown on "+na2, lostWithin+settle, func(st api.Status) bool {
		r, _ := resIn(st, "A")
		return r.State == "unknown" && r.Node == na2
	})
	vigil(t, l, ask, "fence", "confirm", na2, "--yes")
	na3 := waitStarted(t, l, ask, "A", settle, notIn(na2))
	nb3 := waitStarted(t, l, ask, "B", settle, notIn(na2))
	ta3, tb3 := stateMtime(t, l, na3, "A"), stateMtime(t, l, nb3, "B")
	switch {
	case nb2 == na2 && tb3.Before(ta3):
		t.Errorf("after the loss of %s: B restarted on %s at %s, before A started on %s at %s", na2, nb3, tb3.Format("15:04:05.000"), na3, ta3.Format("15:04:05.000"))
	case nb2 != na2 && tb3.Before(ta3):
		// B ran on a surviving node: as in Pacemaker, it must start
		// again after A does (order A then B is mandatory).
		l.WaitFor("B restarted after A came back", settle, func() (bool, string) {
			nb := activeNode(l, "B")
			if nb == "" {
				return false, "B runs nowhere"
			}
			tb := stateMtime(t, l, nb, "B")
			return tb.After(ta3), fmt.Sprintf("B on %s started %s, A started %s", nb, tb.Format("15:04:05.000"), ta3.Format("15:04:05.000"))
		})
	default:
		t.Logf("after the loss of %s: A on %s at %s, then B on %s at %s", na2, na3, ta3.Format("15:04:05.000"), nb3, tb3.Format("15:04:05.000"))
	}
}

// activeNode returns the one running node where id is active ("" if none
// or several).
func activeNode(l *lab.Lab, id string) string {
	on := l.ActiveOn(id)
	if len(on) != 1 {
		return ""
	}
	return on[0]
}

// prefix reports whether active is exactly members[:k] for some k.
func prefix(members []string, s lab.TruthSample) (int, bool) {
	k := 0
	for k < len(members) && len(s.Active[members[k]]) > 0 {
		k++
	}
	for _, m := range members[k:] {
		if len(s.Active[m]) > 0 {
			return k, false
		}
	}
	return k, true
}

// TestGroupStartsInOrderStopsInReverse: G = [g1, g2, g3] starts g1, g2, g3
// in that order on one node and, on `resource disable G`, stops g3, g2, g1;
// at every sample the active members are a prefix of the group.
func TestGroupStartsInOrderStopsInReverse(t *testing.T) {
	l, dc := resLab(t)
	members := []string{"g1", "g2", "g3"}
	l.WatchNeverTwice(t, members...)
	for _, m := range members {
		vigil(t, l, dc, "resource", "create", m, "vigil:dummy", "op_sleep=1s", "--group", "G", "--disabled")
	}
	vigil(t, l, dc, "resource", "disable", "G")
	for _, m := range members {
		vigil(t, l, dc, "resource", "enable", m)
	}
	// Nothing runs while G is disabled.
	l.Always("nothing of G starts while G is disabled", 2*time.Second, func() (bool, string) {
		s := l.Truth(members...)
		return len(s.Active) == 0, s.String()
	})
	vigil(t, l, dc, "resource", "enable", "G")
	watch := func(what string, done func(s lab.TruthSample, k int) bool) {
		l.WaitFor(what, settle, func() (bool, string) {
			s := l.Truth(members...)
			k, ok := prefix(members, s)
			if !ok {
				t.Fatalf("%s: active members are not a prefix of %v: %s", what, members, s)
			}
			return done(s, k), s.String()
		})
	}
	watch("G started", func(s lab.TruthSample, k int) bool { return k == 3 })
	node := ""
	for _, m := range members {
		on := waitStarted(t, l, dc, m, settle, nil)
		if node != "" && on != node {
			t.Errorf("%s on %s, but the group runs on %s", m, on, node)
		}
		node = on
	}
	var prev time.Time
	for _, m := range members {
		mt := stateMtime(t, l, node, m)
		t.Logf("%s started at %s", m, mt.Format("15:04:05.000"))
		if !prev.IsZero() && !mt.After(prev) {
			t.Errorf("%s started at %s, not after the member before it (%s)", m, mt.Format("15:04:05.000"), prev.Format("15:04:05.000"))
		}
		prev = mt
	}

	vigil(t, l, dc, "resource", "disable", "G")
	watch("G stopped", func(s lab.TruthSample, k int) bool { return k == 0 })
	var stops []time.Time
	for _, m := range members {
		var rec api.Record
		l.WaitFor(m+" recorded stopped", settle, func() (bool, string) {
			r, ok := recordOn(resourceDetail(t, l, dc, m), m, node)
			rec = r
			return ok && r.State == "stopped", fmt.Sprintf("%+v", r)
		})
		stops = append(stops, rec.Changed)
		t.Logf("%s stopped at %s (record)", m, rec.Changed.Format("15:04:05.000"))
	}
	if !(stops[2].Before(stops[1]) && stops[1].Before(stops[0])) {
		t.Errorf("stop order (record Changed): g1 %s, g2 %s, g3 %s; want g3 < g2 < g1",
			stops[0].Format("15:04:05.000"), stops[1].Format("15:04:05.000"), stops[2].Format("15:04:05.000"))
	}
}

// ---------------------------------------------------------------------------
// 3. A SIGKILLed node: waiting for fencing, never twice; fence confirm
// recovers.

func TestKilledNodeWaitsForFenceConfirm(t *testing.T) {
	l, dc := resLab(t)
	const id = "r1"
	l.WatchNeverTwice(t, id)
	vigil(t, l, dc, "resource", "create", id, "vigil:dummy", "op", "monitor", "interval=2s")
	victim := waitStarted(t, l, dc, id, settle, nil)
	ask := l.Other(victim)
	t.Logf("%s runs on %s (DC %s); killing %s", id, victim, dc, victim)
	l.Kill(victim)
	killed := time.Now()

	st := waitRes(t, l, ask, id+" unknown on "+victim+" (waiting for fencing)", lostWithin+settle, func(st api.Status) bool {
		r, _ := resIn(st, id)
		if r.State != "unknown" || r.Node != victim || !strings.Contains(r.Note, "waiting for fencing") {
			return false
		}
		for _, b := range st.Blocked {
			if b.Instance == id {
				return true
			}
		}
		return false
	})
	lost := time.Now()
	t.Logf("%s shown waiting %s after SIGKILL: %s", id, lost.Sub(killed).Round(time.Millisecond), resSummary(st))
	text := vigil(t, l, ask, "status")
	if !strings.Contains(text, "unknown on "+victim+" (waiting for fencing)") {
		t.Errorf("`vigil status` does not say %q:\n%s", "unknown on "+victim+" (waiting for fencing)", text)
	}
	// Not started anywhere else while it waits.
	l.Always(id+" not started on a survivor without fence confirm", quiet, func() (bool, string) {
		if on := l.ActiveOn(id); len(on) > 0 {
			return false, fmt.Sprintf("%s active on %v before any fence confirm", id, on)
		}
		ok, why := l.StatusCond(ask, func(st api.Status) bool {
			r, _ := resIn(st, id)
			return r.State == "unknown" && r.Node == victim
		})
		return ok, why
	})
	for _, n := range l.Others(victim) {
		if l.ActiveOnDisk(n, id) {
			t.Errorf("%s's state file exists on %s", id, n)
		}
	}

	// A check without --yes changes nothing.
	if _, err := l.CLI(ctxFor(t, 30*time.Second), ask, "fence", "confirm", victim); err == nil {
		t.Errorf("fence confirm without --yes succeeded")
	}
	out := vigil(t, l, ask, "fence", "confirm", victim, "--yes")
	confirmed := time.Now()
	t.Logf("fence confirm: %s", strings.TrimSpace(out))
	on := waitStarted(t, l, ask, id, settle, notIn(victim))
	t.Logf("%s recovered on %s %s after fence confirm (%s after SIGKILL)", id, on,
		time.Since(confirmed).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	// The killed node reboots (its /run emptied) and joins: stickiness
	// keeps the resource where it is, and it never runs twice.
	l.WipeRunDir(victim)
	l.Start(victim)
	l.WaitFormed(formTimeout)
	l.Always(id+" stays on "+on+" after "+victim+" rejoins", quiet, func() (bool, string) {
		got := l.ActiveOn(id)
		return slices.Equal(got, []string{on}), fmt.Sprintf("%s active on %v", id, got)
	})
}

// ---------------------------------------------------------------------------
// 5. simulate --node-fail predicts what a real node loss then does.

var placeRE = regexp.MustCompile(`(?m)^\s+(\S+) (\S*) → (\S+|\(stopped\)):`)

// predicted parses the "Placements that change" of a plan: instance → node
// ("" for stopped).
func predicted(plan string) map[string]string {
	out := map[string]string{}
	_, rest, ok := strings.Cut(plan, "Placements that change:\n")
	if !ok {
		return out
	}
	for _, m := range placeRE.FindAllStringSubmatch(rest, -1) {
		n := m[3]
		if n == "(stopped)" {
			n = ""
		}
		out[m[1]] = n
	}
	return out
}

func TestSimulateNodeFailMatchesReality(t *testing.T) {
	l, dc := resLab(t)
	var ids []string
	for i := 1; i <= 7; i++ {
		ids = append(ids, fmt.Sprintf("s%d", i))
	}
	l.WatchNeverTwice(t, ids...)
	for _, id := range ids {
		vigil(t, l, dc, "resource", "create", id, "vigil:dummy", "op", "monitor", "interval=2s")
	}
	// A constraint or two so that the prediction is not trivial.
	vigil(t, l, dc, "constraint", "colocation", "add", "s2-with-s1", "s2", "with", "s1")
	vigil(t, l, dc, "constraint", "colocation", "add", "s3-apart-s1", "s3", "with", "s1", "-INFINITY")
	before := map[string]string{}
	for _, id := range ids {
		before[id] = waitStarted(t, l, dc, id, settle, nil)
	}
	// Let everything settle (no pending tasks).
	waitRes(t, l, dc, "no pending task", settle, func(st api.Status) bool { return len(st.Pending) == 0 })
	victim := "n2"
	var onVictim []string
	for _, id := range ids {
		if before[id] == victim {
			onVictim = append(onVictim, id)
		}
	}
	t.Logf("before: %v; on %s: %v", before, victim, onVictim)
	if len(onVictim) == 0 {
		t.Fatalf("nothing runs on %s; the test needs something there: %v", victim, before)
	}
	ask := l.Other(victim)
	var sim api.SimulateResult
	out := vigil(t, l, ask, "simulate", "--node-fail", victim, "--output", "json")
	if err := json.Unmarshal([]byte(out), &sim); err != nil {
		t.Fatalf("simulate --output json: %v: %q", err, out)
	}
	t.Logf("simulate --node-fail %s:\nnotes: %v\n%s", victim, sim.Notes, sim.Plan)
	text := vigil(t, l, ask, "simulate", "--node-fail", victim)
	if !strings.Contains(text, sim.Plan) {
		t.Errorf("text output lacks the plan:\n%s", text)
	}
	want := map[string]string{}
	for _, id := range ids {
		want[id] = before[id]
	}
	moves := predicted(sim.Plan)
	for id, n := range moves {
		want[id] = n
	}
	for _, id := range onVictim {
		if _, ok := moves[id]; !ok {
			t.Errorf("the plan does not say where %s (on %s) goes", id, victim)
		}
	}
	// Nothing changed by simulating.
	for _, id := range ids {
		if on := l.ActiveOn(id); !slices.Equal(on, []string{before[id]}) {
			t.Errorf("simulate changed something: %s active on %v", id, on)
		}
	}

	l.Kill(victim)
	waitRes(t, l, ask, victim+" lost", lostWithin, func(st api.Status) bool { return lab.State(st, victim) == api.NodeLost })
	vigil(t, l, ask, "fence", "confirm", victim, "--yes")
	confirmed := time.Now()
	got := map[string]string{}
	l.WaitFor("every resource placed as predicted", settle, func() (bool, string) {
		s := l.Truth(ids...)
		for _, id := range ids {
			n := ""
			if len(s.Active[id]) == 1 {
				n = s.Active[id][0]
			}
			got[id] = n
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("truth %v; predicted %v", got, want)
	})
	t.Logf("reality matched the prediction %s after fence confirm: %v", time.Since(confirmed).Round(time.Millisecond), got)
	waitRes(t, l, ask, "no pending task after recovery", settle, func(st api.Status) bool { return len(st.Pending) == 0 })
	l.Always("placement stays as predicted", 3*time.Second, func() (bool, string) {
		s := l.Truth(ids...)
		for _, id := range ids {
			n := ""
			if len(s.Active[id]) == 1 {
				n = s.Active[id][0]
			}
			if n != want[id] {
				return false, fmt.Sprintf("%s on %v, predicted %q", id, s.Active[id], want[id])
			}
		}
		return true, ""
	})
}

// ---------------------------------------------------------------------------
// 4. The DC dies in the middle of a transition: nothing runs twice, nothing
// is forgotten.

// slowResources creates n vigil:dummy resources whose every action takes
// sleep, and returns their ids.
func slowResources(t *testing.T, l *lab.Lab, node, prefix string, n int, sleep string) []string {
	t.Helper()
	var ids []string
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("%s%02d", prefix, i)
		ids = append(ids, id)
		vigil(t, l, node, "resource", "create", id, "vigil:dummy", "op_sleep="+sleep, "op", "monitor", "interval=5s", "timeout=20s")
	}
	return ids
}

// allOnceOn waits until every id runs on exactly one node, by ground truth
// and by ask's status, and no task is pending.
func allOnce(t *testing.T, l *lab.Lab, ask string, ids []string, timeout time.Duration) map[string]string {
	t.Helper()
	where := map[string]string{}
	l.WaitFor("every resource running exactly once", timeout, func() (bool, string) {
		s := l.Truth(ids...)
		var bad []string
		for _, id := range ids {
			if len(s.Active[id]) != 1 {
				bad = append(bad, fmt.Sprintf("%s@%v", id, s.Active[id]))
			} else {
				where[id] = s.Active[id][0]
			}
		}
		if len(bad) > 0 {
			return false, "truth: " + strings.Join(bad, " ")
		}
		ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(5*time.Second))
		defer cancel()
		st, err := l.Status(ctx, ask)
		if err != nil {
			return false, err.Error()
		}
		for _, id := range ids {
			if !startedOn(st, id, where[id]) {
				return false, "status: " + resSummary(st)
			}
		}
		if len(st.Pending) > 0 || len(st.Blocked) > 0 {
			return false, "status: " + resSummary(st)
		}
		return true, ""
	})
	return where
}

func TestDCKilledMidTransition(t *testing.T) {
	l, dc := resLab(t)
	const n = 10
	var ids []string
	for i := 1; i <= n; i++ {
		ids = append(ids, fmt.Sprintf("t%02d", i))
	}
	l.WatchNeverTwice(t, ids...)
	created := time.Now()
	slowResources(t, l, dc, "t", n, "2s")
	// The transition is in flight: tasks issued and not answered.
	st := waitRes(t, l, dc, "tasks in flight", 10*time.Second, func(st api.Status) bool { return len(st.Pending) > 0 })
	t.Logf("%s after the first create, in flight: %s", time.Since(created).Round(time.Millisecond), resSummary(st))
	l.Kill(dc)
	killed := time.Now()
	ask := l.Other(dc)
	st = waitRes(t, l, ask, "a new DC", lostWithin+settle, func(st api.Status) bool { return st.DC != "" && st.DC != dc })
	t.Logf("new DC %s after %s: %s", st.DC, time.Since(killed).Round(time.Millisecond), resSummary(st))
	// Without fence confirm, what was in flight on the dead DC waits.
	l.Always("nothing in flight on the dead DC is started elsewhere", 3*time.Second, func() (bool, string) {
		s := l.Truth(ids...)
		for id, on := range s.Active {
			if len(on) > 1 {
				return false, id + " twice"
			}
		}
		return true, ""
	})
	ctx := ctxFor(t, 30*time.Second)
	st, err := l.Status(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before fence confirm: %s", resSummary(st))
	vigil(t, l, ask, "fence", "confirm", dc, "--yes")
	confirmed := time.Now()
	where := allOnce(t, l, ask, ids, 2*settle)
	t.Logf("all %d running exactly once %s after fence confirm (%s after SIGKILL of DC %s): %v",
		n, time.Since(confirmed).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), dc, where)
}

// TestDCRestartedMidTransition: the same, with a clean restart of the DC
// (SIGTERM, then start): no fence confirm is needed.
func TestDCRestartedMidTransition(t *testing.T) {
	l, dc := resLab(t)
	const n = 10
	var ids []string
	for i := 1; i <= n; i++ {
		ids = append(ids, fmt.Sprintf("u%02d", i))
	}
	l.WatchNeverTwice(t, ids...)
	slowResources(t, l, dc, "u", n, "2s")
	st := waitRes(t, l, dc, "tasks in flight", 10*time.Second, func(st api.Status) bool { return len(st.Pending) > 0 })
	t.Logf("in flight: %s", resSummary(st))
	stopAt := time.Now()
	l.Stop(dc)
	t.Logf("DC %s stopped cleanly in %s", dc, time.Since(stopAt).Round(time.Millisecond))
	ask := l.Other(dc)
	where := allOnce(t, l, ask, ids, 2*settle)
	t.Logf("all %d running exactly once on the survivors %s after SIGTERM: %v", n, time.Since(stopAt).Round(time.Millisecond), where)
	for _, id := range ids {
		if where[id] == dc {
			t.Errorf("%s on the stopped node %s", id, dc)
		}
	}
	l.Start(dc)
	l.WaitFormed(formTimeout)
	got := allOnce(t, l, ask, ids, 2*settle)
	for _, id := range ids {
		if got[id] != where[id] {
			t.Errorf("%s moved %s -> %s when %s came back (stickiness)", id, where[id], got[id], dc)
		}
	}
}

// ---------------------------------------------------------------------------
// 6. Bad input is refused with a clear message; the epoch does not move.

func TestBadInputRefused(t *testing.T) {
	l, dc := resLab(t)
	vigil(t, l, dc, "resource", "create", "A", "vigil:dummy", "--disabled")
	vigil(t, l, dc, "resource", "create", "B", "vigil:dummy", "--disabled")
	vigil(t, l, dc, "constraint", "order", "add", "A-then-B", "A", "then", "B")
	epoch := func() uint64 {
		st, err := l.Status(ctxFor(t, 30*time.Second), dc)
		if err != nil {
			t.Fatal(err)
		}
		return st.Epoch
	}
	cases := []struct {
		name string
		args []string
		want []string // the message must contain each (case-insensitive)
	}{
		{"unknown OCF agent", []string{"resource", "create", "x", "ocf:heartbeat:NoSuchAgent"}, []string{"NoSuchAgent"}},
		{"unknown vigil agent", []string{"resource", "create", "x", "vigil:nosuch"}, []string{"nosuch"}},
		{"unknown class", []string{"resource", "create", "x", "lsb:whatever"}, []string{"lsb"}},
		{"missing required OCF parameter", []string{"resource", "create", "vip", "ocf:heartbeat:IPaddr2", "cidr_netmask=24"}, []string{"ip"}},
		{"unknown OCF parameter", []string{"resource", "create", "d", "ocf:heartbeat:Dummy", "nosuchparam=1"}, []string{"nosuchparam"}},
		{"missing vigil:process command", []string{"resource", "create", "p", "vigil:process"}, []string{"command"}},
		{"duplicate id", []string{"resource", "create", "A", "vigil:dummy"}, []string{"A"}},
		{"unknown node in a location", []string{"constraint", "location", "add", "l9", "A", "prefers", "n9"}, []string{"n9"}},
		{"unknown resource in a location", []string{"constraint", "location", "add", "l8", "nosuch", "prefers", "n1"}, []string{"nosuch"}},
		{"unknown resource in a colocation", []string{"constraint", "colocation", "add", "c9", "A", "with", "nosuch"}, []string{"nosuch"}},
		{"order loop", []string{"constraint", "order", "add", "B-then-A", "B", "then", "A"}, []string{"A", "B"}},
		{"order on itself", []string{"constraint", "order", "add", "A-then-A", "A", "then", "A"}, []string{"A"}},
		{"standby of an unknown node", []string{"node", "standby", "n9"}, []string{"n9"}},
		{"move to an unknown node", []string{"resource", "move", "A", "n9"}, []string{"n9"}},
		{"bad monitor interval", []string{"resource", "create", "y", "vigil:dummy", "op", "monitor", "interval=10ms"}, []string{"interval"}},
		{"unknown meta attribute", []string{"resource", "create", "y", "vigil:dummy", "meta", "nosuchmeta=1"}, []string{"nosuchmeta"}},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			l := l.With(t)
			before := epoch()
			out, err := l.CLI(ctxFor(t, 30*time.Second), dc, c.args...)
			after := epoch()
			var ce *lab.CLIError
			if err == nil {
				t.Errorf("vigil %s: accepted (exit 0): %s", strings.Join(c.args, " "), strings.TrimSpace(out))
			} else if !errorsAs(err, &ce) {
				t.Errorf("vigil %s: %v", strings.Join(c.args, " "), err)
			} else {
				msg := strings.TrimSpace(ce.Stderr)
				t.Logf("vigil %s: %s", strings.Join(c.args, " "), msg)
				for _, w := range c.want {
					if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
						t.Errorf("message %q does not name %q", msg, w)
					}
				}
				if strings.Contains(msg, "panic") || strings.Contains(msg, "internal") {
					t.Errorf("message %q looks like an internal error", msg)
				}
			}
			if after != before {
				t.Errorf("epoch moved %d -> %d", before, after)
			}
		})
	}
}

func errorsAs(err error, target **lab.CLIError) bool {
	for err != nil {
		if e, ok := err.(*lab.CLIError); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// ---------------------------------------------------------------------------
// 7. A clean stop (SIGTERM) of the node running a resource: stopped there,
// started elsewhere without any fence confirm; the agent exits in bounded
// time.

func TestCleanStopMovesResourcesWithoutFencing(t *testing.T) {
	l, dc := resLab(t)
	ids := []string{"proc", "dum", "ocfd"}
	l.WatchNeverTwice(t, ids...)
	vigil(t, l, dc, "resource", "create", "proc", "vigil:process", "command=exec sleep 100000", "stop_timeout=5s", "op", "monitor", "interval=2s", "--disabled")
	vigil(t, l, dc, "resource", "create", "dum", "vigil:dummy", "op", "monitor", "interval=2s", "--disabled")
	vigil(t, l, dc, "resource", "create", "ocfd", "ocf:heartbeat:Dummy", "op", "monitor", "interval=2s", "--disabled")
	// Put them all on one node that is not the DC.
	target := l.Other(dc)
	for _, id := range ids {
		vigil(t, l, dc, "constraint", "location", "add", id+"-pref", id, "prefers", target+"=50")
		vigil(t, l, dc, "resource", "enable", id)
	}
	for _, id := range ids {
		waitStarted(t, l, dc, id, settle, is(target))
	}
	pidFile := filepath.Join(l.RunDir(target), "process", "proc.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("vigil:process pid file: %v", err)
	}

	stopAt := time.Now()
	l.Stop(target)
	took := time.Since(stopAt)
	t.Logf("%s stopped cleanly in %s", target, took.Round(time.Millisecond))
	if took > lab.Scale(15*time.Second) {
		t.Errorf("clean stop took %s", took)
	}
	// Its resources were stopped there by the agents, not just killed.
	for _, id := range ids {
		if l.ActiveOnDisk(target, id) {
			t.Errorf("%s still active on %s's disk after its clean stop", id, target)
		}
	}
	if _, err := os.Stat(pidFile); err == nil {
		t.Errorf("vigil:process pid file still on %s after its clean stop: stop did not run", target)
	}
	where := allOnce(t, l, dc, ids, settle)
	t.Logf("moved without fence confirm %s after SIGTERM: %v", time.Since(stopAt).Round(time.Millisecond), where)
	for _, id := range ids {
		if where[id] == target {
			t.Errorf("%s on the stopped node", id)
		}
	}
}
