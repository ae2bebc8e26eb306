package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// nodeCluster runs real Nodes (goroutines, tickers) over a LocalNetwork.
type nodeCluster struct {
	t     *testing.T
	net   *LocalNetwork
	disks map[uint64]Disk
	nodes map[uint64]*Node
	open  func(id uint64) Disk // reopens a disk after a full stop
}

const testTick = 5 * time.Millisecond

func newNodeCluster(t *testing.T, n int, open func(id uint64) Disk) *nodeCluster {
	t.Helper()
	c := &nodeCluster{t: t, net: NewLocalNetwork(), disks: map[uint64]Disk{}, nodes: map[uint64]*Node{}, open: open}
	var members []Member
	for i := 1; i <= n; i++ {
		members = append(members, Member{Name: fmt.Sprintf("n%d", i), ID: uint64(i), Role: RoleVoter})
	}
	for _, m := range members {
		d := open(m.ID)
		if err := Bootstrap(d, members); err != nil {
			t.Fatal(err)
		}
		c.disks[m.ID] = d
		c.start(m.ID)
	}
	t.Cleanup(c.close)
	return c
}

func (c *nodeCluster) start(id uint64) {
	c.t.Helper()
	n, err := StartNode(NodeConfig{
		Core:         Config{ID: id, Name: fmt.Sprintf("n%d", id), Log: quietLog()},
		Disk:         c.disks[id],
		Transport:    c.net.Transport(id),
		TickInterval: testTick,
	})
	if err != nil {
		c.t.Fatalf("start %d: %v", id, err)
	}
	c.nodes[id] = n
	c.net.Attach(id, n)
}

func (c *nodeCluster) stopAll() {
	for id, n := range c.nodes {
		c.net.Detach(id)
		if err := n.Stop(); err != nil {
			c.t.Errorf("stop %d: %v", id, err)
		}
		delete(c.nodes, id)
	}
	for id, d := range c.disks {
		if err := d.Close(); err != nil {
			c.t.Errorf("close disk %d: %v", id, err)
		}
	}
}

func (c *nodeCluster) close() {
	c.stopAll()
	c.net.Close()
}

// waitFor polls cond for up to 10 s.
func (c *nodeCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(testTick)
	}
}

// leaderAmong returns the leader all of ids agree on and that claims to lead.
func (c *nodeCluster) leaderAmong(ids ...uint64) uint64 {
	var lead uint64
	for _, id := range ids {
		st := c.nodes[id].Status()
		if st.Lead == 0 || (lead != 0 && st.Lead != lead) {
			return 0
		}
		lead = st.Lead
	}
	for _, id := range ids {
		if id == lead {
			return lead
		}
	}
	return 0
}

func (c *nodeCluster) ids() []uint64 {
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return ids
}

func (c *nodeCluster) value(id uint64, key string) (string, bool) {
	var v string
	var ok bool
	c.nodes[id].Read(func(s *State) {
		var it Item
		it, ok = s.Get(key)
		v = string(it.Value)
	})
	return v, ok
}

func (c *nodeCluster) converged() bool {
	var first []byte
	for _, n := range c.nodes {
		var b []byte
		n.Read(func(s *State) { b, _ = s.Marshal() })
		if first == nil {
			first = b
		} else if string(b) != string(first) {
			return false
		}
	}
	return true
}

func propose(t *testing.T, n *Node, cmd Command) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := n.Propose(ctx, cmd)
	if err != nil {
		t.Fatalf("propose %v: %v", cmd, err)
	}
	return r
}

// DESIGN promise 2: Propose acknowledges only after commit and apply, and a
// minority cannot acknowledge anything.
func TestNodeProposeAckAfterCommitAndPartition(t *testing.T) {
	c := newNodeCluster(t, 3, func(uint64) Disk { return NewMemDisk() })
	var lead uint64
	c.waitFor("a leader", func() bool { lead = c.leaderAmong(1, 2, 3); return lead != 0 })

	// Proposed on a follower: forwarded by raft, acknowledged on the
	// follower once its own applier has the entry.
	f := uint64(1)
	if f == lead {
		f = 2
	}
	r := propose(t, c.nodes[f], Put{"cfg/a", []byte("1")})
	if v, ok := c.value(f, "cfg/a"); !ok || v != "1" {
		t.Fatalf("acked write not applied on the proposer: %q %v", v, ok)
	}
	if st := c.nodes[lead].Status(); st.Commit < r.Index {
		t.Fatalf("acked at index %d but leader commit is %d", r.Index, st.Commit)
	}
	if _, err := c.nodes[lead].Propose(context.Background(), Txn{IfEpoch: 1, Ops: []Op{{Key: "x"}}}); !errors.Is(err, ErrEpochMismatch) {
		t.Fatalf("stale txn: %v", err)
	}

	// Cut the leader away.
	var rest []uint64
	for _, id := range c.ids() {
		if id != lead {
			rest = append(rest, id)
		}
	}
	c.net.Partition([]uint64{lead})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := c.nodes[lead].Propose(ctx, Put{"cfg/minority", []byte("x")})
	cancel()
	if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrTimeout) {
		t.Fatalf("minority propose: %v, want ErrNoLeader or ErrTimeout", err)
	}
	// CheckQuorum: the old leader steps down, so it refuses fast.
	c.waitFor("the cut-off leader to step down", func() bool { return c.nodes[lead].Status().Lead == 0 })
	if _, err := c.nodes[lead].Propose(context.Background(), Put{"cfg/minority2", nil}); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("propose without leader: %v", err)
	}

	var newLead uint64
	c.waitFor("a majority leader", func() bool { newLead = c.leaderAmong(rest...); return newLead != 0 })
	propose(t, c.nodes[rest[0]], Put{"cfg/majority", []byte("1")})

	c.net.Heal()
	c.waitFor("all nodes to agree", func() bool {
		_, ok := c.value(lead, "cfg/majority")
		return ok && c.leaderAmong(1, 2, 3) != 0 && c.converged()
	})
	if v, ok := c.value(lead, "cfg/minority"); ok {
		// Possible only if the leader committed it before it noticed the
		// partition; with the link cut first, it cannot have.
		t.Fatalf("minority write visible: %q", v)
	}
}

