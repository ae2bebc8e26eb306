//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/lab"
	"github.com/vigil-ha/vigil/internal/model"
)

// The runner: a lab of real agents, the resources, the sampler, the faults
// and the operator actions of an episode, the heal and the waits. The
// checkers and the summary it feeds are the package's pure parts.

const (
	heartbeat   = 200 * time.Millisecond
	nodeTimeout = time.Second
	// formTimeout bounds a cold start of the lab.
	formTimeout = 60 * time.Second
	// recoverBound is the promise "back fast", with a lot of slack for a
	// loaded 2-core machine: heal → every resource running once and the
	// status agreeing.
	recoverBound = 30 * time.Second
	// settleBound bounds heal → every node back, probed, no task pending.
	settleBound = 60 * time.Second
	// sampleEvery is the ground truth's sampling period.
	sampleEvery = 100 * time.Millisecond
	// opTimeout bounds an operator's CLI call (the agent's own write
	// timeout is 10s: past it the outcome is unknown).
	opTimeout = 12 * time.Second
	// vipAddr is the vigil:ip resource's address, on the lab's link 0
	// (198.18.0.k/24), inside 198.18.0.0/15.
	vipAddr = "198.18.0.250/24"
	vipLink = 0
	spinCmd = "command=while :; do sleep 1; done"
	monitor = "interval=1s"
)

// runnerConfig describes a runner's lab.
type runnerConfig struct {
	Nodes int
	// Binary is the vigil binary (default: the lab's, $VIGIL_BIN).
	Binary string
	// Dummies is the number of vigil:dummy resources d1..dN.
	Dummies int
	// Process adds a vigil:process resource p1; VIP a vigil:ip vip.
	Process, VIP bool
}

type runner struct {
	t     *testing.T
	l     *lab.Lab
	cfg   runnerConfig
	nodes []string
	// initial is the resources made at setup: d1..dN, p1, vip.
	initial []string
	dummies []string

	mu       sync.Mutex
	ids      []string // watched instances
	maybe    []string // created with an unknown outcome: expected if they exist
	samples  []Sample
	episode  int
	twice    map[string]bool // instances seen twice in the sample before (for the live log)
	sampErrs []error

	stop, done chan struct{}

	dc          string // last DC known
	probeFrom   map[string]int64
	writes      []Write
	violations  []Violation
	notes       []string
	hit         []string         // the nodes the running episode's fault hit
	logFrom     map[string]int64 // each node's log size when the episode began
	recovery    []time.Duration
	failover    []time.Duration
	faults      map[Kind]int
	ops, opsAck map[OpKind]int
	began       time.Time
}

