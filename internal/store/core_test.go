package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// coreCluster drives several Cores in one goroutine: messages are delivered
// by hand, time passes by explicit ticks. Crashing a node drops its Core and
// keeps its MemDisk.
type coreCluster struct {
	t         *testing.T
	snapEvery uint64
	cores     map[uint64]*Core
	disks     map[uint64]*MemDisk
	results   map[uint64]Result // by wait id
	queue     []*raftpb.Message
	cut       map[uint64]bool  // isolated from everyone
	errs      map[uint64]error // if set, Process errors are recorded, not fatal
	nextWait  uint64
}

func newCoreCluster(t *testing.T, n int, snapEvery uint64) *coreCluster {
	t.Helper()
	c := &coreCluster{t: t, snapEvery: snapEvery, cores: map[uint64]*Core{}, disks: map[uint64]*MemDisk{},
		results: map[uint64]Result{}, cut: map[uint64]bool{}}
	var members []Member
	for i := 1; i <= n; i++ {
		members = append(members, Member{Name: fmt.Sprintf("n%d", i), ID: uint64(i), Role: RoleVoter})
	}
	for _, m := range members {
		d := NewMemDisk()
		if err := Bootstrap(d, members); err != nil {
			t.Fatal(err)
		}
		c.disks[m.ID] = d
		c.start(m.ID)
	}
	return c
}

func (c *coreCluster) start(id uint64) {
	c.t.Helper()
	if c.disks[id] == nil {
		c.disks[id] = NewMemDisk() // a joining node
	}
	core, err := NewCore(Config{ID: id, Name: fmt.Sprintf("n%d", id), SnapshotEvery: c.snapEvery, Log: quietLog()}, c.disks[id])
	if err != nil {
		c.t.Fatalf("start %d: %v", id, err)
	}
	c.cores[id] = core
}

func (c *coreCluster) crash(id uint64) { delete(c.cores, id) }

// process runs every Ready of every core and queues the messages.
func (c *coreCluster) process() bool {
	c.t.Helper()
	did := false
	for _, id := range slices.Sorted(maps.Keys(c.cores)) {
		core := c.cores[id]
		for core.HasReady() {
			out, err := core.Process()
			if err != nil && c.errs != nil {
				c.errs[id] = err
				break
			}
			if err != nil {
				c.t.Fatalf("process %d: %v", id, err)
			}
			did = true
			c.queue = append(c.queue, out.Messages...)
			for _, m := range out.Messages {
				if m.GetType() == raftpb.MsgSnap {
					core.ReportSnapshot(m.GetTo(), false)
				}
			}
			for _, r := range out.Applied {
				c.results[r.ID] = r
			}
		}
	}
	return did
}

// stabilize processes and delivers until nothing moves.
func (c *coreCluster) stabilize() {
	c.t.Helper()
	for range 10000 {
		did := c.process()
		if len(c.queue) == 0 && !did {
			return
		}
		q := c.queue
		c.queue = nil
		for _, m := range q {
			to := c.cores[m.GetTo()]
			if to == nil || c.cut[m.GetTo()] || c.cut[m.GetFrom()] {
				continue
			}
			_ = to.Step(m) // responses from removed peers are refused; fine
		}
	}
	c.t.Fatal("cluster did not stabilize")
}

func (c *coreCluster) tick(n int) {
	for range n {
		for _, core := range c.cores {
			core.Tick()
		}
		c.stabilize()
	}
}

// leader returns the leader all live, connected cores agree on, or 0.
func (c *coreCluster) leader() uint64 {
	var lead uint64
	for id, core := range c.cores {
		if c.cut[id] {
			continue
		}
		st := core.Status()
		if st.Lead == 0 || (lead != 0 && st.Lead != lead) {
			return 0
		}
		lead = st.Lead
	}
	return lead
}

func (c *coreCluster) elect() uint64 {
	c.t.Helper()
	for range 200 {
		if l := c.leader(); l != 0 && c.cores[l] != nil && c.cores[l].Status().Role == raft.StateLeader.String() {
			return l
		}
		c.tick(1)
	}
	c.t.Fatal("no leader elected")
	return 0
}

// propose proposes cmd on node id and returns the wait id.
func (c *coreCluster) propose(id uint64, cmd Command) (uint64, error) {
	c.nextWait++
	return c.nextWait, c.cores[id].Propose(c.nextWait, cmd)
}

// write proposes on id, stabilizes, and returns the result.
func (c *coreCluster) write(id uint64, cmd Command) Result {
	c.t.Helper()
	w, err := c.propose(id, cmd)
	if err != nil {
		c.t.Fatalf("propose on %d: %v", id, err)
	}
	c.stabilize()
	r, ok := c.results[w]
	if !ok {
		c.t.Fatalf("no result for %v proposed on %d", cmd, id)
	}
	return r
}

