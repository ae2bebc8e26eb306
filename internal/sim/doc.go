// Package sim is Vigil's deterministic whole-cluster simulation, in the
// FoundationDB / TigerBeetle style and in the spirit of etcd raft's rafttest:
// one goroutine, no real clock, no sockets, every choice drawn from one
// seeded PCG source, so that a seed replays bit for bit.
//
// A Cluster is N nodes (default 5). Each node is the real pure cores the
// agent runs: a store.Core over a store.MemDisk (raft ticks every 100 ms
// at a per-process phase; ElectionTick 10 by default, HeartbeatTick 1), a
// membership.Machine ticked every 10 ms simulated step (Interval 200 ms,
// NodeTimeout 1 s) whose heartbeats go through the real codec with a test
// key, and quorum.Compute over the Machine's view. A simulated network with two links carries raft messages
// and heartbeats with seeded delay, loss, duplication, reordering,
// heartbeat corruption, partitions and link cuts; nodes crash (keeping only
// what their disk's Save returned) and restart with a new boot ID; clients
// propose writes to random nodes. A write is acknowledged exactly when the
// agent would acknowledge it: when its Result comes back, without error,
// from the proposing node's own Core.Process.
//
// The invariants, checked while the simulation runs and at its end:
//
//  1. At most one raft leader per term, ever; and at most one DC (a leader
//     that is quorate in its own membership view) per term.
//  2. After a final heal and quiet time, every acknowledged write is on
//     every node with its value, and all nodes' states are Equal.
//  3. The applied state never goes back on a node (a restart resumes at
//     exactly what its disk holds) and never diverges: each raft index
//     wrote the same key and value everywhere, and the state after each
//     applied index has the same fingerprint on every node.
//  4. A node that has heard from no majority for NodeTimeout + 100 ms is
//     not quorate; a corrupted heartbeat is never accepted.
//
// Run(seed, opts) is the randomized runner; it returns a Report (counts and
// the tail of the event trace) and a *Violation describing the first broken
// invariant with its simulated time and seed. testdata/*.txt holds scripted
// stories (nodes, partition, crash, restart, propose, stabilize, check) run
// by TestScripts.
//
// Options.AgentElections adds the agent's election policy on top of raft's
// timeouts (internal/agent: membership declaring the leader lost makes the
// survivors ForgetLeader and campaign staggered by raft ID; a quorate voter
// without a leader campaigns); TestSimAgentElections runs it with the
// agent's ElectionTick of 20.
//
// TestSimSeeds runs seeds 1..VIGIL_SIM_SEEDS (default 200, as `make test`;
// 20 with -short); `make test-long` runs 5000. A failing seed replays alone
// with
//
//	go test ./internal/sim -run 'TestSimSeeds/seed=NNN$' -v
//
// NB: etcd raft draws its randomized election timeouts from
// crypto/rand.Reader. To replay seeds, a Cluster swaps crypto/rand.Reader
// for a reader seeded from the seed while it runs and restores it after;
// Clusters are therefore serialized by a package mutex, and nothing else in
// the process should draw from crypto/rand.Reader while one runs. This
// package is for tests only.
package sim
