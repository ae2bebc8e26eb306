package lab_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
)

// End-to-end tests of real `vigil agent` processes. They are slow (seconds
// each), so -short skips them. Bounds are generous on purpose: they check
// behaviour, not speed (benchmarks measure speed), on a loaded 2-core CI.

const (
	heartbeat   = 200 * time.Millisecond
	nodeTimeout = time.Second
	// formTimeout bounds a cold start: processes, bootstrap, first election.
	formTimeout = 60 * time.Second
	// slack covers polling, CLI start-up and a loaded machine on top of
	// the protocol's own bound.
	slack = 15 * time.Second
	// lostWithin is how soon a dead node must be seen lost: 2×node_timeout
	// by the design, plus slack.
	lostWithin = 2*nodeTimeout + slack
)

// newCluster builds a lab of real agents with the test timings, or skips
// the test in -short mode.
func newCluster(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("runs real vigil agents; skipped with -short")
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = heartbeat
	}
	if o.NodeTimeout == 0 {
		o.NodeTimeout = nodeTimeout
	}
	return lab.New(t, o)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(d))
	t.Cleanup(cancel)
	return ctx
}

// TestThreeNodesFormOnLoopback: three agents on loopback form one cluster;
// every node shows three members, quorum and the same DC.
func TestThreeNodesFormOnLoopback(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3})
	l.StartAll()
	dc := l.WaitFormed(formTimeout)
	for _, n := range l.Names() {
		st, err := l.Status(ctxFor(t, 30*time.Second), n)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(lab.Summary(st))
		if st.Cluster != lab.ClusterName || st.Node != n {
			t.Errorf("%s: cluster %q node %q, want %q %q", n, st.Cluster, st.Node, lab.ClusterName, n)
		}
		if !st.Quorum.Quorate || st.Quorum.Votes != 3 || st.Quorum.Expected != 3 {
			t.Errorf("%s: quorum %+v, want quorate with 3 of 3 votes", n, st.Quorum)
		}
		if st.DC != dc {
			t.Errorf("%s: DC %q, others say %q", n, st.DC, dc)
		}
		if m := Members(st); !slices.Equal(m, []string{"n1", "n2", "n3"}) {
			t.Errorf("%s: members %v, want n1 n2 n3", n, m)
		}
		var flagged []string
		for _, ns := range st.Nodes {
			if ns.DC {
				flagged = append(flagged, ns.Name)
			}
			if ns.Self != (ns.Name == n) {
				t.Errorf("%s: node %s has self=%v", n, ns.Name, ns.Self)
			}
		}
		if !slices.Equal(flagged, []string{dc}) {
			t.Errorf("%s: nodes flagged DC: %v, want [%s]", n, flagged, dc)
		}
	}
}

// Members is lab.Members, sorted.
func Members(st api.Status) []string {
	m := lab.Members(st)
	slices.Sort(m)
	return m
}

// TestKilledNodeIsLostAndDCReplaced: a SIGKILLed non-DC node is marked lost
// by the others within 2×node_timeout; a SIGKILLed DC is replaced.
func TestKilledNodeIsLostAndDCReplaced(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3})
	l.StartAll()
	dc := l.WaitFormed(formTimeout)

	victim := l.Other(dc)
	l.Kill(victim)
	killed := time.Now()
	for _, n := range l.Others(victim) {
		l.WaitStatus(n, victim+" lost, quorum kept", lostWithin, func(st api.Status) bool {
			return lab.State(st, victim) == api.NodeLost && st.Quorum.Quorate
		})
	}
	t.Logf("%s seen lost by both survivors %s after SIGKILL (bound %s)", victim, time.Since(killed).Round(time.Millisecond), lostWithin)

	// Bring it back so that killing the DC leaves a quorum of two.
	l.Start(victim)
	dc = l.WaitFormed(formTimeout)

	l.Kill(dc)
	killed = time.Now()
	survivors := l.Others(dc)
	newDC := ""
	l.WaitFor("a new DC that both survivors agree on", lostWithin+formTimeout/2, func() (bool, string) {
		var dcs, notes []string
		for _, n := range survivors {
			ok, why := l.StatusCond(n, func(st api.Status) bool {
				dcs = append(dcs, st.DC)
				return st.Quorum.Quorate && st.DC != "" && st.DC != dc && lab.State(st, dc) == api.NodeLost
			})
			if !ok {
				notes = append(notes, why)
			}
		}
		if len(notes) > 0 {
			return false, strings.Join(notes, " | ")
		}
		if dcs[0] != dcs[1] {
			return false, fmt.Sprintf("survivors disagree on the DC: %v", dcs)
		}
		newDC = dcs[0]
		return true, ""
	})
	t.Logf("DC %s killed; %s took over after %s", dc, newDC, time.Since(killed).Round(time.Millisecond))
	st, err := l.Status(ctxFor(t, 30*time.Second), newDC)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := lab.NodeIn(st, newDC); !n.DC || !n.Self {
		t.Fatalf("the new DC's own status does not flag it as DC: %s", lab.Summary(st))
	}
}

