package scheduler_test

import (
	"testing"

	"github.com/vigil-ha/vigil/internal/model"
)

const inf = model.Infinity

var none = []string{}

// Eligible nodes: online, not witness, not standby, not in maintenance.
func TestRuleEligibleNodes(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "only the online node qualifies",
			snap: newSnap("n1:lost", "n2:offline", "n3:pending", "n4:witness", "n5", "n6", "n7").standby("n6").maint("n7").
				res("web").loc("web", "n1", 500).loc("web", "n2", 500).loc("web", "n3", 500).loc("web", "n4", 500).
				loc("web", "n6", 500).loc("web", "n7", 500).snap(),
			actions: []string{"start web@n5"}, place: map[string]string{"web": "n5"}},
		{name: "node in maintenance: its resources are left as they are",
			snap: newSnap("n1", "n2").maint("n2").res("web", "db").rec("web", "n2", model.StateFailed, 5).
				rec("db", "n2", model.StateStarted).meta("db", model.MetaTargetRole, model.RoleStopped).snap(),
			actions: none, place: map[string]string{"web": "n2", "db": "n2"},
			reason: map[string]string{"web": "maintenance"}, notes: []string{"n2 is in maintenance"}},
		{name: "cluster maintenance mode: no actions, only notes",
			snap: newSnap("n1", "n2:lost").prop(model.PropMaintenanceMode, "true").res("web", "db").
				rec("web", "n1", model.StateFailed, 1).rec("db", "n2", model.StateStarted).snap(),
			actions: none, fence: none, notes: []string{"maintenance mode: no actions"}},
		{name: "pending node: nothing placed there, what it runs counts as active",
			snap:    newSnap("n1", "n2:pending").res("web", "db").rec("web", "n2", model.StateStarted).loc("db", "n2", 100).snap(),
			actions: []string{"start db@n1"}, blocked: []string{"web: active on n2, which is still probing"}},
		{name: "no eligible node at all",
			snap:    newSnap("n1:offline").res("web").snap(),
			actions: none, place: map[string]string{"web": ""}, notes: []string{"no node is eligible"}},
	})
}

// symmetric-cluster: true = every eligible node allowed; false = only
// nodes with a positive location score.
func TestRuleSymmetricCluster(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "symmetric by default",
			snap:  newSnap("n1", "n2").res("web").loc("web", "n1", -10).snap(),
			place: map[string]string{"web": "n2"}},
		{name: "asymmetric: only positive locations",
			snap: newSnap("n1", "n2", "n3").prop(model.PropSymmetricCluster, "false").res("web", "db").
				loc("web", "n3", 10).loc("db", "n1", -10).snap(),
			actions: []string{"start web@n3"}, place: map[string]string{"web": "n3", "db": ""},
			reason: map[string]string{"db": "cannot run"}},
	})
}

// target-role Stopped stops everywhere; is-managed=false: no actions.
func TestRuleTargetRoleAndManaged(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "target-role Stopped",
			snap: newSnap("n1", "n2").res("web").meta("web", model.MetaTargetRole, model.RoleStopped).
				rec("web", "n1", model.StateStarted).rec("web", "n2", model.StateFailed, 1).snap(),
			actions: []string{"stop web@n1", "stop web@n2"}, place: map[string]string{"web": ""},
			reason: map[string]string{"web": "target-role Stopped"}},
		{name: "unmanaged: left where it is",
			snap: newSnap("n1", "n2").standby("n1").res("web").meta("web", model.MetaIsManaged, "false").
				rec("web", "n1", model.StateFailed, 9).snap(),
			actions: none, place: map[string]string{"web": "n1"}, reason: map[string]string{"web": "unmanaged"}},
		{name: "group target-role Stopped stops every member in reverse",
			snap: newSnap("n1").group("g", "a", "b").meta("g", model.MetaTargetRole, model.RoleStopped).
				rec("a", "n1", model.StateStarted).rec("b", "n1", model.StateStarted).snap(),
			actions: []string{"stop a@n1", "stop b@n1"}, deps: [][2]string{{"stop a@n1", "stop b@n1"}}},
	})
}

