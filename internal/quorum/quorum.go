package quorum

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultLastManStandingWindow is the last_man_standing window when
// Options.LastManStandingWindow is zero (votequorum's default, 10000 ms).
const DefaultLastManStandingWindow = 10 * time.Second

// Options are the votequorum-style quorum options. The zero value is a plain
// majority of all configured votes.
type Options struct {
	// ExpectedVotes overrides the sum of configured votes when non-zero. It
	// may not be lower than that sum (see Validate).
	ExpectedVotes int
	// TwoNode makes one vote of two enough for quorum, for clusters of
	// exactly two nodes and no witness. NB: after a split both nodes are
	// quorate; only fencing (whoever fences first survives) keeps the pair
	// safe. It turns WaitForAll on unless WaitForAll is explicitly false.
	TwoNode bool
	// WaitForAll withholds quorum after a cold start until every voter has
	// been seen alive at the same time once. Nil means "as TwoNode".
	WaitForAll *bool
	// LastManStanding lowers expected votes to the votes present once the
	// membership has been stable and quorate for LastManStandingWindow,
	// never below 2.
	LastManStanding bool
	// LastManStandingWindow defaults to DefaultLastManStandingWindow.
	LastManStandingWindow time.Duration
}

// WaitForAllOn reports whether wait_for_all is in force: WaitForAll if set,
// else TwoNode (votequorum turns it on with two_node).
func (o Options) WaitForAllOn() bool {
	if o.WaitForAll != nil {
		return *o.WaitForAll
	}
	return o.TwoNode
}

// Window returns the last_man_standing window with the default applied.
func (o Options) Window() time.Duration {
	if o.LastManStandingWindow == 0 {
		return DefaultLastManStandingWindow
	}
	return o.LastManStandingWindow
}

// Voter is one member that holds votes: a node, or a witness (a process
// that votes but runs no resources).
type Voter struct {
	// Name is unique among voters; Compute's alive list uses it.
	Name string
	// Votes is the voter's weight; 0 means 1.
	Votes int
	// Witness marks a voter that runs nothing. Its votes count like a
	// node's.
	Witness bool
}

// VoteCount returns v's votes with the default applied.
func (v Voter) VoteCount() int {
	if v.Votes == 0 {
		return 1
	}
	return v.Votes
}

// Needed returns the votes needed for quorum when expected votes are
// expected: a strict majority, floor(expected/2)+1.
func Needed(expected int) int { return expected/2 + 1 }

func totalVotes(voters []Voter) int {
	n := 0
	for _, v := range voters {
		n += v.VoteCount()
	}
	return n
}

// configuredExpected is the expected votes before anything was seen.
func configuredExpected(o Options, voters []Voter) int {
	if o.ExpectedVotes > 0 {
		return o.ExpectedVotes
	}
	return totalVotes(voters)
}

// Validate checks the options against the voters. Compute refuses quorum
// (fails closed) for a configuration that does not pass.
func (o Options) Validate(voters []Voter) error {
	if len(voters) == 0 {
		return errors.New("quorum: no voters")
	}
	seen := make(map[string]bool, len(voters))
	var nodes, witnesses []Voter
	for _, v := range voters {
		if v.Name == "" {
			return errors.New("quorum: a voter has no name")
		}
		if seen[v.Name] {
			return fmt.Errorf("quorum: voter %s listed twice", v.Name)
		}
		seen[v.Name] = true
		if v.Votes < 0 {
			return fmt.Errorf("quorum: voter %s: votes %d must not be negative", v.Name, v.Votes)
		}
		if v.Witness {
			witnesses = append(witnesses, v)
		} else {
			nodes = append(nodes, v)
		}
	}
	if len(nodes) == 0 {
		return errors.New("quorum: every voter is a witness: at least one node must be able to run resources")
	}
	total := totalVotes(voters)
	switch {
	case o.ExpectedVotes < 0:
		return fmt.Errorf("quorum: expected_votes %d must not be negative", o.ExpectedVotes)
	case o.ExpectedVotes > 0 && o.ExpectedVotes < total:
		return fmt.Errorf("quorum: expected_votes %d is below the %d votes configured: two separate partitions could both be quorate; leave expected_votes at 0 to use the sum", o.ExpectedVotes, total)
	case o.ExpectedVotes > 0 && Needed(o.ExpectedVotes) > total:
		return fmt.Errorf("quorum: expected_votes %d needs %d votes for quorum but only %d are configured: the cluster could never be quorate", o.ExpectedVotes, Needed(o.ExpectedVotes), total)
	}
	if o.TwoNode {
		if len(witnesses) > 0 {
			return fmt.Errorf("quorum: two_node is not needed with a witness: %s's vote already breaks the tie between the two nodes; remove two_node", witnesses[0].Name)
		}
		if len(nodes) != 2 {
			return fmt.Errorf("quorum: two_node needs exactly two nodes, found %d", len(nodes))
		}
		for _, v := range nodes {
			if v.VoteCount() != 1 {
				return fmt.Errorf("quorum: two_node needs one vote per node; %s has %d", v.Name, v.VoteCount())
			}
		}
		if o.ExpectedVotes != 0 && o.ExpectedVotes != 2 {
			return fmt.Errorf("quorum: two_node needs expected_votes 2 (or unset), not %d", o.ExpectedVotes)
		}
	}
	if o.LastManStanding {
		if o.LastManStandingWindow < 0 {
			return fmt.Errorf("quorum: last_man_standing_window %s must not be negative", o.LastManStandingWindow)
		}
		for _, v := range voters {
			if v.VoteCount() != 1 {
				return fmt.Errorf("quorum: last_man_standing needs one vote per voter (as votequorum); %s has %d", v.Name, v.VoteCount())
			}
		}
	}
	return nil
}

