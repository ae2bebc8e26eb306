package lab_test

// Benchmarks of real `vigil agent` processes: failure detection, DC failover,
// resource failover (fenced, watchdog-only, hung node) and the agent's idle
// cost. They report figures (b.ReportMetric); they never fail on timing.
// See BENCHMARKS.md at the module root for the figures, the machine and the
// method.
//
//	make build
//	VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench 'NodeLossDetection|DCFailover' -benchtime 20x ./internal/lab/
//	VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench 'FailoverFenced|FailoverWatchdog|FailoverHang' -benchtime 20x ./internal/lab/
//	VIGIL_BIN=$PWD/bin/vigil go test -run '^$' -bench AgentIdle -benchtime 6x ./internal/lab/
//
// Method. Status is read in-process over the nodes' own API (HTTPS, bearer
// token and cluster CA derived from the lab's key), not with the CLI: a CLI
// run inside a namespace costs 10-30 ms of process start-up, more than the
// resolution wanted. In Netns mode the API listens on addresses that exist
// only inside each node's namespace, so the client dials from inside it: a
// goroutine locks its OS thread, setns(2)s it into the node's namespace and
// creates the socket there (a socket stays in the namespace it was created
// in); the thread is then discarded. The connection is kept alive, so one
// poll is one HTTP request on an established TLS connection (well under a
// millisecond on this machine). Each survivor is polled by its own goroutine
// every pollEvery; an event is stamped with the time its answer arrived, so
// a figure is late by at most pollEvery plus one request round trip.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/lab"
	"github.com/vigil-ha/vigil/internal/pki"
)

// pollEvery is the status polling period of the detection benchmarks.
const pollEvery = 10 * time.Millisecond

// benchLab builds a lab for a benchmark, or skips it when $VIGIL_BIN is
// unset (a benchmark measures a built binary, not one built on the fly) or,
// for netns, when namespaces are unavailable.
func benchLab(b *testing.B, o lab.Options) *lab.Lab {
	b.Helper()
	if os.Getenv("VIGIL_BIN") == "" {
		b.Skip("set VIGIL_BIN to a built vigil binary (make build) to run the lab benchmarks")
	}
	if o.Netns {
		if reason := lab.NetnsUnavailable(); reason != "" {
			b.Skipf("network namespaces unavailable: %s", reason)
		}
		if setnsCall() == 0 {
			b.Skipf("in-process setns not wired for GOARCH %s", runtime.GOARCH)
		}
	}
	return lab.New(b, o)
}

// setnsCall is the setns(2) system call number (the syscall package lacks
// it on amd64), or 0 when unknown.
func setnsCall() uintptr {
	switch runtime.GOARCH {
	case "amd64":
		return 308
	case "arm64", "riscv64", "loong64":
		return 268
	case "386":
		return 346
	}
	return 0
}

// apiPoller reads one host's own status over its API, in-process.
type apiPoller struct {
	name  string
	base  string // https://host:port
	token string
	hc    *http.Client
}

// newPoller returns a poller for host name, dialing from inside the host's
// namespace in Netns mode.
func newPoller(b *testing.B, l *lab.Lab, name string) *apiPoller {
	b.Helper()
	p := l.Node(name)
	f, err := config.Load(p.Config)
	if err != nil {
		b.Fatal(err)
	}
	key, err := pki.LoadKey(f.KeyPath())
	if err != nil {
		b.Fatal(err)
	}
	ca, err := pki.NewCA(key)
	if err != nil {
		b.Fatal(err)
	}
	var d net.Dialer
	dial := d.DialContext
	if p.Netns != "" {
		dial = nsDialer(p.Netns)
	}
	tr := &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     pki.ClientTLS(ca, nil, ""),
		TLSHandshakeTimeout: 3 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &apiPoller{
		name:  name,
		base:  "https://" + p.Addrs[0],
		token: pki.APIToken(key),
		hc:    &http.Client{Transport: tr, Timeout: 2 * time.Second},
	}
}

