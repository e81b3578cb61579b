package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/stages"
)

// Result is the outcome of a run, as `--json` prints it. ImageBytes is the
// sum of the layer sizes as stored: compressed where the image sits in a
// registry (v2, pull), uncompressed for v1 builds. UncompressedBytes is the
// sum of the uncompressed layer sizes, always.
type Result struct {
	Archive           string        `json:"archive"`
	ClipVersion       int           `json:"clipVersion"`
	Image             string        `json:"image"`
	ImageRef          string        `json:"imageRef"`
	ManifestDigest    string        `json:"manifestDigest"`
	ArchiveBytes      int64         `json:"archiveBytes"`
	ImageBytes        int64         `json:"imageBytes"`
	UncompressedBytes int64         `json:"uncompressedBytes"`
	FallbackReason    string        `json:"fallbackReason"`
	Stages            []StageTiming `json:"stages"`
}

// StageTiming is how long one stage took.
type StageTiming struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Job is what stages hand each other: each reads what earlier stages set and
// adds its own. It lives for one run.
type Job struct {
	Log    *logrus.Entry
	Output string // where the archive goes

	Image  stages.Image // the image to archive, in containers-storage
	Ref    string       // the image to archive, in a registry (set by push or pull)
	Tag    string       // the immutable tag push used, if any
	Layout *stages.Layout

	Result Result

	scratch   *scratch
	cleanups  []func(context.Context) error
	heartbeat *heartbeat
}

// NewJob starts a job that writes its archive to output.
func NewJob(log *logrus.Entry, output string, opts ...JobOption) *Job {
	j := &Job{Log: log, Output: output, Result: Result{Stages: []StageTiming{}}}
	for _, opt := range opts {
		opt(j)
	}
	return j
}

// ScratchDir returns a new directory for intermediate files, removed when the
// run ends, successful or not. They all sit in the run's scratch tree in
// $TMPDIR; making it first removes the trees that killed runs left there.
func (j *Job) ScratchDir(name string) (string, error) {
	if j.scratch == nil {
		tmp := os.TempDir()
		removed, err := sweepScratch(tmp)
		for _, d := range removed {
			j.Log.Debugf("removed %s, left by a run that is gone", d)
		}
		if err != nil {
			j.Log.Warnf("removing scratch directories of runs that are gone: %v", err)
		}
		s, err := newScratch(tmp)
		if err != nil {
			return "", err
		}
		j.scratch = s
	}
	d, err := os.MkdirTemp(j.scratch.dir, name+"-")
	if err != nil {
		return "", fmt.Errorf("creating scratch directory: %w", err)
	}
	return d, nil
}

// Defer registers a cleanup to run when the job ends, newest first.
func (j *Job) Defer(fn func(context.Context) error) {
	j.cleanups = append(j.cleanups, fn)
}

// cleanupTimeout bounds the cleanup, which runs even after the run's context
// is cancelled (Ctrl-C must not skip it).
const cleanupTimeout = 30 * time.Second

func (j *Job) cleanup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var errs []error
	for i := len(j.cleanups) - 1; i >= 0; i-- {
		errs = append(errs, j.cleanups[i](ctx))
	}
	j.cleanups = nil
	if j.scratch != nil {
		errs = append(errs, j.scratch.remove())
		j.scratch = nil
	}
	return errors.Join(errs...)
}

// removeAll removes a scratch tree, first making directories writable: an
// unpacked rootfs may hold 0500 directories a non-root user cannot empty.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// Stage is one step of a run.
type Stage interface {
	Name() string
	Run(ctx context.Context, j *Job) error
}

type stageFunc struct {
	name string
	fn   func(context.Context, *Job) error
}

func (s stageFunc) Name() string                          { return s.name }
func (s stageFunc) Run(ctx context.Context, j *Job) error { return s.fn(ctx, j) }

// Step makes a Stage from a function.
func Step(name string, fn func(context.Context, *Job) error) Stage {
	return stageFunc{name, fn}
}

type sequence struct {
	name   string
	stages []Stage
}

// Sequence runs stages in order, timing each, and stops at the first error.
func Sequence(name string, stages ...Stage) Stage {
	return sequence{name, stages}
}

func (s sequence) Name() string { return s.name }
func (sequence) composite()     {}

// composite marks stages made of other stages: their parts are timed, not
// they themselves.
type composite interface{ composite() }

func (s sequence) Run(ctx context.Context, j *Job) error {
	for _, st := range s.stages {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := runTimed(ctx, j, st); err != nil {
			return err
		}
	}
	return nil
}

// runTimed runs st and records how long it took, with the job's heartbeat
// ticking meanwhile; a composite stage records its parts instead.
func runTimed(ctx context.Context, j *Job, st Stage) error {
	if _, nested := st.(composite); nested {
		return st.Run(ctx, j)
	}
	start := time.Now()
	j.Log.Debugf("stage %s", st.Name())
	stop := j.heartbeat.start(j.Log, st.Name(), start)
	err := st.Run(ctx, j)
	stop()
	j.Result.Stages = append(j.Result.Stages, StageTiming{Name: st.Name(), Seconds: time.Since(start).Seconds()})
	return err
}

// Run runs stage for j and then j's cleanup, whatever happened. An output
// that is an s3://BUCKET/KEY URL is written to a scratch file, uploaded when
// stage is done, and its result stored beside it as KEY.json.
func Run(ctx context.Context, j *Job, stage Stage) (Result, error) {
	s3out, err := j.prepareOutput()
	if err == nil {
		err = stage.Run(ctx, j)
	}
	if err == nil && s3out != nil {
		if err = runTimed(ctx, j, s3out.upload()); err == nil {
			err = s3out.putResult(ctx, j)
		}
	}
	if cerr := j.cleanup(ctx); cerr != nil {
		if err == nil {
			err = fmt.Errorf("cleaning up: %w", cerr)
		} else {
			j.Log.Warnf("cleaning up: %v", cerr)
		}
	}
	if err != nil {
		return Result{}, err
	}
	return j.Result, nil
}
