// Package datastore is Vigil's use of shared storage: a health check of
// each datastore, per-node heartbeats (a second liveness channel beside
// the network) and per-VM disk leases (the storage-level split-brain
// guard: "a stale node can hold an IP for a while; it cannot write a disk
// that another node owns").
//
// A datastore is a folder every node mounts (NFS, a cluster filesystem, or
// in labs a plain shared folder) where VM disk images live. Vigil keeps its
// files under .vigil/ in its root:
//
//	.vigil/datastore        marker: cluster and datastore name (Init)
//	.vigil/hb/<node>        heartbeat slot of each node (Heartbeater)
//	.vigil/leases/<vm>      disk lease of each resource (Acquire)
//	.vigil/probe/           scratch files of Check
//
// Every file is a small framed record (a text header with kind, format
// version, CRC-32C and length, then JSON) written to a temporary file,
// synced and renamed into place, so a reader sees a whole record or a
// damaged one, never a plausible mix. Nothing here calls a blocking
// filesystem function without a deadline: an NFS server that goes away
// blocks IO in the kernel, so every read and write runs in a goroutine
// that the caller abandons at its deadline (see FS and ErrTimeout).
//
// The decisions are pure and separately tested: decide (may an acquirer
// take a lease, given its reads), extend (does a renewal count) and
// HeartbeatJudge (is a node beating, has it released a resource). The
// rest is thin IO around them.
//
// # Heartbeats
//
// Each node's Heartbeater rewrites its slot every interval with a counter
// that only grows, its state (alive or isolated) and the resources it has
// stopped after losing quorum. The DC reads all slots (Reader) and feeds
// them to a HeartbeatJudge with its own clock: a node is beating when the
// DC saw its counter move within a window on the DC's clock. The writer's
// timestamp is for display; comparing two nodes' clocks would make the
// verdict depend on their offset. This tells an isolated node (no network,
// still beating on storage, stopping its resources and saying so) from a
// dead one, so recovery of what it released can start before the node
// lease arithmetic runs out.
//
// # Disk leases: the rules
//
// A disk lease is a delta lease (Chockler and Malkhi's light-weight
// leases; sanlock's delta leases): one file per resource naming its holder
// (node and incarnation) and a counter. With L = LeaseTime, R = Renew,
// M = Margin and H = L−M:
//
//  1. Acquire takes the lease at once if the file is absent, released,
//     handed over to the acquirer's node (a live migration's target:
//     Lease.HandOver), or names the acquirer itself in a confirmed (not
//     Tentative) record.
//     Otherwise it re-reads the file and takes it only if the bytes stood
//     still for L on the acquirer's own monotonic clock, from the end of
//     its first read to the start of its last; any change means a live
//     holder and the acquisition fails. A damaged file counts as a record
//     of an unknown holder, never as free. The datastore marker must be
//     there: on an unmounted mountpoint every lease would look absent.
//  2. The holder renews every R < L/3 with a read-check-write cycle, and
//     the lease is valid until s+H, s being the holder's clock reading
//     when the last renewal that counted began. A renewal counts only if
//     it completed before the lease lapsed (extend). Reaching the end of
//     validity without one is a loss, reported on Lost at that instant;
//     so is finding the file naming someone else, or gone.
//  3. Every write increments the counter, whoever writes it, so the same
//     bytes are never seen twice across a change.
//  4. A taker writes a Tentative record, which must complete within
//     3/4 Settle of the start of the read that allowed it; it then waits
//     Settle and reads again, and holds the lease only if its own record
//     is still there. Its first renewal clears Tentative.
//  5. Release lets an ongoing renewal finish, then writes Released only
//     while the lease is still valid and the file still holds this
//     holder's last record; HandOver does the same with a record naming
//     the one node that may take it at once (for anyone else it is still
//     held, and must stand still); Close cuts renewing short and writes
//     nothing.
//  6. One writer's writes to one file never overtake each other in this
//     process: a write abandoned at its deadline still runs, and the next
//     write of the same holder waits for it (writeQueue).
//
// # Why rule 1 is safe
//
// Suppose an acquirer B takes a lease held by A because the file stood
// still from e (end of B's first read) to b (start of its last), b−e ≥ L
// on B's clock. Every write increments the counter, so no write landed in
// [e, b]. Consider A's validity. A renewal whose write landed before e
// began before e (A reads its clock before writing), so it makes A valid
// until at most e+H. A renewal whose write landed after b completed after
// b; it counts only if it completed while A was still valid, and A's
// validity then rested on renewals that landed before e, so it ended by
// e+H < b: it does not count. By induction no renewal makes A valid past
// e+H. A reports the loss at its end of validity and its caller kills QEMU
// within K, so A's disk writes stopped by e+H+K, before b, as long as
// H+K fits in L across clocks: with every clock's rate within 1±ρ of
// real time, H on A's clock lasts at most H/(1−ρ) and L on B's at least
// L/(1+ρ), so M must cover K plus about 2ρL. Nothing compares A's clock
// with B's: each measures its own interval, which is why a clock step,
// NTP or a different time zone cannot break it.
//
// R < L/3 with H ≥ 2R makes a live holder's counter move several times in
// any window of length L, so a healthy holder is never taken from; and if
// its renewals fail for H it gives up M before anyone could take over.
//
// # Why rule 4 is safe
//
// Two acquirers A and B may both find the lease free (absent, released or
// expired) and both write. Say A's write landed first, at a. B's deciding
// read took effect before a (else B would have seen A's record, a change),
// and B's write completed within 3/4 Settle of that read's start: it
// landed before a+3/4 Settle. A's check read starts at least Settle after
// A's write completed, after a: it sees B's record (or a later one), and A
// backs off with a *HeldError. Only the last writer can find its own
// record, so at most one acquirer wins. Across clocks, 3/4 Settle on B's
// clock lasts at most 3S/4(1−ρ) and Settle on A's at least S/(1+ρ), so the
// bound holds for any ρ ≤ 1/7.
//
// A write that misses its 3/4 Settle deadline makes the acquisition fail
// with ErrSlow, but the write may still land, even after the winner's
// check, over the winner's record. The winner then loses the lease at its
// next renewal (safe: it stops). The loser's record stays in the file,
// unrenewed, and is Tentative, so not even the loser itself may take it
// as "mine": like any record it must stand still for L first, by which
// time the winner has stopped (rule 1's argument, with the loser's late
// write in the role of the acquirer's first read).
//
// # Assumptions
//
//   - The process that holds a Lease kills QEMU within K (inside Margin)
//     of a loss on Lost, and uses the disk only while it holds the Lease
//     (after Acquire returned, before Release or a loss). If the agent itself may be frozen (SIGSTOP, swap
//     storm) while QEMU runs, only the watchdog can stop QEMU: the agent
//     must stop petting early enough for the reset to land before
//     ValidUntil() + Margin − 2ρL.
//   - IO a node issued lands within Margin of being issued, or the node is
//     reset first. A hard NFS mount retries a request for as long as the
//     server is away and can land it much later; that holds for the VM's
//     own disk writes too, so it is a property the whole system needs (a
//     node whose datastore IO hangs with a lease held should be reset by
//     the watchdog). For a lease, a late renewal or take write only makes
//     someone lose a lease (safe); a late Released write could free a
//     lease taken meanwhile, which is why Release writes only while valid.
//   - Reads are not served from a stale cache: every read opens the file
//     anew (NFS close-to-open consistency; do not mount with nocto, and
//     keep attribute caching short, e.g. actimeo ≤ Poll, for datastores).
//   - Lease files are removed only by Vigil (an absent file is free), and
//     one Lease per resource exists per incarnation (a file naming me is
//     mine).
//   - A fenced holder (AcquireFenced) is off: its writes can no longer
//     land. A holder whose record says KeepOnIsolation may keep using the
//     disk while cut off from its cluster, so a proof from its watchdog's
//     timing alone does not make it off (it pets its watchdog while the
//     lease outlasts a reset): callers pass AcquireFenced only a holder
//     powered off by a fence device or an operator, and otherwise wait
//     for the lease to stand still.
package datastore
