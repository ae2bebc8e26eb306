package agent

// Datastores: shared folders declared in the configuration
// (config/datastores/<name>), checked by every node that runs resources
// every datastoreCheckEvery, the verdicts kept in memory and written to
// status/datastores/<node> when they change (and once a minute, for the
// latency), shown in `vigil status`. vigil:vm resolves DATASTORE:path
// disks through datastoreLookup, which reads the replicated configuration.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-ha/vigil/internal/api"
	"github.com/vigil-ha/vigil/internal/clusterstate"
	"github.com/vigil-ha/vigil/internal/datastore"
	"github.com/vigil-ha/vigil/internal/model"
	"github.com/vigil-ha/vigil/internal/store"
)

const (
	// datastoreCheckEvery is how often each node checks each datastore.
	datastoreCheckEvery = 5 * time.Second
	// datastoreCheckTimeout bounds one check: a hung NFS mount must not
	// hold the loop (the check's IO is abandoned, not waited for).
	datastoreCheckTimeout = 4 * time.Second
	// datastoreRewrite is how often the health record is written even
	// when no verdict changed (so its latencies stay recent).
	datastoreRewrite = time.Minute
	// imageCreateTimeout bounds qemu-img create.
	imageCreateTimeout = 2 * time.Minute
)

// datastoreState is this node's latest checks.
type datastoreState struct {
	mu      sync.Mutex
	checks  map[string]model.DatastoreCheck
	written string // the verdicts last written (fingerprint)
	wroteAt time.Time
}

// datastoreLookup resolves a datastore's name to its path, from the
// replicated configuration (agents.DatastoreLookup).
func (a *Agent) datastoreLookup(name string) (string, bool) {
	var path string
	var ok bool
	a.node.Read(func(s *store.State) {
		ds, err := clusterstate.LoadDatastores(s)
		if err != nil {
			return
		}
		for _, d := range ds {
			if d.Name == name {
				path, ok = d.Path, true
			}
		}
	})
	return path, ok
}

func (a *Agent) datastores() ([]model.Datastore, error) {
	var ds []model.Datastore
	var err error
	a.node.Read(func(s *store.State) { ds, err = clusterstate.LoadDatastores(s) })
	return ds, err
}

func (a *Agent) identity(name string) datastore.Identity {
	return datastore.Identity{Cluster: a.cfg.Name, Datastore: name}
}

// datastoreLoop checks every configured datastore every
// datastoreCheckEvery until ctx ends.
func (a *Agent) datastoreLoop(ctx context.Context) {
	t := time.NewTicker(datastoreCheckEvery)
	defer t.Stop()
	for {
		a.checkDatastores(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkDatastores checks each datastore once, in parallel, and writes the
// verdicts when they changed.
func (a *Agent) checkDatastores(ctx context.Context) {
	ds, err := a.datastores()
	if err != nil {
		a.log.Warn("cannot read the datastores from the configuration", "err", err)
		return
	}
	checks := make(map[string]model.DatastoreCheck, len(ds))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, datastoreCheckTimeout)
			defer cancel()
			h := datastore.Check(cctx, d.Path, a.identity(d.Name))
			c := model.DatastoreCheck{OK: h.OK, Latency: model.Duration(h.Latency.Round(time.Microsecond)), Error: h.Err, At: time.Now()}
			mu.Lock()
			checks[d.Name] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}

	st := &a.ds
	st.mu.Lock()
	prev := st.checks
	st.checks = checks
	for name, c := range checks {
		if p, ok := prev[name]; ok && p.OK && !c.OK {
			a.log.Error("datastore check failed: VMs on it cannot be started here", "datastore", name, "err", c.Error)
		} else if ok && !p.OK && c.OK {
			a.log.Info("datastore usable again", "datastore", name, "latency", c.Latency)
		} else if !ok && !c.OK {
			a.log.Warn("datastore not usable on this node", "datastore", name, "err", c.Error)
		}
	}
	fp := verdicts(checks)
	write := fp != st.written || time.Since(st.wroteAt) >= datastoreRewrite
	st.mu.Unlock()
	if !write || !a.quorum().Quorate {
		return
	}
	rec := model.DatastoreHealth{V: clusterstate.FormatVersion, Node: a.cfg.Node, Datastores: checks}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if _, err := a.node.Propose(wctx, store.Txn{Ops: []store.Op{{Key: clusterstate.DatastoreHealthKey(a.cfg.Node), Value: clusterstate.Encode(rec)}}}); err != nil {
		a.log.Debug("datastore health not written", "err", err)
		return
	}
	st.mu.Lock()
	st.written, st.wroteAt = fp, time.Now()
	st.mu.Unlock()
}

// verdicts fingerprints what matters of the checks (not the latency).
func verdicts(checks map[string]model.DatastoreCheck) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(checks)) {
		fmt.Fprintf(&b, "%s=%t:%s;", name, checks[name].OK, checks[name].Error)
	}
	return b.String()
}