func (c *coreCluster) value(id uint64, key string) string {
	var v string
	c.cores[id].Read(func(s *State) {
		if it, ok := s.Get(key); ok {
			v = string(it.Value)
		}
	})
	return v
}

// requireSameState checks every live core holds the same state.
func (c *coreCluster) requireSameState() {
	c.t.Helper()
	var first []byte
	var firstID uint64
	for _, id := range slices.Sorted(maps.Keys(c.cores)) {
		var b []byte
		c.cores[id].Read(func(s *State) { b, _ = s.Marshal() })
		if first == nil {
			first, firstID = b, id
		} else if string(b) != string(first) {
			c.t.Fatalf("state of %d differs from %d:\n%s\n%s", id, firstID, b, first)
		}
	}
}

func follower(c *coreCluster, lead uint64) uint64 {
	for _, id := range slices.Sorted(maps.Keys(c.cores)) {
		if id != lead {
			return id
		}
	}
	return 0
}

func TestCoreNoLeaderFailsFast(t *testing.T) {
	c := newCoreCluster(t, 3, 0)
	if _, err := c.propose(1, Put{"a", nil}); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("propose before election: %v, want ErrNoLeader", err)
	}
}

// DESIGN promise 2: a write is acknowledged only once a quorum committed it,
// and then it is on every node.
func TestCoreElectCommitReplicate(t *testing.T) {
	c := newCoreCluster(t, 3, 0)
	lead := c.elect()
	// Proposed on a follower: raft forwards it to the leader, and the
	// result comes back through the follower's own applier.
	f := follower(c, lead)
	r := c.write(f, Put{"cfg/a", []byte("1")})
	if r.Err != nil || r.Epoch != 2 {
		t.Fatalf("result %+v", r)
	}
	for id := range c.cores {
		if v := c.value(id, "cfg/a"); v != "1" {
			t.Errorf("node %d: cfg/a = %q", id, v)
		}
	}
	// A stale compare is rejected on every node alike, reported to the
	// proposer.
	r = c.write(lead, Txn{IfEpoch: 1, Ops: []Op{{Key: "cfg/b", Value: []byte("x")}}})
	if !errors.Is(r.Err, ErrEpochMismatch) {
		t.Fatalf("stale txn: %+v", r)
	}
	r = c.write(lead, Txn{IfEpoch: 2, Ops: []Op{{Key: "cfg/b", Value: []byte("x")}}})
	if r.Err != nil || r.Epoch != 3 {
		t.Fatalf("txn: %+v", r)
	}
	c.requireSameState()

	// A minority cannot commit; the leader steps down (CheckQuorum) and the
	// cut-off nodes refuse with ErrNoLeader.
	for id := range c.cores {
		if id != lead {
			c.cut[id] = true
		}
	}
	w, err := c.propose(lead, Put{"cfg/lost", nil})
	if err != nil {
		t.Fatal(err)
	}
	c.tick(50)
	if _, ok := c.results[w]; ok {
		t.Fatal("a write committed without a quorum")
	}
	if st := c.cores[lead].Status(); st.Role == raft.StateLeader.String() {
		t.Fatalf("isolated leader did not step down: %+v", st)
	}
	if _, err := c.propose(lead, Put{"x", nil}); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("isolated node propose: %v", err)
	}
}

func TestCoreRestartCatchesUp(t *testing.T) {
	c := newCoreCluster(t, 3, 0)
	lead := c.elect()
	c.write(lead, Put{"a", []byte("1")})
	f := follower(c, lead)
	applied := c.cores[f].Status().Applied
	c.crash(f)
	for i := range 5 {
		c.write(lead, Put{fmt.Sprintf("k%d", i), []byte("v")})
	}
	c.start(f)
	if got := c.cores[f].Status().Applied; got != applied {
		t.Fatalf("restarted at applied %d, want %d (from disk)", got, applied)
	}
	c.tick(5)
	c.requireSameState()
	if v := c.value(f, "k4"); v != "v" {
		t.Fatalf("restarted follower k4 = %q", v)
	}
	// Restart every node: the state comes back from the disks alone.
	for id := range c.disks {
		c.crash(id)
	}
	for id := range c.disks {
		c.start(id)
	}
	c.requireSameState()
	lead = c.elect()
	c.write(lead, Put{"after", []byte("1")})
	c.requireSameState()
}