// Location constraints: by node or by rule, summed, -INFINITY wins.
func TestRuleLocation(t *testing.T) {
	ex := func(a, op, v string) model.Expression { return model.Expression{Attribute: a, Op: op, Value: v} }
	runRules(t, []ruleCase{
		{name: "node preference",
			snap: newSnap("n1", "n2", "n3").res("web").loc("web", "n2", 50).snap(), place: map[string]string{"web": "n2"},
			reason: map[string]string{"web": "n2 has the highest score (50)"}},
		{name: "rule on #uname",
			snap:  newSnap("n1", "n2", "n3").res("web").rule("r1", "web", 20, false, ex("#uname", "eq", "n3")).snap(),
			place: map[string]string{"web": "n3"}},
		{name: "numeric compare when both sides are integers",
			snap: newSnap("n1", "n2").attr("n1", "gen", "9").attr("n2", "gen", "10").res("web").
				rule("r1", "web", 20, false, ex("gen", "gte", "10")).snap(),
			place: map[string]string{"web": "n2"}},
		{name: "or rule and not_defined",
			snap: newSnap("n1", "n2", "n3").attr("n1", "ssd", "1").attr("n2", "ssd", "1").res("web").
				rule("r1", "web", -inf, true, ex("ssd", "not_defined", ""), ex("#uname", "eq", "n1")).snap(),
			place: map[string]string{"web": "n2"}},
		{name: "-INFINITY wins over +INFINITY",
			snap: newSnap("n1", "n2").res("web").loc("web", "n1", inf).
				rule("r1", "web", -inf, false, ex("#uname", "eq", "n1")).snap(),
			place: map[string]string{"web": "n2"}},
		{name: "scores sum",
			snap: newSnap("n1", "n2").res("web").loc("web", "n1", 30).loc("web", "n2", 20).
				rule("r1", "web", 20, false, ex("#uname", "ne", "n1")).snap(),
			place: map[string]string{"web": "n2"}},
	})
}

// Stickiness: + resource-stickiness (else the property, else 100) where it
// runs now.
func TestRuleStickiness(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "default 100 beats a preference of 50",
			snap:    newSnap("n1", "n2").res("web").loc("web", "n2", 50).rec("web", "n1", model.StateStarted).snap(),
			actions: none, place: map[string]string{"web": "n1"}, reason: map[string]string{"web": "web stays on n1"}},
		{name: "a preference above stickiness moves it",
			snap:    newSnap("n1", "n2").res("web").loc("web", "n2", 150).rec("web", "n1", model.StateStarted).snap(),
			actions: []string{"stop web@n1", "start web@n2"}, deps: [][2]string{{"start web@n2", "stop web@n1"}}},
		{name: "meta resource-stickiness 0",
			snap: newSnap("n1", "n2").res("web").meta("web", model.MetaStickiness, "0").loc("web", "n2", 50).
				rec("web", "n1", model.StateStarted).snap(),
			place: map[string]string{"web": "n2"}},
		{name: "property default-resource-stickiness",
			snap: newSnap("n1", "n2").prop(model.PropStickiness, "10").res("web").loc("web", "n2", 50).
				rec("web", "n1", model.StateStarted).snap(),
			place: map[string]string{"web": "n2"}},
		{name: "a node coming back does not pull it back",
			snap: newSnap("n1", "n2").res("web").loc("web", "n1", 50).rec("web", "n1", model.StateStopped).
				rec("web", "n2", model.StateStarted).snap(),
			actions: none, place: map[string]string{"web": "n2"}},
	})
}

