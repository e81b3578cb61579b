// Package harness runs clipbuild's benchmark suite: it generates an image,
// builds it once with buildah, then measures clipbuild's build path, pull
// path and lazy mounts against baselines and peers on the same bytes, and
// writes bench/results.json and bench/RESULTS.md.
package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/clipbuild/clipbuild/bench/imagegen"
)

// Options configure a run.
type Options struct {
	Scale     string
	Runs      int    // runs per measurement (at least 3)
	Clipbuild string // path to bin/clipbuild
	Self      string // path to the clipbench binary, for the peer helpers
	Dir       string // the bench directory: results are written there
	Busybox   string // a static busybox, copied into the images
	Versitygw string // the S3 gateway of the registry-on-S3 rows
	Command   string // the command to record as having run the suite
	Version   string // clipbuild's version to record; the default is its checkout's commit
	Keep      bool   // keep the work directory (for debugging)
	Log       io.Writer
}

// suite is the state of one run.
type suite struct {
	o    Options
	r    *runner
	work string
	// image is the buildah image, repo its registry repository name.
	image, repo string
	gen         imagegen.Context
	im          *Image
	// pull is the registry the pull path and the mounts read from, blobs
	// the image's layer blobs in its storage, lazyArchive the v2 archive
	// pulled from it.
	pull        *registry
	blobs       []string
	lazyArchive string
	// built is the registry of the last v2 build, which the lazy-built
	// rows read (the archive is $WORK/built-v2.clip).
	built *registry
	// sizes are the image's regular files and their sizes, as a mount
	// lists them.
	sizes    map[string]int64
	cleanups []func()
}

// Run runs the suite and writes its results into o.Dir.
func Run(ctx context.Context, o Options) (*Results, error) {
	spec, ok := imagegen.Specs[o.Scale]
	if !ok {
		return nil, fmt.Errorf("unknown scale %q (small, medium or large)", o.Scale)
	}
	if o.Runs < 3 {
		return nil, fmt.Errorf("--runs %d: at least 3 runs are needed for a median with min and max", o.Runs)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the suite needs root (buildah, FUSE mounts)")
	}
	res := &Results{Machine: machine(), Scale: o.Scale, Date: time.Now().UTC().Format(time.RFC3339),
		Command: o.Command, Runs: o.Runs, Software: software(filepath.Dir(filepath.Dir(o.Clipbuild)))}
	if o.Version != "" {
		res.Software.Clipbuild = o.Version
	}
	start := time.Now()
	s := &suite{o: o}
	defer s.cleanup()
	if err := s.setup(ctx, spec); err != nil {
		return nil, err
	}
	for _, phase := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"bud", s.bud},
		{"build path", s.buildPath},
		{"pull path", s.pullPath},
		{"lazy mount", s.lazyMounts},
		{"registry on S3", s.onS3},
	} {
		s.logf("== %s", phase.name)
		if err := phase.fn(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", phase.name, err)
		}
	}
	s.orderRows()
	res.Images = []Image{*s.im}
	res.WallSeconds = time.Since(start).Seconds()
	res.Machine.LoadAvgEnd = loadAvg()
	return res, nil
}

// setup makes the work directory and the image's build context.
func (s *suite) setup(ctx context.Context, spec imagegen.Spec) error {
	work, err := os.MkdirTemp("", "clipbuild-bench-")
	if err != nil {
		return err
	}
	s.work = work
	s.defer_(func() {
		if s.o.Keep {
			s.logf("kept %s", work)
			return
		}
		_ = os.RemoveAll(work)
	})
	s.r = &runner{work: work}
	if err := s.privateStorage(); err != nil {
		return err
	}
	if err := s.privateCache(); err != nil {
		return err
	}
	base := fmt.Sprintf("clipbuild-bench-%s-%d", spec.Name, os.Getpid())
	s.image, s.repo = "localhost/"+base+":latest", "bench/"+base
	ctxDir := filepath.Join(work, "context")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		return err
	}
	s.logf("== generating the %s image's context in %s", spec.Name, ctxDir)
	t := time.Now()
	if s.gen, err = imagegen.Write(spec, ctxDir, s.o.Busybox); err != nil {
		return fmt.Errorf("generating the image: %w", err)
	}
	s.logf("   %.1fs", time.Since(t).Seconds())
	s.im = &Image{Name: spec.Name, OneFile: s.gen.OneFile, Whiteout: s.gen.Whiteout, Dockerfile: s.gen.Dockerfile}
	return nil
}

