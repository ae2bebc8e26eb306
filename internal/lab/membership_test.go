package lab_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/lab"
	"github.com/vigil-ha/vigil/internal/model"
)

// End-to-end tests of cluster membership changes (join, remove-node, voter
// balance) and of the quorum variants (witness, two_node, wait_for_all) with
// real agents. Skipped with -short, like every lab test.

// writeTimeout is the agent's bound on a write's commit (internal/agent).
const writeTimeout = 10 * time.Second

// mustStatus returns node's status or fails the test.
func mustStatus(t *testing.T, l *lab.Lab, node string) api.Status {
	t.Helper()
	st, err := l.Status(ctxFor(t, 30*time.Second), node)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// cliErr runs a CLI call on host that must fail and returns its message
// (stderr, else stdout), failing the test if it succeeded.
func cliErr(t *testing.T, l *lab.Lab, host string, args ...string) string {
	t.Helper()
	out, err := l.CLI(ctxFor(t, 60*time.Second), host, args...)
	if err == nil {
		t.Fatalf("vigil %s on %s succeeded (%q); want it refused", strings.Join(args, " "), host, out)
	}
	return errText(t, err)
}

// errText is the message of a failed CLI call.
func errText(t *testing.T, err error) string {
	t.Helper()
	var ce *lab.CLIError
	if !errors.As(err, &ce) {
		t.Fatalf("not a CLI failure: %v", err)
	}
	msg := strings.TrimSpace(ce.Stderr)
	if msg == "" {
		msg = strings.TrimSpace(ce.Stdout)
	}
	return msg
}

// wantContains fails the test unless msg contains every one of subs
// (case-insensitive).
func wantContains(t *testing.T, what, msg string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(s)) {
			t.Errorf("%s: message %q does not mention %q", what, msg, s)
		}
	}
}

// epochs returns every given node's epoch.
func epochs(t *testing.T, l *lab.Lab, nodes ...string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, n := range nodes {
		out[n] = mustStatus(t, l, n).Epoch
	}
	return out
}

// sameEpochs fails the test if any node's epoch differs from before.
func sameEpochs(t *testing.T, l *lab.Lab, what string, before map[string]uint64) {
	t.Helper()
	for n, e := range before {
		if got := mustStatus(t, l, n).Epoch; got != e {
			t.Errorf("%s changed %s's epoch from %d to %d", what, n, e, got)
		}
	}
}

// raftRoles returns "name=raft" for every node in st, sorted, for messages.
func raftRoles(st api.Status) string {
	var out []string
	for _, n := range st.Nodes {
		out = append(out, n.Name+"="+n.Raft)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// voters returns the names st shows as raft voters, sorted.
func voters(st api.Status) []string {
	var out []string
	for _, n := range st.Nodes {
		if n.Raft == api.RaftVoter {
			out = append(out, n.Name)
		}
	}
	slices.Sort(out)
	return out
}

// joinN4 forms a three-node loopback cluster, writes props, and joins n4
// with `vigil cluster token` / `vigil cluster join`, then starts it and
// waits until every node (n4 too) shows all four as members.
func joinN4(t *testing.T, props map[string]string) *lab.Lab {
	t.Helper()
	l := newCluster(t, lab.Options{Nodes: 3})
	l.StartAll()
	l.WaitFormed(formTimeout)
	for k, v := range props {
		if _, err := l.SetProperty(ctxFor(t, 30*time.Second), "n1", k, v); err != nil {
			t.Fatal(err)
		}
	}

	l.AddHost("n4", false)
	out, err := l.Join("n1", "n4")
	if err != nil && strings.Contains(err.Error(), "is not among the configured nodes") {
		// Known bug: the cluster admitted n4 but sent back a layout
		// without it. Report it, then write what join should have written
		// so that the rest of the test still runs.
		t.Errorf("BUG: join n4: the cluster admitted n4 but the layout it returned lacks n4: %v", err)
		writeJoinedConfig(t, l, "n4")
	} else if err != nil {
		t.Fatalf("join n4: %v", err)
	} else {
		t.Logf("join printed: %s", strings.TrimSpace(out))
	}
	dir := l.JoinDir("n4")
	for _, f := range []string{"n4.yaml", "cluster.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("join wrote no %s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "cluster.key")); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("join wrote cluster.key with mode %v, want 0600", fi.Mode().Perm())
	}
	l.Start("n4")
	l.WaitFormed(formTimeout)
	return l
}

