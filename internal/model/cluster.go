package model

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"
)

// MaxLinks is the most network links a node may have. Each link is a separate
// path (say a cluster network and a storage network); a node is lost only when
// it is silent on all of them.
const MaxLinks = 8

// Role says what a node does in the cluster.
type Role string

const (
	// RoleNode runs resources and holds a vote.
	RoleNode Role = "node"
	// RoleWitness holds a quorum vote (and a Raft vote) but runs nothing: the
	// tie-breaker of two-node sites.
	RoleWitness Role = "witness"
)

// Node is one member of the cluster as configured.
type Node struct {
	// Name is the node's unique, stable name (a DNS-label-like word).
	Name string `json:"name"`
	// ID is the node's Raft ID: unique in the cluster, never reused.
	ID uint64 `json:"id"`
	// Links holds one "host:port" per link. On each, the node listens for
	// heartbeats (UDP) and for the API and peer traffic (TCP, TLS). Link i of
	// every node is on the same network.
	Links []string `json:"links"`
	// Votes is the node's quorum weight; 0 means 1.
	Votes int `json:"votes,omitempty"`
	// Role is RoleNode when empty.
	Role Role `json:"role,omitempty"`
}

// VoteCount returns the node's quorum votes with the default applied.
func (n Node) VoteCount() int {
	if n.Votes == 0 {
		return 1
	}
	return n.Votes
}

// IsWitness reports whether the node only votes.
func (n Node) IsWitness() bool { return n.Role == RoleWitness }

// QuorumOptions are the votequorum-style options. The zero value is plain
// majority of all configured votes.
type QuorumOptions struct {
	// ExpectedVotes overrides the sum of configured votes when non-zero.
	ExpectedVotes int `json:"expected_votes,omitempty"`
	// TwoNode lets one of two nodes keep quorum alone. Only safe with
	// fencing or a witness: the fencing race picks the survivor.
	TwoNode bool `json:"two_node,omitempty"`
	// WaitForAll withholds quorum after a cold start until every node has
	// been seen at once. Defaults to TwoNode's value when nil.
	WaitForAll *bool `json:"wait_for_all,omitempty"`
	// LastManStanding recomputes expected votes downwards after
	// LastManStandingWindow of stable, quorate membership.
	LastManStanding bool `json:"last_man_standing,omitempty"`
	// LastManStandingWindow defaults to 10s.
	LastManStandingWindow Duration `json:"last_man_standing_window,omitempty"`
}

// Timing holds the failure-detection timings.
type Timing struct {
	// Heartbeat is the period of heartbeats on each link (default 200ms).
	Heartbeat Duration `json:"heartbeat,omitempty"`
	// NodeTimeout is how long a node must be silent on all links before it
	// is lost (default 1s).
	NodeTimeout Duration `json:"node_timeout,omitempty"`
}

// Default timings, chosen to detect a failure far faster than Corosync's 3 s
// token while staying clear of jitter on a loaded host.
const (
	DefaultHeartbeat   = 200 * time.Millisecond
	DefaultNodeTimeout = time.Second
)

// WithDefaults returns t with zero fields set to the defaults.
func (t Timing) WithDefaults() Timing {
	if t.Heartbeat == 0 {
		t.Heartbeat = Duration(DefaultHeartbeat)
	}
	if t.NodeTimeout == 0 {
		t.NodeTimeout = Duration(DefaultNodeTimeout)
	}
	return t
}

// Watchdog backends (WatchdogConfig.Backend).
const (
	// WatchdogNone: no watchdog; a lost node's resources wait for a fence
	// device or an operator.
	WatchdogNone = ""
	// WatchdogProcess: a supervisor process kills the agent's process group
	// (the agent and everything it started) when not petted in time. For
	// labs and containers.
	WatchdogProcess = "process"
	// WatchdogDevice: the Linux watchdog device resets the machine.
	WatchdogDevice = "device"
)

// Watchdog defaults.
const (
	DefaultWatchdogTimeout = 2 * time.Second
	DefaultWatchdogLease   = time.Second
	DefaultWatchdogDevice  = "/dev/watchdog"
)

// WatchdogConfig configures watchdog self-fencing, the same on every node:
// each node holds a lease from the quorum and pets its watchdog only while
// the lease holds (or while it runs nothing), so that the quorum may treat a
// silent node as reset after lease + watchdog time + margin.
type WatchdogConfig struct {
	// Backend is "" (none), "process" or "device".
	Backend string `json:"backend,omitempty"`
	// Timeout: the watchdog resets the node when not petted for this long
	// (default 2s; the device backend rounds down to whole seconds).
	Timeout Duration `json:"timeout,omitempty"`
	// Device is the watchdog device of the device backend (default
	// /dev/watchdog).
	Device string `json:"device,omitempty"`
	// Lease is the node lease (default 1s): how long one round of echoes
	// from a majority lets a node keep petting. At most node_timeout.
	Lease Duration `json:"lease,omitempty"`
}

// Enabled reports whether a watchdog backend is configured.
func (w WatchdogConfig) Enabled() bool { return w.Backend != WatchdogNone }

// WithDefaults returns w with zero fields set to the defaults.
func (w WatchdogConfig) WithDefaults() WatchdogConfig {
	if w.Timeout == 0 {
		w.Timeout = Duration(DefaultWatchdogTimeout)
	}
	if w.Lease == 0 {
		w.Lease = Duration(DefaultWatchdogLease)
	}
	if w.Backend == WatchdogDevice && w.Device == "" {
		w.Device = DefaultWatchdogDevice
	}
	return w
}