// Failures: restart in place below migration-threshold, move at it;
// failure-timeout expires fail counts.
func TestRuleFailures(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "below threshold: restart in place",
			snap:    newSnap("n1", "n2").res("web").rec("web", "n1", model.StateFailed, 1).snap(),
			actions: []string{"stop web@n1", "start web@n1"}, deps: [][2]string{{"start web@n1", "stop web@n1"}},
			place: map[string]string{"web": "n1"}},
		{name: "at threshold: stop, then start on the best other node",
			snap:    newSnap("n1", "n2", "n3").res("web").loc("web", "n3", 5).rec("web", "n1", model.StateFailed, 3).snap(),
			actions: []string{"stop web@n1", "start web@n3"}, deps: [][2]string{{"start web@n3", "stop web@n1"}},
			reason: map[string]string{"web": "n1 excluded (fail count 3 ≥ migration-threshold 3)"}},
		{name: "threshold from meta",
			snap: newSnap("n1", "n2").res("web").meta("web", model.MetaMigrationThreshold, "1").
				rec("web", "n1", model.StateFailed, 1).snap(),
			actions: []string{"stop web@n1", "start web@n2"}},
		{name: "failure-timeout expired: counts as 0",
			snap: newSnap("n1", "n2").res("web").meta("web", model.MetaFailureTimeout, "30s").
				rec("web", "n1", model.StateFailed, 3).snap(),
			actions: []string{"stop web@n1", "start web@n1"}},
		{name: "failure-timeout not expired",
			snap: newSnap("n1", "n2").res("web").meta("web", model.MetaFailureTimeout, "5m").
				rec("web", "n1", model.StateFailed, 3).snap(),
			actions: []string{"stop web@n1", "start web@n2"}},
		{name: "threshold 0 never moves",
			snap: newSnap("n1", "n2").res("web").meta("web", model.MetaMigrationThreshold, "0").
				rec("web", "n1", model.StateFailed, 50).snap(),
			actions: []string{"stop web@n1", "start web@n1"}},
		{name: "old fail count bans a node where it is stopped",
			snap:  newSnap("n1", "n2").res("web").loc("web", "n1", 50).rec("web", "n1", model.StateStopped, 3).snap(),
			place: map[string]string{"web": "n2"}},
		{name: "failed on a standby node: stop there, start elsewhere",
			snap:    newSnap("n1", "n2").standby("n1").res("web").rec("web", "n1", model.StateFailed, 1).snap(),
			actions: []string{"stop web@n1", "start web@n2"}, deps: [][2]string{{"start web@n2", "stop web@n1"}}},
	})
}

// A failed stop blocks the instance and asks for fencing.
func TestRuleStopFailed(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "stop failed",
			snap:    newSnap("n1", "n2").res("web").rec("web", "n2", model.StateStopFailed).snap(),
			actions: none, blocked: []string{"web: stop failed on n2: needs fencing or cleanup"}, fence: []string{"n2"},
			place: map[string]string{"web": ""}},
		{name: "stop failed on a node that was then fenced: recovered",
			snap:    newSnap("n1", "n2:offline").res("web").rec("web", "n2", model.StateStopFailed).snap(),
			actions: []string{"start web@n1"}, fence: none},
	})
}

// A lost node's resources are unknown until it is proven down.
func TestRuleNodeLost(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "lost: unknown, waiting for fencing, not started elsewhere",
			snap: newSnap("n1", "n2", "n3:lost").res("web", "db", "idle").rec("web", "n3", model.StateStarted).
				rec("db", "n3", model.StateFailed, 1).rec("idle", "n3", model.StateStopped).snap(),
			actions: []string{"start idle@n1"},
			blocked: []string{"web: unknown on n3 (waiting for fencing)", "db: unknown on n3"}, fence: []string{"n3"},
			place: map[string]string{"web": ""}},
		{name: "offline (proven down): its records are ignored",
			snap:    newSnap("n1", "n2", "n3:offline").res("web").rec("web", "n3", model.StateStarted).snap(),
			actions: []string{"start web@n1"}, reason: map[string]string{"web": "n3 is offline"}},
		{name: "a node unknown to membership counts as lost",
			snap:    newSnap("n1").res("web").rec("web", "n9", model.StateStarted).snap(),
			actions: none, fence: []string{"n9"}},
	})
}