// TestJoinAsLearner: a node admitted with a join token becomes a member on
// every node's status, joins raft as a learner (the cluster already has
// three voters), has every property written before it joined and sees
// those written after.
func TestJoinAsLearner(t *testing.T) {
	before := map[string]string{"before1": "a", "before2": "b"}
	l := joinN4(t, before)

	for _, n := range l.NodeNames() {
		st := l.WaitStatus(n, "n4 a member and a raft learner", formTimeout, func(st api.Status) bool {
			ns, ok := lab.NodeIn(st, "n4")
			return ok && ns.State == api.NodeMember && ns.Raft == api.RaftLearner
		})
		t.Logf("%s (raft: %s)", lab.Summary(st), raftRoles(st))
		if m := Members(st); !slices.Equal(m, []string{"n1", "n2", "n3", "n4"}) {
			t.Errorf("%s: members %v, want n1..n4", n, m)
		}
		if v := voters(st); !slices.Equal(v, []string{"n1", "n2", "n3"}) {
			t.Errorf("%s: raft voters %v, want n1 n2 n3 (n4 a learner)", n, v)
		}
		if ns, _ := lab.NodeIn(st, "n4"); ns.Role != "node" {
			t.Errorf("%s: n4's role is %q, want node", n, ns.Role)
		}
	}

	// Everything written before the join reached n4.
	l.WaitFor("n4 to have the properties written before it joined", formTimeout, func() (bool, string) {
		got, err := l.Properties(ctxFor(t, 10*time.Second), "n4")
		if err != nil {
			return false, err.Error()
		}
		for k, v := range before {
			if got[k] != v {
				return false, fmt.Sprintf("n4 has %s=%q, want %q", k, got[k], v)
			}
		}
		return true, ""
	})

	// A write after the join reaches n4, and a write through n4 (a
	// learner: raft forwards it to the leader) reaches everyone.
	epoch, err := l.SetProperty(ctxFor(t, 30*time.Second), "n1", "after", "c")
	if err != nil {
		t.Fatalf("write after the join: %v", err)
	}
	want := map[string]string{"before1": "a", "before2": "b", "after": "c"}
	if e, err := l.SetProperty(ctxFor(t, 30*time.Second), "n4", "via-learner", "d"); err != nil {
		t.Errorf("write through the learner n4: %v", err)
	} else {
		want["via-learner"] = "d"
		epoch = e
	}
	agree(t, l, want, nil, epoch)
}

