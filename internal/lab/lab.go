package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-ha/vigil/internal/config"
	"github.com/vigil-ha/vigil/internal/model"
)

// NetnsPort is the port every host listens on in Netns mode (each host has
// its own addresses there, so they need not differ).
const NetnsPort = 7946

// ClusterName is the cluster name unless Options.Cluster says otherwise.
const ClusterName = "lab"

// Options describe a lab. The zero value plus Nodes is a loopback cluster
// with one link and the default timings.
type Options struct {
	// Nodes is the number of agents, named n1..nN (1 to 250 with witnesses).
	Nodes int
	// Witnesses is the number of witnesses, named w1..wW.
	Witnesses int
	// Links is the number of links per host, 1 to model.MaxLinks; 0 means 1.
	Links int
	// Netns puts every host in its own network namespace (needs root and
	// iproute2; the test is skipped otherwise). Without it every host is on
	// 127.0.0.1 with its own ports, and network faults are unavailable.
	Netns bool
	// Heartbeat and NodeTimeout are passed to `vigil cluster setup` when set.
	Heartbeat, NodeTimeout time.Duration
	// SetupArgs are extra arguments for `vigil cluster setup`, such as
	// "--two-node" or "--expected-votes", "3".
	SetupArgs []string
	// Cluster is the cluster name (default ClusterName).
	Cluster string
	// LogLevel, when set, is written into every node's configuration.
	LogLevel string
	// Env holds extra NAME=value entries for every process the lab runs
	// (agents and CLI calls), for example failpoints.
	Env []string
	// Binary is the vigil binary; default $VIGIL_BIN, else ./cmd/vigil built
	// once per test binary.
	Binary string
	// StopTimeout bounds Stop's wait after SIGTERM (default 15s, scaled).
	StopTimeout time.Duration
}

// Lab is a running test cluster. Create it with New; it cleans up after
// itself when the test ends.
type Lab struct {
	t testing.TB
	*core
}

// core is the state shared by a Lab and its With views.
type core struct {
	opts   Options
	id     string // 6 hex digits, unique per lab
	dir    string
	bin    string
	hosts  []*NodeProc // nodes then witnesses
	byName map[string]*NodeProc

	mu      sync.Mutex
	nets    *netState // nil on loopback
	nftMu   sync.Mutex
	cleaned bool
	dumped  bool // DumpLogs ran after a failure already

	clients []*Client // AddClient's hosts
	addrs   addrTruth // TrackAddress
}

// New builds a lab for t: it picks addresses (and in Netns mode creates the
// namespaces, bridges and veth pairs), runs `vigil cluster setup` into a
// fresh folder, and registers the cleanup. It starts no process: call
// StartAll or Start.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	if opts.Links == 0 {
		opts.Links = 1
	}
	if opts.Links < 1 || opts.Links > model.MaxLinks {
		t.Fatalf("lab: Links %d: want 1 to %d", opts.Links, model.MaxLinks)
	}
	if opts.Nodes < 1 || opts.Nodes+opts.Witnesses > 250 || opts.Witnesses < 0 {
		t.Fatalf("lab: Nodes %d, Witnesses %d: want at least one node and at most 250 hosts", opts.Nodes, opts.Witnesses)
	}
	if opts.Cluster == "" {
		opts.Cluster = ClusterName
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 15 * time.Second
	}
	if opts.Netns {
		if reason := NetnsUnavailable(); reason != "" {
			t.Skipf("lab: network namespaces unavailable: %s", reason)
		}
	}
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = Binary(); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	l := &Lab{t: t, core: &core{opts: opts, id: newID(), bin: bin, byName: map[string]*NodeProc{}}}
	l.dir = l.makeDir()

	// Hosts and their addresses.
	var ports []int
	if !opts.Netns {
		var err error
		ports, err = freePorts((opts.Nodes + opts.Witnesses) * opts.Links)
		if err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	for k := 1; k <= opts.Nodes+opts.Witnesses; k++ {
		p := &NodeProc{Index: k, Name: fmt.Sprintf("n%d", k)}
		if k > opts.Nodes {
			p.Witness = true
			p.Name = fmt.Sprintf("w%d", k-opts.Nodes)
		}
		for i := 0; i < opts.Links; i++ {
			if opts.Netns {
				p.Addrs = append(p.Addrs, fmt.Sprintf("198.18.%d.%d:%d", i, k, NetnsPort))
			} else {
				p.Addrs = append(p.Addrs, fmt.Sprintf("127.0.0.1:%d", ports[(k-1)*opts.Links+i]))
			}
		}
		if opts.Netns {
			p.Netns = l.nsName(p.Name)
		}
		p.Config = filepath.Join(l.dir, p.Name+".yaml")
		p.Log = filepath.Join(l.dir, "logs", p.Name+".log")
		l.hosts = append(l.hosts, p)
		l.byName[p.Name] = p
	}
	if err := os.MkdirAll(filepath.Join(l.dir, "logs"), 0o755); err != nil {
		t.Fatalf("lab: %v", err)
	}

	// From here on there is something to clean up.
	t.Cleanup(l.cleanup)
	if opts.Netns {
		l.setupNetns()
	}
	l.setupCluster()
	return l
}

