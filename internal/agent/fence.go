package agent

// The fencing API: fence devices, the topology (levels per node), the
// fencing history, operators' fence requests, and what `vigil status` says
// protects each node.
//
// Devices and levels are configuration (config/fencing/...): a change goes
// through changeFencing, the sibling of changeConfig: read the fencing
// configuration, the epoch and the members in one store Read, apply a
// mutation to a copy, validate the result (Device.Validate, the nodes named
// are members, the agent's metadata through the Runner for new or changed
// devices, Topology.Validate), and commit the difference as one transaction
// guarded by the epoch that was validated. A refused change writes nothing,
// so the epoch stays.
//
// Fence requests are status (status/fencing/requests/<node>): the DC
// carries them out and deletes them with the outcome it records
// (controller/fence.go).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/controller"
	"github.com/vigil-ha/vigil/internal/fencing"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// fenceConfig is the fencing configuration a mutation changes.
type fenceConfig struct {
	Devices  map[string]fencing.Device `json:"devices"`
	Topology fencing.Topology          `json:"topology"`
}

// clone deep-copies the configuration (never nil maps).
func (fc fenceConfig) clone() fenceConfig {
	var out fenceConfig
	if err := json.Unmarshal(clusterstate.Encode(fc), &out); err != nil {
		panic(fmt.Sprintf("agent: copy fencing configuration: %v", err)) // the types round-trip
	}
	if out.Devices == nil {
		out.Devices = map[string]fencing.Device{}
	}
	if out.Topology == nil {
		out.Topology = fencing.Topology{}
	}
	return out
}

// entries flattens the fencing configuration into its store keys and values.
func (fc fenceConfig) entries() map[string][]byte {
	m := map[string][]byte{}
	for name, d := range fc.Devices {
		m[clusterstate.FenceDeviceKey(name)] = clusterstate.Encode(d)
	}
	for node, levels := range fc.Topology {
		m[clusterstate.FenceLevelsKey(node)] = clusterstate.Encode(levels)
	}
	return m
}

// fenceOps returns the store operations that turn from into to, sorted by
// key.
func fenceOps(from, to fenceConfig) []store.Op {
	a, b := from.entries(), to.entries()
	var ops []store.Op
	for k, v := range b {
		if old, ok := a[k]; !ok || !bytes.Equal(old, v) {
			ops = append(ops, store.Op{Key: k, Value: v})
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			ops = append(ops, store.Op{Key: k, Delete: true})
		}
	}
	slices.SortFunc(ops, func(x, y store.Op) int { return strings.Compare(x.Key, y.Key) })
	return ops
}

// fenceChanges renders ops as "+ key", "- key" and "~ key" against from.
func fenceChanges(from fenceConfig, ops []store.Op) []string {
	had := from.entries()
	out := []string{}
	for _, op := range ops {
		_, existed := had[op.Key]
		switch {
		case op.Delete:
			out = append(out, "- "+op.Key)
		case existed:
			out = append(out, "~ "+op.Key)
		default:
			out = append(out, "+ "+op.Key)
		}
	}
	return out
}

// fenceMutation changes a copy of the fencing configuration; nodes are the
// cluster's members.
type fenceMutation func(fc *fenceConfig, nodes []string) error

// changeFencing applies m, validates the result and commits it guarded by
// the epoch it was validated against, retrying when another change won the
// race.
func (a *Agent) changeFencing(ctx context.Context, m fenceMutation) (api.WriteResult, error) {
	for attempt := 0; ; attempt++ {
		v, epoch, err := a.readView()
		if err != nil {
			return api.WriteResult{}, err
		}
		cur := fenceConfig{Devices: v.Devices, Topology: v.Topology}.clone()
		next := cur.clone()
		nodes := v.NodeNames()
		if err := m(&next, nodes); err != nil {
			return api.WriteResult{}, asAPIError(err)
		}
		if err := a.validateFencing(ctx, cur, next, nodes); err != nil {
			return api.WriteResult{}, err
		}
		ops := fenceOps(cur, next)
		if len(ops) == 0 {
			return api.WriteResult{Epoch: epoch, Unchanged: true}, nil
		}
		res, err := a.write(ctx, store.Txn{Ops: ops, IfEpoch: epoch})
		if api.IsCode(err, api.CodeConflict) && attempt < configRetries {
			continue
		}
		if err == nil {
			res.Changes = fenceChanges(cur, ops)
		}
		return res, err
	}
}

