package fencing

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/model"
)

// Defaults of a Device.
const (
	// DefaultTimeout bounds one agent invocation (Pacemaker's
	// stonith-timeout is 60s too).
	DefaultTimeout = 60 * time.Second
	// DefaultRetries is how often a failed off is retried on one device
	// before the level counts as failed (Pacemaker's pcmk_off_retries).
	DefaultRetries = 2
	// MaxLevels is the number of topology levels a node may have
	// (Pacemaker allows 1 to 9).
	MaxLevels = 9
	// maxRetries caps Retries: a device that fails ten times is not going
	// to succeed the eleventh, and the next level is waiting.
	maxRetries = 10
)

// Sentinel errors. Errors returned by this package wrap them.
var (
	// ErrInvalidDevice: a device's configuration is wrong.
	ErrInvalidDevice = errors.New("fencing: invalid device")
	// ErrInvalidTopology: a fencing topology is wrong.
	ErrInvalidTopology = errors.New("fencing: invalid topology")
	// ErrNoDevice: nothing is configured that can fence the node.
	ErrNoDevice = errors.New("fencing: no device can fence the node")
	// ErrInvalidParams: a device's parameters do not match its agent's
	// metadata (see ParamError).
	ErrInvalidParams = errors.New("fencing: invalid device parameters")
	// ErrAgentNotFound: the fence agent's executable was not found.
	ErrAgentNotFound = errors.New("fencing: agent not found")
	// ErrTimeout: an agent did not finish within the device's Timeout and
	// its process group was killed.
	ErrTimeout = errors.New("fencing: agent timed out")
	// ErrNotConfirmed: the off action returned but the device's status
	// did not confirm the node is off.
	ErrNotConfirmed = errors.New("fencing: off not confirmed")
)

// Device is one configured fence device, stored by the DC under
// config/fencing/devices/<name>. Its agent speaks the fence-agents
// protocol (Debian's fence-agents, or the lab's fence_vigil_lab).
type Device struct {
	// Name identifies the device (model.ValidID).
	Name string `json:"name"`
	// Agent is the fence agent: a bare name ("fence_ipmilan") looked up in
	// the Runner's SearchPath, or an absolute path.
	Agent string `json:"agent"`
	// Params are the agent's options, written as key=value lines on its
	// stdin, never on its command line (they hold passwords). The keys
	// Vigil writes itself (action, plug, port, nodename) and Pacemaker's
	// pcmk_* meta options are refused here: use the fields below.
	Params map[string]string `json:"params,omitempty"`
	// HostList (pcmk_host_list) names the nodes this device can fence; the
	// plug is the node's name.
	HostList []string `json:"host_list,omitempty"`
	// HostMap (pcmk_host_map) maps a node to its plug (port) name on this
	// device; a node in HostMap can be fenced too.
	HostMap map[string]string `json:"host_map,omitempty"`
	// Delay (pcmk_delay_base) is a fixed wait before fencing. In a
	// two-node cluster, a delay on the device that fences node A gives A
	// a head start: when the link between them breaks, A shoots first.
	Delay model.Duration `json:"delay,omitempty"`
	// DelayMax (pcmk_delay_max) adds a random wait of up to this much.
	DelayMax model.Duration `json:"delay_max,omitempty"`
	// Timeout bounds each agent invocation (default DefaultTimeout).
	Timeout model.Duration `json:"timeout,omitempty"`
	// Retries is how often a failed off is retried on this device
	// (default DefaultRetries when 0; a negative value means no retry).
	Retries int `json:"retries,omitempty"`
	// MonitorInterval is how often the device's health is checked
	// (action=monitor); 0 means never.
	MonitorInterval model.Duration `json:"monitor_interval,omitempty"`
}

// reservedParams are the stdin keys Vigil writes itself.
var reservedParams = []string{"action", "plug", "port", "nodename"}

var (
	agentNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	paramKeyRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
)

// Validate checks the device on its own: its name, its agent's name, its
// parameters' syntax and the nodes it can fence. The parameters are checked
// against the agent's metadata by Runner.Validate, which can run the agent.
//
// A device must say which nodes it can fence (HostList or HostMap). NB:
// Pacemaker, given neither, assumes a device without a list action can fence
// every node; a per-node IPMI device configured that way "fences" any node
// by powering off the one it is wired to, and reports success. Vigil refuses.
func (d Device) Validate() error {
	if err := model.ValidID(d.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidDevice, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrInvalidDevice, d.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case d.Agent == "":
		return bad("no agent (say fence_ipmilan, or an absolute path)")
	case strings.HasPrefix(d.Agent, "/"):
		if filepath.Clean(d.Agent) != d.Agent {
			return bad("agent path %q is not clean", d.Agent)
		}
	case !agentNameRE.MatchString(d.Agent):
		return bad("agent %q: want a file name such as fence_ipmilan, or an absolute path", d.Agent)
	}
	for _, k := range sortedKeys(d.Params) {
		v := d.Params[k]
		switch {
		case !paramKeyRE.MatchString(k):
			return bad("parameter name %q: use letters, digits, '_' and '-'", k)
		case slices.Contains(reservedParams, normParam(k)):
			return bad("parameter %q is set by Vigil (the plug comes from host_list/host_map)", k)
		case strings.HasPrefix(normParam(k), "pcmk_"):
			return bad("parameter %q: use the device's own fields (host_list, host_map, delay, delay_max, timeout, retries)", k)
		case strings.ContainsAny(v, "\n\r\x00"):
			// A newline would smuggle another line, say action=on,
			// onto the agent's stdin.
			return bad("parameter %s: value holds a line break or NUL", k)
		}
	}
	if len(d.HostList) == 0 && len(d.HostMap) == 0 {
		return bad("say which nodes it can fence (host_list or host_map)")
	}
	for i, n := range d.HostList {
		if err := model.ValidName(n); err != nil {
			return bad("host_list: %v", err)
		}
		if slices.Contains(d.HostList[:i], n) {
			return bad("host_list names %s twice", n)
		}
	}
	for _, n := range sortedKeys(d.HostMap) {
		if err := model.ValidName(n); err != nil {
			return bad("host_map: %v", err)
		}
		if p := d.HostMap[n]; p == "" || strings.ContainsAny(p, "\n\r\x00") {
			return bad("host_map: node %s: plug %q is empty or holds a line break", n, p)
		}
	}
	switch {
	case d.Delay < 0 || d.DelayMax < 0 || d.Timeout < 0 || d.MonitorInterval < 0:
		return bad("negative delay, timeout or monitor interval")
	case d.MonitorInterval > 0 && d.MonitorInterval.D() < time.Second:
		return bad("monitor interval %s is below 1s", d.MonitorInterval)
	case d.Retries > maxRetries:
		return bad("retries %d: at most %d", d.Retries, maxRetries)
	}
	return nil
}

