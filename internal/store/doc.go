// Package store is Vigil's replicated configuration and status: a small
// versioned key/value document store plus the cluster membership, kept
// identical on every node by etcd raft (go.etcd.io/raft/v3).
//
// Layers, pure core first (see STYLE.md):
//
//   - State (state.go) is the deterministic state machine: keys with
//     versions, members, retired raft IDs, and the epoch. Commands are Put,
//     Delete, Txn (optionally compared against the epoch), AddNode,
//     RemoveNode and Promote. Keys under "status/" are status, not
//     configuration, and do not bump the epoch. Records carry FormatVersion;
//     a newer one is refused, never guessed.
//   - Disk (disk.go) stores the raft log, hard state, snapshot and the
//     applied state. Each Save is one atomic write (one bbolt transaction in
//     BoltDisk), holding the new log entries together with the state they
//     produced and its applied index, so replay after a crash starts exactly
//     past what is applied (etcd's consistent index). MemDisk serves tests
//     and the simulator.
//   - Core (core.go) is the synchronous node, like raft's RawNode: Tick,
//     Step, Propose, Process. No goroutine, clock or socket.
//   - Node (node.go) is the shell: one goroutine, a ticker, an inbox, a
//     Transport, and the wait registry behind Propose. LocalNetwork
//     connects Nodes in one process.
//
// # Results reach the proposer's own node
//
// Every entry carries the proposing node's raft ID and a wait id. Raft
// forwards a follower's proposal to the leader (MsgProp); once committed,
// every node applies it, and the node named in it wakes its waiter. So
// Node.Propose returns only after commit and local apply, wherever it was
// called, and a read on that node right after sees the write.
//
// A proposal can be lost without a trace (leader change before commit,
// partition, raft dropping a second concurrent conf change proposed on a
// follower, or the entry being covered by a snapshot installed on the
// proposer). The caller then sees ErrTimeout: the write may or may not have
// happened, and re-reading tells which.
//
// # Membership
//
// AddNode, RemoveNode and Promote travel as one ConfChangeV2 entry whose
// Context holds the command, so the state change and the raft change apply
// together or not at all; the state machine checks first and raft is told
// only about accepted changes. Only simple (one node) changes are made, so
// the members alone determine raft's ConfState, and Core restarts raft at
// the applied index with that ConfState. A new node is added as a learner,
// started on an empty disk, receives a snapshot (one is taken after every
// membership change, so it lists the newcomer), and is promoted by the agent
// (see TargetVoters). Raft IDs are never reused: RemoveNode retires the ID.
//
// NB: two voters cannot commit with one of them down (a majority of 2 is 2).
// A two-node site needs a witness as third voter; raft itself has no
// two_node mode.
package store
