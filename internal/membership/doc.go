// Package membership tells which nodes of the cluster are alive, from
// heartbeats sent all-to-all over 1 to MaxLinks redundant network links.
//
// It has three parts:
//
//   - machine.go: Machine, the pure core. It owns no goroutine, socket or
//     clock (in the style of etcd raft's RawNode): time comes in as a
//     monotonic offset, packets come in through Receive, heartbeats to send
//     come out of Tick, and state transitions come out of Changes. This lets
//     tests and the simulator drive whole clusters under exact, simulated
//     time.
//   - codec.go: the versioned, HMAC-SHA256 authenticated wire format.
//   - udp.go: Service, the shell that binds one UDP socket per link, owns the
//     real clock and feeds the Machine.
//
// A driver of the Machine (the Service, or a simulator) runs this loop:
//
//  1. Every fraction of Config.Interval, call Tick(now) and send each
//     returned Outgoing (encoded with Encode) from the socket of its link to
//     its address.
//  2. For every packet read on link i, Decode it and hand the result to
//     Receive(now, i, msg). Receive says why it dropped a packet, for
//     counters.
//  3. After each Tick and Receive, drain Changes and act on them (a node
//     lost, a link down, a restart) before the next step, so nothing waits
//     for a poll.
//
// Liveness rules, in short: a link is down after Config.LinkTimeout of
// silence on it; a node is suspect after Config.SuspectTimeout of silence on
// all of its links and lost after Config.NodeTimeout of silence on all of its
// links, never earlier; a node never heard from since start is unknown, which
// is not a member. See NodeStatus.
package membership
