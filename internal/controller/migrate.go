package controller

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
	"github.com/vigil-ha/vigil/internal/store"
)

// Live migration, driven by the DC.
//
// A plan's migrate of a vigil:vm instance from S to T runs as three tasks,
// one at a time, each issued in the round that reads the previous one's
// result:
//
//  1. prepare: migrate_from on T (Meta migrate_phase=prepare,
//     migrate_listen=T's link-0 address). T starts a QEMU waiting for the
//     guest and answers the URI to send to. T's record: migrating.
//  2. transfer: migrate_to on S (Meta migrate_uri=that URI). Success: S
//     handed the guest over, quit its QEMU and released the disk lease; S's
//     record: stopped. Failure: the guest still runs on S; S's record is
//     left started.
//  3. finish: migrate_from on T (migrate_phase=finish). T waits for the
//     guest to run and takes the disk lease. T's record: started.
//
// The progress lives in the replicated store, in a Migration record under
// PrefixMigrations, written in the same transaction as the task of each
// step and as the deletion of the previous step's result: a new DC reads
// it and continues (a step already running on a node finishes and answers;
// a step not yet run is refused by the executor as of an older term, and
// the migration is aborted). While the record exists the instance is
// pending in the scheduler's snapshot: nothing else is planned for it.
//
// A failed or refused step, or a lost node, aborts: T is stopped (a
// MigrateAbort stop, which counts one failure on T so that
// migration-threshold ends the retries; a MigrateCleanup stop when only a
// DC change cut the migration short), then the record is deleted and the
// scheduler decides again from the records. If T is not alive the record
// is deleted at once and T's migrating record makes the instance wait for
// T to be proven down.
//
// # Never twice
//
// The guest runs on one node at a time because:
//
//   - QEMU resumes the guest on T only after S completed the migration and
//     paused for good (postmigrate); Vigil never resumes a source.
//   - Records: at most one node is ever recorded started. Prepare leaves T
//     migrating (not started); transfer turns S stopped before finish, the
//     next task, can turn T started. A failed transfer leaves S started and
//     T is stopped.
//   - Disks: T takes the disk lease in finish only when free, and S
//     releases it only after its QEMU exited; T kills its QEMU if anyone
//     else holds it.
//   - Lost nodes: a migrating record counts as possibly active on a lost
//     node, like started (the scheduler's "unknown"): if T is lost after
//     prepare, the guest may have reached it (a transfer that completed), so
//     the instance is not started elsewhere until T is proven down. If S is
//     lost, its started record already holds the instance until S is
//     proven down; the unanswered step keeps the migration record until
//     then, and T, which never ran finish, is stopped before the record
//     goes.
//   - A DC change cannot fork the protocol: every write of a migration
//     record is in a round guarded on the DC record, and executors refuse
//     tasks of older terms.
//
// # Mixed releases
//
// The steps need every node to know them: an executor of a release
// without live migration would record a successful prepare as started (a
// second started record while the source runs), and a DC of such a
// release, elected mid-way, would not know the migration record nor the
// migrating state. So a migration begins only while every member that
// runs resources (witnesses run none, and never act as DC) advertises
// model.FeatureLiveMigration in its node record, which its executor
// rewrites at every registration. Otherwise the DC moves the VM as any
// other resource, by a stop and a start (dispatch), and says why in the
// log and in the stop task's reason. The DC checks again before the
// transfer, the point of no return: if a node without the feature joined
// since the prepare, the target is cleaned up (no failure counted) and the
// VM stays on its source. After the transfer the migration is finished
// (the guest has left the source). A node restarted mid-way refuses the
// step it had, which aborts the migration as any refusal does.

// PrefixMigrations holds the live migrations in progress, by instance.
const PrefixMigrations = "status/migrations/"

// MigrationKey is the key of an instance's migration record.
func MigrationKey(inst string) string { return PrefixMigrations + inst }

