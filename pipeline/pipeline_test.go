package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/pipeline"
)

// newJob returns a job whose log goes to the returned buffer, and points
// TMPDIR (where scratch directories go) at a fresh directory.
func newJob(t *testing.T) (*pipeline.Job, *bytes.Buffer) {
	t.Helper()
	t.Setenv("TMPDIR", t.TempDir())
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.DebugLevel)
	return pipeline.NewJob(logrus.NewEntry(l), filepath.Join(t.TempDir(), "out.clip")), &buf
}

// recorder makes steps that note when they run.
type recorder struct{ ran []string }

func (r *recorder) step(name string, err error) pipeline.Stage {
	return pipeline.Step(name, func(context.Context, *pipeline.Job) error {
		r.ran = append(r.ran, name)
		return err
	})
}

func stageNames(res pipeline.Result) []string {
	var names []string
	for _, s := range res.Stages {
		names = append(names, s.Name)
	}
	return names
}

var (
	errStage   = errors.New("stage failed")
	errCleanup = errors.New("cleanup failed")
)

func TestSequenceRecordsOneTimingPerStageInOrder(t *testing.T) {
	j, _ := newJob(t)
	r := &recorder{}
	slow := pipeline.Step("slow", func(context.Context, *pipeline.Job) error {
		r.ran = append(r.ran, "slow")
		time.Sleep(20 * time.Millisecond)
		return nil
	})
	err := pipeline.Sequence("all", r.step("a", nil), slow, r.step("c", nil)).Run(context.Background(), j)
	if err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if got, want := r.ran, []string{"a", "slow", "c"}; !slices.Equal(got, want) {
		t.Errorf("stages ran %q, want %q", got, want)
	}
	if got, want := stageNames(j.Result), []string{"a", "slow", "c"}; !slices.Equal(got, want) {
		t.Errorf("Result.Stages = %q, want %q", got, want)
	}
	for _, st := range j.Result.Stages {
		if st.Seconds < 0 {
			t.Errorf("stage %s took %v s, want >= 0", st.Name, st.Seconds)
		}
	}
	if len(j.Result.Stages) == 3 {
		if s := j.Result.Stages[1].Seconds; s < 0.02 {
			t.Errorf("slow stage took %v s, want at least 0.02", s)
		}
	}
}

func TestSequenceStopsAtFirstError(t *testing.T) {
	j, _ := newJob(t)
	r := &recorder{}
	err := pipeline.Sequence("all", r.step("a", nil), r.step("b", errStage), r.step("c", nil)).Run(context.Background(), j)
	if !errors.Is(err, errStage) {
		t.Fatalf("Run() = %v, want %v", err, errStage)
	}
	if got, want := r.ran, []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("stages ran %q, want %q", got, want)
	}
	if got, want := stageNames(j.Result), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("Result.Stages = %q, want %q", got, want)
	}
}

func TestSequenceNestedTimesInnerStages(t *testing.T) {
	j, _ := newJob(t)
	r := &recorder{}
	inner := pipeline.Sequence("inner", r.step("b", nil), r.step("c", nil))
	err := pipeline.Sequence("outer", r.step("a", nil), inner, r.step("d", nil)).Run(context.Background(), j)
	if err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if got, want := stageNames(j.Result), []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("Result.Stages = %q, want %q", got, want)
	}
}

func TestSequenceStopsWhenCancelled(t *testing.T) {
	j, _ := newJob(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &recorder{}
	cancelling := pipeline.Step("cancel", func(context.Context, *pipeline.Job) error {
		r.ran = append(r.ran, "cancel")
		cancel()
		return nil
	})
	err := pipeline.Sequence("all", r.step("a", nil), cancelling, r.step("c", nil)).Run(ctx, j)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() = %v, want context.Canceled", err)
	}
	if got, want := r.ran, []string{"a", "cancel"}; !slices.Equal(got, want) {
		t.Errorf("stages ran %q, want %q", got, want)
	}
}

func TestSequenceName(t *testing.T) {
	if got, want := pipeline.Sequence("v1").Name(), "v1"; got != want {
		t.Errorf("Sequence(%q).Name() = %q, want %q", "v1", got, want)
	}
	if got, want := pipeline.Step("build", nil).Name(), "build"; got != want {
		t.Errorf("Step(%q).Name() = %q, want %q", "build", got, want)
	}
}

func TestRunReturnsResult(t *testing.T) {
	j, _ := newJob(t)
	st := pipeline.Step("archive", func(_ context.Context, j *pipeline.Job) error {
		j.Result.Archive = "x.clip"
		j.Result.ClipVersion = 1
		return nil
	})
	res, err := pipeline.Run(context.Background(), j, pipeline.Sequence("all", st))
	if err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if res.Archive != "x.clip" || res.ClipVersion != 1 {
		t.Errorf("Run() = {Archive:%q ClipVersion:%d}, want {Archive:%q ClipVersion:1}", res.Archive, res.ClipVersion, "x.clip")
	}
	if got, want := stageNames(res), []string{"archive"}; !slices.Equal(got, want) {
		t.Errorf("Run().Stages = %q, want %q", got, want)
	}
}