// validateFencing checks next whole, and what changed against the members
// and the agents' metadata: a node removed from the cluster since does not
// block unrelated changes.
func (a *Agent) validateFencing(ctx context.Context, cur, next fenceConfig, nodes []string) error {
	for _, name := range sortedNames(next.Devices) {
		d := next.Devices[name]
		if d.Name != name {
			return badRequest("fence device %s: stored under another name (%s)", d.Name, name)
		}
		if old, ok := cur.Devices[name]; ok && bytes.Equal(clusterstate.Encode(old), clusterstate.Encode(d)) {
			continue
		}
		if err := d.Validate(); err != nil {
			return badRequest("refused: %v", err)
		}
		for _, n := range deviceNodes(d) {
			if !slices.Contains(nodes, n) {
				return badRequest("refused: fence device %s: %s is not a node of this cluster (nodes: %s)", name, n, strings.Join(nodes, ", "))
			}
		}
		if err := a.validateFenceAgent(ctx, d); err != nil {
			return err
		}
	}
	if err := next.Topology.Validate(next.Devices, nil); err != nil {
		return badRequest("refused: %v", err)
	}
	for _, node := range sortedNames(next.Topology) {
		if slices.EqualFunc(cur.Topology[node], next.Topology[node], slices.Equal) {
			continue
		}
		if !slices.Contains(nodes, node) {
			return notFound("unknown node %q (nodes: %s)", node, strings.Join(nodes, ", "))
		}
	}
	return nil
}

// validateFenceAgent checks a device against its agent's metadata on this
// node. Without a Runner (a witness, or a test) only the form is checked.
func (a *Agent) validateFenceAgent(ctx context.Context, d fencing.Device) error {
	if a.fencer == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	err := a.fencer.Validate(ctx, d)
	var pe *fencing.ParamError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return badRequest("refused: %v", err)
	case errors.Is(err, fencing.ErrAgentNotFound):
		why := err.Error()
		if _, rest, ok := strings.Cut(why, fencing.ErrAgentNotFound.Error()+": "); ok {
			why = rest
		}
		return badRequest("refused: fence device %s: unknown fence agent on %s: %s; install it on every node (Debian: the fence-agents package)", d.Name, a.cfg.Node, why)
	}
	return badRequest("refused: fence device %s: cannot read the metadata of %s on %s: %v", d.Name, d.Agent, a.cfg.Node, err)
}

