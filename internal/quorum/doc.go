// Package quorum is Vigil's vote math, modelled on Corosync's votequorum(5):
// given the configured voters, the quorum options and the voters a node can
// currently see, it says whether that node's partition is quorate, that is
// whether it may run resources and change configuration.
//
// The package is pure: no clock (time arrives as now, a monotonic offset),
// no I/O, no goroutines. What must be remembered between calls (the highest
// expected votes, whether wait_for_all has been satisfied, when membership
// last changed) lives in State, which Compute takes and returns.
//
// Modes, as votequorum defines them (README.md says the same in operator
// words):
//
//   - Default: quorate with a strict majority of the expected votes,
//     floor(expected/2)+1. Expected votes are the sum of all voters' votes
//     (or Options.ExpectedVotes, which may only raise it) and only go up:
//     losing nodes never lowers the bar. Two disjoint partitions can
//     therefore never both be quorate.
//   - two_node: for exactly two nodes of one vote each, one vote is enough.
//     After a split both nodes are quorate and the fencing race decides who
//     survives: NB only safe with fencing. A witness is the better answer
//     and makes two_node unnecessary (Validate refuses both at once).
//     two_node turns wait_for_all on unless it is explicitly off.
//   - wait_for_all: after a node starts, no quorum until every voter has
//     been seen alive at the same time once; from then on, the normal rule.
//     A node that joins members already past their wait skips it (the
//     caller sets State.WaitForAllDone).
//   - last_man_standing: when the membership has been unchanged and quorate
//     for the window (default 10s), expected votes drop to the votes
//     present, so the cluster can lose nodes one after another down to 2.
//     It needs one vote per voter and does not go below 2 (votequorum goes
//     to 1 only with auto_tie_breaker, which Vigil does not implement). Use
//     it with wait_for_all: without it, nodes that left can come back in a
//     separate partition and be quorate on their own.
//   - witness: a voter that runs nothing; its votes count like a node's.
//     Two nodes and a witness make three votes: any two are quorate.
package quorum
