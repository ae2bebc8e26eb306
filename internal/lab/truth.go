package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/config"
)

// Ground truth: where a resource instance really runs, read from the agents'
// own state on every node's disk rather than from what Vigil says. Every lab
// node has its own run dir (its configuration's run_dir, <lab dir>/run/<node>)
// and the agents keep their state there:
//
//	vigil:dummy           <run>/dummy/<instance>.state
//	ocf:heartbeat:Dummy   <run>/ocf/rsctmp/Dummy-<instance>.state (HA_RSCTMP)
//	vigil:process         <run>/process/<instance>.pid ("PID STARTTIME"),
//	                      active only while that very process lives
//	vigil:vm              <run>/vm/<instance>/qemu.pid, active while that
//	                      QEMU (its command line names the pid file) lives
//	                      and is not known to be in a migration state
//	                      (truth_qemu.go: read over a second QMP monitor,
//	                      TruthQMPArgs)
//
// A node counts only while its agent process runs. A SIGKILLed node is a
// powered-off machine whose disk remains: its state files stay behind but
// mean nothing (nothing runs there), so Truth ignores them. A real reboot
// empties /run; WipeRunDir does that for a killed node before it is started
// again, otherwise its probes find the stale files and report the instances
// active there. A paused (SIGSTOPped) node still counts: its resources do
// run.

// TruthSample is where every watched instance was active at one moment.
type TruthSample struct {
	At time.Time
	// Active maps an instance to the running nodes where it is active,
	// sorted; instances active nowhere are absent.
	Active map[string][]string
}

// RunDir returns host name's run dir (its agents' state) as its
// configuration says.
func (l *Lab) RunDir(name string) string {
	l.t.Helper()
	p := l.Node(name)
	dir, err := runDirOf(p)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return dir
}

// runDirCache maps a config path to its run dir (fixed per lab).
var runDirCache sync.Map

func runDirOf(p *NodeProc) (string, error) {
	if v, ok := runDirCache.Load(p.Config); ok {
		return v.(string), nil
	}
	f, err := config.Load(p.Config)
	if err != nil {
		return "", fmt.Errorf("run dir of %s: %w", p.Name, err)
	}
	dir := f.RunPath()
	runDirCache.Store(p.Config, dir)
	return dir, nil
}

// ActiveOnDisk reports whether host name's disk says instance id is active
// there (a vigil:dummy or ocf Dummy state file, a vigil:process pid file
// whose process is alive, a vigil:vm QEMU running its guest), whether or
// not the node runs. Use Truth or ActiveOn for "where does it run".
func (l *Lab) ActiveOnDisk(name, id string) bool {
	l.t.Helper()
	ok, err := activeOnDisk(l.Node(name), id)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return ok
}

func activeOnDisk(p *NodeProc, id string) (bool, error) {
	dir, err := runDirOf(p)
	if err != nil {
		return false, err
	}
	for _, f := range []string{
		filepath.Join(dir, "dummy", id+".state"),
		filepath.Join(dir, "ocf", "rsctmp", "Dummy-"+id+".state"),
	} {
		switch _, err := os.Stat(f); {
		case err == nil:
			return true, nil
		case !errors.Is(err, fs.ErrNotExist):
			return false, err
		}
	}
	if on, err := qemuActive(filepath.Join(dir, "vm", id, "qemu.pid")); on || err != nil {
		if err != nil {
			return false, fmt.Errorf("vm %s on %s: %w", id, p.Name, err)
		}
		return true, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "process", id+".pid"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false, nil // being written (the agent renames into place; be lenient)
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return false, nil
	}
	return processAlive(pid, start), nil
}

// processAlive reports whether pid is a live, non-zombie process that started
// at start (field 22 of /proc/<pid>/stat), as vigil:process checks it.
func processAlive(pid int, start uint64) bool {
	st, ok := liveStart(pid)
	return ok && st == start
}

// ActiveOn returns the running nodes where instance id is active, sorted.
func (l *Lab) ActiveOn(id string) []string {
	l.t.Helper()
	s, err := l.sample([]string{id})
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return s.Active[id]
}

// Truth returns where each of ids is active on the running nodes.
func (l *Lab) Truth(ids ...string) TruthSample {
	l.t.Helper()
	s, err := l.sample(ids)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return s
}

// sample reads the ground truth once. A node counts only if it runs both
// before and after its files are read, so a node killed mid-read is left
// out rather than counted with files that no longer mean anything.
//
// The nodes are read one after the other, not at one instant, so a fast
// handover (a live migration: the source's guest stops and the
// destination's starts within milliseconds) could be read as the source
// still active and, a moment later, the destination already active. So
// an instance found on several nodes is read again (confirm): it stays on
// those nodes still active after the last node was read, and on that last
// node. A node active at both its readings, with another's reading in
// between, was active together with that other; a real double run lasts
// far longer than the readings and is kept.
func (l *Lab) sample(ids []string) (TruthSample, error) {
	s := TruthSample{At: time.Now(), Active: map[string][]string{}}
	var files []string
	for _, id := range ids {
		addr, ok := l.trackedAddr(id)
		if !ok {
			files = append(files, id)
			continue
		}
		on, err := l.AddrHolders(addr)
		if err != nil {
			return s, err
		}
		if len(on) > 0 {
			s.Active[id] = on
		}
	}
	// found maps a file id to the nodes where it was read active, in
	// reading order.
	found := map[string][]*NodeProc{}
	for _, p := range l.hosts {
		if p.Witness || !p.Running() {
			continue
		}
		var here []string
		for _, id := range files {
			ok, err := activeOnDisk(p, id)
			if err != nil {
				return s, err
			}
			if ok {
				here = append(here, id)
			}
		}
		if !p.Running() {
			continue
		}
		for _, id := range here {
			found[id] = append(found[id], p)
		}
	}
	for id, on := range found {
		if len(on) > 1 {
			var err error
			if on, err = confirm(id, on); err != nil {
				return s, err
			}
		}
		for _, p := range on {
			s.Active[id] = append(s.Active[id], p.Name)
		}
	}
	for _, nodes := range s.Active {
		slices.Sort(nodes)
	}
	return s, nil
}