// deviceNodes returns the nodes a device says it can fence, sorted.
func deviceNodes(d fencing.Device) []string {
	out := slices.Clone(d.HostList)
	for n := range d.HostMap {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// --- device options ---

// Device options that set the Device's own fields, by their pcs names (and
// the device's field names for host lists). Every other key is a parameter
// of the agent. NB: fence-agents have a "delay" parameter of their own, so
// the fencing delay is only pcmk_delay_base.
const (
	optHostList        = "pcmk_host_list"
	optHostMap         = "pcmk_host_map"
	optDelayBase       = "pcmk_delay_base"
	optDelayMax        = "pcmk_delay_max"
	optTimeout         = "timeout"
	optRetries         = "retries"
	optMonitorInterval = "monitor_interval"
)

// deviceOptions lists the option names that set the device's fields.
var deviceOptions = []string{optHostList, optHostMap, optDelayBase, optDelayMax, optTimeout, optRetries, optMonitorInterval}

// deviceOption returns the field option key names, or "" when key is a
// parameter of the agent.
func deviceOption(key string) string {
	k := strings.ReplaceAll(strings.ToLower(key), "-", "_")
	switch k {
	case "host_list":
		return optHostList
	case "host_map":
		return optHostMap
	}
	if slices.Contains(deviceOptions, k) || strings.HasPrefix(k, "pcmk_") {
		return k
	}
	return ""
}

// setDeviceOptions applies pcs-style options to d. An empty value removes
// a parameter or resets a field; with create it is refused.
func setDeviceOptions(d *fencing.Device, opts map[string]string, create bool) error {
	for _, key := range sortedNames(opts) {
		v := opts[key]
		if v == "" && create {
			return badRequest("fence device %s: %s: empty value (leave the option out to leave it unset)", d.Name, key)
		}
		if err := setDeviceOption(d, key, v); err != nil {
			return badRequest("fence device %s: %v", d.Name, err)
		}
	}
	return nil
}

func setDeviceOption(d *fencing.Device, key, v string) error {
	opt := deviceOption(key)
	dur := func(dst *model.Duration) error {
		if v == "" {
			*dst = 0
			return nil
		}
		x, err := model.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		*dst = model.Duration(x)
		return nil
	}
	switch opt {
	case "":
		if v == "" {
			if _, ok := d.Params[key]; !ok {
				return fmt.Errorf("parameter %s is not set", key)
			}
			delete(d.Params, key)
			if len(d.Params) == 0 {
				d.Params = nil
			}
			return nil
		}
		if d.Params == nil {
			d.Params = map[string]string{}
		}
		d.Params[key] = v
		return nil
	case optHostList:
		d.HostList = nil
		if v == "" {
			return nil
		}
		list, err := parseHostList(v)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		d.HostList = list
		return nil
	case optHostMap:
		d.HostMap = nil
		if v == "" {
			return nil
		}
		m, err := parseHostMap(v)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		d.HostMap = m
		return nil
	case optDelayBase:
		return dur(&d.Delay)
	case optDelayMax:
		return dur(&d.DelayMax)
	case optTimeout:
		if err := dur(&d.Timeout); err != nil {
			return err
		}
		if v != "" && d.Timeout == 0 {
			return fmt.Errorf("%s: must be more than 0", key)
		}
		return nil
	case optMonitorInterval:
		return dur(&d.MonitorInterval)
	case optRetries:
		if v == "" {
			d.Retries = 0
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%s: %q: want a number of retries, 0 or more", key, v)
		}
		// The Device's zero means "the default": no retry is stored as -1.
		if n == 0 {
			n = -1
		}
		d.Retries = n
		return nil
	}
	return fmt.Errorf("option %s is not supported: the device options are %s; other keys go to the agent", key, strings.Join(deviceOptions, ", "))
}

// hostSep splits host lists and maps on ',', ';' and white space, as
// Pacemaker does.
func hostSep(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '\n' }

// parseHostList reads "n1,n2" (or ; or space separated).
func parseHostList(v string) ([]string, error) {
	var out []string
	for _, n := range strings.FieldsFunc(v, hostSep) {
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("%s named twice", n)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no node named")
	}
	return out, nil
}

// parseHostMap reads "n1:plug1;n2:plug2" (or n1=plug1, separated by ';',
// ',' or space).
func parseHostMap(v string) (map[string]string, error) {
	out := map[string]string{}
	for _, e := range strings.FieldsFunc(v, hostSep) {
		i := strings.IndexAny(e, ":=")
		if i <= 0 || i == len(e)-1 {
			return nil, fmt.Errorf("%q: want node:plug", e)
		}
		n, p := e[:i], e[i+1:]
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("%s mapped twice", n)
		}
		out[n] = p
	}
	if len(out) == 0 {
		return nil, errors.New("no node:plug given")
	}
	return out, nil
}

// --- mutations (pure: on a copy of the fencing configuration) ---

func createDevice(fc *fenceConfig, req api.CreateFenceDeviceRequest) error {
	if err := model.ValidID(req.Name); err != nil {
		return badRequest("fence device: %v", err)
	}
	if _, ok := fc.Devices[req.Name]; ok {
		return api.Errorf(api.CodeConflict, "fence device %s already exists (change it with `vigil fence update %s k=v ...`)", req.Name, req.Name)
	}
	if req.Agent == "" {
		return badRequest("fence device %s: no agent (say fence_ipmilan, or an absolute path)", req.Name)
	}
	d := fencing.Device{Name: req.Name, Agent: req.Agent}
	if err := setDeviceOptions(&d, req.Options, true); err != nil {
		return err
	}
	fc.Devices[req.Name] = d
	return nil
}

func updateDevice(fc *fenceConfig, name string, req api.UpdateFenceDeviceRequest) error {
	d, ok := fc.Devices[name]
	if !ok {
		return notFound("no fence device named %q", name)
	}
	if len(req.Options) == 0 {
		return badRequest("fence device %s: nothing to change (give k=v options; k= removes one)", name)
	}
	if err := setDeviceOptions(&d, req.Options, false); err != nil {
		return err
	}
	fc.Devices[name] = d
	return nil
}

// deviceLevels names the levels that use a device ("level 1 of n1").
func deviceLevels(t fencing.Topology, name string) []string {
	var out []string
	for _, node := range sortedNames(t) {
		for i, level := range t[node] {
			if slices.Contains(level, name) {
				out = append(out, fmt.Sprintf("level %d of %s", i+1, node))
			}
		}
	}
	return out
}

func deleteDevice(fc *fenceConfig, name string) error {
	if _, ok := fc.Devices[name]; !ok {
		return notFound("no fence device named %q", name)
	}
	if used := deviceLevels(fc.Topology, name); len(used) > 0 {
		var how []string
		for _, node := range sortedNames(fc.Topology) {
			// Highest first: removing a level moves the later ones up.
			levels := fc.Topology[node]
			for i := len(levels) - 1; i >= 0; i-- {
				if slices.Contains(levels[i], name) {
					how = append(how, fmt.Sprintf("vigil fence level remove %s %d", node, i+1))
				}
			}
		}
		return api.Errorf(api.CodeConflict, "fence device %s is used by %s: remove it from the topology first (%s)", name, strings.Join(used, ", "), strings.Join(how, "; "))
	}
	delete(fc.Devices, name)
	return nil
}

// setLevel adds level (1-based) to node's topology. Levels are dense: level
// n may be added once levels 1..n-1 exist. An existing level with the same
// devices is left as it is; with other devices it is replaced only when
// replace is set.
func setLevel(fc *fenceConfig, nodes []string, node string, level int, req api.FenceLevelRequest) error {
	if err := checkNode(nodes, node); err != nil {
		return err
	}
	if level < 1 || level > fencing.MaxLevels {
		return badRequest("fence level %d: want 1 to %d", level, fencing.MaxLevels)
	}
	if len(req.Devices) == 0 {
		return badRequest("fence level %d of %s: name at least one device", level, node)
	}
	for i, name := range req.Devices {
		if slices.Contains(req.Devices[:i], name) {
			return badRequest("fence level %d of %s: device %s given twice", level, node, name)
		}
		d, ok := fc.Devices[name]
		if !ok {
			return notFound("fence level %d of %s: no fence device named %q", level, node, name)
		}
		if _, ok := d.CanFence(node); !ok {
			return badRequest("fence level %d of %s: device %s cannot fence %s (not in its pcmk_host_list or pcmk_host_map; `vigil fence update %s pcmk_host_list=...`)", level, node, name, node, name)
		}
	}
	levels := fc.Topology[node]
	switch {
	case level <= len(levels):
		if slices.Equal(levels[level-1], req.Devices) {
			return nil
		}
		if !req.Replace {
			return api.Errorf(api.CodeConflict, "level %d of %s exists (devices %s): remove it first (`vigil fence level remove %s %d`) or replace it (--replace)",
				level, node, strings.Join(levels[level-1], ","), node, level)
		}
		levels[level-1] = slices.Clone(req.Devices)
	case level == len(levels)+1:
		levels = append(levels, slices.Clone(req.Devices))
	default:
		return badRequest("fence level %d of %s: levels are tried in order from 1 and %s has %d: add level %d first", level, node, node, len(levels), len(levels)+1)
	}
	fc.Topology[node] = levels
	return nil
}

// removeLevel removes one level of node (the levels after it move up one),
// or all of them when level is 0.
func removeLevel(fc *fenceConfig, node string, level int) error {
	levels, ok := fc.Topology[node]
	if !ok || len(levels) == 0 {
		return notFound("%s has no fence levels configured", node)
	}
	if level == 0 {
		delete(fc.Topology, node)
		return nil
	}
	if level < 1 || level > len(levels) {
		return notFound("%s has no fence level %d (it has %d)", node, level, len(levels))
	}
	levels = slices.Delete(levels, level-1, level)
	if len(levels) == 0 {
		delete(fc.Topology, node)
		return nil
	}
	fc.Topology[node] = levels
	return nil
}

// --- the Backend methods ---

func (b backend) CreateFenceDevice(ctx context.Context, req api.CreateFenceDeviceRequest) (api.WriteResult, error) {
	return b.a.changeFencing(ctx, func(fc *fenceConfig, _ []string) error { return createDevice(fc, req) })
}

func (b backend) UpdateFenceDevice(ctx context.Context, name string, req api.UpdateFenceDeviceRequest) (api.WriteResult, error) {
	return b.a.changeFencing(ctx, func(fc *fenceConfig, _ []string) error { return updateDevice(fc, name, req) })
}

func (b backend) DeleteFenceDevice(ctx context.Context, name string) (api.WriteResult, error) {
	return b.a.changeFencing(ctx, func(fc *fenceConfig, _ []string) error { return deleteDevice(fc, name) })
}

func (b backend) SetFenceLevel(ctx context.Context, node string, level int, req api.FenceLevelRequest) (api.WriteResult, error) {
	return b.a.changeFencing(ctx, func(fc *fenceConfig, nodes []string) error { return setLevel(fc, nodes, node, level, req) })
}

func (b backend) RemoveFenceLevel(ctx context.Context, node string, level int) (api.WriteResult, error) {
	return b.a.changeFencing(ctx, func(fc *fenceConfig, _ []string) error { return removeLevel(fc, node, level) })
}

// fmtDuration writes 1m rather than 1m0s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func apiDevice(d fencing.Device, t fencing.Topology, health map[string]model.FenceMonitor) api.FenceDevice {
	out := api.FenceDevice{
		Name: d.Name, Agent: d.Agent, Params: d.Params, HostList: d.HostList, HostMap: d.HostMap,
		Timeout: fmtDuration(fencing.DefaultTimeout), Retries: fencing.DefaultRetries,
		Levels: deviceLevels(t, d.Name), Health: deviceHealth(health, d.Name),
	}
	if d.Delay > 0 {
		out.Delay = fmtDuration(d.Delay.D())
	}
	if d.DelayMax > 0 {
		out.DelayMax = fmtDuration(d.DelayMax.D())
	}
	if d.Timeout > 0 {
		out.Timeout = fmtDuration(d.Timeout.D())
	}
	switch {
	case d.Retries < 0:
		out.Retries = 0
	case d.Retries > 0:
		out.Retries = d.Retries
	}
	if d.MonitorInterval > 0 {
		out.MonitorInterval = fmtDuration(d.MonitorInterval.D())
	}
	return out
}