// The vigil:vm agent's migration meta keys (agents.MetaMigratePhase...,
// checked equal in the tests; the controller does not import the agents).
const (
	metaMigratePhase  = "migrate_phase"
	metaMigrateListen = "migrate_listen"
	metaMigrateURI    = "migrate_uri"
	phasePrepare      = "prepare"
	phaseFinish       = "finish"
	// vmAgent is the agent whose migrations the DC drives step by step.
	vmAgent = "vigil:vm"
)

// Migration is a live migration in progress, as the DC records it.
type Migration struct {
	V        int    `json:"v"`
	Resource string `json:"resource"` // instance id
	Source   string `json:"source"`
	Target   string `json:"target"`
	// Step is the step running now (model.MigratePrepare...).
	Step string `json:"step"`
	// Task is the id of the current step's task; TaskNode its node.
	Task     string `json:"task"`
	TaskNode string `json:"task_node"`
	// URI is where the source sends, from the prepare step's output.
	URI string `json:"uri,omitempty"`
	// Term is the term of the DC that wrote the record last.
	Term    uint64    `json:"term"`
	Started time.Time `json:"started"`
	Reason  string    `json:"reason,omitempty"`
	// Error says why the migration is being aborted (abort/cleanup steps).
	Error string `json:"error,omitempty"`
	// Version is the store version as read (not stored).
	Version uint64 `json:"-"`
}

// readMigrations reads the migration records.
func readMigrations(s *store.State) ([]Migration, error) {
	var out []Migration
	var err error
	s.Range(PrefixMigrations, func(k string, it store.Item) bool {
		var m Migration
		if err = json.Unmarshal(it.Value, &m); err != nil {
			err = fmt.Errorf("controller: decode %s: %w", k, err)
			return false
		}
		m.Version = it.Version
		out = append(out, m)
		return true
	})
	return out, err
}

// LiveMigratable reports whether the DC migrates r step by step (a vigil:vm
// resource); other migratable resources move by a stop and a start.
func LiveMigratable(r model.Resource) bool { return r.Agent == vmAgent }

// linkHost returns the host part of a node's first link: the address the
// other nodes reach it on (the migration stream goes there).
func linkHost(v View, node string) string {
	for _, m := range v.Members {
		if m.Name != node || len(m.Links) == 0 {
			continue
		}
		host, _, err := net.SplitHostPort(m.Links[0])
		if err != nil {
			return ""
		}
		if net.ParseIP(host) == nil {
			return ""
		}
		return host
	}
	return ""
}

// migrateRound advances the migrations in progress and starts those the
// plan asks for. It returns the store ops (migration records) and the tasks
// to commit with the round.
func (c *Controller) migrateRound(v View, snap *model.Snapshot, plan *scheduler.Plan, term uint64) ([]store.Op, []model.Task) {
	state := map[string]string{}
	for _, n := range snap.Nodes {
		state[n.Name] = n.State
	}
	up := func(n string) bool { return state[n] == model.NodeOnline || state[n] == model.NodePending }
	var ops []store.Op
	var tasks []model.Task
	busy := map[string]bool{}
	for _, m := range v.Migrations {
		busy[m.Resource] = true
		o, t := c.advance(v, m, up, term)
		ops = append(ops, o...)
		tasks = append(tasks, t...)
	}
	// A prepared target with no migration (one whose record a lost node
	// left behind, then came back) runs no guest: stop it, counting nothing.
	for _, r := range v.Records {
		if r.State != model.StateMigrating || busy[r.Resource] || !up(r.Node) || pendingFor(snap, r.Resource) {
			continue
		}
		m := Migration{V: clusterstate.FormatVersion, Resource: r.Resource, Source: "", Target: r.Node, Term: term,
			Started: c.cfg.Now(), Error: "a prepared migration target with no migration in progress"}
		busy[r.Resource] = true
		o, t := c.abort(v, m, term, model.MigrateCleanup, m.Error, up)
		ops = append(ops, o...)
		tasks = append(tasks, t...)
	}
	probing := slices.ContainsFunc(snap.Nodes, func(n model.NodeStatus) bool { return n.State == model.NodePending && !n.Witness })
	for _, a := range plan.Actions {
		if a.Kind != scheduler.ActionMigrate || len(a.After) > 0 || busy[a.Resource] || pendingFor(snap, a.Resource) || probing {
			continue
		}
		rc, err := InstanceConfig(&v.Config, a.Resource)
		if err != nil || !LiveMigratable(rc) {
			continue
		}
		if why := liveMoveBlocked(v, snap, a); why != "" {
			continue // dispatch moves it by a stop and a start (moveReason)
		}
		listen := linkHost(v, a.Node)
		busy[a.Resource] = true
		m := Migration{V: clusterstate.FormatVersion, Resource: a.Resource, Source: a.From, Target: a.Node,
			Term: term, Started: c.cfg.Now(), Reason: a.Reason}
		t := c.stepTask(v, &m, model.MigratePrepare, rc, term, map[string]string{metaMigratePhase: phasePrepare, metaMigrateListen: listen})
		c.log.Info("live migration begins", "resource", m.Resource, "source", m.Source, "target", m.Target, "listen", listen, "reason", a.Reason)
		ops = append(ops, store.Op{Key: MigrationKey(m.Resource), Value: clusterstate.Encode(m)})
		tasks = append(tasks, t)
	}
	return ops, tasks
}

