package fencing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vigil-ha/vigil/internal/model"
)

// DefaultSearchPath is where fence agents are looked up by name (Debian's
// fence-agents installs into /usr/sbin).
var DefaultSearchPath = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// metadataTimeout bounds action=metadata.
const metadataTimeout = 30 * time.Second

// Exit codes of the fence-agents status action.
const (
	StatusOn  = 0 // the plug is on
	StatusOff = 2 // the plug is off
)

// How a success was confirmed (Outcome.Confirmed).
const (
	ConfirmedStatusOff = "status off"
	ConfirmedNoStatus  = "off exit 0 (agent has no status)"
)

// Options configure a Runner.
type Options struct {
	// Logger receives a debug record per agent invocation and an info or
	// warning record per fencing. Parameters (passwords) are never logged.
	// Default: discard.
	Logger *slog.Logger
	// SearchPath is where agents given by name are looked up. Default
	// DefaultSearchPath.
	SearchPath []string
	// Rand draws the random part of a fencing delay (DelayMax). Default: a
	// randomly seeded source. Tests inject a fixed one.
	Rand rand.Source
}

// Runner runs fence agents. It caches each agent's metadata. A Runner is
// safe for concurrent use; fencing the same node twice at once is the
// caller's to prevent.
type Runner struct {
	opts Options
	log  *slog.Logger

	mu   sync.Mutex
	rand *rand.Rand           // guarded by mu
	meta map[string]*Metadata // by agent path; guarded by mu
}

