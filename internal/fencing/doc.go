// Package fencing puts lost nodes out of action for certain, with fence
// agents that speak the fence-agents protocol: Debian's fence-agents run
// unmodified, and the lab's own fence_vigil_lab (package labagent).
//
// The pure part configures and plans: a [Device] (an agent, its
// parameters and the nodes it can fence), a [Topology] (levels of devices
// per node) and [Plan], which turns both into the levels to try for one
// node. The thin shell, [Runner], runs agents: every invocation gets its
// options as key=value lines on stdin (never on the command line, where
// passwords would show), runs in a process group of its own, and is killed
// with that group at the device's timeout. [Runner.Fence] applies the
// fencing rules (delay, levels, confirmation by status, retries); its doc
// comment states them, and the [Outcome] it returns is what the fencing
// history records.
//
// The protocol, as fence-agents' fencing.py implements it: options come one
// per line as name=value on stdin ('-' and '_' alike; unknown ones are
// ignored with a warning); action is one of on, off, reboot, status,
// monitor, list, metadata, validate-all; the plug (outlet, VM, node) is
// plug= or its older spelling port=; exit 0 is success, except for status,
// where 0 means on, 2 means off and anything else is an error.
//
// Who decides to fence, records the history and recovers resources is the
// controller's business; this package only answers "is the node off now?".
package fencing
