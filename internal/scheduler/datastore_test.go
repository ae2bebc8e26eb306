package scheduler_test

import (
	"strings"
	"testing"

	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/scheduler"
)

// vm adds a vigil:vm resource with the given disk parameter.
func (b *sb) vm(id, disk string) *sb {
	b.s.Config.Resources = append(b.s.Config.Resources, model.Resource{ID: id, Agent: model.AgentVM,
		Params: map[string]string{"disk": disk}})
	return b
}

// groupOf groups resources already added.
func (b *sb) groupOf(id string, members ...string) *sb {
	b.s.Config.Groups = append(b.s.Config.Groups, model.Group{ID: id, Resources: members})
	return b
}

// param sets one of a resource's parameters.
func (b *sb) param(id, k, v string) *sb {
	r := b.resource(id)
	if r.Params == nil {
		r.Params = map[string]string{}
	}
	r.Params[k] = v
	return b
}

// dsCheck records node's latest check of a datastore, as the node's agent
// writes it to status/datastores/<node>.
func (b *sb) dsCheck(node, ds string, ok bool) *sb {
	i := 0
	for i < len(b.s.DatastoreHealth) && b.s.DatastoreHealth[i].Node != node {
		i++
	}
	if i == len(b.s.DatastoreHealth) {
		b.s.DatastoreHealth = append(b.s.DatastoreHealth, model.DatastoreHealth{Node: node, Datastores: map[string]model.DatastoreCheck{}})
	}
	c := model.DatastoreCheck{OK: ok}
	if !ok {
		c.Error = "datastore c1/" + ds + " at /srv/" + ds + ": no marker"
	}
	b.s.DatastoreHealth[i].Datastores[ds] = c
	return b
}

// A node whose latest check of a VM's datastore failed is refused for that
// VM's start, with a reason; a node that has not checked it yet is not; a
// VM already running there is left running.
func TestRuleDatastoreHealth(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "failed check: the VM starts elsewhere, though it prefers the node",
			snap: newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").loc("vm1", "n1", 50).
				dsCheck("n1", "ds1", false).dsCheck("n2", "ds1", true).snap(),
			actions: []string{"start vm1@n2"}, place: map[string]string{"vm1": "n2"},
			reason: map[string]string{"vm1": "n1 excluded (datastore ds1 is not usable)"},
			notes:  []string{"datastore ds1 is not usable on n1: VMs on it are not started there"}},
		{name: "a node that never reported is not refused (a fresh cluster)",
			snap: newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").loc("vm1", "n1", 50).
				dsCheck("n2", "ds1", true).snap(),
			actions: []string{"start vm1@n1"}},
		{name: "a node that has not checked this datastore yet is not refused",
			snap: newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").loc("vm1", "n1", 50).
				dsCheck("n1", "ds2", false).snap(),
			actions: []string{"start vm1@n1"}},
		{name: "a check that passes again: usable",
			snap: newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").loc("vm1", "n1", 50).
				dsCheck("n1", "ds1", true).snap(),
			actions: []string{"start vm1@n1"}},
		{name: "any of its disks counts, with a format suffix, beside an absolute path",
			snap: newSnap("n1", "n2").vm("vm1", "/var/lib/a.raw, ds1:a.qcow2, ds2:data.img:raw").loc("vm1", "n1", 50).
				dsCheck("n1", "ds1", true).dsCheck("n1", "ds2", false).snap(),
			actions: []string{"start vm1@n2"}, reason: map[string]string{"vm1": "n1 excluded (datastore ds2 is not usable)"}},
		{name: "its kernel counts too",
			snap: newSnap("n1", "n2").vm("vm1", "/var/lib/a.raw").param("vm1", "kernel", "boot:vmlinux").loc("vm1", "n1", 50).
				dsCheck("n1", "boot", false).snap(),
			actions: []string{"start vm1@n2"}},
		{name: "other resources, and VMs on other datastores, are not affected",
			snap: newSnap("n1", "n2").res("web").vm("vm2", "ds2:vm2.qcow2").vm("vm3", "/var/lib/vm3.qcow2").
				loc("web", "n1", 50).loc("vm2", "n1", 50).loc("vm3", "n1", 50).dsCheck("n1", "ds1", false).snap(),
			actions: []string{"start web@n1", "start vm2@n1", "start vm3@n1"}},
		{name: "running there already: left running, no false failover",
			snap: newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").rec("vm1", "n1", model.StateStarted).
				dsCheck("n1", "ds1", false).snap(),
			actions: none, place: map[string]string{"vm1": "n1"}, reason: map[string]string{"vm1": "vm1 stays on n1"}},
		{name: "running there, standby elsewhere: not stopped either",
			snap: newSnap("n1", "n2").standby("n2").vm("vm1", "ds1:vm1.qcow2").rec("vm1", "n1", model.StateStarted).
				dsCheck("n1", "ds1", false).snap(),
			actions: none, place: map[string]string{"vm1": "n1"}},
		{name: "failed there: not restarted in place but elsewhere",
			snap: newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").rec("vm1", "n1", model.StateFailed, 1).
				dsCheck("n1", "ds1", false).snap(),
			actions: []string{"stop vm1@n1", "start vm1@n2"}, deps: [][2]string{{"start vm1@n2", "stop vm1@n1"}},
			reason: map[string]string{"vm1": "n1 excluded (datastore ds1 is not usable)"}},
		{name: "no node can use it: stays stopped, and says why",
			snap:    newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").dsCheck("n1", "ds1", false).dsCheck("n2", "ds1", false).snap(),
			actions: none, place: map[string]string{"vm1": ""},
			reason: map[string]string{"vm1": "vm1 cannot run: n1 excluded (datastore ds1 is not usable); n2 excluded (datastore ds1 is not usable)"}},
		{name: "a group goes where all its members can run",
			snap: newSnap("n1", "n2").res("ip").vm("vm1", "ds1:vm1.qcow2").groupOf("stack", "ip", "vm1").loc("stack", "n1", 50).
				dsCheck("n1", "ds1", false).snap(),
			actions: []string{"start ip@n2", "start vm1@n2"}},
		{name: "a standby drain does not migrate to a node that cannot use it",
			snap: newSnap("n1", "n2", "n3").standby("n1").vm("vm1", "ds1:vm1.qcow2").meta("vm1", model.MetaAllowMigrate, "true").
				loc("vm1", "n2", 50).rec("vm1", "n1", model.StateStarted).dsCheck("n2", "ds1", false).snap(),
			actions: []string{"migrate vm1 n1→n3"}},
		{name: "the check of a lost node does not matter: nothing is placed there",
			snap:    newSnap("n1", "n2:lost").vm("vm1", "ds1:vm1.qcow2").dsCheck("n2", "ds1", false).snap(),
			actions: []string{"start vm1@n1"}},
	})
}