// confirm reads instance id again on the nodes on (in the order they were
// read) but the last, and returns those where it is still active, with the
// last; see sample.
func confirm(id string, on []*NodeProc) ([]*NodeProc, error) {
	last := on[len(on)-1]
	var still []*NodeProc
	for _, p := range on[:len(on)-1] {
		ok, err := activeOnDisk(p, id)
		if err != nil {
			return nil, err
		}
		if ok && p.Running() {
			still = append(still, p)
		}
	}
	return append(still, last), nil
}

// String renders a sample as "a@n1 b@- c@n2+n3" for the given ids.
func (s TruthSample) String() string {
	ids := make([]string, 0, len(s.Active))
	for id := range s.Active {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var parts []string
	for _, id := range ids {
		parts = append(parts, id+"@"+strings.Join(s.Active[id], "+"))
	}
	if len(parts) == 0 {
		return "(nothing active)"
	}
	return strings.Join(parts, " ")
}

// WaitActive waits until instance id is active on exactly one running node
// that want accepts (nil accepts any), and returns that node.
func (l *Lab) WaitActive(id string, timeout time.Duration, want func(node string) bool) string {
	l.t.Helper()
	var node string
	l.WaitFor(id+" active on exactly one node (ground truth)", timeout, func() (bool, string) {
		on := l.ActiveOn(id)
		if len(on) != 1 {
			return false, fmt.Sprintf("%s active on %v", id, on)
		}
		if want != nil && !want(on[0]) {
			return false, fmt.Sprintf("%s active on %s, not an accepted node", id, on[0])
		}
		node = on[0]
		return true, ""
	})
	return node
}

// WipeRunDir empties a stopped host's run dir: the reboot that clears /run
// after a power-off. Starting a SIGKILLed node without it lets its probes
// find the state files it left and report those instances active.
func (l *Lab) WipeRunDir(name string) {
	l.t.Helper()
	p := l.Node(name)
	if p.Running() {
		l.t.Fatalf("lab: wipe run dir of %s: it is running", name)
	}
	dir := l.RunDir(name)
	if err := os.RemoveAll(dir); err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	p.mark("run dir %s wiped (reboot)", dir)
}

// Watch samples the ground truth in the background; see WatchNeverTwice.
type Watch struct {
	l    *Lab
	ids  []string
	stop chan struct{}
	done chan struct{}

	mu         sync.Mutex
	samples    int
	violations []TruthSample
	errs       []error
	peak       map[string]int
}

// maxKeptViolations bounds the violations a Watch keeps for its report.
const maxKeptViolations = 10

// WatchNeverTwice samples where ids are active (Truth) every ~50ms until the
// test ends and, at cleanup, fails t if any instance was ever active on two
// running nodes in one sample. It is the base of every "never twice" check.
// Cleanup runs it before the lab's own cleanup (t.Cleanup is LIFO), while
// the nodes still run. Stop ends it early and reports the same way.
func (l *Lab) WatchNeverTwice(t testing.TB, ids ...string) *Watch {
	t.Helper()
	w := &Watch{l: l, ids: slices.Clone(ids), stop: make(chan struct{}), done: make(chan struct{}), peak: map[string]int{}}
	go w.run()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { w.finish(t) }) })
	return w
}

func (w *Watch) run() {
	defer close(w.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := w.l.sample(w.ids)
		w.mu.Lock()
		w.samples++
		if err != nil && len(w.errs) < maxKeptViolations {
			w.errs = append(w.errs, err)
		}
		twice := false
		for id, nodes := range s.Active {
			w.peak[id] = max(w.peak[id], len(nodes))
			if len(nodes) > 1 {
				twice = true
			}
		}
		if twice && len(w.violations) < maxKeptViolations {
			w.violations = append(w.violations, s)
		}
		w.mu.Unlock()
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
	}
}

// Stop ends sampling (idempotent) and waits for the sampler.
func (w *Watch) Stop() {
	w.mu.Lock()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.mu.Unlock()
	<-w.done
}

// Samples returns how many samples were taken so far.
func (w *Watch) Samples() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples
}

// Violations returns the samples (up to 10) that showed an instance on two
// nodes.
func (w *Watch) Violations() []TruthSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.violations)
}

func (w *Watch) finish(t testing.TB) {
	w.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, err := range w.errs {
		t.Errorf("lab: never-twice watch: %v", err)
	}
	if len(w.violations) > 0 {
		var b strings.Builder
		for _, s := range w.violations {
			fmt.Fprintf(&b, "\n  %s: %s", s.At.Format("15:04:05.000"), s)
		}
		t.Errorf("lab: never twice violated (%d samples of %d kept):%s", len(w.violations), w.samples, b.String())
		return
	}
	t.Logf("lab: never-twice watch of %s: %d samples, no instance ever on two nodes", strings.Join(w.ids, ","), w.samples)
}