// With returns a view of the lab that reports failures to t (a subtest)
// instead of the test that created the lab. Both share everything else.
func (l *Lab) With(t testing.TB) *Lab { return &Lab{t: t, core: l.core} }

// T returns the test the lab reports to.
func (l *Lab) T() testing.TB { return l.t }

// ID returns the lab's random id: 6 hex digits in namespace and table names.
func (l *Lab) ID() string { return l.id }

// Dir returns the lab folder: cluster.key, <name>.yaml, data/, logs/.
func (l *Lab) Dir() string { return l.dir }

// BinaryPath returns the vigil binary the lab runs.
func (l *Lab) BinaryPath() string { return l.bin }

// Options returns the lab's options with defaults applied.
func (l *Lab) Options() Options { return l.opts }

// Names returns every host name: n1..nN, then w1..wW.
func (l *Lab) Names() []string {
	var out []string
	for _, p := range l.hosts {
		out = append(out, p.Name)
	}
	return out
}

// NodeNames returns the agents' names (no witnesses).
func (l *Lab) NodeNames() []string {
	var out []string
	for _, p := range l.hosts {
		if !p.Witness {
			out = append(out, p.Name)
		}
	}
	return out
}

// Others returns the node names (no witnesses) other than the given ones.
func (l *Lab) Others(names ...string) []string {
	var out []string
	for _, n := range l.NodeNames() {
		if !slices.Contains(names, n) {
			out = append(out, n)
		}
	}
	return out
}

// Other returns the first node name other than the given ones.
func (l *Lab) Other(names ...string) string {
	o := l.Others(names...)
	if len(o) == 0 {
		l.t.Fatalf("lab: no node other than %v", names)
	}
	return o[0]
}

// Node returns a host by name; an unknown name fails the test.
func (l *Lab) Node(name string) *NodeProc {
	p, ok := l.byName[name]
	if !ok {
		l.t.Helper()
		l.t.Fatalf("lab: no host %q (have %s)", name, strings.Join(l.Names(), ", "))
	}
	return p
}

// EditConfig loads a host's configuration file, lets edit change it, and
// writes it back. Call it while the host is stopped.
func (l *Lab) EditConfig(name string, edit func(f *config.File)) {
	l.t.Helper()
	p := l.Node(name)
	f, err := config.Load(p.Config)
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	edit(f)
	if err := f.Validate(); err != nil {
		l.t.Fatalf("lab: edited config of %s: %v", name, err)
	}
	if err := f.Write(p.Config); err != nil {
		l.t.Fatalf("lab: %v", err)
	}
}

