package lab_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
)

// End-to-end tests of vigil:ip (issue 6) on three nodes in network
// namespaces with a client host on the same bridge. Where an address is
// held is read from every node's namespace (lab.TrackAddress), 20 times a
// second, from before it is created to the end of the test.

var (
	vip4 = netip.MustParseAddr("198.18.0.100")
	vip6 = netip.MustParseAddr("fd00:198:18::100")
)

const webPort = 8080

// vipLab builds a fenced 3-node netns lab with a client, and the group
// "site": vip (IPv4), vip6 and web (busybox httpd on every address, port
// 8080), started after the addresses.
func vipLab(t *testing.T, o lab.Options) (*lab.Lab, string, *lab.Client) {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox is not installed (scripts/deps.sh installs busybox-static)")
	}
	o.Nodes, o.Netns = 3, true
	l, dc := fenceLab(t, o)
	c := l.AddClient("client")
	www := filepath.Join(l.Dir(), "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("vigil vip test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.TrackAddress("vip", vip4)
	l.TrackAddress("vip6", vip6)
	vigil(t, l, dc, "resource", "create", "vip", "vigil:ip", "address="+vip4.String()+"/24", "interface=l0",
		"announce_interval=100ms", "op", "monitor", "interval=2s", "--disabled")
	vigil(t, l, dc, "resource", "create", "vip6", "vigil:ip", "address="+vip6.String()+"/64", "interface=l0",
		"announce_interval=100ms", "op", "monitor", "interval=2s", "--disabled")
	vigil(t, l, dc, "resource", "create", "web", "vigil:process",
		"command=exec busybox httpd -f -p "+strconv.Itoa(webPort)+" -h "+www, "op", "monitor", "interval=2s", "--disabled")
	vigil(t, l, dc, "resource", "group", "add", "site", "vip", "vip6", "web")
	return l, dc, c
}

func enable(t *testing.T, l *lab.Lab, ask string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		vigil(t, l, ask, "resource", "enable", id)
	}
}

// firstAnswer polls the service on ap from c every 50ms (each try bounded
// by 300ms) until it answers, and returns when it did.
func firstAnswer(t testing.TB, c *lab.Client, ap netip.AddrPort, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(lab.Scale(timeout))
	var last error
	for time.Now().Before(deadline) {
		if _, err := c.Get(ap, 300*time.Millisecond); err == nil {
			return time.Now()
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %s within %s: %v", ap, c.Name, timeout, last)
	return time.Time{}
}

// Issue 6, must show 1, 2, 4, 5 and the re-announcement after a heal.
func TestVIPFailover(t *testing.T) {
	l, dc, c := vipLab(t, lab.Options{})
	createLabDevice(t, l, dc, "lab")
	w := l.WatchNeverTwice(t, "vip", "vip6", "web")

	// 5. Bad parameters are refused at create time, and change nothing.
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"address=not-an-ip/24"}, "address"},
		{[]string{"address=198.18.0.101/33"}, "prefix"},
		{[]string{"address=198.18.0.101/24", "interface=nope0"}, "nope0"},
		{[]string{"address=198.18.0.101"}, "prefix"},
	} {
		args := append([]string{"resource", "create", "bad", "vigil:ip"}, bad.args...)
		out, err := l.CLI(ctxFor(t, 30*time.Second), dc, args...)
		if err == nil {
			t.Fatalf("create with %v succeeded: %s", bad.args, out)
		}
		if !strings.Contains(err.Error(), bad.want) {
			t.Errorf("create with %v: error %q does not mention %q", bad.args, err, bad.want)
		}
	}
	if out := vigil(t, l, dc, "resource", "list"); strings.Contains(out, "bad") {
		t.Fatalf("a refused resource was created:\n%s", out)
	}

	capt := l.CaptureAnnouncements(c)
	enable(t, l, dc, "vip", "vip6", "web")
	holder := waitStarted(t, l, dc, "web", settle, nil)
	if on := l.ActiveOn("vip"); !slices.Equal(on, []string{holder}) {
		t.Fatalf("vip on %v, web on %s: the group is split", on, holder)
	}
	web4 := netip.AddrPortFrom(vip4, webPort)
	web6 := netip.AddrPortFrom(vip6, webPort)
	firstAnswer(t, c, web4, settle)
	firstAnswer(t, c, web6, settle)
	if mac, _ := l.Neighbour(c, vip4); mac != l.MAC(holder, 0) {
		t.Fatalf("client's neighbour entry for %s is %q, want %s's %s", vip4, mac, holder, l.MAC(holder, 0))
	}

	// 1 and 2. Kill the holder: the client reaches the service on the new
	// holder, whose gratuitous ARP (request and reply) and unsolicited NA
	// the client saw, and its neighbour table has the new MAC.
	killed := time.Now()
	l.Kill(holder)
	at := firstAnswer(t, c, web4, 60*time.Second)
	to := l.ActiveOn("vip")
	if len(to) != 1 || to[0] == holder {
		t.Fatalf("after the kill of %s, vip is on %v", holder, to)
	}
	newMAC := l.MAC(to[0], 0)
	mac, state := l.Neighbour(c, vip4)
	if mac != newMAC {
		t.Fatalf("client's neighbour entry for %s is %s (%s) at its first answer, want the new holder %s's %s", vip4, mac, state, to[0], newMAC)
	}
	t.Logf("FIGURE vip outage: kill of %s -> first answer from %s: %s (neighbour %s %s)", holder, to[0], at.Sub(killed).Round(time.Millisecond), mac, state)
	var arp map[string]int
	l.WaitFor("the new holder's announcements", 10*time.Second, func() (bool, string) {
		arp = lab.Count(capt.Since(killed, vip4, newMAC))
		na := lab.Count(capt.Since(killed, vip6, newMAC))
		arp["na"] = na["na"]
		return arp["arp-request"] >= 1 && arp["arp-reply"] >= 1 && arp["na"] >= 1, ""
	})
	t.Logf("announcements from %s since the kill: %v", to[0], arp)
	firstAnswer(t, c, web6, 10*time.Second)

	// The killed node comes back: the holder announces again (a heal).
	back := time.Now()
	l.Start(holder)
	l.WaitFor("a re-announcement after "+holder+" is back", settle, func() (bool, string) {
		n := lab.Count(capt.Since(back, vip4, newMAC))
		return n["arp-request"] >= 1 && n["arp-reply"] >= 1, ""
	})
	if !l.LogContains(to[0], "announcing again") {
		t.Errorf("%s did not log its re-announcement", to[0])
	}

	// 4. An address another host already answers for is refused at start,
	// and the error says which MAC answers.
	taken := netip.MustParseAddr("198.18.0.150")
	if err := lab.RunIn(c.Netns, "ip", "addr", "add", taken.String()+"/24", "dev", c.Iface); err != nil {
		t.Fatal(err)
	}
	// Asked of the new holder: dc may be the node just restarted, not yet
	// back in a quorate partition.
	ask := to[0]
	vigil(t, l, ask, "resource", "create", "taken", "vigil:ip", "address="+taken.String()+"/24", "interface=l0", "meta", "migration-threshold=1")
	l.WaitFor("the start of taken refused", settle, func() (bool, string) {
		st, err := l.Status(ctxFor(t, 5*time.Second), ask)
		if err != nil {
			return false, err.Error()
		}
		for _, f := range st.Failures {
			if f.Instance == "taken" && strings.Contains(f.FailureReason, "already answers") && strings.Contains(f.FailureReason, c.MAC.String()) {
				return true, ""
			}
		}
		return false, resSummary(st)
	})
	if on, _ := l.AddrHolders(taken); len(on) != 0 {
		t.Fatalf("the refused address was added on %v", on)
	}
	w.Stop()
	if w.Samples() < 20 {
		t.Fatalf("only %d ground-truth samples", w.Samples())
	}
}