// newRunner builds the lab, starts it, creates the fence device and the
// resources, starts the sampler, and waits until everything runs.
func newRunner(t *testing.T, c runnerConfig) *runner {
	t.Helper()
	if lab.NetnsUnavailable() != "" {
		t.Skipf("chaos needs network namespaces: %s", lab.NetnsUnavailable())
	}
	l := lab.New(t, lab.Options{Nodes: c.Nodes, Links: 2, Netns: true, Heartbeat: heartbeat, NodeTimeout: nodeTimeout, Binary: c.Binary})
	r := &runner{
		t: t, l: l, cfg: c, nodes: l.NodeNames(),
		twice: map[string]bool{}, probeFrom: map[string]int64{}, logFrom: map[string]int64{},
		faults: map[Kind]int{}, ops: map[OpKind]int{}, opsAck: map[OpKind]int{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for i := 1; i <= c.Dummies; i++ {
		r.dummies = append(r.dummies, fmt.Sprintf("d%d", i))
	}
	r.initial = slices.Clone(r.dummies)
	if c.Process {
		r.initial = append(r.initial, "p1")
	}
	if c.VIP {
		r.initial = append(r.initial, "vip")
		l.TrackAddress("vip", netip.MustParsePrefix(vipAddr).Addr())
	}
	r.ids = slices.Clone(r.initial)

	l.StartAll()
	r.dc = l.WaitFormed(formTimeout)
	for _, n := range r.nodes {
		r.probeFrom[n] = 0
	}
	r.waitProbed(r.nodes, formTimeout)
	// Sampling starts before the first resource exists and ends before
	// the lab's cleanup (t.Cleanup is LIFO).
	go r.sampleLoop()
	t.Cleanup(r.stopSampler)

	r.must(r.dc, l.FenceCreateArgs("lab")...)
	for _, d := range r.dummies {
		r.must(r.dc, "resource", "create", d, "vigil:dummy", "op", "monitor", monitor)
	}
	if c.Process {
		r.must(r.dc, "resource", "create", "p1", "vigil:process", spinCmd, "op", "monitor", monitor)
	}
	if c.VIP {
		r.must(r.dc, "resource", "create", "vip", "vigil:ip", "address="+vipAddr, "op", "monitor", monitor)
	}
	start := time.Now()
	if ok, why := r.waitSettled(start, settleBound); !ok {
		l.DumpLogs(60)
		t.Fatalf("the resources did not all start: %s", why)
	}
	t.Logf("chaos: lab %s ready: %d nodes, DC %s, resources %s", l.ID(), len(r.nodes), r.dc, r.placementString())
	return r
}

// must runs a CLI call that has to succeed (setup), retrying transient
// refusals.
func (r *runner) must(node string, args ...string) string {
	r.t.Helper()
	deadline := time.Now().Add(lab.Scale(30 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(30*time.Second))
		out, err := r.l.CLI(ctx, node, args...)
		cancel()
		if err == nil {
			return out
		}
		if time.Now().Before(deadline) && (strings.Contains(err.Error(), "no leader") || strings.Contains(err.Error(), "no quorum")) {
			time.Sleep(300 * time.Millisecond)
			continue
		}
		r.l.DumpLogs(40)
		r.t.Fatalf("%v", err)
	}
}

// ---------------------------------------------------------------------------
// Ground truth.

// readTruth samples where every watched instance is active (lab.Truth:
// the agents' state on running nodes, paused ones included; the VIP in
// every namespace that holds it).
func (r *runner) readTruth() (map[string][]string, error) {
	r.mu.Lock()
	ids := slices.Clone(r.ids)
	r.mu.Unlock()
	s, err := r.l.TruthErr(ids...)
	if err != nil {
		return nil, err
	}
	return s.Active, nil
}

// sampleLoop records the ground truth every sampleEvery until stopSampler.
func (r *runner) sampleLoop() {
	defer close(r.done)
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		r.mu.Lock()
		ep := r.episode
		r.mu.Unlock()
		at := time.Now()
		active, err := r.readTruth()
		r.mu.Lock()
		if err != nil {
			if len(r.sampErrs) < 10 {
				r.sampErrs = append(r.sampErrs, err)
			}
		} else {
			r.samples = append(r.samples, Sample{At: at, Episode: ep, Active: active})
			for id, nodes := range active {
				if len(nodes) > 1 && !r.twice[id] {
					r.t.Logf("chaos: NEVER TWICE: %s active on %v at %s (episode %d)", id, nodes, at.Format("15:04:05.000"), ep)
				}
				r.twice[id] = len(nodes) > 1
			}
			for id := range r.twice {
				if len(active[id]) < 2 {
					r.twice[id] = false
				}
			}
		}
		r.mu.Unlock()
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
	}
}

func (r *runner) stopSampler() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

// placement returns where each watched instance runs by the ground truth
// ("" when not on exactly one node).
func (r *runner) placement() map[string]string {
	r.t.Helper()
	active, err := r.readTruth()
	if err != nil {
		r.t.Fatalf("ground truth: %v", err)
	}
	out := map[string]string{}
	for id, nodes := range active {
		if len(nodes) == 1 {
			out[id] = nodes[0]
		}
	}
	return out
}

func (r *runner) placementString() string {
	p := r.placement()
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, id+"@"+p[id])
	}
	return strings.Join(parts, " ")
}

// ---------------------------------------------------------------------------
// Status.

// usable reports whether a node can answer a CLI call: running, not hung.
func (r *runner) usable(n string) bool {
	p := r.l.Node(n)
	return p.Running() && !p.Paused()
}