// CanFence reports whether the device can fence node, and with which plug:
// the node's HostMap entry, else the node's own name if HostList holds it.
func (d Device) CanFence(node string) (plug string, ok bool) {
	if p, ok := d.HostMap[node]; ok && p != "" {
		return p, true
	}
	if slices.Contains(d.HostList, node) {
		return node, true
	}
	return "", false
}

// timeout returns Timeout with the default applied.
func (d Device) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout.D()
	}
	return DefaultTimeout
}

// retries returns Retries with the default applied.
func (d Device) retries() int {
	switch {
	case d.Retries < 0:
		return 0
	case d.Retries == 0:
		return DefaultRetries
	}
	return min(d.Retries, maxRetries)
}

// Topology is the fencing topology: node → levels → device names. Level 1
// (index 0) is tried first; every device of a level must succeed for the
// level to succeed. A node absent from the topology gets Pacemaker's
// default (see Plan).
type Topology map[string][][]string

// Validate checks the topology against the configured devices and, when
// nodes is not nil, the cluster's nodes: every node is known, has 1 to
// MaxLevels non-empty levels, and every device of a level exists, appears
// once in that level and can fence the node.
func (t Topology) Validate(devices map[string]Device, nodes []string) error {
	for _, node := range sortedKeys(t) {
		levels := t[node]
		if err := model.ValidName(node); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidTopology, err)
		}
		if nodes != nil && !slices.Contains(nodes, node) {
			return fmt.Errorf("%w: node %s is not in the cluster", ErrInvalidTopology, node)
		}
		if len(levels) == 0 || len(levels) > MaxLevels {
			return fmt.Errorf("%w: node %s: %d levels, want 1 to %d", ErrInvalidTopology, node, len(levels), MaxLevels)
		}
		for i, level := range levels {
			if len(level) == 0 {
				return fmt.Errorf("%w: node %s: level %d is empty", ErrInvalidTopology, node, i+1)
			}
			for j, name := range level {
				if slices.Contains(level[:j], name) {
					return fmt.Errorf("%w: node %s: level %d names device %s twice", ErrInvalidTopology, node, i+1, name)
				}
				d, ok := devices[name]
				if !ok {
					return fmt.Errorf("%w: node %s: level %d: no device %s", ErrInvalidTopology, node, i+1, name)
				}
				if _, ok := d.CanFence(node); !ok {
					return fmt.Errorf("%w: node %s: level %d: device %s cannot fence it (not in its host_list or host_map)", ErrInvalidTopology, node, i+1, name)
				}
			}
		}
	}
	return nil
}

// DeviceRef is one device of a plan level, with the plug it fences the
// node through.
type DeviceRef struct {
	Device string `json:"device"`
	Plug   string `json:"plug"`
}

// Plan returns the levels to try, in order, to fence node.
//
// With a topology for the node, its levels as configured; a level naming a
// device that is missing or cannot fence the node is an error (never a
// silently skipped level: Topology.Validate keeps that from being stored).
// Without one, Pacemaker's default: one level per device that can fence the
// node, in device name order. With no such device: ErrNoDevice, and the
// node's resources stay blocked.
func Plan(node string, t Topology, devices map[string]Device) ([][]DeviceRef, error) {
	if levels, ok := t[node]; ok && len(levels) > 0 {
		out := make([][]DeviceRef, 0, len(levels))
		for i, level := range levels {
			if len(level) == 0 {
				return nil, fmt.Errorf("%w: node %s: level %d is empty", ErrInvalidTopology, node, i+1)
			}
			refs := make([]DeviceRef, 0, len(level))
			for _, name := range level {
				d, ok := devices[name]
				if !ok {
					return nil, fmt.Errorf("%w: node %s: level %d: no device %s", ErrInvalidTopology, node, i+1, name)
				}
				plug, ok := d.CanFence(node)
				if !ok {
					return nil, fmt.Errorf("%w: node %s: level %d: device %s cannot fence it", ErrInvalidTopology, node, i+1, name)
				}
				refs = append(refs, DeviceRef{Device: name, Plug: plug})
			}
			out = append(out, refs)
		}
		return out, nil
	}
	var out [][]DeviceRef
	for _, name := range sortedKeys(devices) {
		if plug, ok := devices[name].CanFence(node); ok {
			out = append(out, []DeviceRef{{Device: name, Plug: plug}})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoDevice, node)
	}
	return out, nil
}

// normParam folds the spellings fence-agents accept for one option
// (power-timeout, power_timeout).
func normParam(k string) string { return strings.ReplaceAll(strings.ToLower(k), "-", "_") }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
