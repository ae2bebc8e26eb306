package agents

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// dummyAgent is vigil:dummy: a resource that is "running" while its state
// file StateDir/dummy/<resource>.state exists. For tests.
type dummyAgent struct {
	dir string
	log *slog.Logger
}

func newDummy(dir string, log *slog.Logger) (*dummyAgent, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("agents: state dir: %w", err)
	}
	return &dummyAgent{dir: dir, log: log}, nil
}

var dummyMeta = &Metadata{
	Name:       TypeDummy,
	Version:    "1.0",
	OCFVersion: "1.1",
	ShortDesc:  "Test resource that keeps its state in a file",
	LongDesc: "Built-in test agent: start creates StateDir/dummy/<resource>.state, " +
		"stop removes it, monitor reports whether it exists.",
	Params: []Param{
		{Name: "fake", Type: "string", Default: "dummy", ShortDesc: "Any value; recorded in the state file"},
		{Name: "op_sleep", Type: "string", Default: "0", ShortDesc: "Time every start, stop and monitor takes (to test timeouts), e.g. 2s"},
	},
	Actions: []ActionSpec{
		{Name: ActionStart, Timeout: 20 * time.Second},
		{Name: ActionStop, Timeout: 20 * time.Second},
		{Name: ActionMonitor, Timeout: 20 * time.Second, Interval: 10 * time.Second},
		{Name: ActionMigrateTo, Timeout: 20 * time.Second},
		{Name: ActionMigrateFrom, Timeout: 20 * time.Second},
		{Name: ActionMetaData, Timeout: 5 * time.Second},
		{Name: ActionValidateAll, Timeout: 20 * time.Second},
	},
}

func (a *dummyAgent) meta() *Metadata { return dummyMeta }

// Metadata returns the built-in meta-data.
func (a *dummyAgent) Metadata(context.Context) (*Metadata, error) { return dummyMeta, nil }

// Exec runs one action.
func (a *dummyAgent) Exec(ctx context.Context, req Request) Result {
	return runBuiltin(ctx, a, req)
}

func (a *dummyAgent) statePath(resource string) string {
	return filepath.Join(a.dir, resource+".state")
}

func (a *dummyAgent) action(ctx context.Context, req Request) (Result, bool) {
	switch req.Action {
	case ActionStart, ActionStop, ActionMonitor, ActionMigrateTo, ActionMigrateFrom:
	default:
		return Result{}, false
	}
	sleep, err := durationParam(req.Params, "op_sleep")
	if err != nil {
		return Result{Code: CodeErrConfigured, Err: err}, true
	}
	if !sleepCtx(ctx, sleep) {
		return ctxResult(ctx), true
	}
	path := a.statePath(req.Resource)
	switch req.Action {
	case ActionStart, ActionMigrateFrom:
		fake := req.Params["fake"]
		if err := os.WriteFile(path, []byte("fake="+fake+"\n"), 0o644); err != nil {
			return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:dummy start: %w", err)}, true
		}
	case ActionStop, ActionMigrateTo:
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:dummy stop: %w", err)}, true
		}
	case ActionMonitor:
		if _, err := os.Stat(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return Result{Code: CodeNotRunning}, true
			}
			return Result{Code: CodeErrGeneric, Err: fmt.Errorf("agents: vigil:dummy monitor: %w", err)}, true
		}
	}
	return Result{Code: CodeOK}, true
}
