package agents

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/vigil-ha/vigil/internal/datastore"
)

// DefaultOCFRoot is where Debian's resource-agents package installs.
const DefaultOCFRoot = "/usr/lib/ocf"

// Options configure a Registry.
type Options struct {
	// OCFRoot is the OCF root (OCF_ROOT); agents live under
	// <OCFRoot>/resource.d/<provider>/<type>. Default DefaultOCFRoot.
	OCFRoot string
	// StateDir is this node's directory for agent state: the built-in
	// agents' files (dummy/, process/) and the OCF HA_VARRUN, HA_RSCTMP
	// and HA_VARLOCK (ocf/run, ocf/rsctmp, ocf/lock). Nodes sharing a
	// machine must have different StateDirs. Required.
	//
	// NB: OCF agents expect HA_RSCTMP to be emptied at boot (Dummy's state
	// file would otherwise claim it still runs). The lab's StateDir is
	// temporary; a production StateDir must be on a tmpfs such as /run,
	// or cleaned at boot.
	StateDir string
	// Logger receives debug records of every action. Default: discard.
	Logger *slog.Logger
	// Datastores resolves datastore names (vigil:vm's DATASTORE:path
	// disks) to their paths on this node; nil knows none.
	Datastores DatastoreLookup
	// DiskLease are the disk lease timings of vigil:vm; every node of a
	// cluster must use the same (zero: the datastore package's defaults).
	DiskLease datastore.Options
	// Incarnation names this host's life in disk leases; it must stay the
	// same while the host runs and change when it reboots. Default: the
	// kernel's boot id.
	Incarnation string
}

// Registry resolves agent specs ("ocf:heartbeat:Dummy", "vigil:dummy") to
// Agents. Agents are created once per spec and shared, so their meta-data
// is read once. A Registry is safe for concurrent use.
type Registry struct {
	opts   Options
	log    *slog.Logger
	mu     sync.Mutex
	agents map[string]Agent
	dirs   *ocfDirs
	notify func(resource string) // given to every Notifier agent
}