func TestCoreLearnerJoinsBySnapshot(t *testing.T) {
	c := newCoreCluster(t, 3, 5)
	lead := c.elect()
	for i := range 20 {
		c.write(lead, Put{fmt.Sprintf("k%02d", i), []byte("v")})
	}
	if first, _ := c.cores[lead].ms.FirstIndex(); first < 10 {
		t.Fatalf("log not compacted: first index %d", first)
	}
	r := c.write(lead, AddNode{Member{Name: "n4", ID: 4, Role: RoleLearner, Links: []string{"h4:1"}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if st := c.cores[lead].Status(); !slices.Equal(st.Learners, []uint64{4}) {
		t.Fatalf("learners %v", st.Learners)
	}
	c.start(4) // empty disk: waits for the leader
	c.tick(3)
	c.requireSameState()
	if snap := c.disks[4].snap; snap == nil {
		t.Fatal("learner did not receive a snapshot")
	}
	if st := c.cores[4].Status(); st.Applied != c.cores[lead].Status().Applied {
		t.Fatalf("learner applied %d", st.Applied)
	}
	// The agent promotes once it has caught up.
	if r := c.write(lead, Promote{"n4"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for id, core := range c.cores {
		if st := core.Status(); !slices.Equal(st.Voters, []uint64{1, 2, 3, 4}) || len(st.Learners) != 0 {
			t.Errorf("node %d: voters %v learners %v", id, st.Voters, st.Learners)
		}
	}
	c.write(4, Put{"from4", []byte("1")})
	c.requireSameState()
	// The learner-turned-voter restarts from its own disk.
	c.crash(4)
	c.start(4)
	c.tick(3)
	c.requireSameState()
}

func TestCoreRemoveNode(t *testing.T) {
	c := newCoreCluster(t, 3, 0)
	lead := c.elect()
	f := follower(c, lead)
	name := fmt.Sprintf("n%d", f)
	if r := c.write(lead, RemoveNode{name}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if st := c.cores[lead].Status(); len(st.Voters) != 2 || slices.Contains(st.Voters, f) {
		t.Fatalf("voters %v", st.Voters)
	}
	c.crash(f)
	delete(c.disks, f)
	c.write(lead, Put{"two", []byte("1")})
	// Its ID is retired.
	if r := c.write(lead, AddNode{Member{Name: name, ID: f, Role: RoleLearner}}); !errors.Is(r.Err, ErrIDRetired) {
		t.Fatalf("re-add retired ID: %+v", r)
	}
	// Removing the leader: it steps down and the other elects itself.
	if r := c.write(lead, RemoveNode{fmt.Sprintf("n%d", lead)}); r.Err != nil {
		t.Fatal(r.Err)
	}
	c.crash(lead)
	newLead := c.elect()
	if newLead == lead {
		t.Fatal("removed leader still leads")
	}
	if r := c.write(newLead, Put{"one", []byte("1")}); r.Err != nil || c.value(newLead, "one") != "1" {
		t.Fatalf("single voter write: %+v", r)
	}
	// The last voter cannot be removed.
	if _, err := c.propose(newLead, RemoveNode{fmt.Sprintf("n%d", newLead)}); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if r := c.results[c.nextWait]; !errors.Is(r.Err, ErrLastVoter) {
		t.Fatalf("remove last voter: %+v", r)
	}
}

func TestCoreOneConfChangeAtATime(t *testing.T) {
	c := newCoreCluster(t, 3, 0)
	lead := c.elect()
	if _, err := c.propose(lead, AddNode{Member{Name: "n4", ID: 4, Role: RoleLearner}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.propose(lead, AddNode{Member{Name: "n5", ID: 5, Role: RoleLearner}}); !errors.Is(err, ErrConfChangePending) {
		t.Fatalf("second conf change: %v", err)
	}
	c.stabilize()
	if _, err := c.propose(lead, AddNode{Member{Name: "n5", ID: 5, Role: RoleLearner}}); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if st := c.cores[lead].Status(); !slices.Equal(st.Learners, []uint64{4, 5}) || st.Epoch != 3 {
		t.Fatalf("status %+v", st)
	}
}

// An entry in a newer format cannot be applied without diverging: every
// node stops instead (DESIGN: built to be upgraded in place).
func TestCoreStopsOnNewerFormat(t *testing.T) {
	c := newCoreCluster(t, 3, 0)
	lead := c.elect()
	c.errs = map[uint64]error{}
	if err := c.cores[lead].rn.Propose([]byte(`{"v":99,"op":"put","key":"a"}`)); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	// The leader stops when the entry commits, before telling the others;
	// one of them takes over, commits it too, and stops; the last is left
	// without a quorum.
	c.tick(100)
	if !errors.Is(c.errs[lead], errFormat) {
		t.Fatalf("leader: Process error %v, want a format error", c.errs[lead])
	}
	if len(c.errs) != 2 {
		t.Fatalf("nodes stopped: %v, want 2", c.errs)
	}
	for id := range c.cores {
		err := c.cores[id].Propose(1, Put{"b", nil})
		if c.errs[id] != nil && !errors.Is(err, errFormat) {
			t.Errorf("node %d: Propose after the failure: %v", id, err)
		}
		if c.errs[id] == nil && !errors.Is(err, ErrNoLeader) {
			t.Errorf("node %d: Propose without quorum: %v", id, err)
		}
	}
}
