package model

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Score is a placement preference, Pacemaker style: positive attracts,
// negative repels, and ±Infinity are absolute (must / must not).
type Score int64

// Infinity is Pacemaker's INFINITY: a score at or beyond it is absolute, and
// sums saturate there, so +INFINITY + -INFINITY = -INFINITY (must-not wins).
const Infinity Score = 1_000_000

// ParseScore reads "100", "-50", "INFINITY", "+INFINITY", "-INFINITY" (any
// case; "inf" too).
func ParseScore(s string) (Score, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	switch t {
	case "infinity", "+infinity", "inf", "+inf":
		return Infinity, nil
	case "-infinity", "-inf":
		return -Infinity, nil
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("score %q: want an integer or [+-]INFINITY", s)
	}
	return clampScore(v), nil
}

func clampScore(v int64) Score {
	if v >= int64(Infinity) {
		return Infinity
	}
	if v <= -int64(Infinity) {
		return -Infinity
	}
	return Score(v)
}

// Add sums two scores the way Pacemaker does: -INFINITY dominates, then
// +INFINITY, else a saturating sum.
func (s Score) Add(o Score) Score {
	switch {
	case s <= -Infinity || o <= -Infinity:
		return -Infinity
	case s >= Infinity || o >= Infinity:
		return Infinity
	}
	return clampScore(int64(s) + int64(o))
}

