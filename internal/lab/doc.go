// Package lab runs real clusters for tests: N `vigil agent` processes (and
// optional witnesses), either side by side on loopback or each in its own
// network namespace wired to per-link bridges, with the faults that multi-node
// tests need: SIGKILL, SIGTERM, SIGSTOP, a link down, a firewall drop, an
// isolated node, a partition.
//
// A test reads like this:
//
//	func TestFailover(t *testing.T) {
//		l := lab.New(t, lab.Options{Nodes: 3, Netns: true, Links: 2})
//		l.StartAll()
//		dc := l.WaitFormed(30 * time.Second)
//		l.Kill(dc)
//		l.WaitStatus(l.Other(dc), "a new DC", 30*time.Second, func(st api.Status) bool {
//			return st.DC != "" && st.DC != dc
//		})
//	}
//
// # Layout
//
// Nodes are named n1..nN, witnesses w1..wW; host k (nodes first, then
// witnesses, from 1) has one address per link. On loopback every address is
// 127.0.0.1 with its own port, free for both TCP and UDP. With Options.Netns
// the lab makes, under a random per-lab prefix "vl" + 6 hex digits:
//
//	vlXXXXXX-hub    bridges br0..br(L-1), one per link, and the hub ends
//	                h<k>l<i> of the veth pairs
//	vlXXXXXX-n1 ... one namespace per host, with lo up and veth l<i> on link
//	                i, address 198.18.<i>.<k>/24, port 7946
//
// Nothing is created in the root namespace: no interface, route or firewall
// rule of the host is touched. Firewall faults are one nftables table, named
// vigil_lab_XXXXXX, inside the faulty node's own namespace.
//
// # Cleanup
//
// New registers a t.Cleanup that, even after a failed or panicking test,
// SIGKILLs every process group the lab started, fails the test if a node log
// shows a Go panic or a data race, deletes the nftables tables and the
// namespaces, and dumps the tail of every log when the test failed. Every
// child also gets SIGKILL as its parent-death signal, so a test binary killed
// by `go test -timeout` leaves no agents behind; CleanupStale (called by
// Main) removes namespaces whose owning test process is gone.
//
// Use Main from the package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }
//
// # The binary
//
// Options.Binary, else $VIGIL_BIN, else ./cmd/vigil built once per test
// binary (CGO_ENABLED=0) into a temporary folder that Main removes.
//
// # Time
//
// Every timeout handed to WaitFor, WaitStatus, Always and friends is
// multiplied by $VIGIL_LAB_SCALE (default 1), so a slow machine can stretch
// all waits at once without editing tests.
//
// # Talking to nodes
//
// CLI runs `vigil --config <host's config> --api <host's links> ...` inside
// the host's namespace: the call is answered by that host only, never by a
// fall-over to another node, so it shows that host's own view (an isolated
// node answers with its own "no quorum"). Exec runs any other argument list.
// Status, SetProperty and Properties parse the JSON and epoch outputs;
// WaitFor, WaitStatus, WaitFormed and Always poll with explanations, and
// Summary renders a status on one line for failure messages.
//
// # Goroutines
//
// Lab methods report harness failures with t.Fatal on the lab's t; call them
// from the test's goroutine, or use With(t) to get a view bound to a subtest.
// The lab's state is safe for concurrent use.
package lab