// Active on several nodes: keep one, stop the others first.
func TestRuleMultiActive(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "keep the best, stop the rest",
			snap: newSnap("n1", "n2", "n3").res("web").loc("web", "n2", 10).rec("web", "n1", model.StateStarted).
				rec("web", "n2", model.StateStarted).snap(),
			actions: []string{"stop web@n1"}, place: map[string]string{"web": "n2"},
			reason: map[string]string{"web": "active on n1 and n2"}},
		{name: "both banned: stop both, start once after both stops",
			snap: newSnap("n1", "n2", "n3").res("web").rec("web", "n1", model.StateFailed, 3).
				rec("web", "n2", model.StateFailed, 3).snap(),
			actions: []string{"stop web@n1", "stop web@n2", "start web@n3"},
			deps:    [][2]string{{"start web@n3", "stop web@n1"}, {"start web@n3", "stop web@n2"}}},
	})
}

// Pending orders: the instance is in motion; what follows it waits.
func TestRulePending(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "in motion: no action, counts as active",
			snap:    newSnap("n1", "n2").res("web").loc("web", "n2", 10).pending("web", "n1", model.ActStart).snap(),
			actions: none, place: map[string]string{"web": "n1"}, blocked: []string{"web: in motion (start pending on n1)"}},
		{name: "ordered after it: waits",
			snap:    newSnap("n1", "n2").res("web", "db").order("web", "db", "").pending("web", "n1", model.ActStart).snap(),
			actions: none, blocked: []string{"db: waiting for web (order web then db)"}},
		{name: "colocated with it: waits",
			snap:    newSnap("n1", "n2").res("web", "ip").coloc("ip", "web", inf).pending("web", "n1", model.ActStart).snap(),
			actions: none, blocked: []string{"ip: waiting for web"}},
		{name: "unrelated resources proceed",
			snap:    newSnap("n1", "n2").res("web", "other").pending("web", "n1", model.ActStart).snap(),
			actions: []string{"start other@n2"}},
	})
}

// Colocation: With first; +INFINITY same node, -INFINITY never, finite
// adds; with groups and clones.
func TestRuleColocation(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "+INFINITY: on With's node",
			snap:  newSnap("n1", "n2", "n3").res("ip", "web").loc("web", "n3", 10).coloc("ip", "web", inf).snap(),
			place: map[string]string{"web": "n3", "ip": "n3"}},
		{name: "+INFINITY: With not running, Resource does not run",
			snap: newSnap("n1", "n2").res("ip", "web").meta("web", model.MetaTargetRole, model.RoleStopped).
				coloc("ip", "web", inf).rec("ip", "n1", model.StateStarted).snap(),
			actions: []string{"stop ip@n1"}, place: map[string]string{"ip": ""},
			reason: map[string]string{"ip": "must run with web, which is not running"}},
		{name: "-INFINITY: never on With's node",
			snap: newSnap("n1", "n2").res("db1", "db2").loc("db1", "n1", 100).loc("db2", "n1", 10).
				coloc("db1", "db2", -inf).snap(),
			place: map[string]string{"db2": "n1", "db1": "n2"}, reason: map[string]string{"db1": "n1 excluded (anti-affinity with db2)"}},
		{name: "finite: adds on With's node",
			snap:  newSnap("n1", "n2").res("a", "b").loc("b", "n2", 10).loc("a", "n1", 50).coloc("a", "b", 60).snap(),
			place: map[string]string{"b": "n2", "a": "n2"}},
		{name: "with a group",
			snap:  newSnap("n1", "n2", "n3").group("g", "g1", "g2").res("ip").loc("g2", "n3", 10).coloc("ip", "g", inf).snap(),
			place: map[string]string{"g1": "n3", "g2": "n3", "ip": "n3"}},
		{name: "with a clone: any node running an instance",
			snap: newSnap("n1", "n2", "n3").res("fs", "vm").clone("fs-clone", "fs", 2).loc("fs-clone", "n1", -inf).
				loc("vm", "n1", 100).loc("vm", "n2", 50).coloc("vm", "fs-clone", inf).snap(),
			place: map[string]string{"vm": "n2", "fs-clone:0": "n2", "fs-clone:1": "n3"}},
		{name: "anti-affinity chain spreads",
			snap:  newSnap("n1", "n2", "n3").res("a", "b", "c").coloc("b", "a", -inf).coloc("c", "a", -inf).coloc("c", "b", -inf).snap(),
			place: map[string]string{"a": "n1", "b": "n2", "c": "n3"}},
	})
}