// nsDialer returns a DialContext that creates its sockets inside network
// namespace ns (a name under /run/netns, as `ip netns add` makes).
func nsDialer(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			// The thread goes back to its own namespace before it is
			// unlocked. It must not be thrown away instead: the lab starts
			// agents with Pdeathsig, which fires when the forking *thread*
			// exits, and this may be that thread.
			runtime.LockOSThread()
			home, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, err}
				return
			}
			defer home.Close()
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, err}
				return
			}
			defer f.Close()
			if err := setns(f); err != nil {
				runtime.UnlockOSThread()
				ch <- res{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err := setns(home); err != nil {
				// Stay locked: the runtime ends the thread with the
				// goroutine rather than reuse it in the wrong namespace.
				panic(fmt.Sprintf("bench: cannot return a thread to its namespace: %v", err))
			}
			runtime.UnlockOSThread()
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

func setns(f *os.File) error {
	if _, _, errno := syscall.RawSyscall(setnsCall(), f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
		return errno
	}
	return nil
}

// status returns the host's own view.
func (a *apiPoller) status(ctx context.Context) (api.Status, error) {
	var st api.Status
	err := a.get(ctx, "/v1/status", &st)
	return st, err
}

// get GETs path (such as /v1/fencing/history) from the host's own API and
// decodes the JSON answer into out.
func (a *apiPoller) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", a.name, resp.Status, strings.TrimSpace(string(raw)))
	}
	return json.Unmarshal(raw, out)
}

// waitUntil polls every poller every pollEvery, each in its own goroutine,
// until cond holds for that poller's status, and returns, per poller, the
// time the first answer satisfying cond arrived. It gives up after timeout
// and then returns ok false with the last status of each poller.
func waitUntil(pollers []*apiPoller, timeout time.Duration, cond func(api.Status) bool) (at []time.Time, last []string, ok bool) {
	at = make([]time.Time, len(pollers))
	last = make([]string, len(pollers))
	okAll := true
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, p := range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(lab.Scale(timeout))
			tick := time.NewTicker(pollEvery)
			defer tick.Stop()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				st, err := p.status(ctx)
				now := time.Now()
				cancel()
				mu.Lock()
				if err != nil {
					last[i] = err.Error()
				} else {
					last[i] = lab.Summary(st)
				}
				mu.Unlock()
				if err == nil && cond(st) {
					at[i] = now
					return
				}
				if now.After(deadline) {
					mu.Lock()
					okAll = false
					mu.Unlock()
					return
				}
				<-tick.C
			}
		}()
	}
	wg.Wait()
	return at, last, okAll
}

// latencies collects durations and reports their percentiles.
type latencies struct{ d []time.Duration }

func (s *latencies) add(d time.Duration) { s.d = append(s.d, d) }