// status returns a quorate node's status, the DC's when it answers.
func (r *runner) status() (api.Status, error) {
	order := []string{}
	if r.dc != "" {
		order = append(order, r.dc)
	}
	for _, n := range r.nodes {
		if n != r.dc {
			order = append(order, n)
		}
	}
	var last error = errors.New("no node can answer")
	for _, n := range order {
		if !r.usable(n) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(5*time.Second))
		st, err := r.l.Status(ctx, n)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if !st.Quorum.Quorate || st.DC == "" {
			last = fmt.Errorf("%s: no quorum or no DC: %s", n, lab.Summary(st))
			continue
		}
		if st.DC != n && st.DC != r.dc && r.usable(st.DC) {
			r.dc = st.DC
			ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(5*time.Second))
			dst, err := r.l.Status(ctx, st.DC)
			cancel()
			if err == nil && dst.Quorum.Quorate && dst.DC == st.DC {
				return dst, nil
			}
		}
		r.dc = st.DC
		return st, nil
	}
	return api.Status{}, last
}

// started maps each instance the status shows started to its node.
func started(st api.Status) map[string]string {
	out := map[string]string{}
	for _, rs := range st.Resources {
		if rs.State == "started" {
			out[rs.Instance] = rs.Node
		}
	}
	return out
}

// expected returns the instances that must run: the watched ones, less
// those created with an unknown outcome that the status does not list.
func (r *runner) expected(st api.Status) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, id := range r.ids {
		if slices.Contains(r.maybe, id) && !slices.ContainsFunc(st.Resources, func(rs api.ResourceStatus) bool { return rs.Instance == id }) {
			continue
		}
		out = append(out, id)
	}
	return out
}

// recovered checks once: quorum, and every expected instance running once
// with the status agreeing.
func (r *runner) recovered() (bool, string, api.Status) {
	st, err := r.status()
	if err != nil {
		return false, err.Error(), st
	}
	active, err := r.readTruth()
	if err != nil {
		return false, err.Error(), st
	}
	ok, why := Recovered(r.expected(st), active, started(st))
	return ok, why, st
}