// Groups: one node, start in order, stop in reverse, prefix rule.
func TestRuleGroups(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "start in listed order on one node",
			snap:    newSnap("n1", "n2").group("g", "a", "b", "c").loc("b", "n2", 10).snap(),
			actions: []string{"start a@n2", "start b@n2", "start c@n2"},
			deps:    [][2]string{{"start b@n2", "start a@n2"}, {"start c@n2", "start b@n2"}}},
		{name: "stop in reverse when moving",
			snap: newSnap("n1", "n2").standby("n1").group("g", "a", "b").rec("a", "n1", model.StateStarted).
				rec("b", "n1", model.StateStarted).snap(),
			actions: []string{"stop a@n1", "stop b@n1", "start a@n2", "start b@n2"},
			deps:    [][2]string{{"stop a@n1", "stop b@n1"}, {"start a@n2", "stop a@n1"}, {"start b@n2", "start a@n2"}}},
		{name: "a member that cannot run stops the ones after it",
			snap:    newSnap("n1").group("g", "a", "b", "c").loc("b", "n1", -inf).snap(),
			actions: []string{"start a@n1"}, place: map[string]string{"a": "n1", "b": "", "c": ""},
			reason: map[string]string{"c": "b and the members after it cannot run there"}},
		{name: "member target-role Stopped",
			snap:    newSnap("n1").group("g", "a", "b", "c").meta("b", model.MetaTargetRole, model.RoleStopped).snap(),
			actions: []string{"start a@n1"}},
		{name: "a member's failures move the whole group",
			snap: newSnap("n1", "n2").group("g", "a", "b").rec("a", "n1", model.StateStarted).
				rec("b", "n1", model.StateFailed, 3).snap(),
			actions: []string{"stop a@n1", "stop b@n1", "start a@n2", "start b@n2"}},
		{name: "member restart restarts the members after it",
			snap: newSnap("n1", "n2").group("g", "a", "b", "c").rec("a", "n1", model.StateStarted).
				rec("b", "n1", model.StateFailed, 1).rec("c", "n1", model.StateStarted).snap(),
			actions: []string{"stop b@n1", "stop c@n1", "start b@n1", "start c@n1"},
			deps:    [][2]string{{"stop b@n1", "stop c@n1"}, {"start c@n1", "start b@n1"}}},
		{name: "group placement sums member locations",
			snap:  newSnap("n1", "n2").group("g", "a", "b").loc("a", "n1", 10).loc("b", "n2", 30).snap(),
			place: map[string]string{"a": "n2"}},
	})
}