// String writes INFINITY for the absolute scores.
func (s Score) String() string {
	switch {
	case s >= Infinity:
		return "INFINITY"
	case s <= -Infinity:
		return "-INFINITY"
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalJSON writes a score as a number, or "INFINITY"/"-INFINITY".
func (s Score) MarshalJSON() ([]byte, error) {
	if s >= Infinity || s <= -Infinity {
		return []byte(strconv.Quote(s.String())), nil
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// UnmarshalJSON accepts a number or a score string.
func (s *Score) UnmarshalJSON(b []byte) error {
	str := string(b)
	if uq, err := strconv.Unquote(str); err == nil {
		str = uq
	}
	v, err := ParseScore(str)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Operation names an agent action that can be configured.
const (
	OpStart       = "start"
	OpStop        = "stop"
	OpMonitor     = "monitor"
	OpMigrateTo   = "migrate_to"
	OpMigrateFrom = "migrate_from"
)

// On-fail policies: what a failed operation leads to.
const (
	OnFailRestart = "restart" // restart in place, then move after migration-threshold
	OnFailIgnore  = "ignore"  // pretend it succeeded
	OnFailBlock   = "block"   // leave it as it is; an operator must act
	OnFailStop    = "stop"    // stop it and keep it stopped
	OnFailStandby = "standby" // move everything off the node
	OnFailFence   = "fence"   // fence the node (needs the fencing layer)
)

// Op configures one operation of a resource.
type Op struct {
	Name     string   `json:"name"`
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
	OnFail   string   `json:"on_fail,omitempty"`
}

// Default operation timeouts, as Pacemaker's.
const DefaultOpTimeout = 20 * time.Second

// Meta attribute names of a resource (pcs spelling).
const (
	MetaTargetRole         = "target-role"
	MetaStickiness         = "resource-stickiness"
	MetaMigrationThreshold = "migration-threshold"
	MetaFailureTimeout     = "failure-timeout"
	MetaPriority           = "priority"
	MetaAllowMigrate       = "allow-migrate"
	MetaIsManaged          = "is-managed"
)

// Target roles.
const (
	RoleStarted = "Started"
	RoleStopped = "Stopped"
)

// DefaultMigrationThreshold is how many failures on one node move a
// resource away. Pacemaker's default is INFINITY (never); an operator of an
// HA system expects a resource that keeps failing to move, so Vigil's is 3.
const DefaultMigrationThreshold = 3

var metaKinds = map[string]string{
	MetaTargetRole:         "role",
	MetaStickiness:         "score",
	MetaMigrationThreshold: "count",
	MetaFailureTimeout:     "duration",
	MetaPriority:           "int",
	MetaAllowMigrate:       "bool",
	MetaIsManaged:          "bool",
}

// Resource is one managed thing: a service, a VM, an address.
type Resource struct {
	ID string `json:"id"`
	// Agent is "class:provider:type" (ocf:heartbeat:IPaddr2) or
	// "class:type" (vigil:dummy).
	Agent  string            `json:"agent"`
	Params map[string]string `json:"params,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
	Ops    []Op              `json:"ops,omitempty"`
	// Utilization is what the resource needs of a node's capacity
	// (keys such as cpu and memory, in the node's units).
	Utilization map[string]int64 `json:"utilization,omitempty"`
}

// Group is an ordered list of resources kept together: each runs on the
// same node as the one before it and starts after it (stops in reverse).
type Group struct {
	ID        string            `json:"id"`
	Resources []string          `json:"resources"`
	Meta      map[string]string `json:"meta,omitempty"`
}

// Clone runs copies of a resource or group: one per node by default.
type Clone struct {
	ID string `json:"id"`
	// Of is the resource or group cloned.
	Of string `json:"of"`
	// Max is the number of instances (clone-max); 0 = one per eligible node.
	Max  int               `json:"max,omitempty"`
	Meta map[string]string `json:"meta,omitempty"`
}

// Location constraint: a preference of a resource for (or against) a node,
// or for nodes whose attributes match a rule.
type Location struct {
	ID       string `json:"id"`
	Resource string `json:"resource"`
	Node     string `json:"node,omitempty"`
	Score    Score  `json:"score"`
	Rule     *Rule  `json:"rule,omitempty"`
}

// Rule matches nodes by their attributes. All expressions must hold (and),
// or any (or) when Or is set.
type Rule struct {
	Or          bool         `json:"or,omitempty"`
	Expressions []Expression `json:"expressions"`
}

// Expression compares a node attribute. Operators: eq, ne, lt, lte, gt,
// gte (numeric when both sides are integers), defined, not_defined. The
// attribute "#uname" is the node's name.
type Expression struct {
	Attribute string `json:"attribute"`
	Op        string `json:"op"`
	Value     string `json:"value,omitempty"`
}

// Colocation keeps Resource on the same node as With (positive score) or
// away from it (negative). With is placed first.
type Colocation struct {
	ID       string `json:"id"`
	Resource string `json:"resource"`
	With     string `json:"with"`
	Score    Score  `json:"score"`
}

// Order kinds.
const (
	OrderMandatory = "Mandatory"
	OrderOptional  = "Optional"
)

// Order starts Then after First (and, when symmetrical, stops Then before
// First). Mandatory: Then does not start until First has.
type Order struct {
	ID    string `json:"id"`
	First string `json:"first"`
	Then  string `json:"then"`
	Kind  string `json:"kind,omitempty"` // Mandatory when empty
	// Symmetrical defaults to true when nil.
	Symmetrical *bool `json:"symmetrical,omitempty"`
}

// IsSymmetrical applies the default.
func (o Order) IsSymmetrical() bool { return o.Symmetrical == nil || *o.Symmetrical }

// IsMandatory applies the default.
func (o Order) IsMandatory() bool { return o.Kind == "" || o.Kind == OrderMandatory }

// NodeConfig is the per-node part of the configuration that operators set.
type NodeConfig struct {
	Name       string            `json:"name"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// Utilization is the node's capacity (cpu, memory, ...).
	Utilization map[string]int64 `json:"utilization,omitempty"`
	// Standby: run nothing here (move resources away).
	Standby bool `json:"standby,omitempty"`
	// Maintenance: do not touch resources here (no starts, stops, monitors).
	Maintenance bool `json:"maintenance,omitempty"`
}

// Cluster properties that Vigil knows. Other property names are kept as
// operator metadata, except near-misses of these, which are refused.
const (
	PropMaintenanceMode   = "maintenance-mode"
	PropSymmetricCluster  = "symmetric-cluster"
	PropStickiness        = "default-resource-stickiness"
	PropStonithEnabled    = "stonith-enabled"
	PropNoQuorumPolicy    = "no-quorum-policy"
	PropPlacementStrategy = "placement-strategy"
)

var propKinds = map[string]string{
	PropMaintenanceMode:   "bool",
	PropSymmetricCluster:  "bool",
	PropStickiness:        "score",
	PropStonithEnabled:    "bool",
	PropNoQuorumPolicy:    "enum:stop,freeze,ignore",
	PropPlacementStrategy: "enum:default,utilization,balanced",
}

// ValidateProperty checks a cluster property. Known names get their value
// checked; a name that differs from a known one only by case, dashes or
// underscores is refused, so a typo never silently does nothing.
func ValidateProperty(name, value string) error {
	if kind, ok := propKinds[name]; ok {
		if err := checkKind(kind, value); err != nil {
			return fmt.Errorf("property %s: %w", name, err)
		}
		return nil
	}
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "_", "-") }
	for known := range propKinds {
		if norm(name) == known {
			return fmt.Errorf("property %q: did you mean %q?", name, known)
		}
	}
	return nil
}

// Config is the whole resource configuration: what must run and where.
type Config struct {
	Resources   []Resource        `json:"resources,omitempty"`
	Groups      []Group           `json:"groups,omitempty"`
	Clones      []Clone           `json:"clones,omitempty"`
	Locations   []Location        `json:"locations,omitempty"`
	Colocations []Colocation      `json:"colocations,omitempty"`
	Orders      []Order           `json:"orders,omitempty"`
	Nodes       []NodeConfig      `json:"nodes,omitempty"`
	Properties  map[string]string `json:"properties,omitempty"`
	// Datastores are the shared folders VM disks live on
	// (config/datastores/<name>). They are part of the configuration so
	// that `vigil config export` writes them and `vigil config apply`
	// changes them in the same guarded transaction as the resources that
	// name them.
	Datastores []Datastore `json:"datastores,omitempty"`
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidID checks a resource, group, clone or constraint id.
func ValidID(s string) error {
	if !idRE.MatchString(s) {
		return fmt.Errorf("id %q: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters", s)
	}
	return nil
}

// ParseAgentSpec splits "class:provider:type" or "class:type".
func ParseAgentSpec(s string) (class, provider, typ string, err error) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 3 && parts[0] == "ocf" && parts[1] != "" && parts[2] != "":
		return parts[0], parts[1], parts[2], nil
	case len(parts) == 2 && parts[0] != "ocf" && parts[0] != "" && parts[1] != "":
		return parts[0], "", parts[1], nil
	}
	return "", "", "", fmt.Errorf("agent %q: want ocf:PROVIDER:TYPE (ocf:heartbeat:IPaddr2) or CLASS:TYPE (vigil:dummy)", s)
}

func checkKind(kind, v string) error {
	switch {
	case kind == "bool":
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
	case kind == "score":
		_, err := ParseScore(v)
		return err
	case kind == "int":
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return fmt.Errorf("%q: want an integer", v)
		}
	case kind == "count":
		if s, err := ParseScore(v); err != nil || s < 0 {
			return fmt.Errorf("%q: want a non-negative integer or INFINITY", v)
		}
	case kind == "duration":
		if _, err := ParseDuration(v); err != nil {
			return err
		}
	case kind == "role":
		if v != RoleStarted && v != RoleStopped {
			return fmt.Errorf("%q: want %s or %s", v, RoleStarted, RoleStopped)
		}
	case strings.HasPrefix(kind, "enum:"):
		opts := strings.Split(strings.TrimPrefix(kind, "enum:"), ",")
		for _, o := range opts {
			if v == o {
				return nil
			}
		}
		return fmt.Errorf("%q: want one of %s", v, strings.Join(opts, ", "))
	}
	return nil
}

// ParseDuration reads a Go duration ("10s") or a bare number of seconds,
// as pcs accepts ("interval=10").
func ParseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration such as 30s or 2m", v)
	}
	return d, nil
}