// NewRegistry returns a registry for one node. It panics if StateDir is
// empty (a programmer error: nodes would share state).
func NewRegistry(opts Options) *Registry {
	if opts.StateDir == "" {
		panic("agents: Options.StateDir is required")
	}
	if opts.OCFRoot == "" {
		opts.OCFRoot = DefaultOCFRoot
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{opts: opts, log: log, agents: map[string]Agent{}}
}

// Classes and built-in types.
const (
	ClassOCF   = "ocf"
	ClassVigil = "vigil"

	TypeDummy   = "dummy"
	TypeProcess = "process"
)

// ParseSpec splits an agent spec: "ocf:heartbeat:Dummy" gives ("ocf",
// "heartbeat", "Dummy"); "vigil:dummy" gives ("vigil", "", "dummy"). The
// ocf class requires a provider; the vigil class has none. It does not
// check that the agent exists (Registry.Get does).
func ParseSpec(s string) (class, provider, typ string, err error) {
	parts := strings.Split(s, ":")
	for _, p := range parts {
		if !validSpecPart(p) {
			return "", "", "", fmt.Errorf("%w %q: want class:provider:type (ocf:heartbeat:Dummy) or vigil:type", ErrBadSpec, s)
		}
	}
	switch {
	case len(parts) == 3 && parts[0] == ClassOCF:
		return parts[0], parts[1], parts[2], nil
	case len(parts) == 2 && parts[0] == ClassVigil:
		return parts[0], "", parts[1], nil
	case parts[0] == ClassOCF:
		return "", "", "", fmt.Errorf("%w %q: the ocf class needs ocf:provider:type", ErrBadSpec, s)
	case parts[0] == ClassVigil:
		return "", "", "", fmt.Errorf("%w %q: the vigil class needs vigil:type", ErrBadSpec, s)
	}
	return "", "", "", fmt.Errorf("%w %q: unknown class %q (known: ocf, vigil)", ErrUnknownAgent, s, parts[0])
}

// validSpecPart refuses empty parts and anything that could leave the
// resource.d directory.
func validSpecPart(p string) bool {
	if p == "" || p[0] == '.' || len(p) > 128 {
		return false
	}
	return !strings.ContainsAny(p, "/\x00 \t\n")
}

// Get returns the agent for spec, or an error wrapping ErrBadSpec or
// ErrUnknownAgent that says what is missing.
func (r *Registry) Get(spec string) (Agent, error) {
	class, provider, typ, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.agents[spec]; ok {
		return a, nil
	}
	var a Agent
	switch class {
	case ClassOCF:
		a, err = r.newOCF(provider, typ)
	case ClassVigil:
		a, err = r.newBuiltin(typ)
	}
	if err != nil {
		return nil, err
	}
	if n, ok := a.(Notifier); ok && r.notify != nil {
		n.SetNotify(r.notify)
	}
	r.agents[spec] = a
	return a, nil
}

// Survivors lists the instances of the built-in agents whose processes run
// on this node (SurvivorLister), whether or not this process started or
// attached to them. Only vigil:vm has any.
func (r *Registry) Survivors() []string {
	a, err := r.Get(ClassVigil + ":" + TypeVM)
	if err != nil {
		return nil
	}
	if l, ok := a.(SurvivorLister); ok {
		return l.Survivors()
	}
	return nil
}

// SetNotify implements Notifier: fn is given to every agent that is a
// Notifier, those created already and those created later.
func (r *Registry) SetNotify(fn func(resource string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notify = fn
	for _, a := range r.agents {
		if n, ok := a.(Notifier); ok {
			n.SetNotify(fn)
		}
	}
}

func (r *Registry) newOCF(provider, typ string) (Agent, error) {
	dir := filepath.Join(r.opts.OCFRoot, "resource.d")
	path := filepath.Join(dir, provider, typ)
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		if _, perr := os.Stat(filepath.Join(dir, provider)); perr != nil {
			return nil, fmt.Errorf("%w: no OCF provider %q under %s", ErrUnknownAgent, provider, dir)
		}
		return nil, fmt.Errorf("%w: no OCF agent %s/%s under %s", ErrUnknownAgent, provider, typ, dir)
	}
	if st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("%w: OCF agent %s is not executable", ErrUnknownAgent, path)
	}
	if r.dirs == nil {
		d, err := newOCFDirs(r.opts.StateDir)
		if err != nil {
			return nil, err
		}
		r.dirs = &d
	}
	return &ocfAgent{root: r.opts.OCFRoot, provider: provider, typ: typ, path: path, dirs: *r.dirs, log: r.log}, nil
}

func (r *Registry) newBuiltin(typ string) (Agent, error) {
	switch typ {
	case TypeDummy:
		return newDummy(filepath.Join(r.opts.StateDir, "dummy"), r.log)
	case TypeProcess:
		return newProcess(filepath.Join(r.opts.StateDir, "process"), r.log)
	case TypeIP:
		return newIP(r.log), nil
	case TypeVM:
		return newVM(filepath.Join(r.opts.StateDir, TypeVM), r.log, r.opts)
	}
	return nil, fmt.Errorf("%w: no built-in agent vigil:%s (known: vigil:%s, vigil:%s, vigil:%s, vigil:%s)", ErrUnknownAgent, typ, TypeDummy, TypeIP, TypeProcess, TypeVM)
}

// List returns the specs of every agent available here, sorted: the
// built-in ones and every executable under <OCFRoot>/resource.d. A missing
// OCF root is not an error (no OCF agents installed).
func (r *Registry) List() ([]string, error) {
	specs := []string{ClassVigil + ":" + TypeDummy, ClassVigil + ":" + TypeIP, ClassVigil + ":" + TypeProcess, ClassVigil + ":" + TypeVM}
	dir := filepath.Join(r.opts.OCFRoot, "resource.d")
	providers, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return specs, nil
		}
		return nil, fmt.Errorf("agents: list %s: %w", dir, err)
	}
	for _, p := range providers {
		if !validSpecPart(p.Name()) {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(dir, p.Name()))
		if err != nil {
			continue // a file, or unreadable: not a provider
		}
		for _, e := range entries {
			if !validSpecPart(e.Name()) || !isExecutable(filepath.Join(dir, p.Name(), e.Name())) {
				continue
			}
			specs = append(specs, ClassOCF+":"+p.Name()+":"+e.Name())
		}
	}
	slices.Sort(specs)
	return specs, nil
}

func isExecutable(path string) bool {
	st, err := os.Stat(path) // follows symlinks, as exec does
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}
