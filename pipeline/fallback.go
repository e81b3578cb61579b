package pipeline

import (
	"context"
	"errors"
)

// ErrNoFallback marks a failure that the v1 chain cannot do better on, such
// as a broken Dockerfile: Fallback passes it through.
var ErrNoFallback = errors.New("no fallback")

// NoFallback marks err so that Fallback passes it through; its message is
// err's.
func NoFallback(err error) error {
	if err == nil {
		return nil
	}
	return noFallback{err}
}

type noFallback struct{ err error }

func (e noFallback) Error() string        { return e.err.Error() }
func (e noFallback) Unwrap() error        { return e.err }
func (e noFallback) Is(target error) bool { return target == ErrNoFallback }

type fallback struct {
	primary, secondary Stage
}

// Fallback runs primary and, if it fails for any reason but cancellation or
// ErrNoFallback, logs why and runs secondary instead. The reason is kept in
// the result's FallbackReason.
func Fallback(primary, secondary Stage) Stage {
	return fallback{primary, secondary}
}

func (fallback) composite() {}

func (f fallback) Name() string { return f.primary.Name() + "|" + f.secondary.Name() }

func (f fallback) Run(ctx context.Context, j *Job) error {
	err := runTimed(ctx, j, f.primary)
	if err == nil || ctx.Err() != nil || errors.Is(err, ErrNoFallback) {
		return err
	}
	j.Log.Warnf("falling back to %s: %v", f.secondary.Name(), err)
	j.Result.FallbackReason = err.Error()
	return runTimed(ctx, j, f.secondary)
}
