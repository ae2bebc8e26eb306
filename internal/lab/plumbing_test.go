package lab_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
)

// These tests check the harness itself with the stand-in agent of
// fake_test.go: processes, logs, signals, namespaces, links, firewall drops
// and cleanup. They need no vigil binary and run in -short mode.

func TestLoopbackProcesses(t *testing.T) {
	l := lab.New(t, fakeOptions(t, lab.Options{Nodes: 3, Links: 2}))
	for _, n := range l.Names() {
		p := l.Node(n)
		if p.Netns != "" || len(p.Addrs) != 2 || !strings.HasPrefix(p.Addrs[0], "127.0.0.1:") {
			t.Fatalf("%s: netns %q addrs %v; want loopback, 2 links", n, p.Netns, p.Addrs)
		}
	}
	l.StartAll()
	if dc := l.WaitFormed(20 * time.Second); dc != "n1" {
		t.Fatalf("fake DC = %q, want n1", dc)
	}
	l.WaitFor("n1 to log that it listens", 10*time.Second, func() (bool, string) {
		return l.LogContains("n1", "fake agent listening"), l.LogTail("n1", 3)
	})

	l.Kill("n3")
	if l.Node("n3").Running() || l.Node("n3").PID() != 0 {
		t.Fatal("n3 still running after Kill")
	}
	l.WaitStatus("n1", "n3 lost", 10*time.Second, func(st api.Status) bool {
		return lab.State(st, "n3") == api.NodeLost && st.Quorum.Quorate
	})
	if _, err := l.Status(context.Background(), "n3"); err == nil || !strings.Contains(err.Error(), "no node answered") {
		t.Fatalf("status of a killed node: err = %v, want one that says no node answered", err)
	}

	l.Pause("n2")
	if !l.Node("n2").Paused() {
		t.Fatal("n2 not paused")
	}
	l.Resume("n2")
	l.Stop("n2") // fails the test unless the exit is clean
	if err := l.Node("n2").Exit(); err != nil {
		t.Fatalf("n2 exit = %v", err)
	}
	if !l.LogContains("n2", "fake agent stopping") {
		t.Fatalf("n2's log lacks its clean stop:\n%s", l.LogTail("n2", 10))
	}
	l.WaitStatus("n1", "no quorum with n2 and n3 down", 10*time.Second, func(st api.Status) bool {
		return !st.Quorum.Quorate && st.DC == ""
	})

	l.Start("n2")
	l.Start("n3")
	l.WaitFormed(20 * time.Second)
	if got := l.Node("n3").Runs(); got != 2 {
		t.Fatalf("n3 runs = %d, want 2", got)
	}
	if strings.Contains(l.Log("n3"), "UNEXPECTEDLY") {
		t.Fatalf("a lab kill was logged as unexpected:\n%s", l.Log("n3"))
	}
	l.KillAll()
	if r := l.Running(); len(r) != 0 {
		t.Fatalf("running after KillAll: %v", r)
	}
}

func TestPausedNodeStopsOnSIGTERM(t *testing.T) {
	l := lab.New(t, fakeOptions(t, lab.Options{Nodes: 1}))
	l.Start("n1")
	l.WaitFor("n1 to listen", 10*time.Second, func() (bool, string) {
		return l.LogContains("n1", "fake agent listening"), l.LogTail("n1", 3)
	})
	l.Pause("n1")
	l.Stop("n1")
	if l.Node("n1").Running() {
		t.Fatal("n1 still running")
	}
}

// netnsList returns the names of the namespaces that start with prefix.
func netnsList(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			got = append(got, f[0])
		}
	}
	return got
}

