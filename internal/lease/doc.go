// Package lease is the node lease that makes watchdog self-fencing safe
// without agreed membership: the Holder (on every node) says whether the
// node may keep petting its watchdog, and the Judge (on the DC) says when a
// silent node is proven to have been reset by it. Both are pure: no clock,
// no I/O; time comes in as monotonic offsets (time.Duration), each side on
// its own clock, and no two clocks are ever compared.
//
// # The Holder: a lease renewed by echoes
//
// Every heartbeat from peer P to node X echoes X's own send time of the
// newest heartbeat P got from X (membership.Heartbeat.EchoTime, on X's
// clock). An echo e from P proves that P heard X at or after X's instant e.
// X holds the lease until
//
//	(the k-th newest echo among the voters) + LeaseDuration
//
// where k is the number of other voters that make a majority together with
// X (a majority without X when X does not vote). Everything here is on X's
// clock: no clock sync is needed.
//
// # The Judge: proof that the lease ended
//
// Every node piggybacks on its heartbeat Info a LossReport: the peers it
// has not heard for a while, each with its silence, measured at AsOf on the
// reporter's clock (see MemberSet for the wire format). The DC feeds the
// reports it receives, and its own view, to the Judge, with two facts it
// can trust about each report: the report was sent after SentAfter on the
// DC's clock (the EchoTime of the heartbeat that carried it: the reporter
// had received the DC's heartbeat sent then), and it was received at now.
// Age (the heartbeat's SendTime minus the report's AsOf, on the reporter's
// clock) says how much older the measurement is than the send.
//
// A report from P, measured at real instant c, with silence σ, says P
// received nothing from X during (c-σ, c]. So every echo X holds from P at
// any instant τ ≤ c is the send time of a heartbeat P received by c-σ, and
// for τ ≥ c-σ+LeaseDuration that echo no longer supports the lease. P's
// report thus certifies "P's echoes are stale" over the interval
// [c-σ+LeaseDuration, c]. If a majority Q of the voters (X excluded, the DC
// included) have certified intervals with a common instant τ, then at τ
// every majority that X could count (X plus k peers) contains a member of Q
// whose echo is stale, so the k-th newest echo is stale too: X's lease was
// not valid at τ. The Judge cannot see c, but it bounds it on its own
// clock: SentAfter - Age ≤ c ≤ now (with drift applied), which is why a
// delayed or stale report can only make it wait longer, never conclude
// wrongly. The DC itself must be in Q (it never fences a node it hears),
// so τ is also after the DC last heard X.
//
// The confirmation time is the Judge's now when that first holds. The node
// is then treated as self-fenced at
//
//	confirmation + ResetBound = confirmation + 2*WatchdogTimeout*(1+ρ)/(1-ρ) + Margin
//
// X's watchdog fires at most WatchdogTimeout after its last pet, and X's
// agent pets only after checking that the lease is valid. A stall between
// that check and the pet itself (SIGSTOP, a long GC or swap pause) can land
// one last pet up to WatchdogTimeout late: not more, since a longer stall
// lets the previous pet expire first. Hence twice the watchdog timeout.
//
// A confirmation stands until the DC's own report no longer lists the node
// (the DC heard it again) or the voters change.
//
// # Assumptions
//
//   - Clock rates are bounded: every clock (the monotonic clocks of all
//     nodes and the watchdog's own timer) runs at a rate within
//     [1-Drift, 1+Drift] of real time. There is no bound on offsets or on
//     message delays: a delayed report only delays the verdict.
//   - The watchdog works: once not petted for WatchdogTimeout, it resets
//     the node (or the process backend kills the agent's process group)
//     within Margin, and nothing outlives it that could act for the node.
//   - The agent pets only while Holder.Valid (or while it runs no resource),
//     from one goroutine, checking before each pet, and once the lease has
//     lapsed with a resource active it never pets again (self-fencing is
//     sticky). A node that lapsed must rejoin like a fenced node before it
//     starts anything.
//   - Holder and Judge use the same voter set. Voter changes go through the
//     replicated store one at a time; the MemberSet hash makes a report
//     built against another member list undecodable rather than misread.
//   - Reports are authenticated (the heartbeat MAC) and each Holder lives
//     for one incarnation of its node: echoes are counted only when the
//     heartbeat's ToBoot names this incarnation.
//
// The membership node timeout need not equal LeaseDuration: the reporters
// send their silences, and the Judge does the arithmetic. Reporting only
// peers that are lost (silent for node_timeout ≥ LeaseDuration) keeps the
// reports small and loses nothing, since a shorter silence cannot certify
// anything.
package lease