// datastoreView builds the API's datastores from the configuration and
// every node's record; this node's own checks are the freshest.
func (a *Agent) datastoreView() ([]api.Datastore, error) {
	var ds []model.Datastore
	var healths map[string]model.DatastoreHealth
	var err error
	a.node.Read(func(s *store.State) {
		ds, err = clusterstate.LoadDatastores(s)
		healths = clusterstate.DatastoreHealths(s)
	})
	if err != nil {
		return nil, fmt.Errorf("read datastores: %w", err)
	}
	a.ds.mu.Lock()
	if a.ds.checks != nil {
		healths[a.cfg.Node] = model.DatastoreHealth{Node: a.cfg.Node, Datastores: maps.Clone(a.ds.checks)}
	}
	a.ds.mu.Unlock()
	out := make([]api.Datastore, 0, len(ds))
	for _, d := range ds {
		ad := api.Datastore{Name: d.Name, Path: d.Path}
		for _, node := range slices.Sorted(maps.Keys(healths)) {
			c, ok := healths[node].Datastores[d.Name]
			if !ok {
				continue
			}
			ad.Health = append(ad.Health, api.DatastoreNodeHealth{Node: node, OK: c.OK, Latency: c.Latency.D(), Error: c.Error, At: c.At})
		}
		out = append(out, ad)
	}
	return out, nil
}

// addDatastoreStatus adds the datastores to `vigil status`.
func (b backend) addDatastoreStatus(out *api.Status) {
	ds, err := b.a.datastoreView()
	if err != nil {
		out.Warnings = append(out.Warnings, err.Error())
		return
	}
	out.Datastores = ds
	b.a.addIsolationStatus(out)
	for _, d := range ds {
		for _, h := range d.Health {
			if !h.OK {
				out.Warnings = append(out.Warnings, fmt.Sprintf("datastore %s is not usable on %s: %s", d.Name, h.Node, h.Error))
			}
		}
	}
}

// Datastores implements api.DatastoreBackend.
func (b backend) Datastores(ctx context.Context) ([]api.Datastore, error) {
	return b.a.datastoreView()
}

// CreateDatastore initializes the datastore here (the answering node must
// have it mounted), then writes it into the configuration, guarded by the
// epoch read with the check that the name is free.
func (b backend) CreateDatastore(ctx context.Context, req api.CreateDatastoreRequest) (api.WriteResult, error) {
	a := b.a
	d := model.Datastore{Name: req.Name, Path: req.Path}
	if err := d.Validate(); err != nil {
		return api.WriteResult{}, badRequest("%v", err)
	}
	var cur []model.Datastore
	var epoch uint64
	var err error
	a.node.Read(func(s *store.State) { cur, err = clusterstate.LoadDatastores(s); epoch = s.Epoch() })
	if err != nil {
		return api.WriteResult{}, fmt.Errorf("read datastores: %w", err)
	}
	for _, o := range cur {
		switch {
		case o == d:
			return api.WriteResult{Epoch: epoch, Unchanged: true}, nil
		case o.Name == d.Name:
			return api.WriteResult{}, api.Errorf(api.CodeConflict, "datastore %s exists already (at %s)", d.Name, o.Path)
		case o.Path == d.Path:
			return api.WriteResult{}, api.Errorf(api.CodeConflict, "datastore %s is at %s already", o.Name, d.Path)
		}
	}
	if fi, err := os.Stat(d.Path); err != nil || !fi.IsDir() {
		return api.WriteResult{}, badRequest("datastore %s: %s is not a folder on %s (mount it on every node first): %v", d.Name, d.Path, a.cfg.Node, err)
	}
	if err := datastore.Init(ctx, d.Path, a.identity(d.Name)); err != nil {
		return api.WriteResult{}, badRequest("datastore %s: initialize on %s: %v", d.Name, a.cfg.Node, err)
	}
	res, err := a.write(ctx, store.Txn{Ops: []store.Op{{Key: clusterstate.DatastoreKey(d.Name), Value: clusterstate.Encode(d)}}, IfEpoch: epoch})
	if err != nil {
		return res, err
	}
	res.Changes = []string{"+ " + clusterstate.DatastoreKey(d.Name)}
	a.log.Info("datastore created", "datastore", d.Name, "path", d.Path)
	return res, nil
}