// waitRecovered waits (up to bound after from) until recovered.
func (r *runner) waitRecovered(from time.Time, bound time.Duration) (time.Duration, bool, string) {
	deadline := from.Add(lab.Scale(bound))
	for {
		ok, why, st := r.recovered()
		if ok {
			return time.Since(from), true, ""
		}
		if time.Now().After(deadline) {
			return time.Since(from), false, why + " | " + resSummary(st)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// waitSettled waits until every node runs, is a member in the DC's view
// and has probed since its last start, no task is pending, and everything
// is recovered: the state an episode starts from.
func (r *runner) waitSettled(from time.Time, bound time.Duration) (bool, string) {
	deadline := from.Add(lab.Scale(bound))
	for {
		ok, why := r.settled()
		if ok {
			return true, ""
		}
		if time.Now().After(deadline) {
			return false, why
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *runner) settled() (bool, string) {
	for _, n := range r.nodes {
		if !r.l.Node(n).Running() {
			// Fenced after the heal (the fence was under way): it
			// reboots.
			r.logf("chaos: %s powered off after the heal (fenced): starting it again", n)
			r.checkHit(n)
			r.reboot(n)
		}
		if !r.usable(n) {
			return false, n + " is not running"
		}
	}
	if ok, why := r.probed(r.nodes); !ok {
		return false, why
	}
	ok, why, st := r.recovered()
	if !ok {
		return false, why
	}
	for _, n := range r.nodes {
		if lab.State(st, n) != api.NodeMember {
			return false, lab.Summary(st)
		}
	}
	if len(st.Pending) > 0 {
		return false, "tasks pending: " + resSummary(st)
	}
	if busy := r.fencesInFlight(); len(busy) > 0 {
		// A slow fence may still power off a node that already came
		// back: wait for it, or it would hit the next episode.
		return false, "fencing in flight: " + strings.Join(busy, ", ")
	}
	return true, ""
}

var fenceLineRE = regexp.MustCompile(`msg="(fencing node|node fenced|fencing failed[^"]*)".*component=controller node=(\S+)`)

// fencesInFlight reads the nodes' logs since the episode began (the
// current run of each) for fences a DC started ("fencing node") and has
// not finished ("node fenced", "fencing failed"), as "dc->target".
func (r *runner) fencesInFlight() []string {
	var out []string
	for _, n := range r.nodes {
		if !r.l.Node(n).Running() {
			continue
		}
		text := r.logSince(n, r.logFrom[n])
		if i := strings.LastIndex(text, ": start "+n+" run "); i >= 0 {
			text = text[i:] // an earlier run's fences died with it
		}
		open := map[string]int{}
		for _, m := range fenceLineRE.FindAllStringSubmatch(text, -1) {
			if m[1] == "fencing node" {
				open[m[2]]++
			} else if open[m[2]] > 0 {
				open[m[2]]--
			}
		}
		for _, target := range slices.Sorted(maps.Keys(open)) {
			if open[target] > 0 {
				out = append(out, n+"->"+target)
			}
		}
	}
	return out
}

// logSince returns node's log from byte offset from on.
func (r *runner) logSince(node string, from int64) string {
	f, err := os.Open(r.l.Node(node).Log)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		return ""
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(f)
	return buf.String()
}

// logSizes returns each node's log size: where the episode's part begins.
func (r *runner) logSizes() map[string]int64 {
	m := map[string]int64{}
	for _, n := range r.nodes {
		if fi, err := os.Stat(r.l.Node(n).Log); err == nil {
			m[n] = fi.Size()
		}
	}
	return m
}

// waitProbed waits until each node has probed since its last start.
func (r *runner) waitProbed(nodes []string, bound time.Duration) {
	r.t.Helper()
	r.l.WaitFor(strings.Join(nodes, ",")+" probed", bound, func() (bool, string) { return r.probed(nodes) })
}

// probed checks each node's log, from where its current run began, for
// the executor's "probed; ready for tasks".
func (r *runner) probed(nodes []string) (bool, string) {
	for _, n := range nodes {
		from, ok := r.probeFrom[n]
		if !ok {
			continue // seen probed in this run already
		}
		if !strings.Contains(r.logSince(n, from), "probed; ready for tasks") {
			return false, n + " has not probed since its start"
		}
		delete(r.probeFrom, n)
	}
	return true, ""
}

// start starts a node that is not running, as after a reboot (the lab
// empties the run dir of a node that did not stop cleanly), and notes
// where its log is, to wait for its probe.
func (r *runner) start(n string) {
	r.t.Helper()
	if fi, err := os.Stat(r.l.Node(n).Log); err == nil {
		r.probeFrom[n] = fi.Size()
	} else {
		r.probeFrom[n] = 0
	}
	r.l.Start(n)
}

// resSummary renders st's resources on one line.
func resSummary(st api.Status) string {
	var parts []string
	for _, rs := range st.Resources {
		s := rs.Instance + "=" + rs.State
		if rs.Node != "" {
			s += "@" + rs.Node
		}
		if rs.Note != "" {
			s += "(" + rs.Note + ")"
		}
		parts = append(parts, s)
	}
	for _, b := range st.Blocked {
		parts = append(parts, fmt.Sprintf("blocked[%s: %s]", b.Instance, b.Reason))
	}
	for _, p := range st.Pending {
		parts = append(parts, fmt.Sprintf("pending[%s %s@%s]", p.Action, p.Instance, p.Node))
	}
	return fmt.Sprintf("dc=%s epoch=%d %s", st.DC, st.Epoch, strings.Join(parts, " "))
}

// fenceEvents returns the fencing history by event ID.
func (r *runner) fenceEvents() (map[string]api.FenceEvent, error) {
	for _, n := range append([]string{r.dc}, r.nodes...) {
		if n == "" || !r.usable(n) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(10*time.Second))
		out, err := r.l.CLI(ctx, n, "fence", "history", "--output", "json")
		cancel()
		if err != nil {
			continue
		}
		var h api.FenceHistory
		if err := json.Unmarshal([]byte(out), &h); err != nil {
			return nil, fmt.Errorf("fence history: %w", err)
		}
		m := map[string]api.FenceEvent{}
		for _, e := range h.Events {
			m[e.ID] = e
		}
		return m, nil
	}
	return nil, errors.New("fence history: no node answered")
}

// ---------------------------------------------------------------------------
// Writes.

// write runs a configuration change on via and records its outcome under
// key := value.
func (r *runner) write(ep int, via, key, value string, args ...string) Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(opTimeout))
	began := time.Now()
	_, err := r.l.CLI(ctx, via, args...)
	cancel()
	o, msg := Acked, ""
	if err != nil {
		o, msg = Unknown, err.Error()
		if strings.Contains(msg, "no quorum") || strings.Contains(msg, "no leader") {
			o = Refused
		}
		msg = ": " + firstLine(msg)
	}
	r.t.Logf("chaos: episode %d: `vigil %s` on %s: %s in %s%s", ep, strings.Join(args, " "), via, o, time.Since(began).Round(time.Millisecond), msg)
	r.mu.Lock()
	r.writes = append(r.writes, Write{Episode: ep, Key: key, Value: value, Outcome: o, Cmd: strings.Join(args, " ") + " (via " + via + ")"})
	r.mu.Unlock()
	return o
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// mustWrite retries an idempotent change (an episode's clean-up) until it
// is acknowledged, recording every attempt.
func (r *runner) mustWrite(ep int, key, value string, args ...string) {
	r.t.Helper()
	deadline := time.Now().Add(lab.Scale(30 * time.Second))
	for i := 0; ; i++ {
		via := r.via(i)
		if r.dc != "" && i == 0 && r.usable(r.dc) {
			via = r.dc
		}
		if r.write(ep, via, key, value, args...) == Acked {
			return
		}
		if time.Now().After(deadline) {
			r.l.DumpLogs(40)
			r.t.Fatalf("chaos: episode %d: `vigil %s` never acknowledged", ep, strings.Join(args, " "))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// finalConfig reads the configuration back from every node, once they all
// show the same, as the registers the writes set.
func (r *runner) finalConfig() (map[string]string, error) {
	deadline := time.Now().Add(lab.Scale(30 * time.Second))
	for {
		var maps []map[string]string
		var err error
		for _, n := range r.nodes {
			var m map[string]string
			if m, err = r.configOf(n); err != nil {
				break
			}
			maps = append(maps, m)
		}
		same := err == nil
		for i := 1; same && i < len(maps); i++ {
			same = fmt.Sprint(maps[i]) == fmt.Sprint(maps[0])
		}
		if same {
			return maps[0], nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("the nodes disagree on the configuration: %v", maps)
			}
			return nil, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// configOf reads node's `config export` as registers: property/K, resource/ID,
// location/ID (its node), standby/NODE.
func (r *runner) configOf(node string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lab.Scale(10*time.Second))
	out, err := r.l.CLI(ctx, node, "config", "export", "--output", "json")
	cancel()
	if err != nil {
		return nil, err
	}
	var doc api.ConfigDocument
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("config export of %s: %w", node, err)
	}
	var c model.Config
	if err := yaml.Unmarshal([]byte(doc.YAML), &c); err != nil {
		return nil, fmt.Errorf("config export of %s: %w", node, err)
	}
	m := map[string]string{}
	for k, v := range c.Properties {
		m["property/"+k] = v
	}
	for _, res := range c.Resources {
		m["resource/"+res.ID] = "present"
	}
	for _, loc := range c.Locations {
		m["location/"+loc.ID] = loc.Node
	}
	for _, n := range c.Nodes {
		if n.Standby {
			m["standby/"+n.Name] = "on"
		}
	}
	return m, nil
}

// ---------------------------------------------------------------------------
// Episodes.

// cleanup is what an episode's operator actions leave to undo.
type cleanup struct {
	moved   []string // resources moved (resource clear)
	standby []string // nodes put in standby (node unstandby)
}

// resolve turns a target role into a node name.
func (r *runner) resolve(tg Target) string {
	switch tg.Role {
	case "dc":
		if _, err := r.status(); err == nil && r.dc != "" {
			return r.dc
		}
	case "holder", "dummy":
		id := ""
		if tg.Role == "holder" {
			id = r.initial[tg.Index%len(r.initial)]
		} else {
			id = r.dummies[tg.Index%len(r.dummies)]
		}
		if n := r.placement()[id]; n != "" {
			return n
		}
	}
	return r.nodes[tg.Index%len(r.nodes)]
}

// via returns the first node, from index i on, that can answer a call.
func (r *runner) via(i int) string {
	for k := range r.nodes {
		n := r.nodes[(i+k)%len(r.nodes)]
		if r.usable(n) {
			return n
		}
	}
	return r.nodes[i%len(r.nodes)]
}

// op carries out one operator action.
func (r *runner) op(e Episode, i int, o Op, cl *cleanup) {
	via := r.via(o.Via)
	var key, value string
	var args []string
	switch o.Kind {
	case OpProperty:
		k := fmt.Sprintf("chaos-e%d-%d", e.N, i)
		key, value = "property/"+k, o.Value
		args = []string{"property", "set", k + "=" + o.Value}
	case OpMove:
		res, node := r.initial[o.Resource%len(r.initial)], r.nodes[o.Node%len(r.nodes)]
		key, value = "location/cli-prefer-"+res, node
		args = []string{"resource", "move", res, node}
		cl.moved = append(cl.moved, res)
	case OpStandby:
		node := r.nodes[o.Node%len(r.nodes)]
		key, value = "standby/"+node, "on"
		args = []string{"node", "standby", node}
		cl.standby = append(cl.standby, node)
	case OpCreate:
		id := fmt.Sprintf("c%d-%d", e.N, i)
		key, value = "resource/"+id, "present"
		args = []string{"resource", "create", id, "vigil:dummy", "op", "monitor", monitor}
		r.mu.Lock()
		r.ids = append(r.ids, id) // watched from before it can start
		r.maybe = append(r.maybe, id)
		r.mu.Unlock()
	}
	out := r.write(e.N, via, key, value, args...)
	r.mu.Lock()
	r.ops[o.Kind]++
	if out == Acked {
		r.opsAck[o.Kind]++
		if o.Kind == OpCreate {
			r.maybe = slices.DeleteFunc(r.maybe, func(s string) bool { return s == strings.TrimPrefix(key, "resource/") })
		}
	}
	if out == Refused && o.Kind == OpCreate {
		id := strings.TrimPrefix(key, "resource/")
		r.ids = slices.DeleteFunc(r.ids, func(s string) bool { return s == id })
	}
	r.mu.Unlock()
}

// applied is a fault as it was carried out, for the heal.
type applied struct {
	node     string   // the node hit (kill, pause, cut-link, isolate, loss, dc-restart, monitor-fail)
	link     int      // the link cut
	minority []string // partition
}

// inject carries out the fault.
func (r *runner) inject(e Episode) applied {
	r.t.Helper()
	var a applied
	switch e.Kind {
	case Partition:
		min := make([]string, 0, len(e.Minority))
		for _, i := range e.Minority {
			min = append(min, r.nodes[i%len(r.nodes)])
		}
		if e.Target.Role == "dc" {
			if dc := r.resolve(e.Target); !slices.Contains(min, dc) {
				min[0] = dc
			}
		}
		slices.Sort(min)
		a.minority = min
		r.l.Partition(min, r.l.Others(min...))
		return a
	case MonitorFail:
		id := r.dummies[e.Target.Index%len(r.dummies)]
		a.node = r.resolve(e.Target)
		f := filepath.Join(r.l.RunDir(a.node), "dummy", id+".state")
		if err := os.Remove(f); err != nil {
			r.t.Logf("chaos: episode %d: monitor failure of %s on %s: %v", e.N, id, a.node, err)
		}
		return a
	}
	a.node = r.resolve(e.Target)
	switch e.Kind {
	case Kill:
		r.l.Kill(a.node)
	case Pause:
		r.l.Pause(a.node)
	case CutLink:
		a.link = e.Link
		if r.cfg.VIP && a.link == vipLink && r.placement()["vip"] == a.node {
			// A cut under the VIP is a resource failure (its monitor
			// fails, and moving it is right), not a link fault that must
			// go unnoticed: cut the other link.
			a.link = 1 - vipLink
		}
		r.l.CutLink(a.node, a.link)
	case Isolate:
		r.l.Isolate(a.node)
	case Loss:
		r.l.Loss(a.node, e.Link, e.LossPct)
	case DCRestart:
		a.node = r.resolve(Target{Role: "dc"})
		r.l.Stop(a.node)
	}
	return a
}

// heal undoes the fault and starts every node that is not running (killed,
// stopped, or fenced meanwhile) as after a reboot.
func (r *runner) heal(e Episode, a applied) {
	r.t.Helper()
	// A heal runs `ip` and `nft` in the nodes' namespaces, where a DC's
	// fence (the lab agent kills every process of a namespace) may be
	// killing them: retried.
	switch e.Kind {
	case Pause:
		r.l.ResumeIfRunning(a.node)
	case CutLink:
		r.l.Retry("heal link", 5, func(l *lab.Lab) { l.HealLink(a.node, a.link) })
	case Isolate, Partition:
		r.l.Retry("heal", 5, (*lab.Lab).Heal)
	case Loss:
		r.l.Retry("clear loss", 5, func(l *lab.Lab) { l.ClearLoss(a.node) })
	}
	for _, n := range r.nodes {
		if !r.l.Node(n).Running() {
			r.checkHit(n)
			r.reboot(n)
		}
	}
}

// reboot starts a node that is not running, once no DC is still fencing it
// (up to 10s): a machine powered off by a fence, or crashed, takes longer
// to boot than a fence takes, and a fence still under way would power the
// new boot off again (and again: a storm no real cluster sees).
func (r *runner) reboot(n string) {
	r.t.Helper()
	deadline := time.Now().Add(lab.Scale(10 * time.Second))
	for time.Now().Before(deadline) && slices.ContainsFunc(r.fencesInFlight(), func(f string) bool { return strings.HasSuffix(f, "->"+n) }) {
		time.Sleep(100 * time.Millisecond)
	}
	r.start(n)
}

// checkHit notes a node found powered off that the episode's fault did not
// hit (fenced by a DC that was wrong about it).
func (r *runner) checkHit(n string) {
	if r.hit == nil || slices.Contains(r.hit, n) {
		return
	}
	r.mu.Lock()
	ep := r.episode
	r.mu.Unlock()
	r.note(fmt.Sprintf("episode %d: %s was powered off (fenced) although the fault did not hit it", ep, n))
}

// runEpisode runs one episode and checks it; false when the cluster did
// not come back (the run cannot go on).
func (r *runner) runEpisode(e Episode) bool {
	r.t.Helper()
	began := time.Now()
	var baseline map[string]string
	if e.Kind.NoFailure() {
		baseline = r.placement()
	}
	fenceBefore, err := r.fenceEvents()
	if err != nil {
		r.t.Logf("chaos: episode %d: %v", e.N, err)
	}
	st, _ := r.status()
	expectedBefore := r.expected(st)

	r.mu.Lock()
	r.episode = e.N
	r.faults[e.Kind]++
	r.mu.Unlock()
	r.logFrom = r.logSizes()
	faultAt := time.Now()
	a := r.inject(e)
	r.hit = append([]string{a.node}, a.minority...)
	defer func() { r.hit = nil }()
	what := a.node
	if a.minority != nil {
		what = fmt.Sprint(a.minority)
	}
	if e.Kind == CutLink && a.link != e.Link {
		what += fmt.Sprintf(" link %d (it holds the VIP)", a.link)
	}
	// The operator acts while the fault lasts, one call after the other;
	// a call that hangs (a write forwarded to a leader that just died
	// waits for the agent's write timeout) does not stretch the fault.
	var cl cleanup
	opsDone := make(chan struct{})
	go func() {
		defer close(opsDone)
		for i, o := range e.Ops {
			time.Sleep(time.Until(faultAt.Add(o.At)))
			r.op(e, i, o, &cl)
		}
	}()
	time.Sleep(time.Until(faultAt.Add(e.Hold)))
	healAt := time.Now()
	r.heal(e, a)

	rec, ok, why := r.waitRecovered(healAt, recoverBound)
	if !ok {
		r.violation(Violation{Kind: VRecovered, Episode: e.N, At: healAt,
			Detail: fmt.Sprintf("not recovered %s after the heal: %s", rec.Round(time.Millisecond), why)})
		r.l.DumpLogs(60)
	} else {
		r.recovery = append(r.recovery, rec)
	}
	// Undo the operator actions, then wait for the cluster to settle.
	<-opsDone
	for _, res := range cl.moved {
		r.mustWrite(e.N, "location/cli-prefer-"+res, "", "resource", "clear", res)
	}
	for _, n := range cl.standby {
		r.mustWrite(e.N, "standby/"+n, "", "node", "unstandby", n)
	}
	settledOK, swhy := r.waitSettled(healAt, settleBound)
	settled := time.Since(healAt)

	fo := ""
	r.mu.Lock()
	samples := slices.Clone(r.samples)
	r.mu.Unlock()
	if d, ok := FailoverTime(samples, e.N, faultAt, expectedBefore); ok {
		r.failover = append(r.failover, d)
		fo = fmt.Sprintf(", back %s after the fault", d.Round(time.Millisecond))
	}
	var fenced []string
	fences := ""
	if settledOK && fenceBefore != nil {
		fenceAfter, err := r.fenceEvents()
		if err != nil {
			r.t.Logf("chaos: episode %d: %v", e.N, err)
		}
		for _, id := range slices.Sorted(maps.Keys(fenceAfter)) {
			if _, ok := fenceBefore[id]; ok {
				continue
			}
			ev := fenceAfter[id]
			fenced = append(fenced, ev.Target)
			fences += fmt.Sprintf(", fenced %s (%s, by %s, ok=%v)", ev.Target, ev.Reason, ev.By, ev.OK)
			if !slices.Contains(r.hit, ev.Target) || e.Kind == DCRestart || e.Kind == MonitorFail || e.Kind.NoFailure() {
				r.note(fmt.Sprintf("episode %d (%s): %s fenced although the fault did not hit it: %s, by %s",
					e.N, e.Kind, ev.Target, ev.Reason, ev.By))
			}
		}
	}
	if e.Kind.NoFailure() && settledOK {
		for _, v := range FalseFailover(e.N, baseline, samples, r.placement(), fenced, nil) {
			r.violation(v)
		}
	}
	r.mu.Lock()
	r.episode = 0
	r.mu.Unlock()
	r.logf("chaos: %s [%s]: recovered %s after the heal%s, settled %s%s; %s in all",
		e, what, rec.Round(time.Millisecond), fo, settled.Round(time.Millisecond), fences, time.Since(began).Round(time.Millisecond))
	if !settledOK {
		r.violation(Violation{Kind: VRecovered, Episode: e.N, At: healAt,
			Detail: fmt.Sprintf("the cluster did not settle within %s of the heal: %s", settleBound, swhy)})
		r.l.DumpLogs(80)
		return false
	}
	return true
}

// note records a finding that no checker judges (printed in the summary).
func (r *runner) note(s string) {
	r.mu.Lock()
	dup := slices.Contains(r.notes, s)
	if !dup {
		r.notes = append(r.notes, s)
	}
	r.mu.Unlock()
	if !dup {
		r.logf("chaos: NOTE %s", s)
	}
}

func (r *runner) violation(v Violation) {
	r.mu.Lock()
	r.violations = append(r.violations, v)
	r.mu.Unlock()
	r.logf("chaos: VIOLATION %s", v)
}

// logf logs to the test and to stdout (so that CI logs show it even
// without -v).
func (r *runner) logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.t.Log(s)
	fmt.Println(s)
}

// run runs the episodes, then the final checks, and returns the summary.
func (r *runner) run(seed uint64, eps []Episode) Summary {
	r.t.Helper()
	r.began = time.Now()
	done := 0
	for _, e := range eps {
		done++
		if !r.runEpisode(e) {
			r.logf("chaos: stopping after episode %d: the cluster did not come back", e.N)
			break
		}
		if r.t.Failed() {
			r.logf("chaos: stopping after episode %d: the harness failed", e.N)
			break
		}
	}
	r.stopSampler()
	r.mu.Lock()
	samples := slices.Clone(r.samples)
	for _, err := range r.sampErrs {
		r.t.Errorf("chaos: sampler: %v", err)
	}
	r.mu.Unlock()
	vs := NeverTwice(samples)
	if final, err := r.finalConfig(); err != nil {
		r.t.Errorf("chaos: reading the configuration back: %v", err)
	} else {
		r.mu.Lock()
		writes := slices.Clone(r.writes)
		r.mu.Unlock()
		vs = append(vs, LostWrites(writes, final)...)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	all := append(vs, r.violations...)
	slices.SortStableFunc(all, func(a, b Violation) int { return a.Episode - b.Episode })
	return Summary{
		Seed: seed, Nodes: len(r.nodes), Episodes: done, Elapsed: time.Since(r.began),
		Faults: r.faults, Ops: r.ops, OpsAcked: r.opsAck, Violations: all,
		Recovery: r.recovery, Failover: r.failover, Samples: len(samples), Notes: r.notes,
	}
}
