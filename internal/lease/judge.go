package lease

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Loss is one peer a reporter has not heard from, and for how long.
type Loss struct {
	Node string
	// Silence is how long the reporter had heard nothing at all from Node
	// (on any link) when it measured, on the reporter's clock.
	Silence time.Duration
}

// Report is one loss report as the Judge received it.
type Report struct {
	// Reporter is the node that measured (the heartbeat's authenticated
	// sender, or the Judge's own node).
	Reporter string
	// Lost lists the peers the reporter had not heard from, with their
	// silences. Peers not listed count as heard.
	Lost []Loss
	// Age is how long before the report was sent its silences were
	// measured, on the reporter's clock: the carrying heartbeat's SendTime
	// minus LossReport.AsOf. 0 for the Judge's own report.
	Age time.Duration
	// SentAfter is an instant on the Judge's clock before which the report
	// cannot have been sent: the EchoTime of the carrying heartbeat, which
	// is the Judge's own send time of a heartbeat the reporter had
	// received. Use it only when the heartbeat's ToBoot names the Judge's
	// incarnation; without such an echo, do not report. For the Judge's own
	// report, now.
	SentAfter time.Duration
}

// Judge is the DC's side: it decides when a silent node is proven to have
// been reset by its watchdog. It is not safe for concurrent use. See the
// package documentation for the argument.
type Judge struct {
	cfg       Config
	self      string
	voters    map[string]bool
	reports   map[string]stored
	confirmed map[string]time.Duration

	// Test hooks: mutations that must make the property test fail.
	needed       func(voters int) int // votes needed; default majority
	trustReceipt bool                 // take reports as measured on receipt
}

// stored is a report reduced to what the proof uses.
type stored struct {
	lost map[string]time.Duration
	recv time.Duration // the report was measured no later than this
	lo   time.Duration // ... and no earlier than this (Judge's clock)
}

// NewJudge returns a Judge with no voters: call SetVoters before use.
func NewJudge(cfg Config) (*Judge, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	return &Judge{
		cfg:       cfg,
		voters:    map[string]bool{},
		reports:   map[string]stored{},
		confirmed: map[string]time.Duration{},
		needed:    majority,
	}, nil
}

// Config returns the configuration with defaults applied.
func (j *Judge) Config() Config { return j.cfg }

// SetVoters sets the voting members and the Judge's own node, which must
// be one of them (a Judge that does not vote confirms nothing). Reports
// are kept, but every confirmation is dropped: it was a proof about the
// old voter set, and the next Report re-confirms (later) what still holds.
func (j *Judge) SetVoters(voters []string, self string) {
	j.self = self
	clear(j.voters)
	for _, v := range voters {
		j.voters[v] = true
	}
	clear(j.confirmed)
}

// Report records r, received at now, as its reporter's newest report and
// re-evaluates. A report that cannot be right (sent after it arrived, a
// negative age) is ignored, as are negative silences.
func (j *Judge) Report(now time.Duration, r Report) {
	if r.SentAfter > now || r.Age < 0 {
		return
	}
	s := stored{lost: make(map[string]time.Duration, len(r.Lost)), recv: now}
	s.lo = r.SentAfter - mulUp(r.Age, j.cfg.fast())
	if j.trustReceipt {
		s.lo = now
	}
	for _, l := range r.Lost {
		if l.Silence >= 0 && l.Node != r.Reporter {
			s.lost[l.Node] = max(s.lost[l.Node], l.Silence)
		}
	}
	j.reports[r.Reporter] = s
	own, ok := j.reports[j.self]
	if !ok {
		return
	}
	for node := range j.confirmed {
		if _, lost := own.lost[node]; !lost {
			delete(j.confirmed, node) // heard again
		}
	}
	for node := range own.lost {
		if _, done := j.confirmed[node]; !done && j.proven(node) {
			j.confirmed[node] = now
		}
	}
}

// ReportSelf records the Judge's own view at now: the peers its membership
// has not heard from, with their silences on its clock.
func (j *Judge) ReportSelf(now time.Duration, lost []Loss) {
	j.Report(now, Report{Reporter: j.self, Lost: lost, SentAfter: now})
}

// proven reports whether the stored reports prove that node's lease was
// not valid at some instant: whether a majority of the voters other than
// node, the Judge among them, certify stale echoes over intervals with a
// common instant. Report P's interval starts no later than u and ends no
// earlier than l (Judge's clock); a common instant θ exists for a set if
// every u ≤ θ ≤ every l, so it is enough to try each l as θ.
func (j *Judge) proven(node string) bool {
	if !j.voters[j.self] || node == j.self {
		return false
	}
	need := j.needed(len(j.voters))
	type span struct{ u, l time.Duration }
	spans := make(map[string]span, len(j.voters))
	for v := range j.voters {
		if v == node {
			continue
		}
		s, ok := j.reports[v]
		if !ok {
			continue
		}
		sil, ok := s.lost[node]
		if !ok {
			continue
		}
		u := s.recv - mulDown(sil, j.cfg.slow()) + mulUp(j.cfg.LeaseDuration, j.cfg.fast())
		if u <= s.lo {
			spans[v] = span{u, s.lo}
		}
	}
	own, ok := spans[j.self]
	if !ok || len(spans) < need {
		return false
	}
	for _, c := range spans {
		theta := c.l
		if own.u > theta || theta > own.l {
			continue
		}
		n := 0
		for _, s := range spans {
			if s.u <= theta && theta <= s.l {
				n++
			}
		}
		if n >= need {
			return true
		}
	}
	return false
}

// SelfFencedAt returns the instant (on the Judge's clock) from which node
// counts as reset by its watchdog: the confirmation time plus
// Config.ResetBound. ok is false while nothing is confirmed.
func (j *Judge) SelfFencedAt(node string) (at time.Duration, ok bool) {
	c, ok := j.confirmed[node]
	if !ok {
		return 0, false
	}
	return c + j.cfg.ResetBound(), true
}

// Fenced reports whether node counts as reset by its watchdog at now.
func (j *Judge) Fenced(now time.Duration, node string) bool {
	at, ok := j.SelfFencedAt(node)
	return ok && now >= at
}

// String lists the confirmations, for logs and tests.
func (j *Judge) String() string {
	nodes := make([]string, 0, len(j.confirmed))
	for n := range j.confirmed {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	var b strings.Builder
	for i, n := range nodes {
		if i > 0 {
			b.WriteByte(' ')
		}
		at, _ := j.SelfFencedAt(n)
		fmt.Fprintf(&b, "%s confirmed=%s fenced-at=%s", n, j.confirmed[n], at)
	}
	return b.String()
}
