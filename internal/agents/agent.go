package agents

import (
	"context"
	"errors"
	"time"
)

// Action names understood by agents.
const (
	ActionStart       = "start"
	ActionStop        = "stop"
	ActionMonitor     = "monitor"
	ActionMigrateTo   = "migrate_to"
	ActionMigrateFrom = "migrate_from"
	ActionMetaData    = "meta-data"
	ActionValidateAll = "validate-all"
	ActionPromote     = "promote"
	ActionDemote      = "demote"
	ActionNotify      = "notify"
	ActionReload      = "reload"
)

// DefaultTimeout applies when Request.Timeout is zero (Pacemaker's default
// operation timeout).
const DefaultTimeout = 20 * time.Second

// MaxOutput bounds Result.Output: only the last MaxOutput bytes of what an
// action wrote are kept.
const MaxOutput = 8 << 10

// Sentinel errors. Errors returned by this package wrap them.
var (
	// ErrUnknownAgent: a spec names a class, provider or type that does not
	// exist here.
	ErrUnknownAgent = errors.New("agents: unknown agent")
	// ErrBadSpec: a spec is not of the form class:provider:type or vigil:type.
	ErrBadSpec = errors.New("agents: bad agent spec")
	// ErrInvalidParams: parameters do not fit an agent's meta-data
	// (see *ValidationError).
	ErrInvalidParams = errors.New("agents: invalid parameters")
	// ErrBadResource: a resource id cannot name a file or environment value.
	ErrBadResource = errors.New("agents: bad resource id")
)

// Request is one action on one resource.
type Request struct {
	// Resource is the resource instance id (OCF_RESOURCE_INSTANCE).
	Resource string
	// Action is one of the Action* names.
	Action string
	// Params are the instance attributes, passed to OCF agents as
	// OCF_RESKEY_<name>.
	Params map[string]string
	// Meta are meta attributes, passed to OCF agents as
	// OCF_RESKEY_CRM_meta_<name> with dashes turned into underscores.
	// Interval, Timeout, Node and the Migrate fields override the
	// matching entries when set.
	Meta map[string]string
	// Interval is the recurring monitor's interval; 0 is a probe or a
	// one-shot action. Passed as OCF_RESKEY_CRM_meta_interval in ms.
	Interval time.Duration
	// Timeout is the hard limit: when it expires the agent's whole process
	// group gets SIGTERM, then SIGKILL after a grace, and the result is
	// CodeTimeout. Zero means DefaultTimeout.
	Timeout time.Duration
	// Node is this node's name (OCF_RESKEY_CRM_meta_on_node).
	Node string
	// MigrateSource and MigrateTarget name the nodes of a live migration
	// (OCF_RESKEY_CRM_meta_migrate_source/_target).
	MigrateSource, MigrateTarget string
	// DownNodes are the nodes the cluster has proven down (fenced, reset
	// by their watchdog, or confirmed off by an operator) in the
	// incarnation its records name, as this node's copy of the store says
	// when a start or migrate_from runs. vigil:vm takes a disk lease such
	// a node still names at once instead of waiting out its lease time.
	DownNodes []string
	// WatchdogDown are those of DownNodes proven down by their watchdog's
	// timing alone (no fence device, no operator): such a node may still
	// run what it was allowed to leave running while isolated.
	WatchdogDown []string
	// SelfStop marks a stop this node runs on its own because it lost
	// quorum (it is isolated or in a minority): agents with an isolation
	// response (vigil:vm's isolation_response) apply it.
	SelfStop bool
}

// IsolationKeeper is implemented by agents whose resources may be left
// running when their node is isolated (vigil:vm's leave-running): a node's
// self-stop leaves such an instance alone, and counts it as guarded (not
// reason to let its watchdog reset the node) until the time KeepsRunning
// returns, after which it must be gone or the node reset.
type IsolationKeeper interface {
	KeepsRunning(resource string) (guardedUntil time.Time, ok bool)
}

// SurvivorLister is implemented by agents whose resources outlive the
// agent's process (vigil:vm's QEMU): Survivors lists those running on this
// node, known to this process or not.
type SurvivorLister interface {
	Survivors() []string
}

// Result is the outcome of one action.
type Result struct {
	// Code is the agent's exit code, or CodeTimeout, CodeCanceled,
	// CodeNotFound.
	Code Code
	// Output is the tail (at most MaxOutput bytes) of what the action wrote
	// to stdout and stderr. For meta-data it is stdout alone, the whole
	// XML (up to 1 MiB), with stderr appended only on failure.
	Output string
	// Duration is how long the action took.
	Duration time.Duration
	// Err describes a problem running the agent (it could not be executed,
	// it was killed by a signal, bad request); nil when the agent ran and
	// exited, whatever its code.
	Err error
	// StoppedByGuest is set by a monitor that found the resource stopped
	// because what it runs ended itself on purpose (vigil:vm: the guest
	// powered itself off), with Code CodeNotRunning. It is the user's
	// wish, not a failure: the executor records the instance stopped
	// without raising its fail count and sets its target-role to Stopped,
	// so that it stays down (as vSphere HA does).
	StoppedByGuest bool
}

// Agent runs actions of one resource agent (one class:provider:type).
// Implementations are safe for concurrent use; running two actions on the
// same resource at once is the caller's mistake to avoid.
type Agent interface {
	// Exec runs one action and returns its result. It never blocks
	// past req.Timeout (plus a kill grace) or past ctx.
	Exec(ctx context.Context, req Request) Result
	// Metadata returns the agent's parsed meta-data. It is cached after
	// the first success.
	Metadata(ctx context.Context) (*Metadata, error)
}

// timeoutOf returns the request's effective timeout.
func timeoutOf(req Request) time.Duration {
	if req.Timeout > 0 {
		return req.Timeout
	}
	return DefaultTimeout
}

// errTimeout is the cause attached to the per-request deadline.
var errTimeout = errors.New("agents: action timed out")

// withTimeout derives the action's context; codeOf tells afterwards why it
// ended.
func withTimeout(ctx context.Context, req Request) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, timeoutOf(req), errTimeout)
}

// codeOf maps a done context to CodeTimeout (our deadline or the caller's)
// or CodeCanceled (the caller gave up).
func codeOf(ctx context.Context) Code {
	cause := context.Cause(ctx)
	if errors.Is(cause, errTimeout) || errors.Is(cause, context.DeadlineExceeded) {
		return CodeTimeout
	}
	return CodeCanceled
}

// validResource reports whether id can be used as a file name and an
// environment value.
func validResource(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 200 {
		return ErrBadResource
	}
	for _, r := range id {
		if r == '/' || r == 0 || r == '\n' {
			return ErrBadResource
		}
	}
	return nil
}