// Validate checks the watchdog settings against the (defaulted) timings.
func (w WatchdogConfig) Validate(t Timing) error {
	w = w.WithDefaults()
	t = t.WithDefaults()
	switch w.Backend {
	case WatchdogNone, WatchdogProcess, WatchdogDevice:
	default:
		return fmt.Errorf("watchdog: backend %q: want %q or %q (or empty for none)", w.Backend, WatchdogProcess, WatchdogDevice)
	}
	if !w.Enabled() {
		if w.Device != "" {
			return errors.New("watchdog: a device is set but no backend")
		}
		return nil
	}
	switch {
	case w.Timeout < 0 || w.Lease < 0:
		return errors.New("watchdog: durations must not be negative")
	case w.Backend == WatchdogDevice && w.Timeout.D() < time.Second:
		return fmt.Errorf("watchdog: timeout %s: the device backend needs at least 1s", w.Timeout)
	case w.Timeout.D() < 100*time.Millisecond:
		return fmt.Errorf("watchdog: timeout %s is below the 100ms floor", w.Timeout)
	case w.Lease.D() > t.NodeTimeout.D():
		return fmt.Errorf("watchdog: lease %s must not exceed node_timeout %s", w.Lease, t.NodeTimeout)
	case w.Lease.D() < 2*t.Heartbeat.D():
		return fmt.Errorf("watchdog: lease %s must be at least two heartbeats (%s)", w.Lease, 2*t.Heartbeat.D())
	case w.Backend != WatchdogDevice && w.Device != "":
		return fmt.Errorf("watchdog: device %q is only used by the %q backend", w.Device, WatchdogDevice)
	}
	return nil
}

// Cluster is the cluster-wide configuration that every node shares at
// bootstrap. After bootstrap the replicated store is the source of truth for
// membership; this is what `vigil cluster setup` writes.
type Cluster struct {
	Name   string        `json:"cluster"`
	Nodes  []Node        `json:"nodes"`
	Quorum QuorumOptions `json:"quorum,omitempty"`
	Timing Timing        `json:"timing,omitempty"`
	// Watchdog configures watchdog self-fencing (none by default).
	Watchdog WatchdogConfig `json:"watchdog,omitzero"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidName reports whether s may name a node or a cluster: lower-case
// letters, digits and inner dashes, at most 63 characters, as a DNS label.
func ValidName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("name %q: use lower-case letters, digits and inner dashes, at most 63 characters", s)
	}
	return nil
}

// ValidLink checks one "host:port" link address.
func ValidLink(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("link %q: want host:port: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("link %q: host is empty", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("link %q: port must be 1-65535", s)
	}
	return nil
}

// Validate checks one node on its own.
func (n Node) Validate() error {
	if err := ValidName(n.Name); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if n.ID == 0 {
		return fmt.Errorf("node %s: id must be non-zero", n.Name)
	}
	if len(n.Links) == 0 || len(n.Links) > MaxLinks {
		return fmt.Errorf("node %s: needs 1 to %d links, has %d", n.Name, MaxLinks, len(n.Links))
	}
	for _, l := range n.Links {
		if err := ValidLink(l); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if n.Votes < 0 {
		return fmt.Errorf("node %s: votes must not be negative", n.Name)
	}
	switch n.Role {
	case "", RoleNode, RoleWitness:
	default:
		return fmt.Errorf("node %s: role %q: want %q or %q", n.Name, n.Role, RoleNode, RoleWitness)
	}
	return nil
}

// Validate checks the whole cluster: names, unique IDs and addresses, link
// counts, quorum options and timings.
func (c Cluster) Validate() error {
	if err := ValidName(c.Name); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if len(c.Nodes) == 0 {
		return errors.New("cluster: no nodes")
	}
	names := map[string]bool{}
	ids := map[uint64]string{}
	addrs := map[string]string{}
	for _, n := range c.Nodes {
		if err := n.Validate(); err != nil {
			return err
		}
		if names[n.Name] {
			return fmt.Errorf("node %s: name used twice", n.Name)
		}
		names[n.Name] = true
		if other, ok := ids[n.ID]; ok {
			return fmt.Errorf("node %s: id %d already used by %s", n.Name, n.ID, other)
		}
		ids[n.ID] = n.Name
		for _, l := range n.Links {
			if other, ok := addrs[l]; ok {
				return fmt.Errorf("node %s: link address %s already used by %s", n.Name, l, other)
			}
			addrs[l] = n.Name
		}
	}
	if c.Quorum.ExpectedVotes < 0 {
		return errors.New("quorum: expected_votes must not be negative")
	}
	t := c.Timing.WithDefaults()
	if t.Heartbeat.D() < 10*time.Millisecond {
		return fmt.Errorf("timing: heartbeat %s is below the 10ms floor", t.Heartbeat)
	}
	if t.NodeTimeout.D() < 3*t.Heartbeat.D() {
		return fmt.Errorf("timing: node_timeout %s must be at least three heartbeats (%s)", t.NodeTimeout, 3*t.Heartbeat.D())
	}
	return c.Watchdog.Validate(c.Timing)
}

// Node returns the node with the given name.
func (c Cluster) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}