// privateStorage points buildah and clipbuild (through
// CONTAINERS_STORAGE_CONF, which both read) at a containers-storage of the
// run's own under the work directory: the build starts with no cache, other
// users' images are never touched, and removing the directory removes every
// image and cached layer the run made.
func (s *suite) privateStorage() error {
	conf := filepath.Join(s.work, "storage.conf")
	text := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(s.work, "storage"), filepath.Join(s.work, "runroot"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return err
	}
	prev, had := os.LookupEnv("CONTAINERS_STORAGE_CONF")
	if err := os.Setenv("CONTAINERS_STORAGE_CONF", conf); err != nil {
		return err
	}
	s.defer_(func() {
		if _, err := s.r.plain(context.Background(), "buildah", "rm", "--all"); err != nil {
			s.logf("removing working containers: %v", err)
		}
		if _, err := s.r.plain(context.Background(), "buildah", "rmi", "--all", "--force"); err != nil {
			s.logf("removing images: %v", err)
		}
		unmountUnder(s.work)
		if had {
			_ = os.Setenv("CONTAINERS_STORAGE_CONF", prev)
		} else {
			_ = os.Unsetenv("CONTAINERS_STORAGE_CONF")
		}
	})
	return nil
}

// privateCache points XDG_CACHE_HOME, where clipbuild keeps its publish
// cache, at the work directory, so that a run never reads or fills the
// user's cache, and the v2 builds can start from an empty one.
func (s *suite) privateCache() error {
	prev, had := os.LookupEnv("XDG_CACHE_HOME")
	if err := os.Setenv("XDG_CACHE_HOME", filepath.Join(s.work, "xdg-cache")); err != nil {
		return err
	}
	s.defer_(func() {
		if had {
			_ = os.Setenv("XDG_CACHE_HOME", prev)
		} else {
			_ = os.Unsetenv("XDG_CACHE_HOME")
		}
	})
	return nil
}

// publishCache is clipbuild's publish cache under the private
// XDG_CACHE_HOME (stages.DefaultPublishCacheDir).
func (s *suite) publishCache() string {
	return filepath.Join(s.work, "xdg-cache", "clipbuild", "publish")
}

// unmountUnder detaches any mount left under dir (storage driver mounts),
// deepest first, so that dir can be removed.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// defer_ registers a cleanup, run newest first when the suite ends.
func (s *suite) defer_(fn func()) { s.cleanups = append(s.cleanups, fn) }

func (s *suite) cleanup() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
}

func (s *suite) logf(format string, args ...any) {
	if s.o.Log != nil {
		fmt.Fprintf(s.o.Log, format+"\n", args...)
	}
}

// argv expands a command template: $CLIPBUILD, $CLIPBENCH, $WORK, $IMAGE,
// $REPO and $PROXY inside arguments, an argument "$BLOBS" into the layer
// blob paths, and an argument "$BLOBURLS" into the URLs of the image's
// layer blobs (as buildah pushed them) through proxy. The template itself
// is what the report shows.
func (s *suite) argv(tmpl string, proxy string) []string {
	var layers []layer
	if s.im != nil {
		layers = s.im.Layers
	}
	return s.argvLayers(tmpl, proxy, layers)
}

