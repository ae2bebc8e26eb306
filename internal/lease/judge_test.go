package lease

import (
	"testing"
	"time"
)

func newJudge(t *testing.T, voters []string) *Judge {
	t.Helper()
	// Drift 0 keeps the arithmetic readable; the property test covers drift.
	j, err := NewJudge(Config{LeaseDuration: time.Second, WatchdogTimeout: 2 * time.Second, Margin: 100 * ms, Drift: -1})
	if err != nil {
		t.Fatal(err)
	}
	j.SetVoters(voters, voters[0])
	return j
}

// rep is one call to Judge.Report in a script.
type rep struct {
	now       time.Duration
	reporter  string
	lost      []Loss
	age       time.Duration
	sentAfter time.Duration // for the DC's own reports, now is used
}

func play(j *Judge, steps []rep) {
	for _, s := range steps {
		if s.reporter == j.self {
			j.ReportSelf(s.now, s.lost)
			continue
		}
		j.Report(s.now, Report{Reporter: s.reporter, Lost: s.lost, Age: s.age, SentAfter: s.sentAfter})
	}
}

func x(silence time.Duration) []Loss { return []Loss{{"x", silence}} }

const s10 = 10 * time.Second

// Three voters dc, p, x; LeaseDuration 1s. The DC's own report at 10s with
// silence 2s certifies [9s, 10s]; p's report measured in [SentAfter-Age,
// receipt] with silence σ certifies [receipt-σ+1s, SentAfter-Age].
func TestJudgeThreeNodes(t *testing.T) {
	for i, tc := range []struct {
		name  string
		steps []rep
		at    time.Duration // confirmation; -1: none
	}{
		{"the DC alone proves nothing", []rep{
			{s10, "dc", x(5 * time.Second), 0, 0},
		}, -1},
		{"p certifies [9.5s, 9.9s], the DC [9s, 10s]", []rep{
			{s10, "p", x(1500 * ms), 0, s10 - 100*ms},
			{s10, "dc", x(2 * time.Second), 0, 0},
		}, s10},
		{"the DC's report may come first", []rep{
			{s10, "dc", x(2 * time.Second), 0, 0},
			{s10 + 5*ms, "p", x(1500 * ms), 0, s10 - 100*ms},
		}, s10 + 5*ms},
		{"p's silence too short for its uncertainty", []rep{
			{s10, "p", x(1050 * ms), 0, s10 - 100*ms},
			{s10, "dc", x(2 * time.Second), 0, 0},
		}, -1},
		{"measured 500ms before sending", []rep{
			{s10, "p", x(1500 * ms), 500 * ms, s10 - 100*ms},
			{s10, "dc", x(2 * time.Second), 0, 0},
		}, -1},
		{"measured 500ms before sending, silent longer", []rep{
			{s10, "p", x(2 * time.Second), 500 * ms, s10 - 100*ms},
			{s10, "dc", x(2 * time.Second), 0, 0},
		}, s10},
		{"the DC heard x after p's interval", []rep{
			{s10, "p", x(1500 * ms), 0, s10 - 100*ms},
			{s10, "dc", x(1050 * ms), 0, 0}, // certifies [9.95s, 10s]
		}, -1},
		{"the DC heard x later, but not too late", []rep{
			{s10, "p", x(1500 * ms), 0, s10 - 100*ms},
			{s10, "dc", x(1200 * ms), 0, 0}, // [9.8s, 10s]: 9.9s is common
		}, s10},
		{"the DC hears x: no verdict without it", []rep{
			{s10, "p", x(5 * time.Second), 0, s10 - 100*ms},
			{s10, "dc", nil, 0, 0},
		}, -1},
		{"a report from a non-voter does not count", []rep{
			{s10, "w", x(5 * time.Second), 0, s10 - 100*ms},
			{s10, "dc", x(5 * time.Second), 0, 0},
		}, -1},
		{"x's own report about x is ignored", []rep{
			{s10, "x", x(5 * time.Second), 0, s10 - 100*ms},
			{s10, "dc", x(5 * time.Second), 0, 0},
		}, -1},
		{"a report sent after it arrived is ignored", []rep{
			{s10, "p", x(5 * time.Second), 0, s10 + 1},
			{s10, "dc", x(5 * time.Second), 0, 0},
		}, -1},
	} {
		j := newJudge(t, []string{"dc", "p", "x"})
		play(j, tc.steps)
		at, ok := j.SelfFencedAt("x")
		switch {
		case tc.at < 0 && ok:
			t.Errorf("%d %s: confirmed (%s)", i, tc.name, j)
		case tc.at >= 0 && !ok:
			t.Errorf("%d %s: not confirmed", i, tc.name)
		case ok && at != tc.at+4100*ms:
			t.Errorf("%d %s: fenced at %s, want %s", i, tc.name, at, tc.at+4100*ms)
		}
	}
}