func (b backend) FenceDevices(ctx context.Context) ([]api.FenceDevice, error) {
	v, _, err := b.a.readView()
	if err != nil {
		return nil, err
	}
	out := []api.FenceDevice{}
	for _, name := range sortedNames(v.Devices) {
		out = append(out, apiDevice(v.Devices[name], v.Topology, v.DeviceHealth))
	}
	return out, nil
}

func (b backend) FenceDevice(ctx context.Context, name string) (api.FenceDevice, error) {
	v, _, err := b.a.readView()
	if err != nil {
		return api.FenceDevice{}, err
	}
	d, ok := v.Devices[name]
	if !ok {
		return api.FenceDevice{}, notFound("no fence device named %q", name)
	}
	return apiDevice(d, v.Topology, v.DeviceHealth), nil
}

// fenceLevels lists the configured levels of node (every node when ""),
// and for a node without any the levels Vigil derives (Default).
func fenceLevels(v controller.View, node string) ([]api.FenceLevel, error) {
	nodes := v.NodeNames()
	if node != "" {
		if err := checkNode(nodes, node); err != nil {
			if _, ok := v.Topology[node]; !ok {
				return nil, err
			}
		}
		nodes = []string{node}
	} else {
		// A node removed from the cluster may still have levels.
		for n := range v.Topology {
			if !slices.Contains(nodes, n) {
				nodes = append(nodes, n)
			}
		}
		sort.Strings(nodes)
	}
	out := []api.FenceLevel{}
	for _, n := range nodes {
		if levels, ok := v.Topology[n]; ok {
			for i, l := range levels {
				out = append(out, api.FenceLevel{Node: n, Level: i + 1, Devices: slices.Clone(l)})
			}
			continue
		}
		plan, err := fencing.Plan(n, nil, v.Devices)
		if err != nil {
			continue
		}
		for i, l := range plan {
			fl := api.FenceLevel{Node: n, Level: i + 1, Default: true}
			for _, r := range l {
				fl.Devices = append(fl.Devices, r.Device)
			}
			out = append(out, fl)
		}
	}
	return out, nil
}

