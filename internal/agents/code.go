package agents

import "strconv"

// Code is the outcome of an agent action: one of the OCF exit codes, or one
// of Vigil's own codes, which lie outside the range of process exit statuses
// (0..255) so that they can never be confused with what a script returned.
type Code int

// The OCF resource agent exit codes (OCF Resource Agent API 1.1).
const (
	CodeOK               Code = 0   // OCF_SUCCESS
	CodeErrGeneric       Code = 1   // OCF_ERR_GENERIC
	CodeErrArgs          Code = 2   // OCF_ERR_ARGS
	CodeErrUnimplemented Code = 3   // OCF_ERR_UNIMPLEMENTED
	CodeErrPerm          Code = 4   // OCF_ERR_PERM
	CodeErrInstalled     Code = 5   // OCF_ERR_INSTALLED
	CodeErrConfigured    Code = 6   // OCF_ERR_CONFIGURED
	CodeNotRunning       Code = 7   // OCF_NOT_RUNNING
	CodeRunningPromoted  Code = 8   // OCF_RUNNING_PROMOTED (formerly OCF_RUNNING_MASTER)
	CodeFailedPromoted   Code = 9   // OCF_FAILED_PROMOTED (formerly OCF_FAILED_MASTER)
	CodeDegraded         Code = 190 // OCF_DEGRADED: running, but something is wrong
	CodeDegradedPromoted Code = 191 // OCF_DEGRADED_PROMOTED
)

// Vigil's own codes. They are never exit statuses of an agent.
const (
	// CodeTimeout: the action did not finish within Request.Timeout; the
	// agent's whole process group was killed.
	CodeTimeout Code = 1000
	// CodeCanceled: the caller's context was canceled before the action
	// finished; the agent's whole process group was killed. The resource
	// state is unknown.
	CodeCanceled Code = 1001
	// CodeNotFound: the agent itself is missing (no such OCF script, or
	// it is not executable).
	CodeNotFound Code = 1002
)

var codeNames = map[Code]string{
	CodeOK:               "OK",
	CodeErrGeneric:       "ERR_GENERIC",
	CodeErrArgs:          "ERR_ARGS",
	CodeErrUnimplemented: "ERR_UNIMPLEMENTED",
	CodeErrPerm:          "ERR_PERM",
	CodeErrInstalled:     "ERR_INSTALLED",
	CodeErrConfigured:    "ERR_CONFIGURED",
	CodeNotRunning:       "NOT_RUNNING",
	CodeRunningPromoted:  "RUNNING_PROMOTED",
	CodeFailedPromoted:   "FAILED_PROMOTED",
	CodeDegraded:         "DEGRADED",
	CodeDegradedPromoted: "DEGRADED_PROMOTED",
	CodeTimeout:          "TIMEOUT",
	CodeCanceled:         "CANCELED",
	CodeNotFound:         "NOT_FOUND",
}

// String returns the OCF name without its OCF_ prefix ("NOT_RUNNING"), or
// "Code(n)" for a code no specification names.
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return "Code(" + strconv.Itoa(int(c)) + ")"
}

// Recovery is the kind of recovery a failed action calls for, after
// Pacemaker Explained, "How are OCF Return Codes Interpreted?".
type Recovery int

const (
	// RecoveryNone: the code is not a failure in itself (only Vigil's
	// CodeCanceled, whose outcome is unknown: probe again).
	RecoveryNone Recovery = iota
	// RecoverySoft: a transient error; restart the resource in place, or
	// move it once migration-threshold is reached.
	RecoverySoft
	// RecoveryHard: a non-transient error specific to this node; move the
	// resource and do not retry it here.
	RecoveryHard
	// RecoveryFatal: a non-transient error common to every node (a bad
	// configuration); stop the resource and start it nowhere.
	RecoveryFatal
)

// String returns "none", "soft", "hard" or "fatal".
func (r Recovery) String() string {
	switch r {
	case RecoveryNone:
		return "none"
	case RecoverySoft:
		return "soft"
	case RecoveryHard:
		return "hard"
	case RecoveryFatal:
		return "fatal"
	}
	return "Recovery(" + strconv.Itoa(int(r)) + ")"
}

// Recovery returns the recovery Pacemaker performs when an action returns c
// and c is not the result the caller expected. Success codes (0, 7, 8, 190,
// 191) are "soft if unexpected". ERR_ARGS, ERR_UNIMPLEMENTED, ERR_PERM and
// ERR_INSTALLED are hard (this node); only ERR_CONFIGURED is fatal.
// A timeout is soft, like Pacemaker's (NB: a timed-out stop is not
// recoverable by a restart: the resource's state is unknown and the node
// must be fenced; that is the executor's and controller's call). A missing
// agent is hard, like ERR_INSTALLED. Codes no specification names are soft,
// as Pacemaker treats them as a generic error.
//
// NB: Pacemaker treats ERR_INSTALLED (and a missing agent) returned by a
// probe as "not running on this node", not as a failure.
func (c Code) Recovery() Recovery {
	switch c {
	case CodeErrArgs, CodeErrUnimplemented, CodeErrPerm, CodeErrInstalled, CodeNotFound:
		return RecoveryHard
	case CodeErrConfigured:
		return RecoveryFatal
	case CodeCanceled:
		return RecoveryNone
	}
	return RecoverySoft
}

// Running reports whether c says the resource is active on the node
// (OK, RUNNING_PROMOTED, DEGRADED, DEGRADED_PROMOTED, and FAILED_PROMOTED,
// which is active but failed) when returned by a monitor.
func (c Code) Running() bool {
	switch c {
	case CodeOK, CodeRunningPromoted, CodeFailedPromoted, CodeDegraded, CodeDegradedPromoted:
		return true
	}
	return false
}