func TestNetnsFaults(t *testing.T) {
	var id string
	t.Run("lab", func(t *testing.T) {
		l := lab.New(t, fakeOptions(t, lab.Options{Nodes: 3, Links: 2, Netns: true}))
		id = l.ID()
		if got := netnsList(t, lab.Prefix+id); len(got) != 4 {
			t.Fatalf("namespaces %v, want hub and 3 hosts", got)
		}
		if p := l.Node("n2"); p.Addrs[1] != "198.18.1.2:7946" || p.Netns != lab.Prefix+id+"-n2" {
			t.Fatalf("n2: addrs %v netns %q", p.Addrs, p.Netns)
		}
		l.StartAll()
		l.WaitFormed(30 * time.Second)

		linkView := func(link0, link1 bool, state string) func(api.Status) bool {
			return func(st api.Status) bool {
				return lab.LinkUp(st, "n1", 0) == link0 && lab.LinkUp(st, "n1", 1) == link1 && lab.State(st, "n1") == state
			}
		}
		l.CutLink("n1", 0)
		l.WaitStatus("n2", "n1's link 0 down, link 1 up", 10*time.Second, linkView(false, true, api.NodeMember))
		l.CutLink("n1", 1)
		l.WaitStatus("n2", "n1 lost", 10*time.Second, linkView(false, false, api.NodeLost))
		l.HealLink("n1", 0)
		l.HealLink("n1", 1)
		l.WaitFormed(20 * time.Second)

		l.Drop("n1", 1)
		l.WaitStatus("n3", "n1's link 1 dropped", 10*time.Second, linkView(true, false, api.NodeMember))
		l.Undrop("n1", 1)
		l.WaitStatus("n3", "n1's link 1 back", 10*time.Second, linkView(true, true, api.NodeMember))

		l.Isolate("n1")
		l.WaitStatus("n1", "n1 alone", 10*time.Second, func(st api.Status) bool {
			return !st.Quorum.Quorate && len(lab.Members(st)) == 1
		})
		l.WaitStatus("n2", "n1 lost, quorum kept", 10*time.Second, func(st api.Status) bool {
			return st.Quorum.Quorate && lab.State(st, "n1") == api.NodeLost
		})
		l.Heal()
		l.WaitFormed(20 * time.Second)

		l.Partition([]string{"n1", "n2"}, []string{"n3"})
		l.WaitStatus("n3", "n3 cut off", 10*time.Second, func(st api.Status) bool {
			return !st.Quorum.Quorate && lab.State(st, "n1") == api.NodeLost && lab.State(st, "n2") == api.NodeLost
		})
		l.WaitStatus("n1", "n1 and n2 together", 10*time.Second, func(st api.Status) bool {
			return st.Quorum.Quorate && lab.State(st, "n2") == api.NodeMember && lab.State(st, "n3") == api.NodeLost
		})
		l.Partition() // no groups: everyone together again
		l.WaitFormed(20 * time.Second)
		l.Drop("n2", 0) // left in place: cleanup must remove it with the rest
	})
	if id == "" {
		return
	}
	if left := netnsList(t, lab.Prefix+id); len(left) != 0 {
		t.Fatalf("namespaces left after cleanup: %v", left)
	}
}

func TestCleanupStale(t *testing.T) {
	if reason := lab.NetnsUnavailable(); reason != "" {
		t.Skip(reason)
	}
	// A namespace of a lab whose owner (here: an exited process) is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	ns := lab.Prefix + "dead00-n1"
	if err := exec.Command("ip", "netns", "add", ns).Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	lab.WriteOwnerForTest(t, "dead00", dead.Process.Pid)

	// A live lab must survive.
	live := lab.New(t, fakeOptions(t, lab.Options{Nodes: 1, Netns: true}))

	removed, err := lab.CleanupStale()
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != ns {
		t.Fatalf("removed %v, want [%s]", removed, ns)
	}
	if got := netnsList(t, lab.Prefix+live.ID()); len(got) != 2 {
		t.Fatalf("live lab's namespaces: %v", got)
	}
}

func TestWitnessHost(t *testing.T) {
	l := lab.New(t, fakeOptions(t, lab.Options{Nodes: 2, Witnesses: 1}))
	if got := strings.Join(l.Names(), " "); got != "n1 n2 w1" {
		t.Fatalf("names %q", got)
	}
	if got := strings.Join(l.NodeNames(), " "); got != "n1 n2" {
		t.Fatalf("node names %q", got)
	}
	if w := l.Node("w1"); !w.Witness || w.Index != 3 {
		t.Fatalf("w1: witness %v index %d", w.Witness, w.Index)
	}
	l.StartAll()
	l.WaitFormed(20 * time.Second)
	if !strings.Contains(l.Log("w1"), " witness --config ") {
		t.Fatalf("w1 not started as a witness:\n%s", l.Log("w1"))
	}
}