func (b backend) FenceLevels(ctx context.Context, node string) ([]api.FenceLevel, error) {
	v, _, err := b.a.readView()
	if err != nil {
		return nil, err
	}
	return fenceLevels(v, node)
}

func apiFenceEvent(e model.FenceEvent) api.FenceEvent {
	return api.FenceEvent{
		ID: e.ID, Target: e.Target, By: e.By, Reason: e.Reason, How: e.How, OK: e.OK, Level: e.Level,
		Devices: e.Devices, Confirmed: e.Confirmed, Error: e.Error, Attempts: e.Attempts,
		Started: e.Started, Duration: e.Duration,
	}
}

func apiFenceRequest(r model.FenceRequest) api.FenceRequest {
	return api.FenceRequest{Target: r.Target, By: r.By, At: r.At, Reason: r.Reason}
}

func (b backend) FenceHistory(ctx context.Context, node string) (api.FenceHistory, error) {
	var events []model.FenceEvent
	var reqs []model.FenceRequest
	var err error
	b.a.node.Read(func(s *store.State) {
		if events, err = clusterstate.FenceHistory(s); err != nil {
			return
		}
		reqs, err = clusterstate.FenceRequests(s)
	})
	if err != nil {
		return api.FenceHistory{}, fmt.Errorf("read fencing history: %w", err)
	}
	out := api.FenceHistory{Events: []api.FenceEvent{}, Requests: []api.FenceRequest{}}
	for _, e := range events {
		if node == "" || e.Target == node {
			out.Events = append(out.Events, apiFenceEvent(e))
		}
	}
	for _, r := range reqs {
		if node == "" || r.Target == node {
			out.Requests = append(out.Requests, apiFenceRequest(r))
		}
	}
	return out, nil
}