// validateMeta checks meta attributes: known names only, typed values.
func validateMeta(owner string, meta map[string]string) error {
	for k, v := range meta {
		kind, ok := metaKinds[k]
		if !ok {
			return fmt.Errorf("%s: unknown meta attribute %q (known: target-role, resource-stickiness, migration-threshold, failure-timeout, priority, allow-migrate, is-managed)", owner, k)
		}
		if err := checkKind(kind, v); err != nil {
			return fmt.Errorf("%s: meta %s: %w", owner, k, err)
		}
	}
	return nil
}

// Validate checks one resource on its own (the agent's parameters are
// checked against its meta-data by the caller, which can run the agent).
func (r Resource) Validate() error {
	if err := ValidID(r.ID); err != nil {
		return fmt.Errorf("resource: %w", err)
	}
	if _, _, _, err := ParseAgentSpec(r.Agent); err != nil {
		return fmt.Errorf("resource %s: %w", r.ID, err)
	}
	if err := validateMeta("resource "+r.ID, r.Meta); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, op := range r.Ops {
		switch op.Name {
		case OpStart, OpStop, OpMonitor, OpMigrateTo, OpMigrateFrom:
		default:
			return fmt.Errorf("resource %s: operation %q: want start, stop, monitor, migrate_to or migrate_from", r.ID, op.Name)
		}
		key := op.Name + "/" + op.Interval.String()
		if seen[key] {
			return fmt.Errorf("resource %s: operation %s with interval %s given twice", r.ID, op.Name, op.Interval)
		}
		seen[key] = true
		if op.Interval < 0 || op.Timeout < 0 {
			return fmt.Errorf("resource %s: operation %s: negative interval or timeout", r.ID, op.Name)
		}
		if op.Name == OpMonitor && op.Interval > 0 && op.Interval.D() < time.Second {
			return fmt.Errorf("resource %s: monitor interval %s is below 1s", r.ID, op.Interval)
		}
		switch op.OnFail {
		case "", OnFailRestart, OnFailIgnore, OnFailBlock, OnFailStop, OnFailStandby, OnFailFence:
		default:
			return fmt.Errorf("resource %s: operation %s: on-fail %q: want restart, ignore, block, stop, standby or fence", r.ID, op.Name, op.OnFail)
		}
	}
	for k, v := range r.Utilization {
		if v < 0 {
			return fmt.Errorf("resource %s: utilization %s must not be negative", r.ID, k)
		}
	}
	return nil
}