// stable checks, over d, that every running node keeps quorum, the same DC
// and every running host as a member.
func stable(l *lab.Lab, dc string, d time.Duration) {
	l.T().Helper()
	l.Always(fmt.Sprintf("all members, quorum, DC %s", dc), d, func() (bool, string) {
		for _, n := range l.Running() {
			ok, why := l.StatusCond(n, func(st api.Status) bool {
				if !st.Quorum.Quorate || st.DC != dc {
					return false
				}
				for _, h := range l.Running() {
					if lab.State(st, h) != api.NodeMember {
						return false
					}
				}
				return true
			})
			if !ok {
				return false, why
			}
		}
		return true, ""
	})
}

// TestOneLinkFaultIsNotANodeFault: with two links, losing one link of a
// node (link down, or a firewall drop) shows as that link down and nothing
// else; losing both loses the node.
func TestOneLinkFaultIsNotANodeFault(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real vigil agents; skipped with -short")
	}
	faults := []struct {
		name      string
		cut, heal func(l *lab.Lab, n string, link int)
	}{
		{"link down", (*lab.Lab).CutLink, (*lab.Lab).HealLink},
		{"firewall drop", (*lab.Lab).Drop, (*lab.Lab).Undrop},
	}
	for _, f := range faults {
		t.Run(strings.ReplaceAll(f.name, " ", "_"), func(t *testing.T) {
			l := newCluster(t, lab.Options{Nodes: 3, Links: 2, Netns: true})
			l.StartAll()
			dc := l.WaitFormed(formTimeout)
			victim := l.Other(dc)
			observers := l.Others(victim)

			f.cut(l, victim, 0)
			for _, o := range observers {
				l.WaitStatus(o, victim+"'s link 0 down, link 1 up", lostWithin, func(st api.Status) bool {
					return !lab.LinkUp(st, victim, 0) && lab.LinkUp(st, victim, 1) && lab.State(st, victim) == api.NodeMember
				})
			}
			stable(l, dc, 3*time.Second)

			f.heal(l, victim, 0)
			for _, o := range observers {
				l.WaitStatus(o, victim+"'s link 0 back", lostWithin, func(st api.Status) bool {
					return lab.LinkUp(st, victim, 0) && lab.LinkUp(st, victim, 1)
				})
			}

			f.cut(l, victim, 0)
			f.cut(l, victim, 1)
			for _, o := range observers {
				l.WaitStatus(o, victim+" lost with both links gone", lostWithin, func(st api.Status) bool {
					return lab.State(st, victim) == api.NodeLost && st.Quorum.Quorate
				})
			}
			f.heal(l, victim, 0)
			f.heal(l, victim, 1)
			l.WaitFormed(formTimeout)
		})
	}
}

// TestIsolatedNodeRefusesWrites: an isolated node (the DC, the hardest case)
// has no quorum and refuses writes with a clear error; the other two keep
// quorum and accept writes; after healing all three agree.
func TestIsolatedNodeRefusesWrites(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3, Netns: true})
	l.StartAll()
	isolated := l.WaitFormed(formTimeout)
	majority := l.Others(isolated)
	if _, err := l.SetProperty(ctxFor(t, 30*time.Second), isolated, "before", "1"); err != nil {
		t.Fatal(err)
	}

	l.Isolate(isolated)
	l.WaitStatus(isolated, "no quorum", lostWithin, func(st api.Status) bool { return !st.Quorum.Quorate })
	_, err := l.SetProperty(ctxFor(t, 60*time.Second), isolated, "refused", "x")
	if err == nil {
		t.Fatalf("property set on isolated %s succeeded", isolated)
	}
	if !strings.Contains(strings.ToLower(err.Error()), "no quorum") {
		t.Fatalf("property set on isolated %s: want a clear \"no quorum\" error, got: %v", isolated, err)
	}
	t.Logf("refused as it should: %v", err)

	for _, n := range majority {
		l.WaitStatus(n, "quorum and a DC without "+isolated, lostWithin+formTimeout/2, func(st api.Status) bool {
			return st.Quorum.Quorate && st.DC != "" && st.DC != isolated && lab.State(st, isolated) == api.NodeLost
		})
	}
	epoch, err := l.SetProperty(ctxFor(t, 60*time.Second), majority[0], "during", "2")
	if err != nil {
		t.Fatalf("the majority refused a write: %v", err)
	}
	if _, err := l.SetProperty(ctxFor(t, 60*time.Second), majority[1], "during2", "3"); err != nil {
		t.Fatalf("the majority refused a write: %v", err)
	}

	l.Heal()
	l.WaitFormed(formTimeout)
	want := map[string]string{"before": "1", "during": "2", "during2": "3"}
	// A write refused with "no quorum" must never be applied later either.
	agree(t, l, want, []string{"refused"}, epoch)
}

