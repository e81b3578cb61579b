package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/clipbuild/clipbuild/pipeline"
)

func TestFallback(t *testing.T) {
	errPrimary := errors.New("registry unreachable")
	errSecondary := errors.New("disk full")
	tests := []struct {
		name         string
		primaryErr   error
		cancel       bool // the primary cancels the run's context before failing
		secondaryErr error
		wantRan      []string
		wantErr      error
		wantReason   string
	}{
		{"primary succeeds", nil, false, nil, []string{"v2"}, nil, ""},
		{"primary fails", errPrimary, false, nil, []string{"v2", "v1"}, nil, errPrimary.Error()},
		{"both fail", errPrimary, false, errSecondary, []string{"v2", "v1"}, errSecondary, errPrimary.Error()},
		{"ErrNoFallback", pipeline.ErrNoFallback, false, nil, []string{"v2"}, pipeline.ErrNoFallback, ""},
		{"wrapped ErrNoFallback", fmt.Errorf("Dockerfile line 3: %w", pipeline.ErrNoFallback), false, nil,
			[]string{"v2"}, pipeline.ErrNoFallback, ""},
		{"NoFallback", pipeline.NoFallback(errPrimary), false, nil, []string{"v2"}, errPrimary, ""},
		{"wrapped NoFallback", fmt.Errorf("building: %w", pipeline.NoFallback(errPrimary)), false, nil,
			[]string{"v2"}, pipeline.ErrNoFallback, ""},
		{"cancelled", fmt.Errorf("pushing: %w", context.Canceled), true, nil, []string{"v2"}, context.Canceled, ""},
		{"cancelled with another error", errPrimary, true, nil, []string{"v2"}, errPrimary, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, log := newJob(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ran []string
			primary := pipeline.Step("v2", func(context.Context, *pipeline.Job) error {
				ran = append(ran, "v2")
				if tt.cancel {
					cancel()
				}
				return tt.primaryErr
			})
			secondary := pipeline.Step("v1", func(context.Context, *pipeline.Job) error {
				ran = append(ran, "v1")
				return tt.secondaryErr
			})
			err := pipeline.Fallback(primary, secondary).Run(ctx, j)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Run() = %v, want %v", err, tt.wantErr)
			}
			if !slices.Equal(ran, tt.wantRan) {
				t.Errorf("stages ran %q, want %q", ran, tt.wantRan)
			}
			if got := j.Result.FallbackReason; got != tt.wantReason {
				t.Errorf("FallbackReason = %q, want %q", got, tt.wantReason)
			}
			fellBack := strings.Contains(log.String(), "falling back to v1")
			if want := len(tt.wantRan) == 2; fellBack != want {
				t.Errorf("log mentions falling back = %v, want %v; log:\n%s", fellBack, want, log)
			}
		})
	}
}

func TestNoFallback(t *testing.T) {
	if err := pipeline.NoFallback(nil); err != nil {
		t.Errorf("NoFallback(nil) = %v, want nil", err)
	}
	base := errors.New("Dockerfile: unknown instruction FORM")
	err := pipeline.NoFallback(base)
	if got, want := err.Error(), base.Error(); got != want {
		t.Errorf("NoFallback(err).Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, pipeline.ErrNoFallback) {
		t.Errorf("errors.Is(NoFallback(err), ErrNoFallback) = false, want true")
	}
	if !errors.Is(err, base) {
		t.Errorf("errors.Is(NoFallback(err), err) = false, want true")
	}
	if errors.Is(base, pipeline.ErrNoFallback) {
		t.Errorf("errors.Is(err, ErrNoFallback) = true for the unmarked error, want false")
	}
}

func TestFallbackName(t *testing.T) {
	f := pipeline.Fallback(pipeline.Sequence("v2"), pipeline.Sequence("v1"))
	if got, want := f.Name(), "v2|v1"; got != want {
		t.Errorf("Fallback().Name() = %q, want %q", got, want)
	}
}

// TestFallbackInSequenceTimesChains is how a build runs: the chains are
// sequences, so the steps of each chain that ran are timed.
func TestFallbackInSequenceTimesChains(t *testing.T) {
	j, _ := newJob(t)
	r := &recorder{}
	v2 := pipeline.Sequence("v2", r.step("push", nil), r.step("index", errors.New("index failed")))
	v1 := pipeline.Sequence("v1", r.step("export", nil), r.step("unpack", nil), r.step("archive", nil))
	res, err := pipeline.Run(context.Background(), j, pipeline.Sequence("build", r.step("build", nil), pipeline.Fallback(v2, v1)))
	if err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	want := []string{"build", "push", "index", "export", "unpack", "archive"}
	if got := stageNames(res); !slices.Equal(got, want) {
		t.Errorf("Result.Stages = %q, want %q", got, want)
	}
	if got, want := res.FallbackReason, "index failed"; got != want {
		t.Errorf("FallbackReason = %q, want %q", got, want)
	}
}

// TestFallbackOfStepsIsTimed: a Fallback is not timed itself ("its parts
// are"), so plain steps given to it must be timed as they run.
func TestFallbackOfStepsIsTimed(t *testing.T) {
	j, _ := newJob(t)
	r := &recorder{}
	res, err := pipeline.Run(context.Background(), j,
		pipeline.Sequence("build", r.step("build", nil), pipeline.Fallback(r.step("push", errStage), r.step("export", nil))))
	if err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	want := []string{"build", "push", "export"}
	if got := stageNames(res); !slices.Equal(got, want) {
		t.Errorf("Result.Stages = %q, want %q", got, want)
	}
}