// migrating reports whether dispatch must leave a plan action to
// migrateRound: a migrate of a live-migratable instance whose nodes allow
// it (the same test migrateRound makes).
func migrating(v View, snap *model.Snapshot, a scheduler.Action) bool {
	if a.Kind != scheduler.ActionMigrate {
		return false
	}
	rc, err := InstanceConfig(&v.Config, a.Resource)
	if err != nil || !LiveMigratable(rc) {
		return false
	}
	return liveMoveBlocked(v, snap, a) == ""
}

// liveMoveBlocked says why a migrate action of a live-migratable instance
// cannot be a live migration now ("" when it can): live migration off in
// the cluster (liveMigrationOff), no address to send to on the target, or
// a node that is not online.
func liveMoveBlocked(v View, snap *model.Snapshot, a scheduler.Action) string {
	if why := liveMigrationOff(v); why != "" {
		return why
	}
	if linkHost(v, a.Node) == "" {
		return "the target " + a.Node + " has no IP address on its first link for the migration stream"
	}
	for _, name := range []string{a.From, a.Node} {
		i := slices.IndexFunc(snap.Nodes, func(n model.NodeStatus) bool { return n.Name == name })
		if i < 0 {
			return name + " is not a member"
		}
		if st := snap.Nodes[i].State; st != model.NodeOnline {
			return name + " is " + st
		}
	}
	return ""
}

// LiveMigrationOff says why the DC moves VMs by a stop and a start rather
// than live-migrating them, "" when it live-migrates them (for the API:
// status and explain).
func LiveMigrationOff(v View) string { return liveMigrationOff(v) }

// liveMigrationOff says why live migration is off in the cluster: members
// that run resources (not witnesses) whose node record does not advertise
// model.FeatureLiveMigration (a node of an older release, or one that has
// never registered). "" when every one does.
func liveMigrationOff(v View) string {
	var old []string
	for _, m := range v.Members {
		if m.Role == store.RoleWitness {
			continue
		}
		if rec, ok := v.NodeRecords[m.Name]; !ok || !rec.Supports(model.FeatureLiveMigration) {
			old = append(old, m.Name)
		}
	}
	if len(old) == 0 {
		return ""
	}
	slices.Sort(old)
	verb := "does"
	if len(old) > 1 {
		verb = "do"
	}
	return fmt.Sprintf("live migration is off until every node supports it: %s (an older release, or not registered yet) %s not advertise %q",
		strings.Join(old, ", "), verb, model.FeatureLiveMigration)
}