// maxFenceReason caps the reason an operator gives.
const maxFenceReason = 512

// RequestFence queues an operator's fence of node for the DC. It refuses
// what the DC would never carry out (an unknown node, the DC itself, a
// node nothing can fence, fencing disabled), so no request waits forever.
func (b backend) RequestFence(ctx context.Context, node string, req api.FenceNodeRequest) (api.FenceNodeResult, error) {
	a := b.a
	reason := strings.TrimSpace(req.Reason)
	if len(reason) > maxFenceReason || strings.ContainsAny(reason, "\n\r\x00") {
		return api.FenceNodeResult{}, badRequest("fence %s: the reason must be one line of at most %d bytes", node, maxFenceReason)
	}
	v, _, err := a.readView()
	if err != nil {
		return api.FenceNodeResult{}, err
	}
	if err := checkNode(v.NodeNames(), node); err != nil {
		return api.FenceNodeResult{}, err
	}
	dc := a.leaderName(v)
	if dc == node {
		return api.FenceNodeResult{}, api.Errorf(api.CodeConflict,
			"fence %s: it is the DC, and a DC never fences itself: stop its agent so that another node takes over (it then fences %s if it held resources), or power it off by hand and run `vigil fence confirm %s`", node, node, node)
	}
	out := api.FenceNodeResult{DC: dc}
	if v.Config.Properties[model.PropStonithEnabled] == "false" {
		return out, api.Errorf(api.CodeConflict, "fence %s: fencing is disabled (stonith-enabled=false): the DC would not run any fence device; enable it with `vigil property set stonith-enabled=true`", node)
	}
	levels, planErr := fencing.Plan(node, v.Topology, v.Devices)
	for i, l := range levels {
		var names []string
		for _, r := range l {
			names = append(names, r.Device)
		}
		out.Plan = append(out.Plan, fmt.Sprintf("level %d: %s", i+1, strings.Join(names, "+")))
	}
	rec := v.NodeRecords[node]
	switch {
	case planErr == nil:
	case errors.Is(planErr, fencing.ErrNoDevice) && rec.Watchdog != nil && !a.alive(node):
		// The DC proves it down once its watchdog has surely fired.
		out.Plan = append(out.Plan, fmt.Sprintf("watchdog (%s %s), once %s has been lost for lease + watchdog time", rec.Watchdog.Backend, rec.Watchdog.Timeout, node))
	case errors.Is(planErr, fencing.ErrNoDevice):
		return out, api.Errorf(api.CodeConflict, "fence %s: no fence device can fence it: configure one (`vigil fence create NAME AGENT ... pcmk_host_list=%s`), or if it is off, `vigil fence confirm %s`", node, node, node)
	default:
		return out, api.Errorf(api.CodeConflict, "fence %s: its fencing topology is broken: %v", node, planErr)
	}
	for _, r := range v.FenceRequests {
		if r.Target == node {
			out.Replaced = true
		}
	}
	r := model.FenceRequest{V: clusterstate.FormatVersion, Target: node, By: "operator via " + a.cfg.Node, At: time.Now().UTC(), Reason: reason}
	if _, err := a.write(ctx, store.Txn{Ops: []store.Op{{Key: clusterstate.FenceRequestKey(node), Value: clusterstate.Encode(r)}}}); err != nil {
		return api.FenceNodeResult{}, err
	}
	a.log.Warn("operator asked to fence a node", "peer", node, "reason", reason)
	out.Request = apiFenceRequest(r)
	return out, nil
}