// vigil explain shows the refusal on the node's score line, with what the
// check said.
func TestDatastoreExplain(t *testing.T) {
	s := newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").dsCheck("n1", "ds1", false).snap()
	out := scheduler.Compute(s).Explain("vm1")
	for _, want := range []string{
		"vm1: on n2",
		"why: vm1 on n2: n1 excluded (datastore ds1 is not usable); n2 is the only node that can run it",
		"n1  -INFINITY  excluded: datastore ds1 is not usable here (datastore c1/ds1 at /srv/ds1: no marker)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	// Running there: the score line says why it is not moved.
	s = newSnap("n1", "n2").vm("vm1", "ds1:vm1.qcow2").rec("vm1", "n1", model.StateStarted).dsCheck("n1", "ds1", false).snap()
	out = scheduler.Compute(s).Explain("vm1")
	if !strings.Contains(out, "datastore ds1 is not usable here, but it runs here: left running (its disk lease guards it)") {
		t.Errorf("explain of a running VM lacks why it stays:\n%s", out)
	}
}

// Records in any order, even two for one node, give the same plan.
func TestDatastoreHealthDeterminism(t *testing.T) {
	b := newSnap("n1", "n2", "n3").vm("vm1", "ds1:a.qcow2").vm("vm2", "ds2:b.qcow2").
		dsCheck("n1", "ds1", false).dsCheck("n2", "ds2", false).dsCheck("n3", "ds1", true)
	b.s.DatastoreHealth = append(b.s.DatastoreHealth, model.DatastoreHealth{Node: "n1",
		Datastores: map[string]model.DatastoreCheck{"ds2": {OK: false, Error: "another record"}}})
	a := scheduler.Compute(b.snap()).String()
	hs := b.s.DatastoreHealth
	for i, j := 0, len(hs)-1; i < j; i, j = i+1, j-1 {
		hs[i], hs[j] = hs[j], hs[i]
	}
	if got := scheduler.Compute(b.snap()).String(); got != a {
		t.Fatalf("plans differ with the records reversed:\n%s\n---\n%s", a, got)
	}
}