// TestJoinRefusesBadInput: joining with a name or an address already in
// the cluster, or with a garbage token, is refused with a clear message,
// writes no files, and does not change the configuration epoch.
func TestJoinRefusesBadInput(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3})
	l.StartAll()
	l.WaitFormed(formTimeout)
	tok, err := l.Token(ctxFor(t, 30*time.Second), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "vgljoin1.") {
		t.Fatalf("token %q: want the vgljoin1. prefix", tok)
	}
	// n5 is never started: AddHost only lends it a fresh address and a
	// folder for the refused joins.
	p := l.AddHost("n5", false)
	nodes := []string{"n1", "n2", "n3"}
	before := epochs(t, l, nodes...)

	cases := []struct {
		name, token, node, link string
		want                    []string
	}{
		{"existing name", tok, "n2", p.Addrs[0], []string{"n2", "already a member"}},
		{"address in use", tok, "n5", l.Node("n2").Addrs[0], []string{l.Node("n2").Addrs[0], "already used", "n2"}},
		{"garbage token", "vgljoin1.bm90IGEgdG9rZW4", "n5", p.Addrs[0], []string{"join token"}},
		{"not a token", "hello", "n5", p.Addrs[0], []string{"join token"}},
		{"bad base64", "vgljoin1.!!!", "n5", p.Addrs[0], []string{"join token"}},
	}
	for i, c := range cases {
		dir := filepath.Join(l.JoinDir("n5"), fmt.Sprint(i))
		_, err := l.Exec(ctxFor(t, 60*time.Second), "n5",
			"cluster", "join", c.token, "--name", c.node, "--link", c.link, "--dir", dir)
		if err == nil {
			t.Errorf("%s: join succeeded; want it refused", c.name)
			continue
		}
		msg := errText(t, err)
		t.Logf("%s: refused: %s", c.name, msg)
		wantContains(t, c.name, msg, c.want...)
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Errorf("%s: a refused join wrote files in %s: %v", c.name, dir, ents)
		}
	}
	sameEpochs(t, l, "refused joins", before)
	for _, n := range nodes {
		st := mustStatus(t, l, n)
		if m := Members(st); !slices.Equal(m, []string{"n1", "n2", "n3"}) {
			t.Errorf("%s: members %v after refused joins, want n1 n2 n3", n, m)
		}
		if len(st.Nodes) != 3 {
			t.Errorf("%s lists %d nodes after refused joins: %s", n, len(st.Nodes), lab.Summary(st))
		}
	}
}

// TestRemoveNode: a stopped node is removed for good and disappears from
// every node's status; removing a running node or an unknown one is
// refused with a clear message and changes nothing.
func TestRemoveNode(t *testing.T) {
	l := joinN4(t, nil)

	// Refusals first, while all four run.
	before := epochs(t, l, l.NodeNames()...)
	msg := cliErr(t, l, "n1", "cluster", "remove-node", "n3")
	t.Logf("remove a running node: %s", msg)
	wantContains(t, "remove running n3", msg, "n3", "stop")
	msg = cliErr(t, l, "n1", "cluster", "remove-node", "n9")
	t.Logf("remove an unknown node: %s", msg)
	wantContains(t, "remove unknown n9", msg, "n9", "not a member")
	msg = cliErr(t, l, "n1", "cluster", "remove-node", "n1")
	t.Logf("remove the answering node: %s", msg)
	wantContains(t, "remove the answering n1", msg, "n1", "stop")
	sameEpochs(t, l, "refused removals", before)

	l.Stop("n4")
	stopped := time.Now()
	// Right after the stop, the others still count n4 alive until
	// node_timeout passes; remove-node must succeed once they do.
	var out string
	var first string
	l.WaitFor("remove-node n4 to succeed after n4 stopped", lostWithin, func() (bool, string) {
		var err error
		out, err = l.CLI(ctxFor(t, 30*time.Second), "n1", "cluster", "remove-node", "n4")
		if err != nil {
			if first == "" {
				first = errText(t, err)
			}
			return false, err.Error()
		}
		return true, ""
	})
	if first != "" {
		t.Logf("remove-node n4 right after the stop was first refused with %q", first)
	}
	t.Logf("remove-node n4 succeeded %s after n4 exited", time.Since(stopped).Round(time.Millisecond))
	t.Logf("remove-node printed: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "removed n4") {
		t.Errorf("remove-node printed %q, want \"removed n4 (epoch N)\"", out)
	}

	for _, n := range l.NodeNames() {
		if n == "n4" {
			continue
		}
		st := l.WaitStatus(n, "n4 gone from the status", formTimeout, func(st api.Status) bool {
			_, listed := lab.NodeIn(st, "n4")
			return !listed && st.Quorum.Quorate
		})
		t.Logf("%s (raft: %s)", lab.Summary(st), raftRoles(st))
		if m := Members(st); !slices.Equal(m, []string{"n1", "n2", "n3"}) {
			t.Errorf("%s: members %v, want n1 n2 n3", n, m)
		}
		if st.Quorum.Expected != 3 {
			t.Errorf("%s: expected votes %d after removing n4, want 3", n, st.Quorum.Expected)
		}
	}
	// Removing it again is refused as unknown.
	msg = cliErr(t, l, "n2", "cluster", "remove-node", "n4")
	wantContains(t, "remove n4 twice", msg, "n4", "not a member")

	// The three keep working.
	e, err := l.SetProperty(ctxFor(t, 30*time.Second), "n2", "after-remove", "1")
	if err != nil {
		t.Fatalf("write after remove-node: %v", err)
	}
	agree(t, l, map[string]string{"after-remove": "1"}, nil, e)
}

