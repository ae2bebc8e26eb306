// Package qemu drives QEMU processes for the vm agent: it builds the command
// line from a [Spec], starts QEMU as a child that survives the agent, talks
// to it over QMP (package qmp), re-attaches after an agent restart, stops it
// (politely, then firmly, then with SIGKILL) and live-migrates it.
//
// Every VM owns a run directory ([Paths]): the QMP socket, the serial
// console socket and its log, the pid file and QEMU's own stdout/stderr log.
// The directory is the VM's identity on this node: [Attach] finds a running
// QEMU again by its pid file, and refuses a pid that the kernel has since
// given to another process.
//
// Why QEMU stays in the caller's process group, without setsid, -daemonize
// or a parent-death signal: an agent restart must not take its VMs down
// (promise 3, back fast), while the lab simulates a node's power loss by
// killing the node's whole process group, which must take them down.
//
// QEMU's image locking stays on (the default): a second QEMU opening a disk
// for writing fails to start, and [Start] reports that as [ErrImageLocked].
// It is the last guard of promise 1 (never twice) on one host or on shared
// storage that supports OFD locks.
package qemu