// moveReason is the reason of the stop task by which dispatch begins the
// move of a plan's migrate action: the plan's reason, and for a
// live-migratable instance why it is moved by a stop and a start rather
// than live-migrated (also logged), so that the status shows it.
func (c *Controller) moveReason(v View, snap *model.Snapshot, a scheduler.Action) string {
	rc, err := InstanceConfig(&v.Config, a.Resource)
	if err != nil || !LiveMigratable(rc) {
		return a.Reason
	}
	why := liveMoveBlocked(v, snap, a)
	if why == "" {
		return a.Reason // not reached: migrateRound takes it
	}
	c.log.Warn("VM moved by a stop and a start, not live-migrated", "resource", a.Resource, "source", a.From, "target", a.Node, "why", why)
	return strings.TrimPrefix(a.Reason+"; ", "; ") + "stop and start instead of a live migration: " + why
}

func pendingFor(snap *model.Snapshot, inst string) bool {
	return slices.ContainsFunc(snap.Pending, func(p model.Pending) bool { return p.Resource == inst && p.Action != pendingMigrate })
}

// pendingMigrate is the Pending action the snapshot carries for an
// instance with a migration record.
const pendingMigrate = "live-migrate"

// advance moves one migration on by its current step's result.
func (c *Controller) advance(v View, m Migration, up func(string) bool, term uint64) ([]store.Op, []model.Task) {
	var res *model.TaskResult
	for i := range v.Results {
		if r := &v.Results[i]; r.ID == m.Task && r.Node == m.TaskNode {
			res = r
		}
	}
	if res == nil {
		if slices.ContainsFunc(v.Tasks, func(t model.Task) bool { return t.ID == m.Task && t.Node == m.TaskNode }) {
			return nil, nil // the step runs (or waits for its node to be proven down)
		}
		// The task is gone unanswered: its node was proven down.
		return c.finishOrAbort(v, m, term, fmt.Sprintf("%s of %s: the task vanished unanswered (%s proven down)", m.Step, m.Resource, m.TaskNode), false, up)
	}
	if m.Step == model.MigrateAbort || m.Step == model.MigrateCleanup {
		// Whatever the stop's outcome (a failed stop leaves a stop_failed
		// record, which the scheduler blocks on), the migration is over.
		c.log.Info("live migration aborted", "resource", m.Resource, "source", m.Source, "target", m.Target, "why", m.Error, "stop_ok", res.OK)
		return []store.Op{{Key: MigrationKey(m.Resource), Delete: true}}, nil
	}
	if res.Refused != "" || !res.OK {
		why := res.Refused
		if why == "" {
			why = res.Output
		}
		// A step refused because the DC changed is no fault of the target.
		count := !(res.Refused != "" && res.Term != term)
		return c.finishOrAbort(v, m, term, fmt.Sprintf("%s on %s failed: %s", m.Step, m.TaskNode, oneLine(why)), count, up)
	}
	rc, err := InstanceConfig(&v.Config, m.Resource)
	if err != nil {
		return c.finishOrAbort(v, m, term, err.Error(), false, up)
	}
	switch m.Step {
	case model.MigratePrepare:
		uri := oneLine(res.Output)
		if uri == "" || !up(m.Source) {
			return c.finishOrAbort(v, m, term, fmt.Sprintf("prepare on %s answered no URI, or the source %s is gone", m.Target, m.Source), uri == "", up)
		}
		if off := liveMigrationOff(v); off != "" {
			// A node of an older release joined since the migration
			// began: do not hand the guest over (no failure counted).
			return c.finishOrAbort(v, m, term, off, false, up)
		}
		m.URI = uri
		t := c.stepTask(v, &m, model.MigrateTransfer, rc, term, map[string]string{metaMigrateURI: uri})
		return []store.Op{{Key: MigrationKey(m.Resource), Value: clusterstate.Encode(m)}}, []model.Task{t}
	case model.MigrateTransfer:
		if !up(m.Target) {
			return c.finishOrAbort(v, m, term, "the target "+m.Target+" is gone after the transfer", false, up)
		}
		t := c.stepTask(v, &m, model.MigrateFinish, rc, term, map[string]string{metaMigratePhase: phaseFinish})
		return []store.Op{{Key: MigrationKey(m.Resource), Value: clusterstate.Encode(m)}}, []model.Task{t}
	case model.MigrateFinish:
		c.log.Info("live migration done", "resource", m.Resource, "source", m.Source, "target", m.Target,
			"took", c.cfg.Now().Sub(m.Started))
		return []store.Op{{Key: MigrationKey(m.Resource), Delete: true}}, nil
	}
	return c.finishOrAbort(v, m, term, "unknown migration step "+m.Step, false, up)
}