// agree waits until every running node has the same epoch (at least
// minEpoch), the properties want (others may exist) and none of absent.
func agree(t *testing.T, l *lab.Lab, want map[string]string, absent []string, minEpoch uint64) {
	t.Helper()
	l.WaitFor("every node at the same epoch with the same properties", formTimeout, func() (bool, string) {
		var epochs []uint64
		for _, n := range l.Running() {
			if l.Node(n).Witness {
				continue
			}
			st, err := l.Status(ctxFor(t, 10*time.Second), n)
			if err != nil {
				return false, err.Error()
			}
			if st.Epoch < minEpoch {
				return false, fmt.Sprintf("%s at epoch %d < %d", n, st.Epoch, minEpoch)
			}
			epochs = append(epochs, st.Epoch)
			got, err := l.Properties(ctxFor(t, 10*time.Second), n)
			if err != nil {
				return false, err.Error()
			}
			for k, v := range want {
				if got[k] != v {
					return false, fmt.Sprintf("%s has %s=%q, want %q (all: %v)", n, k, got[k], v, got)
				}
			}
			for _, k := range absent {
				if v, ok := got[k]; ok {
					return false, fmt.Sprintf("%s has %s=%q, which was refused", n, k, v)
				}
			}
		}
		if slices.Min(epochs) != slices.Max(epochs) {
			return false, fmt.Sprintf("epochs differ: %v", epochs)
		}
		return true, ""
	})
}

// TestAcknowledgedWritesSurviveKillAll: every acknowledged property set is
// on every node after all nodes are SIGKILLed (some mid-write) and
// restarted: "nothing acknowledged is lost".
func TestAcknowledgedWritesSurviveKillAll(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3})
	l.StartAll()
	l.WaitFormed(formTimeout)

	acked := map[string]string{}
	var maxEpoch, last uint64
	names := l.NodeNames()
	for i := range 12 {
		k, v := fmt.Sprintf("k%02d", i), fmt.Sprintf("v%02d", i)
		e, err := l.SetProperty(ctxFor(t, 30*time.Second), names[i%len(names)], k, v)
		if err != nil {
			t.Fatalf("write %d in a healthy cluster: %v", i, err)
		}
		if e <= last {
			t.Fatalf("write %d acknowledged at epoch %d, not after the previous %d", i, e, last)
		}
		last, maxEpoch = e, e
		acked[k] = v
	}

	// Keep writing from every node while everything is killed.
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, n := range names {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k, v := fmt.Sprintf("w%d-%03d", w, i), "x"
				ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(10*time.Second))
				e, err := l.SetProperty(ctx, n, k, v)
				cancel()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue // unknown outcome: not checked
				}
				mu.Lock()
				acked[k] = v
				maxEpoch = max(maxEpoch, e)
				mu.Unlock()
			}
		})
	}
	time.Sleep(lab.Scale(1500 * time.Millisecond))
	l.KillAll()
	close(stop)
	wg.Wait()
	t.Logf("%d writes acknowledged, the last at epoch %d", len(acked), maxEpoch)

	l.StartAll()
	l.WaitFormed(formTimeout)
	l.WaitFor("every acknowledged write on every node", formTimeout, func() (bool, string) {
		for _, n := range names {
			got, err := l.Properties(ctxFor(t, 10*time.Second), n)
			if err != nil {
				return false, err.Error()
			}
			for k, v := range acked {
				if got[k] != v {
					return false, fmt.Sprintf("%s: %s=%q, acknowledged %q", n, k, got[k], v)
				}
			}
			st, err := l.Status(ctxFor(t, 10*time.Second), n)
			if err != nil {
				return false, err.Error()
			}
			if st.Epoch < maxEpoch {
				return false, fmt.Sprintf("%s at epoch %d, acknowledged up to %d", n, st.Epoch, maxEpoch)
			}
		}
		return true, ""
	})
}