// TestJudgeDelayedReport: p measured x silent, but its report spent 4s in
// a queue; p may have heard x since. Only the echo (sent after 5.9s on the
// DC's clock) says when the report was made. A Judge that takes the
// arrival time instead confirms: the property test's mutation, scripted.
func TestJudgeDelayedReport(t *testing.T) {
	steps := []rep{
		{s10, "p", x(1500 * ms), 0, 5900 * ms},
		{s10, "dc", x(5 * time.Second), 0, 0},
	}
	j := newJudge(t, []string{"dc", "p", "x"})
	play(j, steps)
	if _, ok := j.SelfFencedAt("x"); ok {
		t.Fatalf("delayed report confirmed: %s", j)
	}
	j = newJudge(t, []string{"dc", "p", "x"})
	j.trustReceipt = true
	play(j, steps)
	if _, ok := j.SelfFencedAt("x"); !ok {
		t.Fatal("the mutation changed nothing: the test proves nothing")
	}
}

// Five voters: the DC and two others must certify a common instant.
func TestJudgeFiveNodes(t *testing.T) {
	voters := []string{"dc", "p", "q", "r", "x"}
	for i, tc := range []struct {
		name  string
		steps []rep
		ok    bool
	}{
		{"two of five", []rep{
			{s10, "p", x(3 * time.Second), 0, s10 - 100*ms},
			{s10, "dc", x(3 * time.Second), 0, 0},
		}, false},
		{"three of five", []rep{
			{s10, "p", x(3 * time.Second), 0, s10 - 100*ms},
			{s10, "q", x(3 * time.Second), 0, s10 - 100*ms},
			{s10, "dc", x(3 * time.Second), 0, 0},
		}, true},
		{"three of five, no common instant", []rep{
			{s10, "p", x(1200 * ms), 0, s10 - 100*ms},          // [9.8s, 9.9s]
			{s10 - 500*ms, "q", x(1200 * ms), 0, s10 - 550*ms}, // [9.3s, 9.45s]
			{s10, "dc", x(3 * time.Second), 0, 0},              // [8s, 10s]
		}, false},
		{"four of five, three share an instant", []rep{
			{s10, "p", x(1200 * ms), 0, s10 - 100*ms},
			{s10 - 500*ms, "q", x(1200 * ms), 0, s10 - 550*ms},
			{s10, "r", x(1300 * ms), 0, s10 - 50*ms}, // [9.7s, 9.95s]
			{s10, "dc", x(3 * time.Second), 0, 0},
		}, true},
	} {
		j := newJudge(t, voters)
		play(j, tc.steps)
		if _, ok := j.SelfFencedAt("x"); ok != tc.ok {
			t.Errorf("%d %s: confirmed %v, want %v", i, tc.name, ok, tc.ok)
		}
	}
}

func TestJudgeResetAndFenced(t *testing.T) {
	j := newJudge(t, []string{"dc", "p", "x"})
	play(j, []rep{
		{s10, "p", x(1500 * ms), 0, s10 - 100*ms},
		{s10, "dc", x(2 * time.Second), 0, 0},
	})
	if j.Fenced(s10+4099*ms, "x") || !j.Fenced(s10+4100*ms, "x") {
		t.Fatal("Fenced does not switch at SelfFencedAt")
	}
	if got, want := j.String(), "x confirmed=10s fenced-at=14.1s"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	// The DC's silence keeps growing: the confirmation time stays.
	j.ReportSelf(s10+time.Second, x(3*time.Second))
	if at, _ := j.SelfFencedAt("x"); at != s10+4100*ms {
		t.Fatalf("confirmation moved: %s", j)
	}
	// Heard again: reset.
	j.ReportSelf(s10+2*time.Second, nil)
	if _, ok := j.SelfFencedAt("x"); ok {
		t.Fatal("not reset when the DC heard x again")
	}
	// Lost again: p's old report proves nothing after the DC heard x.
	j.ReportSelf(s10+4*time.Second, x(1500*ms))
	if _, ok := j.SelfFencedAt("x"); ok {
		t.Fatalf("stale report re-confirmed: %s", j)
	}
	// A new voter set drops confirmations.
	play(j, []rep{{s10 + 4*time.Second, "p", x(1500 * ms), 0, s10 + 3900*ms}})
	if _, ok := j.SelfFencedAt("x"); !ok {
		t.Fatal("not confirmed again")
	}
	j.SetVoters([]string{"dc", "p", "q", "x"}, "dc")
	if _, ok := j.SelfFencedAt("x"); ok {
		t.Fatal("confirmation survived a voter change")
	}
}
