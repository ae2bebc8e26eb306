// Package clusterstate is the typed view of the replicated store: where each
// kind of configuration and status lives (docs/architecture.md lists the
// keys), how it is encoded, and how a configuration change becomes one
// guarded transaction. The API, the controller and the executor all read and
// write through it, so the layout is defined once.
package clusterstate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/vigil-ha/vigil/internal/fencing"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

// Key prefixes.
const (
	PrefixConfig      = "config/"
	PrefixResources   = "config/resources/"
	PrefixGroups      = "config/groups/"
	PrefixClones      = "config/clones/"
	PrefixLocations   = "config/constraints/location/"
	PrefixColocations = "config/constraints/colocation/"
	PrefixOrders      = "config/constraints/order/"
	PrefixNodeConfig  = "config/nodes/"
	PrefixProperties  = "config/properties/"
	PrefixFenceDevice = "config/fencing/devices/"
	PrefixFenceLevels = "config/fencing/levels/"

	KeyDC            = "status/dc"
	PrefixTasks      = "status/tasks/"
	PrefixResults    = "status/results/"
	PrefixRecords    = "status/resources/"
	PrefixNodeRecord = "status/nodes/"
	// Operator requests to one node's executor (status keys: they do not
	// move the epoch). The executor acts on each and deletes the key in the
	// same transaction as the record it writes.
	PrefixCleanup = "status/cleanup/" // probe again and reset the fail count
	PrefixRestart = "status/restart/" // stop, then start, where it runs

	PrefixFenceHistory  = "status/fencing/history/"
	PrefixFenceRequests = "status/fencing/requests/"
	PrefixFenceMonitor  = "status/fencing/monitor/"
	// PrefixFenceIntent holds the fences a DC has decided and is running:
	// committed before the device runs, so that only a DC that still has
	// a quorum behind it ever powers a node off; deleted with the outcome.
	PrefixFenceIntent = "status/fencing/inflight/"
)

// FenceHistoryKeep is how many fencing events the history keeps.
const FenceHistoryKeep = 200

// FormatVersion is written into every status record ("v"): a reader that
// finds a newer one knows it is older than the writer.
const FormatVersion = 1

// TaskKey, ResultKey, RecordKey and NodeKey build status keys.
func TaskKey(node, id string) string      { return PrefixTasks + node + "/" + id }
func ResultKey(node, id string) string    { return PrefixResults + node + "/" + id }
func RecordKey(node, inst string) string  { return PrefixRecords + node + "/" + inst }
func NodeKey(node string) string          { return PrefixNodeRecord + node }
func CleanupKey(node, inst string) string { return PrefixCleanup + node + "/" + inst }
func RestartKey(node, inst string) string { return PrefixRestart + node + "/" + inst }
func FenceDeviceKey(name string) string   { return PrefixFenceDevice + name }
func FenceLevelsKey(node string) string   { return PrefixFenceLevels + node }
func FenceRequestKey(node string) string  { return PrefixFenceRequests + node }
func FenceMonitorKey(dev string) string   { return PrefixFenceMonitor + dev }
func FenceIntentKey(node string) string   { return PrefixFenceIntent + node }

// FenceEventKey orders history entries by time.
func FenceEventKey(id string) string      { return PrefixFenceHistory + id }
func ResourceKey(id string) string        { return PrefixResources + id }
func NodeConfigKey(name string) string    { return PrefixNodeConfig + name }
func PropertyKey(name string) string      { return PrefixProperties + name }
func LocationKey(id string) string        { return PrefixLocations + id }
func ColocationKey(id string) string      { return PrefixColocations + id }
func OrderConstraintKey(id string) string { return PrefixOrders + id }

// decode reads strictly: an unknown field means a newer writer.
func decode(key string, b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// Encode renders a value for the store (deterministic: map keys sorted).
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("clusterstate: encode %T: %v", v, err)) // programmer error: only plain types are stored
	}
	return b
}

func rangeDecode[T any](s *store.State, prefix string, out *[]T) error {
	var err error
	s.Range(prefix, func(k string, it store.Item) bool {
		var v T
		if err = decode(k, it.Value, &v); err != nil {
			return false
		}
		*out = append(*out, v)
		return true
	})
	return err
}

// LoadConfig assembles the resource configuration from the store.
func LoadConfig(s *store.State) (model.Config, error) {
	var c model.Config
	for _, step := range []func() error{
		func() error { return rangeDecode(s, PrefixResources, &c.Resources) },
		func() error { return rangeDecode(s, PrefixGroups, &c.Groups) },
		func() error { return rangeDecode(s, PrefixClones, &c.Clones) },
		func() error { return rangeDecode(s, PrefixLocations, &c.Locations) },
		func() error { return rangeDecode(s, PrefixColocations, &c.Colocations) },
		func() error { return rangeDecode(s, PrefixOrders, &c.Orders) },
		func() error { return rangeDecode(s, PrefixNodeConfig, &c.Nodes) },
		func() error { return rangeDecode(s, PrefixDatastores, &c.Datastores) },
	} {
		if err := step(); err != nil {
			return model.Config{}, err
		}
	}
	s.Range(PrefixProperties, func(k string, it store.Item) bool {
		if c.Properties == nil {
			c.Properties = map[string]string{}
		}
		c.Properties[strings.TrimPrefix(k, PrefixProperties)] = string(it.Value)
		return true
	})
	return c, nil
}

