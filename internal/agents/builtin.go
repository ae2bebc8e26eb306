package agents

import (
	"context"
	"fmt"
	"time"
)

// builtin is what a built-in agent implements; runBuiltin adds what every
// action shares (timeout, meta-data, validate-all, duration).
type builtin interface {
	meta() *Metadata
	// action runs one action under ctx, which carries the request's
	// timeout. It returns false for an action it does not implement.
	action(ctx context.Context, req Request) (res Result, implemented bool)
}

func runBuiltin(ctx context.Context, b builtin, req Request) Result {
	start := time.Now()
	res := runBuiltin1(ctx, b, req)
	res.Duration = time.Since(start)
	return res
}

func runBuiltin1(ctx context.Context, b builtin, req Request) Result {
	m := b.meta()
	switch req.Action {
	case ActionMetaData:
		return Result{Code: CodeOK, Output: string(m.xml())}
	case ActionValidateAll:
		if err := m.Validate(req.Params); err != nil {
			return Result{Code: CodeErrConfigured, Output: err.Error(), Err: err}
		}
		return Result{Code: CodeOK}
	}
	if err := validResource(req.Resource); err != nil {
		return Result{Code: CodeErrArgs, Err: fmt.Errorf("%w %q", err, req.Resource)}
	}
	ctx, cancel := withTimeout(ctx, req)
	defer cancel()
	if ctx.Err() != nil {
		return Result{Code: codeOf(ctx), Err: context.Cause(ctx)}
	}
	res, ok := b.action(ctx, req)
	if !ok {
		return Result{Code: CodeErrUnimplemented, Err: fmt.Errorf("agents: vigil:%s: action %q not implemented", m.Name, req.Action)}
	}
	return res
}

// sleepCtx sleeps for d or until ctx is done; it returns false if ctx
// ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ctxResult is the result of an action interrupted by its context.
func ctxResult(ctx context.Context) Result {
	return Result{Code: codeOf(ctx), Err: context.Cause(ctx)}
}

// durationParam parses a duration parameter: a Go duration ("1.5s") or an
// OCF one (a bare number of seconds, "500ms", "2min").
func durationParam(params map[string]string, name string) (time.Duration, error) {
	v := params[name]
	if v == "" {
		return 0, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return d, nil
	}
	if d := ParseOCFDuration(v); d > 0 || v == "0" {
		return d, nil
	}
	return 0, fmt.Errorf("%w: %s: %q is not a duration", ErrInvalidParams, name, v)
}