// TestVoterBalanceAfterRemove: a four-node cluster runs three raft voters
// and one learner; after a voter is killed and removed, the learner is
// promoted so that three voters remain.
func TestVoterBalanceAfterRemove(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 4})
	l.StartAll()
	dc := l.WaitFormed(formTimeout)
	st := mustStatus(t, l, dc)
	t.Logf("%s (raft: %s)", lab.Summary(st), raftRoles(st))
	if v := voters(st); !slices.Equal(v, []string{"n1", "n2", "n3"}) {
		t.Fatalf("four nodes start with raft voters %v, want n1 n2 n3 (n4 a learner)", v)
	}

	// A voter other than the DC, so the removal is asked of a stable leader.
	victim := ""
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != dc {
			victim = n
			break
		}
	}
	l.Kill(victim)
	l.WaitStatus(dc, victim+" lost", lostWithin, func(st api.Status) bool {
		return lab.State(st, victim) == api.NodeLost && st.Quorum.Quorate
	})
	// With 3 of 4 nodes alive, and 2 of 3 raft voters, nothing is promoted
	// yet: the cluster still has its target of three voters.
	if v := voters(mustStatus(t, l, dc)); len(v) != 3 {
		t.Errorf("before the removal: raft voters %v, want three", v)
	}
	out, err := l.CLI(ctxFor(t, 60*time.Second), dc, "cluster", "remove-node", victim)
	if err != nil {
		t.Fatalf("remove-node %s: %v", victim, err)
	}
	t.Logf("remove-node: %s", strings.TrimSpace(out))
	removed := time.Now()

	for _, n := range l.Others(victim) {
		st := l.WaitStatus(n, "three voters again, n4 promoted", formTimeout, func(st api.Status) bool {
			_, listed := lab.NodeIn(st, victim)
			ns, _ := lab.NodeIn(st, "n4")
			return !listed && len(voters(st)) == 3 && ns.Raft == api.RaftVoter && st.Quorum.Quorate
		})
		t.Logf("%s (raft: %s)", lab.Summary(st), raftRoles(st))
	}
	t.Logf("three voters again %s after remove-node", time.Since(removed).Round(time.Millisecond))

	e, err := l.SetProperty(ctxFor(t, 30*time.Second), "n4", "after-promote", "1")
	if err != nil {
		t.Fatalf("write after the promotion: %v", err)
	}
	agree(t, l, map[string]string{"after-promote": "1"}, nil, e)
}