// Op returns the configured operation of that name (the first monitor for
// OpMonitor) with defaults applied, and whether one was configured.
func (r Resource) Op(name string) (Op, bool) {
	for _, op := range r.Ops {
		if op.Name == name {
			if op.Timeout == 0 {
				op.Timeout = Duration(DefaultOpTimeout)
			}
			return op, true
		}
	}
	return Op{Name: name, Timeout: Duration(DefaultOpTimeout)}, false
}

// MetaValue returns a meta attribute, or def when unset.
func (r Resource) MetaValue(name, def string) string {
	if v, ok := r.Meta[name]; ok {
		return v
	}
	return def
}

// Enabled reports whether the resource's target role is Started.
func (r Resource) Enabled() bool { return r.MetaValue(MetaTargetRole, RoleStarted) == RoleStarted }

// Managed reports is-managed (default true).
func (r Resource) Managed() bool {
	b, err := strconv.ParseBool(r.MetaValue(MetaIsManaged, "true"))
	return err != nil || b
}

// AllowMigrate reports allow-migrate (default false).
func (r Resource) AllowMigrate() bool {
	b, _ := strconv.ParseBool(r.MetaValue(MetaAllowMigrate, "false"))
	return b
}

// Stickiness returns resource-stickiness, or def when unset.
func (r Resource) Stickiness(def Score) Score {
	if v, ok := r.Meta[MetaStickiness]; ok {
		if s, err := ParseScore(v); err == nil {
			return s
		}
	}
	return def
}

// MigrationThreshold returns migration-threshold: failures on one node after
// which the resource moves away (0 disables moving on failure).
func (r Resource) MigrationThreshold() int64 {
	if v, ok := r.Meta[MetaMigrationThreshold]; ok {
		if s, err := ParseScore(v); err == nil {
			return int64(s)
		}
	}
	return DefaultMigrationThreshold
}

// FailureTimeout returns failure-timeout (0 = fail counts never expire).
func (r Resource) FailureTimeout() time.Duration {
	if v, ok := r.Meta[MetaFailureTimeout]; ok {
		if d, err := ParseDuration(v); err == nil {
			return d
		}
	}
	return 0
}

// Priority returns priority (higher is placed first when capacity is short).
func (r Resource) Priority() int64 {
	v, _ := strconv.ParseInt(r.MetaValue(MetaPriority, "0"), 10, 64)
	return v
}
