package lab_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkVIPOutage measures the client-visible outage of a virtual IP
// when the node holding it is killed (issue 6): three agents in network
// namespaces with the lab fence device, a client host on the same bridge,
// and vip (vigil:ip 198.18.0.100/24, announced 3 times 100ms apart) plus
// web (busybox httpd) colocated with the failover benchmark's resource, so
// they live on its home, a non-DC node. Each trial SIGKILLs the home's
// process group (the lab's power-off: its addresses go too) and times
// kill → the first HTTP answer the client gets on the address, polling
// every 50ms with 300ms per try; then the node is restarted and the
// resources go back to it.
//
// Metrics: outage-p50/p99/min/max-ms.
//
//	make build && VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench VIPOutage -benchtime 20x ./internal/lab/
func BenchmarkVIPOutage(b *testing.B) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		b.Skip("busybox is not installed (scripts/deps.sh installs busybox-static)")
	}
	f := newFailoverLab(b, failoverMode{})
	l := f.l
	c := l.AddClient("client")
	www := filepath.Join(l.Dir(), "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("ok\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	l.TrackAddress("vip", vip4)
	benchCLI(b, l, f.dc, "resource", "create", "vip", "vigil:ip", "address="+vip4.String()+"/24", "interface=l0",
		"announce_interval=100ms", "op", "monitor", "interval=2s")
	benchCLI(b, l, f.dc, "resource", "create", "web", "vigil:process",
		"command=exec busybox httpd -f -p "+strconv.Itoa(webPort)+" -h "+www, "op", "monitor", "interval=2s")
	benchCLI(b, l, f.dc, "constraint", "colocation", "add", "vip-with-spin", "vip", "with", failoverRes)
	benchCLI(b, l, f.dc, "constraint", "colocation", "add", "web-with-vip", "web", "with", "vip")
	benchCLI(b, l, f.dc, "constraint", "order", "add", "vip-then-web", "vip", "then", "web")
	ap := netip.AddrPortFrom(vip4, webPort)
	var outage latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.ready()
		home := f.home
		l.WaitFor("vip and web on "+home, 60*time.Second, func() (bool, string) {
			return onlyOn(l, "vip", home)
		})
		firstAnswer(b, c, ap, 60*time.Second)
		killed := time.Now()
		l.Kill(home)
		at := firstAnswer(b, c, ap, 60*time.Second)
		outage.add(at.Sub(killed))
		b.Logf("trial %d: kill %s -> first answer on %v: %s", i+1, home, l.ActiveOn("vip"), at.Sub(killed).Round(time.Millisecond))
		f.restart(home)
	}
	b.StopTimer()
	b.Logf("outages (ms): %s", outage.String())
	outage.report(b, "outage-")
	if len(outage.d) > 0 {
		b.ReportMetric(outage.pct(0), "outage-min-ms")
	}
}