// State is what Compute remembers between calls on one node. The zero value
// is a node that has just started (a cold start, as far as wait_for_all is
// concerned). Treat it as a value: Compute never modifies the State it is
// given, and callers should not modify Members.
type State struct {
	// WaitForAllDone is set once every voter was seen alive at the same
	// time (tracked even with wait_for_all off, so that turning it on in a
	// running cluster does not take quorum away). NB: votequorum also clears the wait when a node joins a
	// partition whose members are already quorate and past their own wait;
	// the caller does that by setting this field when such a member says so
	// (membership carries the flag). Otherwise a node restarting into a
	// running cluster with one node down would never become quorate.
	WaitForAllDone bool
	// Configured is the configured expected votes that Expected was derived
	// from; 0 before the first Compute. A configuration change (voters
	// added or removed, expected_votes changed) resets Expected.
	Configured int
	// Expected is the expected votes in force: the highest of the
	// configured and the votes seen present at once, unless
	// last_man_standing has lowered it.
	Expected int
	// Members are the names of the voters alive at the last call, sorted.
	Members []string
	// Since is when Members last changed (the now of that call).
	Since time.Duration
}

// String renders s on one line for logs and test output.
func (s State) String() string {
	members := strings.Join(s.Members, ",")
	if members == "" {
		members = "none"
	}
	return fmt.Sprintf("expected=%d configured=%d wait_for_all_done=%t members=%s since=%s",
		s.Expected, s.Configured, s.WaitForAllDone, members, s.Since)
}

// Result is the quorum verdict of one Compute call.
type Result struct {
	// Quorate reports whether this partition may run resources and change
	// configuration.
	Quorate bool
	// TotalVotes are the votes present: the sum over alive voters.
	TotalVotes int
	// ExpectedVotes are the expected votes in force.
	ExpectedVotes int
	// Needed are the votes needed for quorum.
	Needed int
	// Reason says why, in operator words: "2 of 3 votes, 2 needed".
	Reason string
	// RecheckAt, when non-zero, is the time at which the verdict may change
	// without any membership change (last_man_standing's window ending):
	// call Compute again then.
	RecheckAt time.Duration
}

// String renders r as "quorate: <reason>" or "no quorum: <reason>".
func (r Result) String() string {
	if r.Quorate {
		return "quorate: " + r.Reason
	}
	return "no quorum: " + r.Reason
}