// leaderName is the Raft leader's name (the DC when quorate), else the
// recorded DC.
func (a *Agent) leaderName(v controller.View) string {
	if lead := a.node.Status().Lead; lead != 0 {
		for _, m := range v.Members {
			if m.ID == lead {
				return m.Name
			}
		}
	}
	return v.DC.Name
}

// --- status ---

// protection says what proves node down if it is lost, and its fence
// levels ("ipmi1 (level 1)"); problem is set when its topology is broken.
func protection(v controller.View, node string) (text string, levels []string, problem string) {
	stonith := v.Config.Properties[model.PropStonithEnabled] != "false"
	plan, err := fencing.Plan(node, v.Topology, v.Devices)
	switch {
	case err == nil:
		for i, l := range plan {
			var names []string
			for _, r := range l {
				names = append(names, r.Device)
			}
			levels = append(levels, fmt.Sprintf("%s (level %d)", strings.Join(names, "+"), i+1))
		}
	case !errors.Is(err, fencing.ErrNoDevice):
		problem = fmt.Sprintf("%s cannot be fenced: %v", node, err)
	}
	var parts []string
	if len(levels) > 0 && stonith {
		parts = append(parts, "fence: "+strings.Join(levels, ", "))
	}
	if w := v.NodeRecords[node].Watchdog; w != nil {
		parts = append(parts, fmt.Sprintf("watchdog (%s %s)", w.Backend, fmtDuration(w.Timeout)))
	}
	if len(parts) == 0 {
		text = model.ProtectNone
		if len(levels) > 0 {
			text += " (fence devices disabled: stonith-enabled=false)"
		}
		return text, levels, problem
	}
	return strings.Join(parts, "; "), levels, problem
}