// TestWitnessKeepsQuorum: two nodes and a witness form a three-member
// cluster with the witness's role shown as witness; after one node is
// killed, the other node and the witness keep quorum and a DC and accept
// writes.
func TestWitnessKeepsQuorum(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 2, Witnesses: 1})
	l.StartAll()
	dc := l.WaitFormed(formTimeout)
	for _, n := range l.Names() {
		st := l.WaitStatus(n, "three members", formTimeout, func(st api.Status) bool {
			return slices.Equal(Members(st), []string{"n1", "n2", "w1"})
		})
		t.Logf("%s (raft: %s)", lab.Summary(st), raftRoles(st))
		for _, ns := range st.Nodes {
			want := "node"
			if ns.Name == "w1" {
				want = "witness"
			}
			if ns.Role != want {
				t.Errorf("%s: %s's role is %q, want %q", n, ns.Name, ns.Role, want)
			}
		}
		if !st.Quorum.Quorate || st.Quorum.Votes != 3 || st.Quorum.Expected != 3 {
			t.Errorf("%s: quorum %+v, want 3 of 3 votes", n, st.Quorum)
		}
	}
	if dc == "w1" {
		// The witness is a raft voter and may win an election; it should
		// not be the DC (the DC runs the scheduler). Reported, not asserted.
		t.Logf("NOTE: the witness w1 is the DC")
	}

	victim := dc
	if victim == "w1" {
		victim = "n1"
	}
	survivor := l.Other(victim)
	l.Kill(victim)
	st := l.WaitStatus(survivor, "quorum and a DC with the witness", lostWithin+formTimeout/2, func(st api.Status) bool {
		return st.Quorum.Quorate && st.DC != "" && st.DC != victim && lab.State(st, victim) == api.NodeLost &&
			lab.State(st, "w1") == api.NodeMember
	})
	t.Logf("after SIGKILL of %s: %s", victim, lab.Summary(st))
	if st.DC == "w1" {
		t.Logf("NOTE: the witness w1 became the DC after %s was killed", victim)
	}
	ws := l.WaitStatus("w1", "quorum with "+survivor, lostWithin, func(st api.Status) bool {
		return st.Quorum.Quorate && lab.State(st, victim) == api.NodeLost
	})
	t.Logf("witness: %s", lab.Summary(ws))

	e, err := l.SetProperty(ctxFor(t, 30*time.Second), survivor, "with-witness", "1")
	if err != nil {
		t.Fatalf("write on %s with the witness: %v", survivor, err)
	}
	agree(t, l, map[string]string{"with-witness": "1"}, nil, e)
}

// TestWitnessWithLaggingNode: a node that restarts behind the witness's
// log (it missed a write while it was down, and the node that had the write
// is gone) forms a quorum with the witness and accepts writes. Raft only
// elects an up-to-date candidate, so here the witness wins the election:
// the test logs who the DC is; see the report on witnesses as DC.
func TestWitnessWithLaggingNode(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 2, Witnesses: 1})
	l.StartAll()
	l.WaitFormed(formTimeout)

	l.Kill("n2")
	l.WaitStatus("n1", "n2 lost, quorum and a DC with the witness", lostWithin+formTimeout/2, func(st api.Status) bool {
		return lab.State(st, "n2") == api.NodeLost && st.Quorum.Quorate && st.DC != "" && st.DC != "n2"
	})
	e1, err := l.SetProperty(ctxFor(t, 30*time.Second), "n1", "missed-by-n2", "1")
	if err != nil {
		t.Fatalf("write on n1 with the witness: %v", err)
	}

	l.Kill("n1")
	l.Start("n2")
	st := l.WaitStatus("n2", "quorum and a DC with the witness", lostWithin+formTimeout, func(st api.Status) bool {
		return st.Quorum.Quorate && st.DC != "" && lab.State(st, "w1") == api.NodeMember
	})
	t.Logf("n2 restarted behind the witness: %s", lab.Summary(st))
	if st.DC == "w1" {
		t.Logf("NOTE: the witness w1 is the DC (raft leader): n2's log was behind, so only w1 could win")
	}
	// A witness that won the election hands leadership to a node at once:
	// a write may meet that hand-over ("no leader: try again shortly").
	var e2 uint64
	for deadline := time.Now().Add(lab.Scale(15 * time.Second)); ; {
		e2, err = l.SetProperty(ctxFor(t, 30*time.Second), "n2", "after", "2")
		if err == nil || !strings.Contains(err.Error(), "no leader") || time.Now().After(deadline) {
			break
		}
		t.Logf("retrying (transient): %v", err)
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("write on n2 with the witness: %v", err)
	}
	if e2 <= e1 {
		t.Errorf("write on n2 acknowledged at epoch %d, not after %d", e2, e1)
	}
	agree(t, l, map[string]string{"missed-by-n2": "1", "after": "2"}, nil, e2)
}