// pct is the nearest-rank percentile p (0-100) in milliseconds.
func (s *latencies) pct(p float64) float64 {
	if len(s.d) == 0 {
		return math.NaN()
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	k := int(math.Ceil(p/100*float64(len(d)))) - 1
	k = max(0, min(k, len(d)-1))
	return ms(d[k])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (s *latencies) report(b *testing.B, prefix string) {
	if len(s.d) == 0 {
		return
	}
	b.ReportMetric(s.pct(50), prefix+"p50-ms")
	b.ReportMetric(s.pct(99), prefix+"p99-ms")
	b.ReportMetric(s.pct(100), prefix+"max-ms")
}

func (s *latencies) String() string {
	var parts []string
	for _, d := range s.d {
		parts = append(parts, strconv.FormatFloat(ms(d), 'f', 0, 64))
	}
	return strings.Join(parts, " ")
}

// formedAPI waits (untimed, generous) until every node's own API shows
// quorum, one DC and every node a member, and returns the DC.
func formedAPI(b *testing.B, pollers []*apiPoller, names []string) string {
	b.Helper()
	var mu sync.Mutex
	dcs := map[string]string{}
	_, last, ok := waitUntil(pollers, 60*time.Second, func(st api.Status) bool {
		if !st.Quorum.Quorate || st.DC == "" {
			return false
		}
		for _, n := range names {
			if lab.State(st, n) != api.NodeMember {
				return false
			}
		}
		mu.Lock()
		dcs[st.Node] = st.DC
		mu.Unlock()
		return true
	})
	if !ok {
		b.Fatalf("cluster did not form: %s", strings.Join(last, " | "))
	}
	dc := ""
	for _, d := range dcs {
		if dc != "" && d != dc {
			return "" // nodes disagree: the caller waits again
		}
		dc = d
	}
	return dc
}

// waitSteady waits until all nodes agree on a DC with every node a member,
// then keeps the cluster still for a moment so that the next fault starts
// from a steady state (heartbeat history, no election in flight).
func waitSteady(b *testing.B, pollers []*apiPoller, names []string) string {
	b.Helper()
	for range 100 {
		if dc := formedAPI(b, pollers, names); dc != "" {
			time.Sleep(2 * time.Second)
			if dc2 := formedAPI(b, pollers, names); dc2 == dc {
				return dc
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatal("cluster never steady")
	return ""
}

func pollersFor(b *testing.B, l *lab.Lab, names []string) map[string]*apiPoller {
	m := map[string]*apiPoller{}
	for _, n := range names {
		m[n] = newPoller(b, l, n)
	}
	return m
}

func pick(m map[string]*apiPoller, names []string) []*apiPoller {
	var out []*apiPoller
	for _, n := range names {
		out = append(out, m[n])
	}
	return out
}

// logRTT logs the round trip of one status poll on a kept-alive
// connection: with pollEvery, the resolution of the figures.
func logRTT(b *testing.B, p *apiPoller) {
	b.Helper()
	var rt latencies
	for range 50 {
		t0 := time.Now()
		if _, err := p.status(context.Background()); err != nil {
			b.Fatal(err)
		}
		rt.add(time.Since(t0))
	}
	b.Logf("status poll round trip on %s: p50 %.2f ms, max %.2f ms (50 calls)", p.name, rt.pct(50), rt.pct(100))
}

// BenchmarkNodeLossDetection: three nodes in network namespaces, default
// timings (heartbeat 200ms, node timeout 1s). Each iteration SIGKILLs a
// non-DC node (alternating between the two), measures kill → both
// survivors report it lost (and still quorate), then restarts it and waits,
// untimed, for a steady three-member cluster again.
//
// Metrics: p50/p99/max-ms kill → lost on both survivors; first-p50-ms kill
// → lost on the first survivor to notice.
func BenchmarkNodeLossDetection(b *testing.B) {
	l := benchLab(b, lab.Options{Nodes: 3, Netns: true})
	names := l.NodeNames()
	polls := pollersFor(b, l, names)
	l.StartAll()
	dc := waitSteady(b, pick(polls, names), names)
	b.Logf("formed, DC %s; polling in-process every %s", dc, pollEvery)
	for _, n := range names {
		// In Netns mode the lab starts `ip netns exec NS vigil agent`,
		// which execs into vigil: the lab's PID should be the agent's.
		pid := l.Node(n).PID()
		b.Logf("%s: pid %d is %q", n, pid, procComm(pid))
	}
	logRTT(b, polls[names[0]])

	var both, first latencies
	i := 0
	for b.Loop() {
		others := l.Others(dc)
		victim := others[i%len(others)]
		survivors := l.Others(victim)
		start := time.Now()
		l.Kill(victim)
		at, last, ok := waitUntil(pick(polls, survivors), 30*time.Second, func(st api.Status) bool {
			return lab.State(st, victim) == api.NodeLost && st.Quorum.Quorate
		})
		if !ok {
			b.Fatalf("iteration %d: %s not seen lost: %s", i, victim, strings.Join(last, " | "))
		}
		lo, hi := at[0], at[0]
		for _, t := range at[1:] {
			if t.Before(lo) {
				lo = t
			}
			if t.After(hi) {
				hi = t
			}
		}
		both.add(hi.Sub(start))
		first.add(lo.Sub(start))

		l.Start(victim)
		dc = waitSteady(b, pick(polls, names), names)
		i++
	}
	b.Logf("kill → lost on both survivors (ms): %s", both.String())
	b.Logf("kill → lost on the first survivor (ms): %s", first.String())
	both.report(b, "")
	b.ReportMetric(first.pct(50), "first-p50-ms")
}

// BenchmarkDCFailover: as BenchmarkNodeLossDetection, but each iteration
// SIGKILLs the DC and measures kill → both survivors name the same new DC
// and are quorate. Then the old DC is restarted and the cluster settles
// (untimed).
//
// Metrics: p50/p99/max-ms kill → new DC agreed by both survivors;
// lost-p50-ms kill → old DC lost on both survivors (in the same runs).
func BenchmarkDCFailover(b *testing.B) {
	l := benchLab(b, lab.Options{Nodes: 3, Netns: true})
	names := l.NodeNames()
	polls := pollersFor(b, l, names)
	l.StartAll()
	dc := waitSteady(b, pick(polls, names), names)
	b.Logf("formed, DC %s; polling in-process every %s", dc, pollEvery)

	var newDC, lost latencies
	i := 0
	for b.Loop() {
		old := dc
		survivors := l.Others(old)
		start := time.Now()
		l.Kill(old)
		var (
			wg                 sync.WaitGroup
			atDC, atLost       []time.Time
			lastDC, lastLost   []string
			okDC, okLost       bool
			mu                 sync.Mutex
			chosen             = map[string]string{}
			survivorPollerList = pick(polls, survivors)
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			atDC, lastDC, okDC = waitUntil(survivorPollerList, 30*time.Second, func(st api.Status) bool {
				if !st.Quorum.Quorate || st.DC == "" || st.DC == old {
					return false
				}
				mu.Lock()
				defer mu.Unlock()
				chosen[st.Node] = st.DC
				// Both must name the same DC: a survivor that already has
				// one waits for the other to agree.
				for _, s := range survivors {
					if d, ok := chosen[s]; ok && d != st.DC {
						return false
					}
				}
				return true
			})
		}()
		go func() {
			defer wg.Done()
			atLost, lastLost, okLost = waitUntil(survivorPollerList, 30*time.Second, func(st api.Status) bool {
				return lab.State(st, old) == api.NodeLost
			})
		}()
		wg.Wait()
		if !okDC {
			b.Fatalf("iteration %d: no new DC after killing %s: %s", i, old, strings.Join(lastDC, " | "))
		}
		if !okLost {
			b.Fatalf("iteration %d: %s not seen lost: %s", i, old, strings.Join(lastLost, " | "))
		}
		hi := func(ts []time.Time) time.Time {
			h := ts[0]
			for _, t := range ts[1:] {
				if t.After(h) {
					h = t
				}
			}
			return h
		}
		newDC.add(hi(atDC).Sub(start))
		lost.add(hi(atLost).Sub(start))

		l.Start(old)
		dc = waitSteady(b, pick(polls, names), names)
		i++
	}
	b.Logf("kill DC → new DC on both survivors (ms): %s", newDC.String())
	b.Logf("kill DC → old DC lost on both survivors (ms): %s", lost.String())
	newDC.report(b, "")
	b.ReportMetric(lost.pct(50), "lost-p50-ms")
}

// procCPU returns the process's user+system CPU time from /proc/PID/stat
// (clock ticks of USER_HZ, 100 on Linux).
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(raw)
	rest := s[strings.LastIndexByte(s, ')')+2:]
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %v %v", pid, err1, err2)
	}
	const userHZ = 100
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// procStatus returns a /proc/PID/status field in kB (VmRSS, VmHWM, ...).
func procStatus(pid int, field string) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseFloat(f[0], 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func procComm(pid int) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(raw))
}

// idleWindow is how long BenchmarkAgentIdle samples per iteration.
const idleWindow = 10 * time.Second

// BenchmarkAgentIdle: one 3-node loopback cluster, settled for 5 s; each
// iteration samples every agent's CPU time (/proc/PID/stat utime+stime)
// over idleWindow and its VmRSS at the end. Nothing polls the agents while
// they are sampled. Metrics are those of the most expensive agent over all
// iterations (cpu-%-of-core, rss-MB), plus the DC's own figures (dc-…).
func BenchmarkAgentIdle(b *testing.B) {
	l := benchLab(b, lab.Options{Nodes: 3})
	names := l.NodeNames()
	polls := pollersFor(b, l, names)
	l.StartAll()
	dc := waitSteady(b, pick(polls, names), names)
	for _, p := range polls {
		p.hc.CloseIdleConnections()
	}
	time.Sleep(5 * time.Second)

	pids := map[string]int{}
	for _, n := range names {
		pid := l.Node(n).PID()
		if c := procComm(pid); c != "vigil" {
			b.Fatalf("%s: pid %d is %q, not the vigil agent", n, pid, c)
		}
		pids[n] = pid
	}
	var worstCPU, worstRSS, dcCPU, dcRSS float64
	// Per agent, one entry per window; logged once at the end (go test
	// keeps only the first lines of a benchmark's log).
	cpus, rsss := map[string][]string{}, map[string][]string{}
	for b.Loop() {
		before := map[string]time.Duration{}
		for _, n := range names {
			c, err := procCPU(pids[n])
			if err != nil {
				b.Fatal(err)
			}
			before[n] = c
		}
		t0 := time.Now()
		time.Sleep(idleWindow)
		wall := time.Since(t0)
		for _, n := range names {
			c, err := procCPU(pids[n])
			if err != nil {
				b.Fatal(err)
			}
			rss, err := procStatus(pids[n], "VmRSS")
			if err != nil {
				b.Fatal(err)
			}
			cpu := 100 * float64(c-before[n]) / float64(wall)
			rssMB := rss / 1024
			if n == dc {
				dcCPU, dcRSS = max(dcCPU, cpu), max(dcRSS, rssMB)
			}
			cpus[n] = append(cpus[n], fmt.Sprintf("%.1f", cpu))
			rsss[n] = append(rsss[n], fmt.Sprintf("%.1f", rssMB))
			worstCPU, worstRSS = max(worstCPU, cpu), max(worstRSS, rssMB)
		}
	}
	for _, n := range names {
		role := "follower"
		if n == dc {
			role = "DC"
		}
		hwm, _ := procStatus(pids[n], "VmHWM")
		b.Logf("%s (%s, pid %d) per %s window: cpu %% of a core [%s], VmRSS MB [%s]; VmHWM at end %.1f MB",
			n, role, pids[n], idleWindow, strings.Join(cpus[n], " "), strings.Join(rsss[n], " "), hwm/1024)
	}
	b.ReportMetric(worstCPU, "cpu-%-of-core")
	b.ReportMetric(worstRSS, "rss-MB")
	b.ReportMetric(dcCPU, "dc-cpu-%-of-core")
	b.ReportMetric(dcRSS, "dc-rss-MB")
}

// ---------------------------------------------------------------------------
// Failover: a node fault → its resource running on another node.

// failoverMode says how a failover benchmark protects the nodes and what
// it does to the one running the resource.
type failoverMode struct {
	// watchdog: `cluster setup --watchdog process` and no fence device;
	// otherwise the lab fence device for every node and no watchdog.
	watchdog bool
	// hang: SIGSTOP (lab.Pause) instead of SIGKILL.
	hang bool
}

// failoverRes is the benchmarks' vigil:process resource.
const failoverRes = "spin"

// failoverTimeout bounds one timed failover (generous: watchdog mode waits
// lease + 2×watchdog + margin before it recovers).
const failoverTimeout = 60 * time.Second

// failoverTrial holds one trial's stamps (zero: not seen).
type failoverTrial struct {
	start time.Time
	// lost: the first survivor to report the victim lost.
	lost time.Time
	// started: the first survivor whose own status shows the resource's
	// instance started on a node other than the victim; startedAll: the
	// later of the two survivors.
	started, startedAll time.Time
	to                  string
	// onDisk: the resource's new process alive on a survivor (its pid
	// file and /proc): the ground truth, before any report.
	onDisk time.Time
	// oldGone: the victim's resource process no longer alive.
	oldGone time.Time
	// event: the victim's fencing event (device or watchdog), OK; end is
	// its Started + Duration as the DC recorded them (same host clock).
	event api.FenceEvent
	end   time.Time
}

// spread returns the earliest and latest non-zero times of ts.
func spread(ts []time.Time) (lo, hi time.Time) {
	for _, t := range ts {
		if t.IsZero() {
			continue
		}
		if lo.IsZero() || t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
	}
	return lo, hi
}

// benchCLI runs a CLI call on node and fails the benchmark if it fails,
// retrying "no leader" refusals for up to 15s (as the tests' vigil helper).
func benchCLI(b *testing.B, l *lab.Lab, node string, args ...string) string {
	b.Helper()
	deadline := time.Now().Add(lab.Scale(15 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(30*time.Second))
		out, err := l.CLI(ctx, node, args...)
		cancel()
		if err == nil {
			return out
		}
		if strings.Contains(err.Error(), "no leader") && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		l.DumpLogs(30)
		b.Fatalf("%v", err)
	}
}

// procPidFile reads a vigil:process pid file ("PID STARTTIME").
func procPidFile(path string) (pid int, start uint64, ok bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(raw))
	if len(f) != 2 {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	return pid, start, err1 == nil && err2 == nil && pid > 0
}

// aliveSince reports whether pid is a live, non-zombie process that started
// at start (field 22 of /proc/PID/stat), as vigil:process checks it.
func aliveSince(pid int, start uint64) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && st == start
}

// history returns p's fencing history.
func (a *apiPoller) history() (api.FenceHistory, error) {
	var h api.FenceHistory
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := a.get(ctx, "/v1/fencing/history", &h)
	return h, err
}

// failoverLab is the state of a failover benchmark.
type failoverLab struct {
	b     *testing.B
	l     *lab.Lab
	mode  failoverMode
	names []string
	polls map[string]*apiPoller
	dc    string
	home  string // the node the resource prefers (never the DC)
}

// newFailoverLab starts three agents in network namespaces with default
// timings, protected as mode says, with the resource preferring (INFINITY)
// a non-DC node.
func newFailoverLab(b *testing.B, mode failoverMode) *failoverLab {
	o := lab.Options{Nodes: 3, Netns: true}
	if mode.watchdog {
		o.SetupArgs = []string{"--watchdog", "process"}
	}
	l := benchLab(b, o)
	f := &failoverLab{b: b, l: l, mode: mode, names: l.NodeNames()}
	f.polls = pollersFor(b, l, f.names)
	l.StartAll()
	f.dc = waitSteady(b, f.all(), f.names)
	f.waitProbed(f.names...)
	if !mode.watchdog {
		benchCLI(b, l, f.dc, l.FenceCreateArgs("lab")...)
	}
	want := "lab"
	if mode.watchdog {
		want = "watchdog"
	}
	_, last, ok := waitUntil(f.all(), 30*time.Second, func(st api.Status) bool {
		for _, n := range f.names {
			ns, ok := lab.NodeIn(st, n)
			if !ok || !strings.Contains(ns.Protection, want) {
				return false
			}
		}
		return true
	})
	if !ok {
		b.Fatalf("nodes not protected by %s: %s", want, strings.Join(last, " | "))
	}
	f.home = l.Other(f.dc)
	benchCLI(b, l, f.dc, "resource", "create", failoverRes, "vigil:process", spinCmd, "op", "monitor", "interval=2s", "--disabled")
	benchCLI(b, l, f.dc, "constraint", "location", "add", failoverRes+"-home", failoverRes, "prefers", f.home)
	benchCLI(b, l, f.dc, "resource", "enable", failoverRes)
	f.ready()
	st, err := f.polls[f.dc].status(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	var prot []string
	for _, n := range st.Nodes {
		prot = append(prot, fmt.Sprintf("%s %q", n.Name, n.Protection))
	}
	b.Logf("protection: %s; DC %s, resource home %s", strings.Join(prot, ", "), f.dc, f.home)
	return f
}

func (f *failoverLab) all() []*apiPoller { return pick(f.polls, f.names) }

// waitProbed waits until each node's current run has logged that it probed.
func (f *failoverLab) waitProbed(nodes ...string) {
	f.l.WaitFor(strings.Join(nodes, ",")+" probed (current run)", 60*time.Second, func() (bool, string) {
		for _, n := range nodes {
			if !strings.Contains(lastRun(f.l, n), "probed; ready for tasks") {
				return false, n + " has not logged \"probed; ready for tasks\" since its last start"
			}
		}
		return true, ""
	})
}

// ready waits (untimed) for the state every trial starts from: three
// members agreeing on a DC, every node probed, the resource started on its
// home (a non-DC node) by every node's status and by the ground truth, and
// the cluster still for 2s. If the DC moved to the home node, the resource
// is re-homed on another node first.
func (f *failoverLab) ready() {
	b, l := f.b, f.l
	for range 5 {
		f.dc = waitSteady(b, f.all(), f.names)
		f.waitProbed(f.names...)
		if f.dc == f.home {
			old := f.home
			f.home = l.Other(f.dc)
			b.Logf("the DC is now %s, the resource's home: re-homing it on %s", old, f.home)
			benchCLI(b, l, f.dc, "constraint", "remove", failoverRes+"-home")
			benchCLI(b, l, f.dc, "constraint", "location", "add", failoverRes+"-home", failoverRes, "prefers", f.home)
		}
		home := f.home
		_, last, ok := waitUntil(f.all(), 60*time.Second, func(st api.Status) bool {
			return startedOn(st, failoverRes, home)
		})
		if !ok {
			l.DumpLogs(30)
			b.Fatalf("%s not started on %s: %s", failoverRes, home, strings.Join(last, " | "))
		}
		l.WaitFor(failoverRes+" active on "+home+" only (ground truth)", 30*time.Second, func() (bool, string) {
			return onlyOn(l, failoverRes, home)
		})
		if dc := waitSteady(b, f.all(), f.names); dc == f.dc && dc != f.home {
			return
		}
	}
	b.Fatal("the cluster never settled with the resource on a non-DC node")
}

// newestID returns the newest fencing event ID for target in the DC's
// history.
func (f *failoverLab) newestID(target string) string {
	h, err := f.polls[f.dc].history()
	if err != nil {
		f.b.Fatal(err)
	}
	id := ""
	for _, e := range eventsFor(h, target, "") {
		id = max(id, e.ID)
	}
	return id
}

// trial runs one timed failover of the resource's home node and returns
// its stamps; it leaves the victim down.
func (f *failoverLab) trial(i int) failoverTrial {
	b, l := f.b, f.l
	victim := f.home
	survivors := l.Others(victim)
	sp := pick(f.polls, survivors)
	histFrom := f.polls[f.dc] // the DC is a survivor (ready made sure)
	before := f.newestID(victim)
	how := "device"
	if f.mode.watchdog {
		how = "watchdog"
	}
	pidPath := func(n string) string { return l.RunDir(n) + "/process/" + failoverRes + ".pid" }
	oldPid, oldStart, ok := procPidFile(pidPath(victim))
	if !ok || !aliveSince(oldPid, oldStart) {
		b.Fatalf("iteration %d: %s's process on %s not found alive", i, failoverRes, victim)
	}
	survPaths := map[string]string{}
	for _, n := range survivors {
		survPaths[n] = pidPath(n)
	}

	var (
		tr                 failoverTrial
		mu                 sync.Mutex
		wg                 sync.WaitGroup
		lost               = make([]time.Time, len(sp))
		started            = make([]time.Time, len(sp))
		last               = make([]string, len(sp))
		histLast, diskLast string
		deadline           = time.Now().Add(lab.Scale(failoverTimeout))
	)
	// Status of each survivor, every pollEvery.
	for k, p := range sp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(pollEvery)
			defer tick.Stop()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				st, err := p.status(ctx)
				now := time.Now()
				cancel()
				mu.Lock()
				if err != nil {
					last[k] = err.Error()
				} else {
					last[k] = resState(st, failoverRes) + " " + lab.Summary(st)
					if lost[k].IsZero() && lab.State(st, victim) == api.NodeLost {
						lost[k] = now
					}
					if r, ok := resIn(st, failoverRes); ok && started[k].IsZero() && r.State == "started" && r.Node != "" && r.Node != victim {
						started[k] = now
						tr.to = r.Node
					}
				}
				done := !lost[k].IsZero() && !started[k].IsZero()
				mu.Unlock()
				if done || now.After(deadline) {
					return
				}
				<-tick.C
			}
		}()
	}
	// Ground truth, every pollEvery: the old process, a new one elsewhere.
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(pollEvery)
		defer tick.Stop()
		for {
			now := time.Now()
			mu.Lock()
			if tr.oldGone.IsZero() && !aliveSince(oldPid, oldStart) {
				tr.oldGone = now
			}
			if tr.onDisk.IsZero() {
				for _, path := range survPaths {
					if pid, st, ok := procPidFile(path); ok && aliveSince(pid, st) {
						tr.onDisk = now
					}
				}
			}
			done := !tr.oldGone.IsZero() && !tr.onDisk.IsZero()
			diskLast = fmt.Sprintf("old process gone=%v, new one seen=%v", !tr.oldGone.IsZero(), !tr.onDisk.IsZero())
			mu.Unlock()
			if done || now.After(deadline) {
				return
			}
			<-tick.C
		}
	}()
	// The DC's fencing history, every 5×pollEvery (the figure is the
	// event's own end, not the time it was read).
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * pollEvery)
		defer tick.Stop()
		for {
			h, err := histFrom.history()
			now := time.Now()
			mu.Lock()
			if err != nil {
				histLast = err.Error()
			} else {
				evs := eventsFor(h, victim, before)
				histLast = eventsSummary(evs)
				for _, e := range evs {
					if e.OK && e.How == how {
						tr.event = e
						tr.end = e.Started.Add(e.Duration)
					}
				}
			}
			done := !tr.end.IsZero()
			mu.Unlock()
			if done || now.After(deadline) {
				return
			}
			<-tick.C
		}
	}()

	tr.start = time.Now()
	if f.mode.hang {
		l.Pause(victim)
	} else {
		l.Kill(victim)
	}
	wg.Wait()

	if tr.end.IsZero() || tr.onDisk.IsZero() || tr.oldGone.IsZero() {
		l.DumpLogs(40)
		b.Fatalf("iteration %d (%s): no complete failover within %s: history [%s]; truth [%s]; status [%s]",
			i, victim, failoverTimeout, histLast, diskLast, strings.Join(last, " | "))
	}
	for k := range sp {
		if lost[k].IsZero() || started[k].IsZero() {
			l.DumpLogs(40)
			b.Fatalf("iteration %d (%s): %s did not report the failover: %s", i, victim, sp[k].name, last[k])
		}
	}
	tr.lost, _ = spread(lost)
	tr.started, tr.startedAll = spread(started)
	if tr.onDisk.Before(tr.oldGone) {
		b.Errorf("iteration %d: NEVER TWICE: the new process was seen at +%s, the old one on %s gone only at +%s",
			i, tr.onDisk.Sub(tr.start), victim, tr.oldGone.Sub(tr.start))
	}
	return tr
}

