package model

import "time"

// Resource states on one node, as recorded by that node's executor (or by
// the DC once the node is proven down).
const (
	// StateStarted: the last start or monitor said it runs.
	StateStarted = "started"
	// StateStopped: it is not running there (stopped, or never started).
	StateStopped = "stopped"
	// StateFailed: it was meant to run and a start or monitor failed. It
	// may still be partly active, so it is stopped before it runs
	// anywhere else.
	StateFailed = "failed"
	// StateStopFailed: a stop failed. Vigil cannot know whether it still
	// runs: it is blocked until the node is fenced or an operator cleans
	// it up.
	StateStopFailed = "stop_failed"
	// StateMigrating: the target of a live migration, prepared to receive
	// the instance (vigil:vm: a QEMU waiting for the incoming migration,
	// running no guest, holding no disk lease). It is not a running copy,
	// but the DC's migrate step may hand the instance over to it at any
	// moment, so on a lost node it counts as possibly active (the instance
	// waits for fencing), and on a live node with no migration in progress
	// it is a leftover the DC stops.
	StateMigrating = "migrating"
	// StateUnknown is never recorded: the scheduler derives it for a
	// resource recorded on a node that is lost and not proven down.
	StateUnknown = "unknown"
)

// ResourceRecord is one resource instance's state on one node.
type ResourceRecord struct {
	V        int    `json:"v"`
	Resource string `json:"resource"` // instance id: "web", or "web:1" for a clone
	Node     string `json:"node"`
	State    string `json:"state"`
	// FailCount counts failures on this node since the last cleanup or
	// failure-timeout expiry.
	FailCount   int64     `json:"fail_count,omitempty"`
	LastFailure time.Time `json:"last_failure,omitzero"`
	// FailureReason is the last failure's operation and agent output
	// ("start: ... already answers ..."), kept through the stops that
	// follow it until a cleanup, so an operator can always see why.
	FailureReason string `json:"failure_reason,omitempty"`
	// LastOp describes the last operation that changed the state.
	LastOp  string    `json:"last_op,omitempty"`
	LastRC  int       `json:"last_rc"`
	Output  string    `json:"output,omitempty"`
	Changed time.Time `json:"changed,omitzero"`
}

// Task actions that the DC sends to executors.
const (
	ActStart       = "start"
	ActStop        = "stop"
	ActProbe       = "probe" // one-shot monitor: learn the state, change nothing
	ActMigrateTo   = "migrate_to"
	ActMigrateFrom = "migrate_from"
)

// Steps of a live migration driven by the DC (Task.Migration), in order.
const (
	// MigratePrepare: migrate_from on the target; the target gets ready to
	// receive and answers where to send (its output). Success leaves the
	// target's record StateMigrating.
	MigratePrepare = "prepare"
	// MigrateTransfer: migrate_to on the source. Success means the source
	// handed the instance over and runs nothing (record stopped); failure
	// means it still runs there (record left started).
	MigrateTransfer = "transfer"
	// MigrateFinish: migrate_from on the target, which then runs the
	// instance (record started).
	MigrateFinish = "finish"
	// MigrateAbort: a stop on the target after a failed step; it counts one
	// failure there, so migration-threshold bounds the retries.
	MigrateAbort = "abort"
	// MigrateCleanup: a stop on the target that counts no failure (the
	// migration was cut short by a DC change, not by the target).
	MigrateCleanup = "cleanup"
)

// Task is one action the DC asks one node's executor to run. Tasks are
// committed to the replicated store before any executor acts on them (the
// intent is durable before the action), and carry the DC's term: an
// executor refuses a task older than the newest DC term it knows.
type Task struct {
	V        int    `json:"v"`
	ID       string `json:"id"`
	Term     uint64 `json:"term"`
	Node     string `json:"node"`
	Action   string `json:"action"`
	Resource string `json:"resource"` // instance id
	// Config is the resource's configuration at the time of the task
	// (for a clone instance, the cloned resource's).
	Config        Resource `json:"config"`
	MigrateSource string   `json:"migrate_source,omitempty"`
	MigrateTarget string   `json:"migrate_target,omitempty"`
	// Migration is the step of a DC-driven live migration this task is
	// (MigratePrepare...); empty for every other task, including the
	// migrate_to/migrate_from of Pacemaker-style (OCF) migrations. The
	// executor records a step's outcome by what the step means, not by
	// the action alone: see executor.afterTask.
	Migration string    `json:"migration,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Issued    time.Time `json:"issued,omitzero"`
}

// TaskResult is an executor's answer to one task.
type TaskResult struct {
	V        int           `json:"v"`
	ID       string        `json:"id"`
	Term     uint64        `json:"term"`
	Node     string        `json:"node"`
	RC       int           `json:"rc"`
	OK       bool          `json:"ok"`
	Output   string        `json:"output,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Refused is set when the executor did not run the task (older term,
	// node in maintenance, unknown agent...) and says why.
	Refused string `json:"refused,omitempty"`
}

// NodeRecord is what the cluster records about a node beyond membership.
type NodeRecord struct {
	V    int    `json:"v"`
	Name string `json:"name"`
	// BootID identifies the agent incarnation that last reported.
	BootID uint64 `json:"boot_id,omitempty"`
	// Probed is the BootID whose probes of every resource are recorded:
	// the DC schedules nothing on a node before it has probed.
	Probed uint64 `json:"probed,omitempty"`
	// Left is set by a node that stopped its resources and left cleanly.
	Left bool `json:"left,omitempty"`
	// Down records proof that the node is down (fenced, or confirmed by
	// an operator); its resources may then be recovered elsewhere.
	Down *DownProof `json:"down,omitempty"`
	// Watchdog is set when the node's agent arms a watchdog.
	Watchdog *WatchdogInfo `json:"watchdog,omitempty"`
	// Features are the features needing a newer format that the node's
	// release supports (Feature...; its executor writes NodeFeatures()).
	// A feature is used only once every node advertises it ("Built to be
	// upgraded in place" in DESIGN.md); a release that predates this field
	// advertises nothing.
	Features []string `json:"features,omitempty"`
	// Version is the store version of the record as read (not stored):
	// writers guard on it so they act on what they read.
	Version uint64 `json:"-"`
	// Index is the store index of the write that made the record as read
	// (not stored): unlike Version it never repeats, even across a
	// deletion, so a node's claim tied to it names one exact record.
	Index uint64 `json:"-"`
}