// TestTwoNode pins what two_node does today: the agent warns at start-up
// and in `vigil status` that two_node is only safe with fencing or a
// witness; both nodes form; after one is killed the survivor stays quorate
// (two_node), but raft cannot commit with one of two voters, so a write on
// the survivor is refused with a clear error within the write timeout.
func TestTwoNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real vigil agents; skipped with -short")
	}
	for _, victimIsDC := range []bool{true, false} {
		name := "kill_follower"
		if victimIsDC {
			name = "kill_DC"
		}
		t.Run(name, func(t *testing.T) {
			l := newCluster(t, lab.Options{Nodes: 2, SetupArgs: []string{"--two-node"}})
			l.StartAll()
			dc := l.WaitFormed(formTimeout)

			for _, n := range l.NodeNames() {
				if !l.LogContains(n, "two_node") || !l.LogContains(n, "fencing") {
					t.Errorf("%s's log has no start-up warning naming two_node and fencing:\n%s", n, l.LogTail(n, 30))
				}
				st := mustStatus(t, l, n)
				found := false
				for _, w := range st.Warnings {
					found = found || (strings.Contains(w, "two_node") && strings.Contains(w, "fencing"))
				}
				if !found {
					t.Errorf("%s: status warnings %q: none names two_node and fencing", n, st.Warnings)
				}
				text, err := l.CLI(ctxFor(t, 30*time.Second), n, "status")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(text, "WARNING:") || !strings.Contains(text, "two_node") {
					t.Errorf("%s: `vigil status` shows no two_node warning:\n%s", n, text)
				}
			}
			if _, err := l.SetProperty(ctxFor(t, 30*time.Second), dc, "both", "1"); err != nil {
				t.Fatalf("write with both nodes: %v", err)
			}

			victim := l.Other(dc)
			if victimIsDC {
				victim = dc
			}
			survivor := l.Other(victim)
			l.Kill(victim)
			st := l.WaitStatus(survivor, victim+" lost, still quorate (two_node)", lostWithin, func(st api.Status) bool {
				return lab.State(st, victim) == api.NodeLost && st.Quorum.Quorate
			})
			t.Logf("survivor: %s", lab.Summary(st))
			wantContains(t, "survivor's quorum reason", st.Quorum.Reason, "two_node")

			start := time.Now()
			_, err := l.SetProperty(ctxFor(t, writeTimeout+slack+30*time.Second), survivor, "alone", "x")
			took := time.Since(start)
			if err == nil {
				t.Fatalf("a write on the lone survivor %s of a two_node pair was acknowledged: raft cannot commit with one of two voters", survivor)
			}
			msg := errText(t, err)
			t.Logf("write on the survivor refused after %s: %s", took.Round(time.Millisecond), msg)
			if took > lab.Scale(writeTimeout+slack) {
				t.Errorf("the refused write took %s, more than the write timeout %s plus slack", took, writeTimeout)
			}
			low := strings.ToLower(msg)
			// The refusal must say why (Raft needs both voters) and what to
			// do (a witness), not suggest that retrying will help.
			if !strings.Contains(low, "raft voters") || !strings.Contains(low, "witness") {
				t.Errorf("write on the survivor: want an error naming the Raft voter majority and the witness, got %q", msg)
			}
			st = mustStatus(t, l, survivor)
			t.Logf("survivor after the refused write: %s", lab.Summary(st))
			if !st.Quorum.Quorate {
				t.Errorf("the survivor lost quorum: %s", lab.Summary(st))
			}
			if st.DC != "" {
				t.Logf("NOTE: the survivor names DC %q although raft cannot commit", st.DC)
			}

			// The pair heals when the victim comes back.
			l.Start(victim)
			l.WaitFormed(formTimeout)
			e, err := l.SetProperty(ctxFor(t, 30*time.Second), survivor, "healed", "1")
			if err != nil {
				t.Fatalf("write after the pair healed: %v", err)
			}
			agree(t, l, map[string]string{"both": "1", "healed": "1"}, nil, e)
			got, err := l.Properties(ctxFor(t, 30*time.Second), survivor)
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := got["alone"]; ok {
				t.Logf("NOTE: the write refused on the lone survivor was applied after healing (alone=%q): the timeout error said it may still commit", v)
			}
		})
	}
}

