package agents

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ocfPath is the PATH given to OCF agents; they expect the system tools
// (ip, findif, crm_*) and nothing of the caller's environment.
const ocfPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// metaDataTimeout bounds the meta-data action.
const metaDataTimeout = 10 * time.Second

// maxMetaData bounds the meta-data XML kept (IPaddr2's is about 20 KB).
const maxMetaData = 1 << 20

// ocfAgent runs one OCF resource agent script, unmodified.
type ocfAgent struct {
	root, provider, typ string
	path                string // <root>/resource.d/<provider>/<type>
	dirs                ocfDirs
	log                 *slog.Logger

	mu   sync.Mutex
	meta *Metadata // cached after the first success
}

// ocfDirs are the per-node directories handed to OCF agents.
type ocfDirs struct {
	varRun string // HA_VARRUN: pid files, ocf_mkstatedir
	rscTmp string // HA_RSCTMP: per-resource state (Dummy's state file)
	lock   string // HA_VARLOCK
	tmp    string // our own output files
}

func (a *ocfAgent) spec() string { return "ocf:" + a.provider + ":" + a.typ }

// Exec runs the script with the action as its only argument.
func (a *ocfAgent) Exec(ctx context.Context, req Request) Result {
	if err := validResource(req.Resource); err != nil && req.Action != ActionMetaData {
		return Result{Code: CodeErrArgs, Err: fmt.Errorf("%w %q", err, req.Resource)}
	}
	env, err := a.env(req)
	if err != nil {
		return Result{Code: CodeErrArgs, Err: err}
	}
	ctx, cancel := withTimeout(ctx, req)
	defer cancel()
	cmd := exec.Command(a.path, req.Action)
	cmd.Env = env
	cmd.Dir = "/"
	limit, metaData := int64(MaxOutput), req.Action == ActionMetaData
	if metaData {
		limit = maxMetaData
	}
	res := runGroup(ctx, cmd, a.dirs.tmp, limit, metaData)
	a.log.Debug("ocf action", "agent", a.spec(), "resource", req.Resource, "action", req.Action,
		"code", res.Code, "duration", res.Duration, "err", res.Err)
	return res
}

// env builds the agent's environment, as Pacemaker's executor does.
func (a *ocfAgent) env(req Request) ([]string, error) {
	vars := map[string]string{
		"PATH":                  ocfPath,
		"LC_ALL":                "C",
		"OCF_ROOT":              a.root,
		"OCF_RA_VERSION_MAJOR":  "1",
		"OCF_RA_VERSION_MINOR":  "1",
		"OCF_RESOURCE_INSTANCE": req.Resource,
		"OCF_RESOURCE_TYPE":     a.typ,
		"OCF_RESOURCE_PROVIDER": a.provider,
		"HA_VARRUN":             a.dirs.varRun,
		"HA_RSCTMP":             a.dirs.rscTmp,
		"HA_VARLOCK":            a.dirs.lock,
		// NB: without this, ha_log also writes to syslog through logger(1).
		"HA_LOGFACILITY": "none",
	}
	if req.Resource == "" {
		delete(vars, "OCF_RESOURCE_INSTANCE")
	}
	for _, k := range sortedKeys(req.Params) {
		if !validEnvName(k) {
			return nil, fmt.Errorf("%w: bad parameter name %q", ErrInvalidParams, k)
		}
		vars["OCF_RESKEY_"+k] = req.Params[k]
	}
	meta := make(map[string]string, len(req.Meta)+5)
	for k, v := range req.Meta {
		meta[strings.ReplaceAll(k, "-", "_")] = v
	}
	meta["interval"] = strconv.FormatInt(req.Interval.Milliseconds(), 10)
	meta["timeout"] = strconv.FormatInt(timeoutOf(req).Milliseconds(), 10)
	if req.Node != "" {
		meta["on_node"] = req.Node
	}
	if req.MigrateSource != "" {
		meta["migrate_source"] = req.MigrateSource
	}
	if req.MigrateTarget != "" {
		meta["migrate_target"] = req.MigrateTarget
	}
	for _, k := range sortedKeys(meta) {
		if !validEnvName(k) {
			return nil, fmt.Errorf("%w: bad meta attribute name %q", ErrInvalidParams, k)
		}
		vars["OCF_RESKEY_CRM_meta_"+k] = meta[k]
	}
	env := make([]string, 0, len(vars))
	for _, k := range sortedKeys(vars) {
		if strings.ContainsRune(vars[k], 0) {
			return nil, fmt.Errorf("%w: NUL in value of %s", ErrInvalidParams, k)
		}
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

// validEnvName reports whether s can be part of a shell variable name.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Metadata runs the meta-data action once and caches the parsed result.
func (a *ocfAgent) Metadata(ctx context.Context) (*Metadata, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.meta != nil {
		return a.meta, nil
	}
	res := a.Exec(ctx, Request{Action: ActionMetaData, Timeout: metaDataTimeout})
	if res.Code != CodeOK {
		return nil, fmt.Errorf("agents: %s meta-data: %v (%v): %s", a.spec(), res.Code, res.Err, strings.TrimSpace(res.Output))
	}
	m, err := ParseMetadata([]byte(res.Output))
	if err != nil {
		return nil, fmt.Errorf("agents: %s: %w", a.spec(), err)
	}
	a.meta = m
	return m, nil
}

// newOCFDirs creates the per-node OCF directories under stateDir.
func newOCFDirs(stateDir string) (ocfDirs, error) {
	base := filepath.Join(stateDir, "ocf")
	d := ocfDirs{
		varRun: filepath.Join(base, "run"),
		rscTmp: filepath.Join(base, "rsctmp"),
		lock:   filepath.Join(base, "lock"),
		tmp:    filepath.Join(base, "tmp"),
	}
	for _, p := range []string{d.varRun, d.rscTmp, d.lock, d.tmp} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return ocfDirs{}, fmt.Errorf("agents: state dir: %w", err)
		}
	}
	return d, nil
}