// Features a node advertises in its NodeRecord.
const (
	// FeatureLiveMigration: the node records a prepared live-migration
	// target as StateMigrating and runs the DC-driven migration steps
	// (Task.Migration), and as DC it drives them from the migration
	// records. A release without it would record a prepared target as
	// started: two started records of one VM.
	FeatureLiveMigration = "live-migration"
)

// NodeFeatures returns the features this release supports, for its node
// record.
func NodeFeatures() []string { return []string{FeatureLiveMigration} }

// Supports reports whether the node advertises feature f.
func (r NodeRecord) Supports(f string) bool {
	for _, g := range r.Features {
		if g == f {
			return true
		}
	}
	return false
}

// Protection says what guarantees that a lost node is out of action, in
// `vigil status`: fence devices, a watchdog, or nothing (then its resources
// wait for `vigil fence confirm`).
const (
	ProtectFence    = "fence device"
	ProtectWatchdog = "watchdog"
	ProtectNone     = "none"
)

// WatchdogInfo is what a node's agent reports of its watchdog: the DC may
// treat the node as self-fenced once it has been lost long enough for this
// watchdog to have fired.
type WatchdogInfo struct {
	Backend string        `json:"backend"` // "device" (/dev/watchdog) or "process"
	Timeout time.Duration `json:"timeout_ns"`
	// Lease is the node lease the agent holds while it pets the watchdog.
	Lease time.Duration `json:"lease_ns"`
}

// FenceEvent is one entry of the replicated fencing history.
type FenceEvent struct {
	V      int    `json:"v"`
	ID     string `json:"id"`
	Target string `json:"target"`
	// By says who asked: "dc n1" or "operator via n2".
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	// How is "device" (fence agents) or "watchdog" (lease + watchdog time).
	How       string        `json:"how"`
	OK        bool          `json:"ok"`
	Level     int           `json:"level,omitempty"`
	Devices   []string      `json:"devices,omitempty"`
	Confirmed string        `json:"confirmed,omitempty"`
	Error     string        `json:"error,omitempty"`
	Attempts  []string      `json:"attempts,omitempty"`
	Started   time.Time     `json:"started"`
	Duration  time.Duration `json:"duration_ns"`
}

// FenceMonitor is the last health check of a fence device (its monitor
// action), run by the DC.
type FenceMonitor struct {
	V        int           `json:"v"`
	Device   string        `json:"device"`
	OK       bool          `json:"ok"`
	RC       int           `json:"rc"`
	Output   string        `json:"output,omitempty"`
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration_ns"`
}

// FenceRequest is an operator's `vigil fence NODE`, carried out by the DC.
type FenceRequest struct {
	V      int       `json:"v"`
	Target string    `json:"target"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// DownProof says how a node was proven down.
type DownProof struct {
	// How is "fenced" (with Device), "watchdog" (lost for lease +
	// watchdog time), or "confirmed" (by an operator).
	How    string    `json:"how"`
	Device string    `json:"device,omitempty"`
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at,omitzero"`
	// BootID is the incarnation proven down: a newer one is alive again.
	BootID uint64 `json:"boot_id,omitempty"`
}

// Node states for scheduling, derived by the DC from membership and the
// node records.
const (
	// NodeOnline: a member that has probed; it may run resources.
	NodeOnline = "online"
	// NodePending: a member that has not finished probing: nothing is
	// scheduled on it yet, but what it reports running counts as running.
	NodePending = "pending"
	// NodeOffline: not a member, and proven down or left cleanly: nothing
	// runs there.
	NodeOffline = "offline"
	// NodeLost: not a member and not proven down: whatever it ran is in an
	// unknown state, and is not started elsewhere.
	NodeLost = "lost"
)

// NodeStatus is one node as the scheduler sees it.
type NodeStatus struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Witness nodes vote but run nothing.
	Witness bool `json:"witness,omitempty"`
}

// Pending is a task issued and not yet answered: its resource is in
// motion on that node and must not be touched anywhere else.
type Pending struct {
	Resource string `json:"resource"`
	Node     string `json:"node"`
	Action   string `json:"action"`
}

// Snapshot is everything the scheduler decides from. It is plain data:
// the scheduler reads no clock and does no I/O, so the same snapshot always
// gives the same plan.
type Snapshot struct {
	Config    Config           `json:"config"`
	Nodes     []NodeStatus     `json:"nodes"`
	Resources []ResourceRecord `json:"resources"`
	Pending   []Pending        `json:"pending,omitempty"`
	// DatastoreHealth is each node's latest datastore checks, one record
	// per node that has reported (status/datastores/<node>). A VM is not
	// placed on a node whose latest check of one of its datastores failed;
	// a node with no record, or no check of that datastore yet, is not
	// refused (a fresh cluster must not be blocked by checks still to come).
	DatastoreHealth []DatastoreHealth `json:"datastore_health,omitempty"`
	// Now is the DC's clock, used only for failure-timeout expiry.
	Now time.Time `json:"now"`
}