func TestRunCleansUp(t *testing.T) {
	tests := []struct {
		name    string
		stage   func(cancel context.CancelFunc) error
		wantErr error
	}{
		{"success", func(context.CancelFunc) error { return nil }, nil},
		{"stage fails", func(context.CancelFunc) error { return errStage }, errStage},
		{"cancelled", func(cancel context.CancelFunc) error { cancel(); return context.Canceled }, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, _ := newJob(t)
			tmp := os.Getenv("TMPDIR")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			var order []int
			var cleanupCtxErrs []error
			var scratch []string
			st := pipeline.Step("work", func(ctx context.Context, j *pipeline.Job) error {
				for i := 1; i <= 3; i++ {
					j.Defer(func(ctx context.Context) error {
						order = append(order, i)
						cleanupCtxErrs = append(cleanupCtxErrs, ctx.Err())
						return nil
					})
				}
				for _, name := range []string{"layout", "rootfs"} {
					d, err := j.ScratchDir(name)
					if err != nil {
						return err
					}
					scratch = append(scratch, d)
				}
				// A read-only directory with a file in it, as an unpacked
				// rootfs may have.
				ro := filepath.Join(scratch[1], "ro")
				if err := os.Mkdir(ro, 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(ro, "f"), []byte("x"), 0o400); err != nil {
					return err
				}
				if err := os.Chmod(ro, 0o500); err != nil {
					return err
				}
				return tt.stage(cancel)
			})
			_, err := pipeline.Run(ctx, j, pipeline.Sequence("all", st))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run() = %v, want %v", err, tt.wantErr)
			}
			if got, want := order, []int{3, 2, 1}; !slices.Equal(got, want) {
				t.Errorf("cleanups ran in order %v, want %v", got, want)
			}
			for i, e := range cleanupCtxErrs {
				if e != nil {
					t.Errorf("cleanup %d saw ctx.Err() = %v, want nil", 3-i, e)
				}
			}
			if len(scratch) != 2 {
				t.Fatalf("made %d scratch dirs, want 2", len(scratch))
			}
			if filepath.Dir(scratch[0]) != filepath.Dir(scratch[1]) || filepath.Dir(filepath.Dir(scratch[0])) != tmp {
				t.Errorf("scratch dirs %q are not in one directory under TMPDIR %s", scratch, tmp)
			}
			for _, d := range append(scratch, filepath.Dir(scratch[0])) {
				if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("scratch dir %s: Lstat = %v, want not exist", d, err)
				}
			}
			left, err := os.ReadDir(tmp)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != 0 {
				t.Errorf("TMPDIR holds %d entries after Run, want 0", len(left))
			}
		})
	}
}

func TestRunCleanupHasDeadline(t *testing.T) {
	j, _ := newJob(t)
	var deadline time.Time
	var ok bool
	j.Defer(func(ctx context.Context) error {
		deadline, ok = ctx.Deadline()
		return nil
	})
	if _, err := pipeline.Run(context.Background(), j, pipeline.Sequence("none")); err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	if !ok {
		t.Fatal("cleanup context has no deadline, want one")
	}
	if d := time.Until(deadline); d <= 0 || d > time.Minute {
		t.Errorf("cleanup deadline in %v, want within a minute", d)
	}
}

func TestRunCleanupError(t *testing.T) {
	t.Run("stage succeeds", func(t *testing.T) {
		j, _ := newJob(t)
		j.Defer(func(context.Context) error { return errCleanup })
		res, err := pipeline.Run(context.Background(), j, pipeline.Step("ok", func(_ context.Context, j *pipeline.Job) error {
			j.Result.Archive = "x.clip"
			return nil
		}))
		if !errors.Is(err, errCleanup) {
			t.Fatalf("Run() = %v, want %v", err, errCleanup)
		}
		if d := cmp.Diff(pipeline.Result{}, res); d != "" {
			t.Errorf("Run() result on error (-want +got):\n%s", d)
		}
	})
	t.Run("stage fails", func(t *testing.T) {
		j, log := newJob(t)
		j.Defer(func(context.Context) error { return errCleanup })
		_, err := pipeline.Run(context.Background(), j, pipeline.Step("bad", func(context.Context, *pipeline.Job) error { return errStage }))
		if !errors.Is(err, errStage) {
			t.Fatalf("Run() = %v, want %v", err, errStage)
		}
		if !bytes.Contains(log.Bytes(), []byte(errCleanup.Error())) {
			t.Errorf("log = %q, want it to mention %q", log.String(), errCleanup)
		}
	})
	t.Run("every cleanup runs", func(t *testing.T) {
		j, _ := newJob(t)
		ran := 0
		j.Defer(func(context.Context) error { ran++; return nil })
		j.Defer(func(context.Context) error { ran++; return errCleanup })
		j.Defer(func(context.Context) error { ran++; return nil })
		if _, err := pipeline.Run(context.Background(), j, pipeline.Sequence("none")); !errors.Is(err, errCleanup) {
			t.Fatalf("Run() = %v, want %v", err, errCleanup)
		}
		if ran != 3 {
			t.Errorf("%d cleanups ran, want 3", ran)
		}
	})
}