// Clones: one per eligible node (or Max), instances keep their node.
func TestRuleClones(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "one per eligible node",
			snap:    newSnap("n1", "n2", "n3").standby("n3").res("fs").clone("fs-clone", "fs", 0).snap(),
			actions: []string{"start fs-clone:0@n1", "start fs-clone:1@n2"}},
		{name: "max instances, at most one per node",
			snap:  newSnap("n1", "n2").res("fs").clone("fs-clone", "fs", 3).snap(),
			place: map[string]string{"fs-clone:0": "n1", "fs-clone:1": "n2", "fs-clone:2": ""}},
		{name: "instances keep their node",
			snap: newSnap("n1", "n2", "n3").res("fs").clone("fs-clone", "fs", 2).rec("fs-clone:0", "n3", model.StateStarted).
				rec("fs-clone:1", "n2", model.StateStarted).snap(),
			actions: none, place: map[string]string{"fs-clone:0": "n3", "fs-clone:1": "n2"}},
		{name: "surplus instance stops",
			snap: newSnap("n1", "n2").res("fs").clone("fs-clone", "fs", 1).rec("fs-clone:0", "n1", model.StateStarted).
				rec("fs-clone:1", "n2", model.StateStarted).snap(),
			actions: []string{"stop fs-clone:1@n2"}},
		{name: "clone of a group: each instance is the group",
			snap:    newSnap("n1", "n2").group("stack", "fs", "app").clone("stack-clone", "stack", 0).snap(),
			actions: []string{"start fs:0@n1", "start app:0@n1", "start fs:1@n2", "start app:1@n2"},
			deps:    [][2]string{{"start app:1@n2", "start fs:1@n2"}}},
		{name: "lost node's instance is unknown, the others stay",
			snap: newSnap("n1", "n2", "n3:lost").res("fs").clone("fs-clone", "fs", 0).rec("fs-clone:0", "n1", model.StateStarted).
				rec("fs-clone:1", "n2", model.StateStarted).rec("fs-clone:2", "n3", model.StateStarted).snap(),
			actions: none, blocked: []string{"fs-clone:2: unknown on n3"}, fence: []string{"n3"}},
	})
}

// Order constraints.
func TestRuleOrders(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "mandatory: Then starts after First",
			snap:    newSnap("n1", "n2").res("web", "db").order("db", "web", "").snap(),
			actions: []string{"start db@n1", "start web@n2"}, deps: [][2]string{{"start web@n2", "start db@n1"}}},
		{name: "mandatory: First already started, no dependency needed",
			snap:    newSnap("n1", "n2").res("web", "db").order("db", "web", "").rec("db", "n1", model.StateStarted).snap(),
			actions: []string{"start web@n2"}},
		{name: "mandatory: First will not run, Then does not start",
			snap: newSnap("n1").res("web", "db").meta("db", model.MetaTargetRole, model.RoleStopped).order("db", "web", "").
				rec("web", "n1", model.StateStarted).snap(),
			actions: []string{"stop web@n1"}, reason: map[string]string{"web": "db is not running (order db then web)"}},
		{name: "mandatory: First unknown, Then waits",
			snap:    newSnap("n1", "n2:lost").res("web", "db").order("db", "web", "").rec("db", "n2", model.StateStarted).snap(),
			actions: none, blocked: []string{"web: waiting for db (order db then web)", "db: unknown on n2"}},
		{name: "symmetrical: First stops after Then",
			snap: newSnap("n1").res("web", "db").order("db", "web", "").rec("db", "n1", model.StateStarted).
				rec("web", "n1", model.StateStarted).meta("db", model.MetaTargetRole, model.RoleStopped).snap(),
			actions: []string{"stop db@n1", "stop web@n1"}, deps: [][2]string{{"stop db@n1", "stop web@n1"}}},
		{name: "not symmetrical: no stop order, no restart",
			snap: newSnap("n1").res("web", "db").order("db", "web", "", false).rec("db", "n1", model.StateFailed, 1).
				rec("web", "n1", model.StateStarted).snap(),
			actions: []string{"stop db@n1", "start db@n1"}},
		{name: "optional: orders only actions both in the plan",
			snap:    newSnap("n1", "n2").res("web", "db").order("db", "web", model.OrderOptional).snap(),
			actions: []string{"start db@n1", "start web@n2"}, deps: [][2]string{{"start web@n2", "start db@n1"}}},
		{name: "optional: First not running does not stop Then",
			snap: newSnap("n1").res("web", "db").meta("db", model.MetaTargetRole, model.RoleStopped).
				order("db", "web", model.OrderOptional).rec("web", "n1", model.StateStarted).snap(),
			actions: none},
		{name: "First restarts: Then restarts around it",
			snap: newSnap("n1", "n2").res("web", "db").order("db", "web", "").rec("db", "n1", model.StateFailed, 1).
				rec("web", "n2", model.StateStarted).snap(),
			actions: []string{"stop db@n1", "start db@n1", "stop web@n2", "start web@n2"},
			deps:    [][2]string{{"stop db@n1", "stop web@n2"}, {"start web@n2", "start db@n1"}, {"start db@n1", "stop db@n1"}}},
		{name: "First recovered from a fenced node: Then restarts after it",
			snap: newSnap("n1", "n2", "n3:offline").res("web", "db").order("db", "web", "").
				rec("web", "n2", model.StateStarted).snap(),
			actions: []string{"start db@n1", "stop web@n2", "start web@n2"},
			deps:    [][2]string{{"start web@n2", "start db@n1"}, {"start web@n2", "stop web@n2"}}},
		{name: "groups in orders",
			snap:    newSnap("n1").group("g1", "a", "b").group("g2", "c", "d").order("g1", "g2", "").snap(),
			actions: []string{"start a@n1", "start b@n1", "start c@n1", "start d@n1"},
			deps:    [][2]string{{"start c@n1", "start b@n1"}}},
	})
}