// Issue 6, must show 3: the holder is partitioned away. It loses quorum
// and removes the address itself; the address is held by exactly one node
// at every sampled instant; when the partition heals the holder announces
// again. Watchdog mode (no fence device): the majority may take the address
// only after the lease + watchdog bound, so the isolated node's own removal
// is what the samples see.
func TestVIPPartition(t *testing.T) {
	l, dc, c := vipLab(t, lab.Options{SetupArgs: []string{"--watchdog", "process"}})
	w := l.WatchNeverTwice(t, "vip", "vip6", "web")
	ask := dc
	enable(t, l, ask, "vip", "vip6", "web")
	holder := waitStarted(t, l, ask, "web", settle, nil)
	if holder == dc {
		// Keep a majority-side node to ask: move the group off the DC.
		vigil(t, l, ask, "resource", "move", "site", l.Other(dc))
		holder = waitStarted(t, l, ask, "web", settle, notIn(dc))
	}
	firstAnswer(t, c, netip.AddrPortFrom(vip4, webPort), settle)
	capt := l.CaptureAnnouncements(c)

	cut := time.Now()
	l.Isolate(holder)
	l.WaitFor(holder+" removes the address itself", 30*time.Second, func() (bool, string) {
		on, err := l.AddrHolders(vip4)
		if err != nil {
			return false, err.Error()
		}
		return !slices.Contains(on, holder), "vip on " + strings.Join(on, ",")
	})
	removed := time.Since(cut)
	if !l.LogContains(holder, "self-stop done: nothing runs here") {
		t.Fatalf("%s did not log a complete self-stop", holder)
	}
	to := waitStarted(t, l, ask, "web", 60*time.Second, notIn(holder))
	t.Logf("%s removed the address %s after the cut; %s holds it", holder, removed.Round(time.Millisecond), to)
	firstAnswer(t, c, netip.AddrPortFrom(vip4, webPort), 30*time.Second)

	healed := time.Now()
	l.Heal()
	newMAC := l.MAC(to, 0)
	l.WaitFor("a re-announcement after the heal", settle, func() (bool, string) {
		n := lab.Count(capt.Since(healed, vip4, newMAC))
		return n["arp-request"] >= 1 && n["arp-reply"] >= 1, ""
	})
	l.WaitStatus(ask, "the old holder back", settle, func(st api.Status) bool {
		n, ok := lab.NodeIn(st, holder)
		return ok && n.State == api.NodeMember
	})
	w.Stop()
	if v := w.Violations(); len(v) > 0 {
		t.Fatalf("never twice broken: %v", v)
	}
}