// argvLayers is argv with "$BLOBURLS" naming the blobs of layers.
func (s *suite) argvLayers(tmpl, proxy string, layers []layer) []string {
	rep := strings.NewReplacer("$CLIPBUILD", s.o.Clipbuild, "$CLIPBENCH", s.o.Self, "$WORK", s.work,
		"$IMAGE", s.image, "$REPO", s.repo, "$PROXY", proxy)
	var out []string
	for _, a := range strings.Fields(tmpl) {
		switch a {
		case "$BLOBS":
			out = append(out, s.blobs...)
		case "$BLOBURLS":
			for _, l := range layers {
				out = append(out, fmt.Sprintf("http://%s/v2/%s/blobs/%s", proxy, s.repo, l.Digest))
			}
		default:
			out = append(out, rep.Replace(a))
		}
	}
	return out
}

// display is how a command template is shown in the results.
func display(tmpl string) string {
	return strings.NewReplacer("$CLIPBUILD", "bin/clipbuild", "$CLIPBENCH", "bench/out/clipbench").Replace(tmpl)
}

// clipbuildResult is the part of `clipbuild --json` the suite reads.
type clipbuildResult struct {
	ArchiveBytes   int64  `json:"archiveBytes"`
	ManifestDigest string `json:"manifestDigest"`
	ImageBytes     int64  `json:"imageBytes"`
	FallbackReason string `json:"fallbackReason"`
	ClipVersion    int    `json:"clipVersion"`
	Stages         []struct {
		Name    string  `json:"name"`
		Seconds float64 `json:"seconds"`
	} `json:"stages"`
}

func parseResult(out []byte, wantVersion int) (clipbuildResult, error) {
	var r clipbuildResult
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("reading clipbuild --json: %w: %q", err, out)
	}
	if r.ClipVersion != wantVersion {
		return r, fmt.Errorf("clipbuild made a v%d archive, want v%d (fallback: %s)", r.ClipVersion, wantVersion, r.FallbackReason)
	}
	return r, nil
}

// addStages records r's stages in smp, and the sum of those other than
// `build` (buildah bud, a layer-cache hit here) as the row's time.
func addStages(smp *samples, r clipbuildResult) {
	var sum float64
	for _, st := range r.Stages {
		smp.stage(st.Name, st.Seconds)
		if st.Name != "build" {
			sum += st.Seconds
		}
	}
	smp.seconds = append(smp.seconds, sum)
}

// rowOrder is the order of rows in the results: the issue's, then extras.
var rowOrder = []string{
	"v1-build-after-bud", "v2-build-after-bud", "v2-build-s3", "v2-rebuild-last-layer", "buildah-push-registry", "buildah-push-oci",
	"v2-pull-index", "v1-pull", "gzip-dc", "soci-ztoc", "estargz-convert", "fetch-inflate", "fetch-inflate-built",
	"lazy-one-file-cold", "lazy-built-one-file-cold", "lazy-s3-one-file-cold",
	"lazy-10pct-cold", "lazy-built-10pct-cold", "lazy-all-cold", "lazy-built-all-cold",
	"lazy-one-file-warm", "lazy-built-one-file-warm", "lazy-s3-one-file-warm", "lazy-10pct-warm", "lazy-built-10pct-warm",
	"lazy-all-warm", "lazy-built-all-warm", "lazy-all-warm-noprefetch", "lazy-built-all-warm-noprefetch", "lazy-all-reread",
	"lazy-10pct-trace", "lazy-built-10pct-trace",
	"native-10pct", "native-all", "buildah-bud",
}

func (s *suite) orderRows() {
	rank := map[string]int{}
	for i, n := range rowOrder {
		rank[n] = i
	}
	rows := s.im.Rows
	for i := 1; i < len(rows); i++ {
		for j := i; j > 0 && rank[rows[j].Name] < rank[rows[j-1].Name]; j-- {
			rows[j], rows[j-1] = rows[j-1], rows[j]
		}
	}
}

// dirBytes is the size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