// Utilization: capacity must cover what is placed; ties go to the most free
// capacity, then the fewest instances, then the name.
func TestRuleUtilization(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "a node that cannot fit is excluded",
			snap: newSnap("n1", "n2").capacity("n1", "memory", 1024).capacity("n2", "memory", 4096).
				res("vm").util("vm", "memory", 2048).loc("vm", "n1", 100).snap(),
			place: map[string]string{"vm": "n2"}, reason: map[string]string{"vm": "n1 excluded (needs memory 2048, 1024 free)"}},
		{name: "nothing fits",
			snap:    newSnap("n1").capacity("n1", "memory", 1024).res("vm").util("vm", "memory", 2048).snap(),
			actions: none, place: map[string]string{"vm": ""}},
		{name: "tie: most free capacity",
			snap: newSnap("n1", "n2").capacity("n1", "memory", 4096).capacity("n2", "memory", 8192).
				res("vm").util("vm", "memory", 1024).snap(),
			place: map[string]string{"vm": "n2"}, reason: map[string]string{"vm": "n2 has the most free memory"}},
		{name: "tie: fewest instances, then name (spreads)",
			snap:  newSnap("n1", "n2", "n3").res("a", "b", "c", "d").snap(),
			place: map[string]string{"a": "n1", "b": "n2", "c": "n3", "d": "n1"}},
		{name: "running resources keep their capacity",
			snap: newSnap("n1", "n2").capacity("n1", "memory", 3072).capacity("n2", "memory", 2048).
				res("a", "z").util("a", "memory", 2048).util("z", "memory", 2048).rec("z", "n1", model.StateStarted).snap(),
			actions: []string{"start a@n2"}},
		{name: "a start waits for the stop that frees room",
			snap: newSnap("n1", "n2").capacity("n1", "memory", 2048).capacity("n2", "memory", 2048).
				res("a", "b").util("a", "memory", 2048).util("b", "memory", 2048).loc("a", "n2", 200).
				rec("a", "n1", model.StateStarted).rec("b", "n2", model.StateStarted).meta("b", model.MetaTargetRole, model.RoleStopped).snap(),
			deps: [][2]string{{"start a@n2", "stop b@n2"}}},
	})
}