// TestForeignKeyNeverJoins: a node with another cluster's key never becomes
// a member; the others log why; its key opens no door on them.
func TestForeignKeyNeverJoins(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3})
	stranger := "n3"
	l.SetForeignKey(stranger)
	l.StartAll()
	good := l.Others(stranger)

	quorumWithout := func(st api.Status) bool {
		return st.Quorum.Quorate && st.DC != "" && st.DC != stranger &&
			lab.State(st, good[0]) == api.NodeMember && lab.State(st, good[1]) == api.NodeMember &&
			lab.State(st, stranger) != api.NodeMember
	}
	for _, n := range good {
		l.WaitStatus(n, "quorum of the two keyed nodes", formTimeout, quorumWithout)
	}
	l.Always(stranger+" never a member", 3*time.Second, func() (bool, string) {
		for _, n := range good {
			if ok, why := l.StatusCond(n, quorumWithout); !ok {
				return false, why
			}
		}
		return true, ""
	})
	l.WaitFor("a log line saying why "+stranger+" is refused", lostWithin, func() (bool, string) {
		for _, n := range good {
			if l.LogContains(n, "heartbeat failed authentication") {
				return true, ""
			}
		}
		return false, "no \"heartbeat failed authentication\" in " + strings.Join(good, ", ") + "'s logs"
	})
	l.WaitStatus(stranger, "no quorum for the stranger", lostWithin, func(st api.Status) bool {
		return !st.Quorum.Quorate && lab.State(st, good[0]) != api.NodeMember && lab.State(st, good[1]) != api.NodeMember
	})

	// The stranger's key must not work on the cluster's API either.
	p := l.Node(stranger)
	_, err := l.Exec(ctxFor(t, 30*time.Second), stranger,
		"--config", p.Config, "--api", strings.Join(l.Node(good[0]).Addrs, ","), "property", "set", "intruder=1")
	if err == nil {
		t.Fatalf("a write with a foreign key was accepted by %s", good[0])
	}
	got, err := l.Properties(ctxFor(t, 30*time.Second), good[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["intruder"]; ok {
		t.Fatalf("a write with a foreign key was applied: %v", got)
	}
}

// TestGarbageHeartbeatsAreDropped: random bytes, truncated, bit-flipped and
// replayed heartbeats sent to nodes' heartbeat ports are dropped: no panic,
// the nodes keep answering and keep their view.
func TestGarbageHeartbeatsAreDropped(t *testing.T) {
	l := newCluster(t, lab.Options{Nodes: 3})
	// n3 is never started: the test takes its address, so the others'
	// real heartbeats to n3 arrive here and serve as templates.
	const absent = "n3"
	conn, err := net.ListenPacket("udp", l.Node(absent).Addrs[0])
	if err != nil {
		t.Fatalf("take %s's heartbeat port: %v", absent, err)
	}
	defer conn.Close()
	l.Start("n1")
	l.Start("n2")
	targets := []string{"n1", "n2"}
	for _, n := range targets {
		l.WaitStatus(n, "n1 and n2 quorate without n3", formTimeout, func(st api.Status) bool {
			return st.Quorum.Quorate && st.DC != "" &&
				lab.State(st, "n1") == api.NodeMember && lab.State(st, "n2") == api.NodeMember
		})
	}

	// Capture some real heartbeats.
	var captured [][]byte
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(lab.Scale(10 * time.Second))
	for len(captured) < 8 && time.Now().Before(deadline) {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.Fatal(err)
		}
		captured = append(captured, slices.Clone(buf[:n]))
	}
	if len(captured) == 0 {
		t.Logf("no heartbeat from n1 or n2 reached %s's port in 10s: sending random bytes only", absent)
	}

	var bad [][]byte
	for _, hb := range captured {
		for cut := 0; cut < len(hb); cut++ {
			bad = append(bad, hb[:cut])
		}
		for bit := 0; bit < 8*len(hb); bit += 7 {
			c := slices.Clone(hb)
			c[bit/8] ^= 1 << (bit % 8)
			bad = append(bad, c)
		}
		bad = append(bad, hb, slices.Concat(hb, hb), slices.Concat(hb, []byte{0}))
	}
	for range 1000 {
		b := make([]byte, 1+int(randByte())*6)
		rand.Read(b)
		bad = append(bad, b)
	}
	for i, b := range bad {
		for _, n := range targets {
			addr, err := net.ResolveUDPAddr("udp", l.Node(n).Addrs[0])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.WriteTo(b, addr); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond) // keep the socket buffers from overflowing
		}
	}
	t.Logf("sent %d bad packets to each of %v", len(bad), targets)

	for _, n := range targets {
		if !l.Node(n).Running() {
			t.Fatalf("%s died on bad packets:\n%s", n, l.LogTail(n, 40))
		}
		l.WaitStatus(n, "still answering, quorate, n3 not a member", 30*time.Second, func(st api.Status) bool {
			return st.Quorum.Quorate && lab.State(st, "n1") == api.NodeMember &&
				lab.State(st, "n2") == api.NodeMember && lab.State(st, absent) != api.NodeMember
		})
	}
	// The lab's cleanup fails the test if a log shows a panic.
}

func randByte() byte {
	var b [1]byte
	rand.Read(b[:])
	return b[0]
}