// configEntries flattens a configuration into its store keys and values.
func configEntries(c model.Config) map[string][]byte {
	m := map[string][]byte{}
	for _, r := range c.Resources {
		m[ResourceKey(r.ID)] = Encode(r)
	}
	for _, g := range c.Groups {
		m[PrefixGroups+g.ID] = Encode(g)
	}
	for _, cl := range c.Clones {
		m[PrefixClones+cl.ID] = Encode(cl)
	}
	for _, l := range c.Locations {
		m[LocationKey(l.ID)] = Encode(l)
	}
	for _, co := range c.Colocations {
		m[ColocationKey(co.ID)] = Encode(co)
	}
	for _, o := range c.Orders {
		m[OrderConstraintKey(o.ID)] = Encode(o)
	}
	for _, n := range c.Nodes {
		m[NodeConfigKey(n.Name)] = Encode(n)
	}
	for k, v := range c.Properties {
		m[PropertyKey(k)] = []byte(v)
	}
	for _, d := range c.Datastores {
		m[DatastoreKey(d.Name)] = Encode(d)
	}
	return m
}

// ConfigOps returns the store operations that turn from into to: puts for
// what is new or changed, deletes for what is gone, sorted by key.
func ConfigOps(from, to model.Config) []store.Op {
	a, b := configEntries(from), configEntries(to)
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

// DCRecord names the DC and its term.
type DCRecord struct {
	V    int    `json:"v"`
	Name string `json:"name"`
	Term uint64 `json:"term"`
}

// DC returns the recorded DC (zero if none).
func DC(s *store.State) DCRecord {
	var d DCRecord
	if it, ok := s.Get(KeyDC); ok {
		_ = decode(KeyDC, it.Value, &d)
	}
	return d
}

// Records returns every resource record, or those of one node.
func Records(s *store.State, node string) ([]model.ResourceRecord, error) {
	var out []model.ResourceRecord
	prefix := PrefixRecords
	if node != "" {
		prefix += node + "/"
	}
	err := rangeDecode(s, prefix, &out)
	return out, err
}

// Tasks returns the outstanding tasks, or those for one node.
func Tasks(s *store.State, node string) ([]model.Task, error) {
	var out []model.Task
	prefix := PrefixTasks
	if node != "" {
		prefix += node + "/"
	}
	err := rangeDecode(s, prefix, &out)
	return out, err
}

// Results returns the order results, or those of one node.
func Results(s *store.State, node string) ([]model.TaskResult, error) {
	var out []model.TaskResult
	prefix := PrefixResults
	if node != "" {
		prefix += node + "/"
	}
	err := rangeDecode(s, prefix, &out)
	return out, err
}

// Result returns one task's result.
func Result(s *store.State, node, id string) (model.TaskResult, bool) {
	var r model.TaskResult
	it, ok := s.Get(ResultKey(node, id))
	if !ok || decode(ResultKey(node, id), it.Value, &r) != nil {
		return r, false
	}
	return r, true
}

// NodeRecords returns the node records by name, with their store versions.
func NodeRecords(s *store.State) (map[string]model.NodeRecord, error) {
	out := map[string]model.NodeRecord{}
	var err error
	s.Range(PrefixNodeRecord, func(k string, it store.Item) bool {
		var r model.NodeRecord
		if err = decode(k, it.Value, &r); err != nil {
			return false
		}
		r.Version, r.Index = it.Version, it.Index
		out[r.Name] = r
		return true
	})
	return out, err
}

// NodeRecord returns one node's record (zero with the name set if none).
func NodeRecord(s *store.State, name string) model.NodeRecord {
	r := model.NodeRecord{V: FormatVersion, Name: name}
	if it, ok := s.Get(NodeKey(name)); ok {
		_ = decode(NodeKey(name), it.Value, &r)
		r.Version, r.Index = it.Version, it.Index
	}
	return r
}

// LoadFencing returns the fence devices by name and the topology.
func LoadFencing(s *store.State) (map[string]fencing.Device, fencing.Topology, error) {
	var list []fencing.Device
	if err := rangeDecode(s, PrefixFenceDevice, &list); err != nil {
		return nil, nil, err
	}
	devices := make(map[string]fencing.Device, len(list))
	for _, d := range list {
		devices[d.Name] = d
	}
	topo := fencing.Topology{}
	var err error
	s.Range(PrefixFenceLevels, func(k string, it store.Item) bool {
		var levels [][]string
		if err = decode(k, it.Value, &levels); err != nil {
			return false
		}
		topo[strings.TrimPrefix(k, PrefixFenceLevels)] = levels
		return true
	})
	return devices, topo, err
}

// FenceHistory returns the fencing events, oldest first.
func FenceHistory(s *store.State) ([]model.FenceEvent, error) {
	var out []model.FenceEvent
	err := rangeDecode(s, PrefixFenceHistory, &out)
	return out, err
}

// FenceRequests returns the operators' pending fence requests.
func FenceRequests(s *store.State) ([]model.FenceRequest, error) {
	var out []model.FenceRequest
	err := rangeDecode(s, PrefixFenceRequests, &out)
	return out, err
}

// PruneFenceHistory returns deletes that keep the newest keep events
// once one more is added.
func PruneFenceHistory(s *store.State, keep int) []store.Op {
	var keys []string
	s.Range(PrefixFenceHistory, func(k string, _ store.Item) bool { keys = append(keys, k); return true })
	var ops []store.Op
	for len(keys) >= keep {
		ops = append(ops, store.Op{Key: keys[0], Delete: true})
		keys = keys[1:]
	}
	return ops
}

// FenceMonitors returns the last health check of each fence device.
func FenceMonitors(s *store.State) (map[string]model.FenceMonitor, error) {
	var list []model.FenceMonitor
	if err := rangeDecode(s, PrefixFenceMonitor, &list); err != nil {
		return nil, err
	}
	out := make(map[string]model.FenceMonitor, len(list))
	for _, m := range list {
		out[m.Device] = m
	}
	return out, nil
}