// TestWaitForAll: with wait_for_all, two of three nodes after a cold start
// have no quorum (the reason says they wait for all) and refuse writes; the
// third brings quorum; after it is killed the two keep quorum, because
// wait_for_all applies only to a cold start.
func TestWaitForAll(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3, SetupArgs: []string{"--wait-for-all"}})
	l.Start("n1")
	l.Start("n2")
	waiting := func(st api.Status) bool {
		return lab.State(st, "n1") == api.NodeMember && lab.State(st, "n2") == api.NodeMember &&
			!st.Quorum.Quorate && st.DC == ""
	}
	for _, n := range []string{"n1", "n2"} {
		st := l.WaitStatus(n, "n1 and n2 members, no quorum", formTimeout, waiting)
		t.Logf("%s", lab.Summary(st))
		wantContains(t, n+"'s quorum reason", st.Quorum.Reason, "wait")
		if !strings.Contains(st.Quorum.Reason, "wait_for_all") && !strings.Contains(st.Quorum.Reason, "waiting for all") {
			t.Errorf("%s: quorum reason %q does not say it waits for all nodes", n, st.Quorum.Reason)
		}
	}
	l.Always("no quorum without n3", 3*time.Second, func() (bool, string) {
		for _, n := range []string{"n1", "n2"} {
			if ok, why := l.StatusCond(n, waiting); !ok {
				return false, why
			}
		}
		return true, ""
	})
	msg := cliErr(t, l, "n1", "property", "set", "early=1")
	wantContains(t, "write before n3", msg, "no quorum")

	l.Start("n3")
	dc := l.WaitFormed(formTimeout)
	if _, err := l.SetProperty(ctxFor(t, 30*time.Second), dc, "all", "1"); err != nil {
		t.Fatalf("write with all three: %v", err)
	}

	l.Kill("n3")
	for _, n := range []string{"n1", "n2"} {
		st := l.WaitStatus(n, "n3 lost, quorum and a DC kept", lostWithin+formTimeout/2, func(st api.Status) bool {
			return lab.State(st, "n3") == api.NodeLost && st.Quorum.Quorate && st.DC != "" && st.DC != "n3"
		})
		t.Logf("%s", lab.Summary(st))
	}
	e, err := l.SetProperty(ctxFor(t, 30*time.Second), "n2", "after-n3", "1")
	if err != nil {
		t.Fatalf("write after n3 was killed: %v", err)
	}
	agree(t, l, map[string]string{"all": "1", "after-n3": "1"}, []string{"early"}, e)
}

// writeJoinedConfig writes, in name's join folder, the configuration and key
// that `vigil cluster join` should have written: n1's layout plus name, with
// the raft ID the cluster gave it (from n1's status).
func writeJoinedConfig(t *testing.T, l *lab.Lab, name string) {
	t.Helper()
	var id uint64
	l.WaitStatus("n1", name+" listed", 30*time.Second, func(st api.Status) bool {
		ns, ok := lab.NodeIn(st, name)
		id = ns.ID
		return ok
	})
	f, err := config.Load(l.Node("n1").Config)
	if err != nil {
		t.Fatal(err)
	}
	f.Nodes = append(f.Nodes, model.Node{Name: name, ID: id, Links: l.Node(name).Addrs})
	f.Node, f.KeyFile, f.DataDir, f.Initial = name, "cluster.key", "data/"+name, false
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := l.JoinDir(name)
	if err := f.Write(filepath.Join(dir, name+".yaml")); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(l.Dir(), "cluster.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
}