// DESIGN promise 2 across a full power cut: every acknowledged write is
// still there after all nodes restart from their bbolt files.
func TestNodeRestartAllFromBolt(t *testing.T) {
	dirs := map[uint64]string{1: t.TempDir(), 2: t.TempDir(), 3: t.TempDir()}
	open := func(id uint64) Disk {
		d, err := OpenBoltDisk(dirs[id])
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	c := newNodeCluster(t, 3, open)
	c.waitFor("a leader", func() bool { return c.leaderAmong(1, 2, 3) != 0 })

	// Concurrent writers on every node; keep what was acknowledged where.
	var mu sync.Mutex
	acked := map[string]uint64{}
	var wg sync.WaitGroup
	for _, id := range []uint64{1, 2, 3} {
		n := c.nodes[id]
		wg.Go(func() {
			for i := range 20 {
				key := fmt.Sprintf("cfg/%d/%d", id, i)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := n.Propose(ctx, Put{key, []byte("v")})
				cancel()
				if err == nil {
					mu.Lock()
					acked[key] = id
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(acked) < 30 {
		t.Fatalf("only %d of 60 writes acknowledged", len(acked))
	}

	c.stopAll()
	for id := range dirs {
		c.disks[id] = open(id)
		c.start(id)
	}
	// Before any election: the proposer's own disk has each of its acks.
	for key, id := range acked {
		if _, ok := c.value(id, key); !ok {
			t.Errorf("node %d lost its acknowledged write %s", id, key)
		}
	}
	c.waitFor("a leader after restart", func() bool { return c.leaderAmong(1, 2, 3) != 0 })
	propose(t, c.nodes[1], Put{"cfg/after", []byte("1")})
	c.waitFor("convergence", func() bool {
		for id := range c.nodes {
			if _, ok := c.value(id, "cfg/after"); !ok {
				return false
			}
		}
		return c.converged()
	})
	for key := range acked {
		for id := range c.nodes {
			if _, ok := c.value(id, key); !ok {
				t.Errorf("node %d: acknowledged %s missing", id, key)
			}
		}
	}
}

func TestNodeStopFailsPending(t *testing.T) {
	c := newNodeCluster(t, 3, func(uint64) Disk { return NewMemDisk() })
	var lead uint64
	c.waitFor("a leader", func() bool { lead = c.leaderAmong(1, 2, 3); return lead != 0 })
	n := c.nodes[lead]
	c.net.Partition([]uint64{lead}) // its proposals cannot commit now
	errc := make(chan error, 1)
	go func() {
		_, err := n.Propose(context.Background(), Put{"a", nil})
		errc <- err
	}()
	time.Sleep(2 * testTick)
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrStopped) && !errors.Is(err, ErrNoLeader) {
		t.Fatalf("pending propose on a stopped node: %v", err)
	}
	if _, err := n.Propose(context.Background(), Put{"b", nil}); !errors.Is(err, ErrStopped) {
		t.Fatalf("propose on a stopped node: %v", err)
	}
}

// Watch fires on every applied change, so the controller and the executor
// never miss an order or a result.
func TestWatchFiresOnApply(t *testing.T) {
	net := NewLocalNetwork()
	defer net.Close()
	disk := NewMemDisk()
	if err := Bootstrap(disk, []Member{{Name: "n1", ID: 1, Links: []string{"127.0.0.1:1"}, Role: RoleVoter}}); err != nil {
		t.Fatal(err)
	}
	n, err := StartNode(NodeConfig{Core: Config{ID: 1, Name: "n1"}, Disk: disk, Transport: net.Transport(1), TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	net.Attach(1, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for n.Status().Lead != 1 {
		w := n.Watch() // before Campaign, so its change cannot be missed
		n.Campaign(ctx)
		select {
		case <-w:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no leader")
		}
	}
	w := n.Watch()
	if _, err := n.Propose(ctx, Put{Key: "a", Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w:
	case <-ctx.Done():
		t.Fatal("Watch did not fire after an applied write")
	}
}