// Compute returns the quorum verdict of a node that sees the voters named
// in alive (itself included) at monotonic time now, and the State to pass
// to the next call. Names in alive that are not voters are ignored, as are
// duplicates. An invalid configuration is never quorate.
//
// The rules, in order:
//
//  1. Expected votes are the configured expected votes (ExpectedVotes, or
//     the sum of all voters' votes), raised to the votes present if these
//     are higher, and never lowered again except by last_man_standing or a
//     configuration change.
//  2. With wait_for_all, no quorum until every voter has been alive at the
//     same time once since the node started (see State.WaitForAllDone).
//  3. Quorate when the votes present reach floor(expected/2)+1; with
//     two_node, 1.
//  4. With last_man_standing, once the membership has been unchanged for
//     the window and is quorate, expected votes drop to the votes present,
//     but never below 2 (votequorum needs auto_tie_breaker, which Vigil
//     does not have, to go down to 1).
func Compute(opts Options, voters []Voter, alive []string, st State, now time.Duration) (Result, State) {
	if err := opts.Validate(voters); err != nil {
		return Result{Reason: "invalid configuration: " + err.Error()}, st
	}

	byName := make(map[string]int, len(voters))
	for _, v := range voters {
		byName[v.Name] = v.VoteCount()
	}
	var members []string
	present := 0
	for _, name := range alive {
		votes, ok := byName[name]
		if !ok || slices.Contains(members, name) {
			continue
		}
		members = append(members, name)
		present += votes
	}
	slices.Sort(members)

	fresh := st.Configured == 0
	if cfg := configuredExpected(opts, voters); st.Configured != cfg {
		st.Configured, st.Expected = cfg, cfg
	}
	if fresh || !slices.Equal(st.Members, members) {
		st.Members, st.Since = members, now
	}
	st.Expected = max(st.Expected, present)

	if len(members) == len(voters) {
		st.WaitForAllDone = true
	}
	res := Result{TotalVotes: present, ExpectedVotes: st.Expected}
	if opts.WaitForAllOn() && !st.WaitForAllDone {
		res.Needed = needed(opts, st.Expected)
		res.Reason = fmt.Sprintf("waiting for all nodes (wait_for_all): seen %s of %s",
			joinOrNone(members), joinOrNone(sortedNames(voters)))
		return res, st
	}

	if opts.LastManStanding && present < st.Expected && present >= needed(opts, st.Expected) {
		if deadline := st.Since + opts.Window(); now >= deadline {
			st.Expected = max(present, 2)
		} else {
			res.RecheckAt = deadline
		}
	}

	res.ExpectedVotes = st.Expected
	res.Needed = needed(opts, st.Expected)
	res.Quorate = present >= res.Needed
	res.Reason = fmt.Sprintf("%d of %d votes, %d needed", present, st.Expected, res.Needed)
	switch {
	case opts.TwoNode:
		res.Reason += " (two_node)"
	case st.Expected < st.Configured:
		res.Reason += fmt.Sprintf(" (expected votes lowered from %d by last_man_standing)", st.Configured)
	}
	if res.RecheckAt != 0 {
		res.Reason += fmt.Sprintf("; last_man_standing lowers expected votes to %d in %s if membership holds",
			max(present, 2), res.RecheckAt-now)
	}
	return res, st
}

func needed(o Options, expected int) int {
	if o.TwoNode {
		return 1
	}
	return Needed(expected)
}

func sortedNames(voters []Voter) []string {
	names := make([]string, len(voters))
	for i, v := range voters {
		names[i] = v.Name
	}
	slices.Sort(names)
	return names
}

func joinOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// Warnings returns the startup warnings for a valid configuration: quorum
// modes that are legal but unsafe or pointless. hasFencing reports whether a
// fence device can power off a lost node; a watchdog alone does not count
// here, because with two_node both halves of a split keep quorum and so
// neither resets itself.
func Warnings(opts Options, voters []Voter, hasFencing bool) []string {
	var out []string
	nodes, witnessVotes := 0, 0
	for _, v := range voters {
		if v.Witness {
			witnessVotes += v.VoteCount()
		} else {
			nodes++
		}
	}
	total := totalVotes(voters)
	if opts.TwoNode && !hasFencing {
		out = append(out, "two_node without fencing is unsafe: after a network split both nodes keep quorum and both may run the same resources; configure a fence device (the first node to fence the other survives) or replace two_node with a witness")
	}
	if opts.TwoNode && !opts.WaitForAllOn() {
		out = append(out, "two_node with wait_for_all off: a node that starts alone (after a power loss, or while the network is down) becomes quorate by itself and may fence its peer or start what the peer runs; leave wait_for_all on")
	}
	if !opts.TwoNode && nodes == 2 && witnessVotes == 0 && total == 2 {
		out = append(out, "two nodes and no witness: losing either node loses quorum and stops every resource; add a witness (preferred) or set two_node with fencing")
	}
	if opts.LastManStanding && !opts.WaitForAllOn() {
		out = append(out, "last_man_standing without wait_for_all is unsafe: after expected votes were lowered, the nodes that left can restart in a separate partition and be quorate on their own; turn wait_for_all on")
	}
	if opts.LastManStanding && opts.TwoNode {
		out = append(out, "last_man_standing has no effect with two_node: it never lowers expected votes below 2")
	}
	if witnessVotes > 0 && witnessVotes >= Needed(configuredExpected(opts, voters)) {
		out = append(out, fmt.Sprintf("witnesses hold %d of %d votes, enough for quorum on their own: a split that leaves the witnesses apart from the nodes stops every resource", witnessVotes, total))
	}
	return out
}