// addFenceStatus fills the fencing part of Status: each node's protection,
// warnings for nodes with none and for failed last fencings, and the fence
// requests in flight.
func (b backend) addFenceStatus(out *api.Status, v controller.View) {
	a := b.a
	for i := range out.Nodes {
		n := &out.Nodes[i]
		if n.Role == string(model.RoleWitness) {
			continue
		}
		text, levels, problem := protection(v, n.Name)
		n.Protection, n.Fencing = text, levels
		if problem != "" {
			out.Warnings = append(out.Warnings, problem)
		}
		switch {
		case text == model.ProtectNone:
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s has no fence device and no watchdog: if it is lost, its resources wait for 'vigil fence confirm %s'", n.Name, n.Name))
		case strings.HasPrefix(text, model.ProtectNone):
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s has fence devices but fencing is disabled (stonith-enabled=false), and no watchdog: if it is lost, its resources wait for 'vigil fence confirm %s'", n.Name, n.Name))
		}
	}
	for _, name := range sortedNames(v.DeviceHealth) {
		if m := v.DeviceHealth[name]; !m.OK {
			if _, still := v.Devices[name]; still {
				out.Warnings = append(out.Warnings, fmt.Sprintf("fence device %s failed its monitor: %s", name, deviceHealth(v.DeviceHealth, name)))
			}
		}
	}
	var events []model.FenceEvent
	var err error
	a.node.Read(func(s *store.State) { events, err = clusterstate.FenceHistory(s) })
	if err != nil {
		out.Warnings = append(out.Warnings, fmt.Sprintf("fencing history unreadable: %v", err))
	}
	last := map[string]model.FenceEvent{}
	for _, e := range events {
		last[e.Target] = e
	}
	for _, node := range sortedNames(last) {
		e := last[node]
		if e.OK {
			continue
		}
		w := fmt.Sprintf("the last attempt to fence %s failed (%s, %s): %s", node, e.Started.Local().Format(time.DateTime), e.By, e.Error)
		if !a.alive(node) {
			w += fmt.Sprintf("; its resources stay blocked until a fence succeeds or 'vigil fence confirm %s'", node)
		}
		out.Warnings = append(out.Warnings, w)
	}
	for _, r := range v.FenceRequests {
		out.FenceRequests = append(out.FenceRequests, apiFenceRequest(r))
	}
}

// deviceHealth renders a device's last monitor for people: "ok", "FAILED
// (rc 1): output", or "not checked yet".
func deviceHealth(health map[string]model.FenceMonitor, name string) string {
	m, ok := health[name]
	switch {
	case !ok:
		return "not checked yet"
	case m.OK:
		return "ok (checked " + m.At.UTC().Format(time.RFC3339) + ")"
	}
	out := strings.TrimSpace(m.Output)
	if i := strings.IndexByte(out, '\n'); i >= 0 {
		out = out[:i]
	}
	return fmt.Sprintf("FAILED (rc %d at %s): %s", m.RC, m.At.UTC().Format(time.RFC3339), out)
}