// restart brings the victim back (the lab empties its run folder, as after
// a reboot) and waits, untimed, for the steady state of the next trial.
func (f *failoverLab) restart(victim string) {
	l := f.l
	l.WaitFor(victim+" powered off", 30*time.Second, func() (bool, string) {
		return !l.Node(victim).Running(), "still running"
	})
	l.Start(victim)
	f.ready()
}

// benchFailover runs the failover benchmark for mode.
//
// Metrics: p50/p99/max-ms fault → the resource's instance started on
// another node in a survivor's own status (the first survivor to show it);
// fenced-p50/p99/max-ms fault → the end of the OK fencing event (device or
// watchdog) as the DC recorded it; lost-p50-ms fault → the victim lost on
// the first survivor; disk-p50-ms fault → the new process alive (ground
// truth); from-lost-p50/p99-ms started − lost, per trial.
func benchFailover(b *testing.B, mode failoverMode) {
	f := newFailoverLab(b, mode)
	logRTT(b, f.polls[f.dc])
	var started, all, fencedAt, lost, onDisk, fromLost, gone latencies
	tos := map[string]int{}
	i := 0
	for b.Loop() {
		victim := f.home
		tr := f.trial(i)
		since := func(t time.Time) time.Duration { return t.Sub(tr.start) }
		started.add(since(tr.started))
		all.add(since(tr.startedAll))
		fencedAt.add(since(tr.end))
		lost.add(since(tr.lost))
		onDisk.add(since(tr.onDisk))
		fromLost.add(tr.started.Sub(tr.lost))
		gone.add(since(tr.oldGone))
		tos[victim+"→"+tr.to]++
		if i == 0 {
			b.Logf("first trial's fencing event: %s", eventLine(tr.event))
		}
		if !strings.HasPrefix(tr.event.By, "dc ") {
			b.Errorf("iteration %d: fencing event by %q, want the DC", i, tr.event.By)
		}
		f.restart(victim)
		i++
	}
	// go test keeps about 10 lines of a benchmark's log: one line each.
	b.Logf("fault → started elsewhere, first survivor's status (ms): %s", started.String())
	b.Logf("fault → started elsewhere, both survivors' status (ms): %s", all.String())
	b.Logf("fault → fencing event end, DC's record (ms): %s", fencedAt.String())
	b.Logf("fault → victim lost, first survivor (ms): %s", lost.String())
	b.Logf("fault → new process alive on disk (ms): %s; → old process gone (ms): %s", onDisk.String(), gone.String())
	b.Logf("lost → started elsewhere (ms): %s; moves (victim→new node: trials): %v", fromLost.String(), tos)
	started.report(b, "")
	fencedAt.report(b, "fenced-")
	b.ReportMetric(lost.pct(50), "lost-p50-ms")
	b.ReportMetric(onDisk.pct(50), "disk-p50-ms")
	b.ReportMetric(all.pct(50), "all-p50-ms")
	b.ReportMetric(fromLost.pct(50), "from-lost-p50-ms")
	b.ReportMetric(fromLost.pct(99), "from-lost-p99-ms")
}

// BenchmarkFailoverFenced: three nodes in network namespaces, default
// timings, the lab fence device for every node (it really powers a node
// off: SIGKILL of its process group and of everything in its namespace),
// one vigil:process resource preferring a non-DC node. Each iteration
// SIGKILLs that node and measures kill → the resource started on another
// node (status) and kill → fencing confirmed (the DC's history); then the
// victim is restarted (as after a reboot), rejoins, probes, gets the
// resource back, and the cluster settles (untimed).
func BenchmarkFailoverFenced(b *testing.B) { benchFailover(b, failoverMode{}) }

// BenchmarkFailoverWatchdog: as BenchmarkFailoverFenced with
// `--watchdog process` and no fence device: after a SIGKILL the DC may
// recover only once lease + 2×watchdog + margin have passed since the loss.
func BenchmarkFailoverWatchdog(b *testing.B) { benchFailover(b, failoverMode{watchdog: true}) }

// BenchmarkFailoverHang: as BenchmarkFailoverFenced, but the node is
// SIGSTOPped (hung: its processes exist, stopped); the fence device powers
// it off before the resource starts elsewhere.
func BenchmarkFailoverHang(b *testing.B) { benchFailover(b, failoverMode{hang: true}) }