// SetForeignKey gives a host a cluster key of its own: a fresh key made by
// `vigil cluster setup` of a throw-away cluster, written beside the lab's
// and named in the host's configuration. Its heartbeats and API calls are
// then those of a stranger. Call it while the host is stopped.
func (l *Lab) SetForeignKey(name string) {
	l.t.Helper()
	tmp := filepath.Join(l.dir, "foreign-"+name)
	ctx, cancel := context.WithTimeout(context.Background(), Scale(time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, l.bin, "cluster", "setup", "foreign", "--dir", tmp, "--node", "x1=127.0.0.1:1")
	cmd.Env = l.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("lab: make a foreign key: %v: %s", err, out)
	}
	key := filepath.Join(tmp, "cluster.key")
	if _, err := os.Stat(key); err != nil {
		l.t.Fatalf("lab: foreign key: %v", err)
	}
	l.EditConfig(name, func(f *config.File) { f.KeyFile = key })
}

// makeDir returns the lab folder: t.TempDir, or with $VIGIL_LAB_KEEP set a
// folder that outlives the test (its path is logged).
func (l *Lab) makeDir() string {
	if os.Getenv("VIGIL_LAB_KEEP") == "" {
		return l.t.TempDir()
	}
	d, err := os.MkdirTemp("", "vigil-lab-"+l.id+"-")
	if err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	l.t.Logf("lab %s: keeping %s ($VIGIL_LAB_KEEP)", l.id, d)
	return d
}

// setupCluster runs `vigil cluster setup` into the lab folder.
func (l *Lab) setupCluster() {
	l.t.Helper()
	// Volatile resource state goes in the lab folder, one per node, so
	// labs never see each other's (or an earlier run's) resources.
	args := []string{"cluster", "setup", l.opts.Cluster, "--dir", l.dir, "--run-dir=run/{node}"}
	for _, p := range l.hosts {
		flag := "--node"
		if p.Witness {
			flag = "--witness"
		}
		args = append(args, flag, p.Name+"="+strings.Join(p.Addrs, ","))
	}
	if l.opts.Heartbeat != 0 {
		args = append(args, "--heartbeat", l.opts.Heartbeat.String())
	}
	if l.opts.NodeTimeout != 0 {
		args = append(args, "--node-timeout", l.opts.NodeTimeout.String())
	}
	args = append(args, l.opts.SetupArgs...)
	ctx, cancel := context.WithTimeout(context.Background(), Scale(time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, l.bin, args...)
	cmd.Env = l.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		l.t.Fatalf("lab: vigil %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	for _, p := range l.hosts {
		if _, err := os.Stat(p.Config); err != nil {
			l.t.Fatalf("lab: cluster setup wrote no %s: %v\n%s", p.Config, err, out.String())
		}
	}
	if l.opts.LogLevel != "" {
		for _, p := range l.hosts {
			l.EditConfig(p.Name, func(f *config.File) { f.LogLevel = l.opts.LogLevel })
		}
	}
}

// env is the environment of every process the lab runs.
func (l *Lab) env() []string {
	return append(os.Environ(), l.opts.Env...)
}

// cleanup kills, checks and removes everything the lab made. It runs once.
func (l *Lab) cleanup() {
	l.mu.Lock()
	if l.cleaned {
		l.mu.Unlock()
		return
	}
	l.cleaned = true
	l.mu.Unlock()

	for _, p := range l.hosts {
		p.killForCleanup()
	}
	for _, p := range l.hosts {
		if bad := p.crashLines(); bad != "" {
			l.t.Errorf("lab: %s's log shows a crash:\n%s", p.Name, bad)
		}
	}
	if l.t.Failed() {
		l.t.Logf("lab %s: logs in %s (removed unless $VIGIL_LAB_KEEP is set)", l.id, l.dir)
		l.mu.Lock()
		dumped := l.dumped
		l.mu.Unlock()
		if !dumped {
			l.DumpLogs(60)
		}
	}
	l.closeHandles()
	if l.opts.Netns {
		if err := l.teardownNetns(); err != nil {
			l.t.Errorf("lab: %v", err)
		}
	}
	removeOwner(l.id)
}

func newID() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}