// DeleteDatastore removes a datastore from the configuration, refused
// while a vigil:vm resource names it. Its files stay.
func (b backend) DeleteDatastore(ctx context.Context, name string) (api.WriteResult, error) {
	a := b.a
	var cur []model.Datastore
	var conf model.Config
	var epoch uint64
	var err, cerr error
	a.node.Read(func(s *store.State) {
		cur, err = clusterstate.LoadDatastores(s)
		conf, cerr = clusterstate.LoadConfig(s)
		epoch = s.Epoch()
	})
	if err = errors.Join(err, cerr); err != nil {
		return api.WriteResult{}, fmt.Errorf("read configuration: %w", err)
	}
	if !slices.ContainsFunc(cur, func(d model.Datastore) bool { return d.Name == name }) {
		return api.WriteResult{}, notFound("no datastore %q", name)
	}
	if users := datastoreUsers(conf, name); len(users) > 0 {
		return api.WriteResult{}, api.Errorf(api.CodeConflict, "datastore %s is used by %s: delete or change them first", name, strings.Join(users, ", "))
	}
	res, err := a.write(ctx, store.Txn{Ops: []store.Op{{Key: clusterstate.DatastoreKey(name), Delete: true}}, IfEpoch: epoch})
	if err != nil {
		return res, err
	}
	res.Changes = []string{"- " + clusterstate.DatastoreKey(name)}
	return res, nil
}

// datastoreUsers lists the resources whose parameters name the datastore
// as NAME:path (vigil:vm's disk, kernel, initrd).
func datastoreUsers(c model.Config, name string) []string {
	var out []string
	for _, r := range c.Resources {
		if slices.Contains(r.Datastores(), name) {
			out = append(out, r.ID)
		}
	}
	return out
}

var imageSizeRE = regexp.MustCompile(`^[1-9][0-9]*[KMGT]?$`)

// CreateImage creates a disk image with qemu-img on the answering node,
// which must have the datastore mounted. An existing image is refused
// unless req.Existing; a new one is first created empty with O_EXCL so
// that two concurrent requests never overwrite each other.
func (b backend) CreateImage(ctx context.Context, name string, req api.CreateImageRequest) (api.CreateImageResult, error) {
	a := b.a
	root, ok := a.datastoreLookup(name)
	if !ok {
		return api.CreateImageResult{}, notFound("no datastore %q", name)
	}
	rel := filepath.Clean(req.Path)
	if req.Path == "" || filepath.IsAbs(rel) || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || rel == ".vigil" || strings.HasPrefix(rel, ".vigil/") || strings.ContainsAny(rel, ",:") {
		return api.CreateImageResult{}, badRequest("image path %q: want a path relative to the datastore, inside it, not under .vigil, without ',' or ':'", req.Path)
	}
	format := req.Format
	if format == "" {
		format = "qcow2"
	}
	if format != "qcow2" && format != "raw" {
		return api.CreateImageResult{}, badRequest("image format %q: want qcow2 or raw", format)
	}
	path := filepath.Join(root, rel)
	out := api.CreateImageResult{Path: path, Node: a.cfg.Node}
	if h := datastore.Check(ctx, root, a.identity(name)); !h.OK {
		return out, badRequest("datastore %s is not usable on %s: %s", name, a.cfg.Node, h.Err)
	}
	if _, err := os.Stat(path); err == nil {
		if req.Existing {
			return out, nil
		}
		return out, api.Errorf(api.CodeConflict, "image %s exists already on datastore %s (use it with --existing)", rel, name)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return out, fmt.Errorf("check image %s: %w", path, err)
	}
	if !imageSizeRE.MatchString(req.Size) {
		return out, badRequest("image size %q: want a number with an optional K, M, G or T (10G)", req.Size)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return out, fmt.Errorf("create folder for image %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return out, api.Errorf(api.CodeConflict, "image %s was just created by someone else", rel)
		}
		return out, fmt.Errorf("create image %s: %w", path, err)
	}
	f.Close()
	cctx, cancel := context.WithTimeout(ctx, imageCreateTimeout)
	defer cancel()
	if b, err := exec.CommandContext(cctx, "qemu-img", "create", "-q", "-f", format, path, req.Size).CombinedOutput(); err != nil {
		_ = os.Remove(path)
		return out, fmt.Errorf("qemu-img create %s: %w: %s", path, err, strings.TrimSpace(string(b)))
	}
	out.Created = true
	a.log.Info("disk image created", "datastore", name, "path", path, "size", req.Size, "format", format)
	return out, nil
}
