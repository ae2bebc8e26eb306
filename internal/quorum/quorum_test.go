package quorum

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func nodes(names ...string) []Voter {
	vs := make([]Voter, len(names))
	for i, n := range names {
		vs[i] = Voter{Name: n}
	}
	return vs
}

func TestNeeded(t *testing.T) {
	for i, tt := range []struct{ expected, want int }{
		{1, 1}, {2, 2}, {3, 2}, {4, 3}, {5, 3}, {6, 4}, {7, 4},
	} {
		if got := Needed(tt.expected); got != tt.want {
			t.Errorf("#%d: Needed(%d) = %d, want %d", i, tt.expected, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	witness := Voter{Name: "w", Witness: true}
	for i, tt := range []struct {
		opts   Options
		voters []Voter
		want   string // substring of the error; "" = valid
	}{
		{Options{}, nodes("a"), ""},
		{Options{}, nodes("a", "b", "c"), ""},
		{Options{}, nil, "no voters"},
		{Options{}, nodes("a", ""), "has no name"},
		{Options{}, nodes("a", "a"), "listed twice"},
		{Options{}, []Voter{{Name: "a", Votes: -1}}, "must not be negative"},
		{Options{}, []Voter{witness}, "every voter is a witness"},
		{Options{}, append(nodes("a", "b"), witness), ""},
		{Options{ExpectedVotes: -1}, nodes("a"), "must not be negative"},
		{Options{ExpectedVotes: 2}, nodes("a", "b", "c"), "below the 3 votes configured"},
		{Options{ExpectedVotes: 5}, nodes("a", "b", "c"), ""},
		{Options{ExpectedVotes: 6}, nodes("a", "b", "c"), "could never be quorate"},
		{Options{TwoNode: true}, nodes("a", "b"), ""},
		{Options{TwoNode: true, ExpectedVotes: 2}, nodes("a", "b"), ""},
		{Options{TwoNode: true, ExpectedVotes: 3}, nodes("a", "b"), "two_node needs expected_votes 2"},
		{Options{TwoNode: true}, nodes("a", "b", "c"), "exactly two nodes, found 3"},
		{Options{TwoNode: true}, nodes("a"), "exactly two nodes, found 1"},
		{Options{TwoNode: true}, append(nodes("a", "b"), witness), "not needed with a witness"},
		{Options{TwoNode: true}, []Voter{{Name: "a"}, {Name: "b", Votes: 2}}, "one vote per node; b has 2"},
		{Options{LastManStanding: true}, nodes("a", "b", "c"), ""},
		{Options{LastManStanding: true}, append(nodes("a", "b"), witness), ""},
		{Options{LastManStanding: true}, []Voter{{Name: "a", Votes: 2}, {Name: "b"}}, "a has 2"},
		{Options{LastManStanding: true, LastManStandingWindow: -time.Second}, nodes("a"), "window -1s must not be negative"},
	} {
		err := tt.opts.Validate(tt.voters)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("#%d: unexpected error: %v", i, err)
		case tt.want != "" && err == nil:
			t.Errorf("#%d: no error, want %q", i, tt.want)
		case err != nil && !strings.Contains(err.Error(), tt.want):
			t.Errorf("#%d: error %q, want it to contain %q", i, err, tt.want)
		case err != nil && !strings.HasPrefix(err.Error(), "quorum: "):
			t.Errorf("#%d: error %q lacks the quorum: prefix", i, err)
		}
	}
}

func TestWaitForAllDefault(t *testing.T) {
	for i, tt := range []struct {
		opts Options
		want bool
	}{
		{Options{}, false},
		{Options{TwoNode: true}, true},
		{Options{TwoNode: true, WaitForAll: new(false)}, false},
		{Options{WaitForAll: new(true)}, true},
	} {
		if got := tt.opts.WaitForAllOn(); got != tt.want {
			t.Errorf("#%d: WaitForAllOn() = %t, want %t", i, got, tt.want)
		}
	}
}

// TestComputeOnce checks single verdicts from a fresh or a warm State (one
// that has seen every voter at once).
func TestComputeOnce(t *testing.T) {
	abc := nodes("a", "b", "c")
	ab := nodes("a", "b")
	abw := append(nodes("a", "b"), Voter{Name: "w", Witness: true})
	weighted := []Voter{{Name: "a"}, {Name: "b"}, {Name: "c", Votes: 3}}
	for i, tt := range []struct {
		opts    Options
		voters  []Voter
		warm    bool
		alive   []string
		quorate bool
		votes   int
		exp     int
		need    int
		reason  string
	}{
		{Options{}, abc, false, []string{"a", "b", "c"}, true, 3, 3, 2, "3 of 3 votes, 2 needed"},
		{Options{}, abc, false, []string{"a", "b"}, true, 2, 3, 2, "2 of 3 votes, 2 needed"},
		{Options{}, abc, false, []string{"a"}, false, 1, 3, 2, "1 of 3 votes, 2 needed"},
		{Options{}, abc, false, nil, false, 0, 3, 2, "0 of 3 votes, 2 needed"},
		{Options{}, abc, false, []string{"a", "a", "x", "y"}, false, 1, 3, 2, "1 of 3 votes, 2 needed"},
		{Options{}, weighted, false, []string{"c"}, true, 3, 5, 3, "3 of 5 votes, 3 needed"},
		{Options{}, weighted, false, []string{"a", "b"}, false, 2, 5, 3, "2 of 5 votes, 3 needed"},
		{Options{ExpectedVotes: 4}, abc, false, []string{"a", "b"}, false, 2, 4, 3, "2 of 4 votes, 3 needed"},
		{Options{}, ab, false, []string{"a"}, false, 1, 2, 2, "1 of 2 votes, 2 needed"},
		{Options{}, abw, false, []string{"a", "w"}, true, 2, 3, 2, "2 of 3 votes, 2 needed"},
		{Options{}, abw, false, []string{"w"}, false, 1, 3, 2, "1 of 3 votes, 2 needed"},
		{Options{TwoNode: true}, ab, false, []string{"a"}, false, 1, 2, 1, "waiting for all nodes (wait_for_all): seen a of a,b"},
		{Options{TwoNode: true}, ab, true, []string{"a"}, true, 1, 2, 1, "1 of 2 votes, 1 needed (two_node)"},
		{Options{TwoNode: true, WaitForAll: new(false)}, ab, false, []string{"b"}, true, 1, 2, 1, "1 of 2 votes, 1 needed (two_node)"},
		{Options{TwoNode: true}, ab, true, nil, false, 0, 2, 1, "0 of 2 votes, 1 needed (two_node)"},
		{Options{WaitForAll: new(true)}, abc, false, []string{"a", "b"}, false, 2, 3, 2, "waiting for all nodes (wait_for_all): seen a,b of a,b,c"},
		{Options{WaitForAll: new(true)}, abc, false, nil, false, 0, 3, 2, "waiting for all nodes (wait_for_all): seen none of a,b,c"},
		{Options{WaitForAll: new(true)}, abc, false, []string{"c", "b", "a"}, true, 3, 3, 2, "3 of 3 votes, 2 needed"},
		{Options{WaitForAll: new(true)}, abc, true, []string{"a", "b"}, true, 2, 3, 2, "2 of 3 votes, 2 needed"},
		{Options{TwoNode: true}, abc, true, []string{"a", "b", "c"}, false, 0, 0, 0, "invalid configuration: quorum: two_node needs exactly two nodes, found 3"},
	} {
		var st State
		if tt.warm {
			_, st = Compute(tt.opts, tt.voters, sortedNames(tt.voters), State{}, 0)
		}
		res, _ := Compute(tt.opts, tt.voters, tt.alive, st, time.Second)
		want := Result{Quorate: tt.quorate, TotalVotes: tt.votes, ExpectedVotes: tt.exp, Needed: tt.need, Reason: tt.reason}
		if res != want {
			t.Errorf("#%d: got  %+v\nwant %+v", i, res, want)
		}
	}
}

// TestComputeDoesNotAlias checks that Compute leaves its inputs alone.
func TestComputeDoesNotAlias(t *testing.T) {
	voters := nodes("a", "b", "c")
	alive := []string{"c", "a"}
	_, st := Compute(Options{}, voters, alive, State{}, 0)
	before := slices.Clone(st.Members)
	_, _ = Compute(Options{}, voters, []string{"b"}, st, time.Second)
	if !slices.Equal(st.Members, before) {
		t.Errorf("state members changed under us: %v, was %v", st.Members, before)
	}
	if !slices.Equal(alive, []string{"c", "a"}) {
		t.Errorf("alive reordered: %v", alive)
	}
}

func TestLastManStandingWindow(t *testing.T) {
	voters := nodes("a", "b", "c", "d", "e")
	for i, tt := range []struct {
		window time.Duration
		at     time.Duration // time of the check; the loss happens at 1s
		exp    int
		recall time.Duration
	}{
		{0, 10 * time.Second, 5, 11 * time.Second},
		{0, 11 * time.Second, 3, 0},
		{2 * time.Second, 2 * time.Second, 5, 3 * time.Second},
		{2 * time.Second, 3 * time.Second, 3, 0},
	} {
		opts := Options{LastManStanding: true, WaitForAll: new(true), LastManStandingWindow: tt.window}
		_, st := Compute(opts, voters, []string{"a", "b", "c", "d", "e"}, State{}, 0)
		res, st := Compute(opts, voters, []string{"a", "b", "c"}, st, time.Second)
		if !res.Quorate {
			t.Fatalf("#%d: not quorate after losing 2 of 5: %v", i, res)
		}
		res, _ = Compute(opts, voters, []string{"a", "b", "c"}, st, tt.at)
		if res.ExpectedVotes != tt.exp || res.RecheckAt != tt.recall || !res.Quorate {
			t.Errorf("#%d: got %v (expected %d, recheck %s), want expected %d recheck %s",
				i, res, res.ExpectedVotes, res.RecheckAt, tt.exp, tt.recall)
		}
	}
}

func TestWarnings(t *testing.T) {
	ab := nodes("a", "b")
	abc := nodes("a", "b", "c")
	abw := append(nodes("a", "b"), Voter{Name: "w", Witness: true})
	for i, tt := range []struct {
		opts    Options
		voters  []Voter
		fencing bool
		want    []string // one substring per warning, in order
	}{
		{Options{}, abc, false, nil},
		{Options{}, abw, false, nil},
		{Options{TwoNode: true}, ab, true, nil},
		{Options{TwoNode: true}, ab, false, []string{"two_node without fencing is unsafe"}},
		{Options{TwoNode: true, WaitForAll: new(false)}, ab, true, []string{"two_node with wait_for_all off"}},
		{Options{TwoNode: true, WaitForAll: new(false)}, ab, false, []string{"without fencing", "wait_for_all off"}},
		{Options{}, ab, true, []string{"two nodes and no witness"}},
		{Options{LastManStanding: true}, abc, true, []string{"last_man_standing without wait_for_all is unsafe"}},
		{Options{LastManStanding: true, WaitForAll: new(true)}, abc, true, nil},
		{Options{LastManStanding: true, TwoNode: true}, ab, true, []string{"no effect with two_node"}},
		{Options{}, []Voter{{Name: "a"}, {Name: "w", Witness: true, Votes: 2}}, true, []string{"witnesses hold 2 of 3 votes"}},
	} {
		got := Warnings(tt.opts, tt.voters, tt.fencing)
		if len(got) != len(tt.want) {
			t.Errorf("#%d: got %d warnings %q, want %d", i, len(got), got, len(tt.want))
			continue
		}
		for j := range got {
			if !strings.Contains(got[j], tt.want[j]) {
				t.Errorf("#%d: warning %d is %q, want it to contain %q", i, j, got[j], tt.want[j])
			}
		}
	}
}

// split is a random voter set and a random split of it into two disjoint
// alive sets (some voters in neither: down).
type split struct {
	voters []Voter
	a, b   []string
}

func randomSplit(r *rand.Rand, lms bool) split {
	var s split
	n := 1 + r.IntN(9)
	for i := range n {
		v := Voter{Name: fmt.Sprintf("v%d", i), Witness: i > 0 && r.IntN(4) == 0}
		if !lms {
			v.Votes = r.IntN(4) // 0 means 1
		}
		s.voters = append(s.voters, v)
		switch r.IntN(3) {
		case 0:
			s.a = append(s.a, v.Name)
		case 1:
			s.b = append(s.b, v.Name)
		}
	}
	return s
}

// TestNoTwoQuorateSides is the safety property behind promise 1 ("never
// twice"): under the default options, wait_for_all, an expected_votes
// override, and last_man_standing before its window ends, two disjoint sets
// of alive voters are never both quorate, whether the observers start fresh
// or have seen the whole cluster first. It also checks the verdict against
// a dumb twin: quorate iff votes present are more than half the expected.
func TestNoTwoQuorateSides(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		lms := i%4 == 3
		s := randomSplit(r, lms)
		total := totalVotes(s.voters)
		var opts Options
		switch i % 4 {
		case 1:
			opts.WaitForAll = new(true)
		case 2:
			opts.ExpectedVotes = total + r.IntN(total) // stays reachable
		case 3:
			opts.LastManStanding = true
			opts.LastManStandingWindow = time.Second
		}
		if err := opts.Validate(s.voters); err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		for _, warm := range []bool{false, true} {
			var st State
			if warm {
				_, st = Compute(opts, s.voters, sortedNames(s.voters), State{}, 0)
			}
			// Both sides split at 1s and are checked just before the window
			// would end.
			ra, sta := Compute(opts, s.voters, s.a, st, time.Second)
			ra, _ = Compute(opts, s.voters, s.a, sta, 2*time.Second-1)
			rb, stb := Compute(opts, s.voters, s.b, st, time.Second)
			rb, _ = Compute(opts, s.voters, s.b, stb, 2*time.Second-1)
			if ra.Quorate && rb.Quorate {
				t.Fatalf("#%d (warm %t, opts %+v): both sides quorate\nvoters %+v\nA %v: %v\nB %v: %v",
					i, warm, opts, s.voters, s.a, ra, s.b, rb)
			}
			for _, res := range []Result{ra, rb} {
				dumb := res.TotalVotes*2 > res.ExpectedVotes && !strings.HasPrefix(res.Reason, "waiting")
				if res.Quorate != dumb {
					t.Fatalf("#%d: %v disagrees with the majority rule", i, res)
				}
			}
		}
	}
}

// TestTwoNodeBreaksMajority documents the deliberate exception: with
// two_node both halves of a split are quorate, which is why it needs
// fencing.
func TestTwoNodeBreaksMajority(t *testing.T) {
	opts := Options{TwoNode: true}
	voters := nodes("a", "b")
	_, st := Compute(opts, voters, []string{"a", "b"}, State{}, 0)
	ra, _ := Compute(opts, voters, []string{"a"}, st, time.Second)
	rb, _ := Compute(opts, voters, []string{"b"}, st, time.Second)
	if !ra.Quorate || !rb.Quorate {
		t.Fatalf("two_node split: want both quorate, got %v and %v", ra, rb)
	}
	if w := Warnings(opts, voters, false); len(w) == 0 {
		t.Fatal("two_node without fencing: no warning")
	}
}

// TestLastManStandingAfterWindow documents the other exception: once
// last_man_standing has lowered expected votes, nodes that left and restart
// without wait_for_all form a second quorate side.
func TestLastManStandingAfterWindow(t *testing.T) {
	voters := nodes("a", "b", "c", "d", "e")
	for i, tt := range []struct {
		wfa      bool
		bothSide bool
	}{{false, true}, {true, false}} {
		opts := Options{LastManStanding: true, WaitForAll: new(tt.wfa)}
		_, st := Compute(opts, voters, sortedNames(voters), State{}, 0)
		_, st = Compute(opts, voters, []string{"a", "b", "c"}, st, time.Second)
		_, st = Compute(opts, voters, []string{"a", "b", "c"}, st, 11*time.Second)
		_, st = Compute(opts, voters, []string{"a", "b"}, st, 12*time.Second)
		ra, _ := Compute(opts, voters, []string{"a", "b"}, st, 22*time.Second)
		rb, _ := Compute(opts, voters, []string{"c", "d", "e"}, State{}, 30*time.Second)
		if got := ra.Quorate && rb.Quorate; got != tt.bothSide {
			t.Errorf("#%d (wait_for_all %t): both quorate = %t, want %t: %v | %v", i, tt.wfa, got, tt.bothSide, ra, rb)
		}
	}
}

// TestLastManStandingNeedsStableWindow: membership that keeps changing
// faster than the window never lowers expected votes.
func TestLastManStandingNeedsStableWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	voters := nodes("a", "b", "c", "d", "e", "f", "g")
	opts := Options{LastManStanding: true, WaitForAll: new(true)}
	for i := range 200 {
		_, st := Compute(opts, voters, sortedNames(voters), State{}, 0)
		now := time.Duration(0)
		prev := st.Members
		for step := range 50 {
			var alive []string
			for { // a membership different from the last one
				alive = nil
				for _, v := range voters {
					if r.IntN(3) > 0 {
						alive = append(alive, v.Name)
					}
				}
				if !slices.Equal(alive, prev) {
					break
				}
			}
			now += time.Duration(1 + r.Int64N(int64(opts.Window()-1)))
			var res Result
			res, st = Compute(opts, voters, alive, st, now)
			if res.ExpectedVotes != 7 {
				t.Fatalf("#%d step %d: expected votes lowered by a membership that never held for the window: %v", i, step, res)
			}
			prev = st.Members
		}
	}
}