// finishOrAbort aborts a migration: it stops the target if it is alive
// (counting a failure there if count), else it deletes the record at once.
func (c *Controller) finishOrAbort(v View, m Migration, term uint64, why string, count bool, up func(string) bool) ([]store.Op, []model.Task) {
	kind := model.MigrateCleanup
	if count {
		kind = model.MigrateAbort
	}
	c.log.Warn("live migration failed; the target is cleaned up", "resource", m.Resource, "source", m.Source, "target", m.Target, "why", why)
	return c.abort(v, m, term, kind, why, up)
}

// abort issues the stop of kind (MigrateAbort or MigrateCleanup) on the
// migration's target and records it as the current step; with the target
// not alive, it deletes the record (the target's own records hold the
// instance until it is proven down).
func (c *Controller) abort(v View, m Migration, term uint64, kind, why string, up func(string) bool) ([]store.Op, []model.Task) {
	if !up(m.Target) {
		return []store.Op{{Key: MigrationKey(m.Resource), Delete: true}}, nil
	}
	rc, err := InstanceConfig(&v.Config, m.Resource)
	if err != nil {
		// No configuration, no stop: the scheduler's orphan rules take it.
		return []store.Op{{Key: MigrationKey(m.Resource), Delete: true}}, nil
	}
	m.Error = why
	t := c.stepTask(v, &m, kind, rc, term, nil)
	t.Action = model.ActStop
	t.Reason = why
	return []store.Op{{Key: MigrationKey(m.Resource), Value: clusterstate.Encode(m)}}, []model.Task{t}
}

// stepTask builds the task of step on its node, with the agent's meta keys
// in the task's copy of the configuration, and points m at it.
func (c *Controller) stepTask(v View, m *Migration, step string, rc model.Resource, term uint64, meta map[string]string) model.Task {
	node, action := m.Target, model.ActMigrateFrom
	if step == model.MigrateTransfer {
		node, action = m.Source, model.ActMigrateTo
	}
	if len(meta) > 0 {
		mm := maps.Clone(rc.Meta)
		if mm == nil {
			mm = map[string]string{}
		}
		maps.Copy(mm, meta)
		rc.Meta = mm
	}
	c.mu.Lock()
	c.seq++
	id := fmt.Sprintf("t%d-%d-%d", term, v.Index, c.seq)
	c.mu.Unlock()
	m.Step, m.Task, m.TaskNode, m.Term = step, id, node, term
	reason := m.Reason
	if reason == "" {
		reason = "live migration " + m.Source + " → " + m.Target
	}
	return model.Task{
		V: clusterstate.FormatVersion, ID: id, Term: term, Node: node, Action: action,
		Resource: m.Resource, Config: rc, MigrateSource: m.Source, MigrateTarget: m.Target,
		Migration: step, Reason: reason, Issued: c.cfg.Now(),
	}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// ReadMigration reads the live migration of instance inst in progress, if
// any (for the API).
func ReadMigration(s *store.State, inst string) (Migration, bool, error) {
	it, ok := s.Get(MigrationKey(inst))
	if !ok {
		return Migration{}, false, nil
	}
	var m Migration
	if err := json.Unmarshal(it.Value, &m); err != nil {
		return m, false, fmt.Errorf("controller: decode %s: %w", MigrationKey(inst), err)
	}
	m.Version = it.Version
	return m, true, nil
}