// NewRunner returns a Runner.
func NewRunner(opts Options) *Runner {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.SearchPath == nil {
		opts.SearchPath = DefaultSearchPath
	}
	src := opts.Rand
	if src == nil {
		src = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	return &Runner{opts: opts, log: log, rand: rand.New(src), meta: map[string]*Metadata{}}
}

// Result is the outcome of one agent invocation.
type Result struct {
	// Code is the agent's exit code, or -1 when it did not exit on its
	// own (not found, timed out, canceled, killed by a signal).
	Code int
	// Output is the tail (at most MaxOutput bytes) of what the agent wrote
	// to stdout and stderr.
	Output   string
	Duration time.Duration
	// TimedOut: the agent ran past the device's Timeout and its process
	// group was killed; Err wraps ErrTimeout.
	TimedOut bool
	// Err says why there is no exit code, or is nil.
	Err error
}

// OK reports an exit code of 0.
func (r Result) OK() bool { return r.Err == nil && r.Code == 0 }

// PowerState is what a status action says of a plug.
type PowerState int

// Power states.
const (
	PowerUnknown PowerState = iota
	PowerOn
	PowerOff
)

// String names the state.
func (s PowerState) String() string {
	switch s {
	case PowerOn:
		return "on"
	case PowerOff:
		return "off"
	}
	return "unknown"
}

// resolve finds the agent's executable.
func (r *Runner) resolve(agent string) (string, error) {
	check := func(p string) error {
		st, err := os.Stat(p)
		switch {
		case err != nil:
			return err
		case !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0:
			return fmt.Errorf("%s is not an executable file", p)
		}
		return nil
	}
	if filepath.IsAbs(agent) {
		if err := check(agent); err != nil {
			return "", fmt.Errorf("%w: %w", ErrAgentNotFound, err)
		}
		return agent, nil
	}
	if agent == "" || strings.ContainsRune(agent, '/') || agent == "." || agent == ".." {
		return "", fmt.Errorf("%w: bad agent name %q", ErrAgentNotFound, agent)
	}
	for _, dir := range r.opts.SearchPath {
		p := filepath.Join(dir, agent)
		if check(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s (looked in %s)", ErrAgentNotFound, agent, strings.Join(r.opts.SearchPath, ", "))
}

// Metadata runs the agent's metadata action and parses it; the result is
// cached per agent.
func (r *Runner) Metadata(ctx context.Context, agent string) (*Metadata, error) {
	path, err := r.resolve(agent)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	m := r.meta[path]
	r.mu.Unlock()
	if m != nil {
		return m, nil
	}
	res := runGroup(ctx, path, "action=metadata\n", metadataTimeout, maxMetadata, true)
	if !res.OK() {
		if res.Err != nil {
			return nil, fmt.Errorf("fencing: %s metadata: %w", agent, res.Err)
		}
		return nil, fmt.Errorf("fencing: %s metadata: exit %d: %s", agent, res.Code, strings.TrimSpace(res.Output))
	}
	m, err = ParseMetadata([]byte(res.Output))
	if err != nil {
		return nil, fmt.Errorf("fencing: %s: %w", agent, err)
	}
	r.mu.Lock()
	r.meta[path] = m
	r.mu.Unlock()
	return m, nil
}

// Validate checks a device: its own configuration (Device.Validate), that
// its agent exists and describes itself, and its parameters against that
// description (unknown or missing required ones, bad values: a
// *ParamError), and that the agent can power off.
func (r *Runner) Validate(ctx context.Context, d Device) error {
	if err := d.Validate(); err != nil {
		return err
	}
	m, err := r.Metadata(ctx, d.Agent)
	if err != nil {
		return fmt.Errorf("fencing: device %s: %w", d.Name, err)
	}
	return m.check(d)
}

// Run runs one action of the device's agent for plug ("" for none), within
// d.Timeout. The device's Params, then action= and the plug (as plug= or
// port=, whichever the agent's metadata knows; none if it knows neither) are
// written as key=value lines on the agent's stdin. At the timeout the
// agent's process group is killed and Result.TimedOut is set.
func (r *Runner) Run(ctx context.Context, d Device, action, plug string) Result {
	return r.run(ctx, d, action, plug, "")
}

// Status asks the device for the power state of plug: exit 2 is off, exit
// 0 is on, anything else (or no answer) is unknown.
func (r *Runner) Status(ctx context.Context, d Device, plug string) (PowerState, Result) {
	res := r.Run(ctx, d, "status", plug)
	return powerState(res), res
}

// Monitor checks the device's health (action=monitor: can it reach the
// device?); a zero exit code means healthy.
func (r *Runner) Monitor(ctx context.Context, d Device) Result {
	return r.Run(ctx, d, "monitor", "")
}

func powerState(res Result) PowerState {
	switch {
	case res.Err != nil:
		return PowerUnknown
	case res.Code == StatusOff:
		return PowerOff
	case res.Code == StatusOn:
		return PowerOn
	}
	return PowerUnknown
}

// run is Run with nodename= (the node being fenced, as Pacemaker passes it;
// fencing.py ignores it where the agent does not use it).
func (r *Runner) run(ctx context.Context, d Device, action, plug, node string) Result {
	path, err := r.resolve(d.Agent)
	if err != nil {
		return Result{Code: -1, Err: err}
	}
	var b strings.Builder
	for _, k := range sortedKeys(d.Params) {
		fmt.Fprintf(&b, "%s=%s\n", k, d.Params[k])
	}
	// Vigil's own keys last: fence-agents keep the last value of a key.
	fmt.Fprintf(&b, "action=%s\n", action)
	if plug != "" {
		arg := "plug" // fencing.py takes plug and port as one option
		if m, err := r.Metadata(ctx, d.Agent); err == nil {
			arg = m.hostArg()
		}
		if arg != "" {
			fmt.Fprintf(&b, "%s=%s\n", arg, plug)
		}
	}
	if node != "" {
		fmt.Fprintf(&b, "nodename=%s\n", node)
	}
	res := runGroup(ctx, path, b.String(), d.timeout(), MaxOutput, false)
	r.log.Debug("fence agent", "device", d.Name, "agent", d.Agent, "action", action, "plug", plug,
		"code", res.Code, "duration", res.Duration, "timed_out", res.TimedOut, "err", res.Err)
	return res
}

// Attempt is one agent invocation made while fencing.
type Attempt struct {
	Level    int            `json:"level"` // 1 = first
	Device   string         `json:"device"`
	Action   string         `json:"action"`
	Plug     string         `json:"plug,omitempty"`
	Code     int            `json:"code"`
	Output   string         `json:"output,omitempty"`
	Duration model.Duration `json:"duration"`
	TimedOut bool           `json:"timed_out,omitempty"`
	// Err says why the attempt failed ("" when it did what was asked).
	Err string `json:"error,omitempty"`
}

// Outcome is the record of one fencing of a node (what the fencing history
// keeps).
type Outcome struct {
	// OK: the node is confirmed off. Nothing else proves it stopped.
	OK   bool   `json:"ok"`
	Node string `json:"node"`
	// Level is the level that succeeded (1 = first), 0 if none did.
	Level int `json:"level,omitempty"`
	// Devices are the devices of the level that succeeded.
	Devices []string `json:"devices,omitempty"`
	// Confirmed says how success was established: ConfirmedStatusOff, or
	// ConfirmedNoStatus for an agent without a status action; with several
	// devices that differ, "device: how" for each.
	Confirmed string `json:"confirmed,omitempty"`
	// Attempts lists every agent invocation, in order.
	Attempts []Attempt `json:"attempts,omitempty"`
	// Delay is the fencing delay that was waited before the first action.
	Delay    model.Duration `json:"delay,omitempty"`
	Duration model.Duration `json:"duration"`
	// Err says why the node was not fenced ("" when OK).
	Err string `json:"error,omitempty"`
}

// String summarizes the outcome on one line.
func (o Outcome) String() string {
	if o.OK {
		return fmt.Sprintf("%s fenced at level %d by %s (%s) in %s, %d attempt(s)",
			o.Node, o.Level, strings.Join(o.Devices, "+"), o.Confirmed, o.Duration, len(o.Attempts))
	}
	return fmt.Sprintf("%s NOT fenced: %s (%d attempt(s), %s)", o.Node, o.Err, len(o.Attempts), o.Duration)
}

// Fence puts node out of action, trying the levels Plan returned. The rules:
//
//  1. Delay first. Before the first action, Fence waits the largest Delay
//     of the first level's devices plus a random part of up to their largest
//     DelayMax (drawn from Options.Rand). The wait ends early, with no
//     fencing, if ctx ends.
//  2. Levels in order, first success wins. Level 1 is tried first; a level
//     succeeds when every one of its devices succeeds, and its first failing
//     device ends it (the rest are not tried) and Fence moves to the next
//     level.
//  3. Success is confirmed off. A device succeeds when action=off for its
//     plug exits 0 AND a following action=status exits 2 (off). A status of
//     0 (on) or anything else (unknown) is a failure: a command that merely
//     returned proves nothing where status can be asked. Only if the agent's
//     metadata lists no status action does off's exit 0 count, and Outcome
//     says so (ConfirmedNoStatus). If the metadata cannot be read, status is
//     asked.
//  4. Retries. A device that fails is tried again, up to its Retries
//     (default DefaultRetries), before its level fails.
//  5. Hangs are failures. An agent still running at the device's Timeout is
//     killed with its whole process group and the attempt counts as failed.
//  6. All or nothing. If every level fails (or ctx ends, or the plan is
//     empty), Outcome.OK is false, with every attempt listed: the node's
//     resources stay where they are (blocked), never started elsewhere.
func (r *Runner) Fence(ctx context.Context, node string, levels [][]DeviceRef, devices map[string]Device) Outcome {
	start := time.Now()
	o := Outcome{Node: node}
	finish := func() Outcome {
		o.Duration = model.Duration(time.Since(start))
		if o.OK {
			r.log.Info("fenced", "node", node, "level", o.Level, "devices", o.Devices,
				"confirmed", o.Confirmed, "duration", o.Duration.D())
		} else {
			r.log.Warn("fencing failed", "node", node, "err", o.Err, "attempts", len(o.Attempts),
				"duration", o.Duration.D())
		}
		return o
	}
	if len(levels) == 0 {
		o.Err = fmt.Sprintf("%v: %s", ErrNoDevice, node)
		return finish()
	}

	delay := r.delay(levels[0], devices)
	o.Delay = model.Duration(delay)
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			o.Err = fmt.Sprintf("canceled during the fencing delay: %v", context.Cause(ctx))
			return finish()
		}
	}

	var levelErrs []string
	for i, level := range levels {
		n := i + 1
		how := make([]string, 0, len(level))
		var failed error
		for _, ref := range level {
			confirmed, err := r.fenceDevice(ctx, &o, n, node, ref, devices)
			if err != nil {
				failed = fmt.Errorf("device %s: %w", ref.Device, err)
				break
			}
			how = append(how, confirmed)
		}
		if failed == nil {
			o.OK, o.Level, o.Confirmed = true, n, joinConfirmed(level, how)
			for _, ref := range level {
				o.Devices = append(o.Devices, ref.Device)
			}
			return finish()
		}
		levelErrs = append(levelErrs, fmt.Sprintf("level %d: %v", n, failed))
		if ctx.Err() != nil {
			break
		}
	}
	o.Err = strings.Join(levelErrs, "; ")
	if ctx.Err() != nil {
		o.Err += fmt.Sprintf("; stopped: %v", context.Cause(ctx))
	}
	return finish()
}

// fenceDevice powers off one device's plug, with retries, and returns how
// the off was confirmed.
func (r *Runner) fenceDevice(ctx context.Context, o *Outcome, level int, node string, ref DeviceRef, devices map[string]Device) (string, error) {
	d, ok := devices[ref.Device]
	if !ok {
		err := fmt.Errorf("%w: no such device", ErrInvalidTopology)
		o.Attempts = append(o.Attempts, Attempt{Level: level, Device: ref.Device, Action: "off", Plug: ref.Plug, Code: -1, Err: err.Error()})
		return "", err
	}
	var last error
	for try := 0; try <= d.retries(); try++ {
		if err := ctx.Err(); err != nil {
			return "", errors.Join(last, context.Cause(ctx))
		}
		how, err := r.offConfirmed(ctx, o, level, node, d, ref.Plug)
		if err == nil {
			return how, nil
		}
		last = err
	}
	return "", fmt.Errorf("%w (%d tries)", last, d.retries()+1)
}

// offConfirmed is one try: off, then status where the agent has it.
func (r *Runner) offConfirmed(ctx context.Context, o *Outcome, level int, node string, d Device, plug string) (string, error) {
	record := func(action string, res Result, err error) {
		a := Attempt{Level: level, Device: d.Name, Action: action, Plug: plug, Code: res.Code,
			Output: res.Output, Duration: model.Duration(res.Duration), TimedOut: res.TimedOut}
		if err != nil {
			a.Err = err.Error()
		}
		o.Attempts = append(o.Attempts, a)
	}
	res := r.run(ctx, d, "off", plug, node)
	if !res.OK() {
		err := res.Err
		if err == nil {
			err = fmt.Errorf("off exited %d", res.Code)
		}
		record("off", res, err)
		return "", err
	}
	record("off", res, nil)

	if m, err := r.Metadata(ctx, d.Agent); err == nil && !m.HasAction("status") {
		return ConfirmedNoStatus, nil
	}
	res = r.run(ctx, d, "status", plug, node)
	var err error
	switch st := powerState(res); {
	case st == PowerOff:
		record("status", res, nil)
		return ConfirmedStatusOff, nil
	case res.Err != nil:
		err = fmt.Errorf("%w: status: %w", ErrNotConfirmed, res.Err)
	case st == PowerOn:
		err = fmt.Errorf("%w: status says on (exit 0) after off", ErrNotConfirmed)
	default:
		err = fmt.Errorf("%w: status unknown (exit %d) after off", ErrNotConfirmed, res.Code)
	}
	record("status", res, err)
	return "", err
}

// delay returns the fencing delay of a plan whose first level is first.
func (r *Runner) delay(first []DeviceRef, devices map[string]Device) time.Duration {
	var base, spread time.Duration
	for _, ref := range first {
		d := devices[ref.Device]
		base = max(base, d.Delay.D())
		spread = max(spread, d.DelayMax.D())
	}
	if spread <= 0 {
		return base
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return base + time.Duration(r.rand.Int64N(int64(spread)+1))
}

func joinConfirmed(level []DeviceRef, how []string) string {
	same := true
	for _, h := range how {
		same = same && h == how[0]
	}
	if same {
		return how[0]
	}
	parts := make([]string, len(how))
	for i, h := range how {
		parts[i] = level[i].Device + ": " + h
	}
	return strings.Join(parts, ", ")
}