// Priority: higher priority is placed first when capacity is short.
func TestRulePriority(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "higher priority wins the last slot",
			snap: newSnap("n1").capacity("n1", "memory", 2048).res("a", "b").util("a", "memory", 2048).util("b", "memory", 2048).
				meta("b", model.MetaPriority, "10").snap(),
			place: map[string]string{"a": "", "b": "n1"}},
		{name: "higher priority displaces a running lower one",
			snap: newSnap("n1").capacity("n1", "memory", 2048).res("a", "b").util("a", "memory", 2048).util("b", "memory", 2048).
				meta("b", model.MetaPriority, "10").rec("a", "n1", model.StateStarted).snap(),
			actions: []string{"stop a@n1", "start b@n1"}, deps: [][2]string{{"start b@n1", "stop a@n1"}}},
		{name: "equal priority: the running one keeps its place",
			snap: newSnap("n1").capacity("n1", "memory", 2048).res("a", "b").util("a", "memory", 2048).util("b", "memory", 2048).
				rec("b", "n1", model.StateStarted).snap(),
			actions: none, place: map[string]string{"b": "n1", "a": ""}},
		{name: "a high-priority dependent pulls its With forward",
			snap: newSnap("n1", "n2").capacity("n1", "memory", 2048).capacity("n2", "memory", 2048).
				res("a", "b", "c").util("a", "memory", 2048).util("b", "memory", 2048).util("c", "memory", 2048).
				meta("c", model.MetaPriority, "5").coloc("c", "b", -inf).snap(),
			place: map[string]string{"a": ""}},
	})
}

// Migration: a healthy move of an allow-migrate resource is one migrate.
func TestRuleMigration(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "standby drains by live migration",
			snap: newSnap("n1", "n2").standby("n1").res("vm").meta("vm", model.MetaAllowMigrate, "true").
				rec("vm", "n1", model.StateStarted).snap(),
			actions: []string{"migrate vm n1→n2"}},
		{name: "not after a failure",
			snap: newSnap("n1", "n2").res("vm").meta("vm", model.MetaAllowMigrate, "true").
				rec("vm", "n1", model.StateFailed, 3).snap(),
			actions: []string{"stop vm@n1", "start vm@n2"}},
		{name: "not without allow-migrate",
			snap:    newSnap("n1", "n2").standby("n1").res("vm").rec("vm", "n1", model.StateStarted).snap(),
			actions: []string{"stop vm@n1", "start vm@n2"}},
		{name: "then waits for the migration",
			snap: newSnap("n1", "n2").standby("n1").res("vm", "ip").meta("vm", model.MetaAllowMigrate, "true").
				order("vm", "ip", "").rec("vm", "n1", model.StateStarted).snap(),
			actions: []string{"migrate vm n1→n2", "start ip@n2"}, deps: [][2]string{{"start ip@n2", "migrate vm n1→n2"}}},
	})
}

// Every placement has a reason a person can read.
func TestRuleReasons(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "the issue's example",
			snap: newSnap("n1:offline", "n2", "n3").capacity("n2", "memory", 8192).capacity("n3", "memory", 8192).
				res("vm1", "db2").util("vm1", "memory", 1024).coloc("vm1", "db2", -inf).
				rec("vm1", "n1", model.StateStarted).rec("db2", "n3", model.StateStarted).snap(),
			reason: map[string]string{"vm1": "vm1 on n2: n1 is offline; n3 excluded (anti-affinity with db2); n2 is the only node that can run it"}},
		{name: "tie broken by free memory",
			snap: newSnap("n1:offline", "n2", "n3").capacity("n2", "memory", 8192).capacity("n3", "memory", 4096).
				res("vm1").util("vm1", "memory", 1024).rec("vm1", "n1", model.StateStarted).snap(),
			reason: map[string]string{"vm1": "vm1 on n2: n1 is offline; n2 has the most free memory"}},
	})
}
