// Package agents runs resource agents: one interface, [Agent], for every
// resource class Vigil knows.
//
// Classes:
//
//   - ocf: real OCF resource agents, run unmodified from
//     <OCFRoot>/resource.d/<provider>/<type> (Debian's resource-agents
//     installs them under /usr/lib/ocf). Spec "ocf:heartbeat:Dummy".
//   - vigil:dummy: a built-in agent that keeps its state in a file, for tests.
//   - vigil:process: a built-in agent that supervises one long-running command.
//   - vigil:vm: a KVM/QEMU virtual machine over QMP, with a disk lease on its
//     datastore, QEMU events reported at once ([Notifier]), a guest's own
//     shutdown reported as [Result.StoppedByGuest], and live migration
//     (see vmAgent for the contract a controller follows).
//
// The node executor gets an [Agent] from a [Registry] and calls
// [Agent.Exec] with a [Request]; it gets back a [Result] whose [Code] is an
// OCF exit code or one of Vigil's own (timeout, canceled, agent not found).
// [Code.Recovery] says what Pacemaker would do with such a failure: soft
// (restart here or move), hard (ban from this node), fatal (no node can run
// it). Whether a code is a failure at all depends on what the caller expected
// (7 is the right answer to a probe of a stopped resource, and a failure for
// a recurring monitor); that judgment belongs to the executor.
//
// Every agent's start and stop are idempotent, and a monitor of a resource
// that was never started returns [CodeNotRunning], as the OCF specification
// requires.
//
// Per-node state lives under [Options.StateDir] so that several lab nodes on
// one machine do not see each other's resources: the built-in agents keep
// their files there, and OCF agents get HA_RSCTMP and HA_VARRUN pointing
// into it.
package agents
