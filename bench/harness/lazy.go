package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/clipbuild/clipbuild/bench/proxy"
)

// Mount command templates (see suite.argv). Every mount writes its
// statistics; a cold read first empties $WORK/spans (the span cache and
// the read traces) and $WORK/cache (layers read whole).
const (
	mountFlags = " $WORK/mnt --cache-dir $WORK/cache --span-cache-dir $WORK/spans --stats $WORK/mount-stats.json"
	// cmdMount mounts the archive `clipbuild pull` indexed from buildah's
	// push (plain gzip layers).
	cmdMount = "$CLIPBUILD mount $WORK/pull-v2.clip" + mountFlags
	// cmdMountBuilt mounts the archive of the last `v2-build-after-bud`
	// run (clipbuild's seekable gzip layers, in that run's registry).
	cmdMountBuilt = "$CLIPBUILD mount $WORK/built-v2.clip" + mountFlags
	// cmdMountS3 mounts the archive of the last `v2-build-s3` run.
	cmdMountS3 = "$CLIPBUILD mount $WORK/s3-v2.clip" + mountFlags
	// noPrefetch is added to a mount command for the -noprefetch rows.
	noPrefetch = " --no-prefetch"
)

// cmdNative is how the native rows reach the image's tree: `buildah mount`
// of a working container of the built image (overlay, in the run's own
// containers-storage).
const cmdNative = "buildah from --pull=never --name $CTR $IMAGE; buildah mount $CTR"

// lazyTarget is an archive the lazy rows mount, and the registry it names.
type lazyTarget struct {
	prefix string // of the rows' names: <prefix>-<set>-cold, ...
	tmpl   string // the mount command
	reg    *registry
	// s3 is the proxy in front of the S3 gateway, for a registry on S3.
	s3 *proxy.Proxy
}

// readSet is a set of files read through a mount.
type readSet struct {
	name  string
	files []string // paths inside the image, read in this order
}

// readResult is one read of a set through a fresh mount.
type readResult struct {
	ttfb, total time.Duration
	// start is from starting the mount command to the end of the reads.
	start time.Duration
	// reread is a second read of the same files on the same mount, when
	// asked for: the kernel's page cache serves it.
	reread time.Duration
	// fetched is the bytes the registry sent (through its proxy) from
	// the mount's start to its exit, s3Fetched those the S3 gateway sent.
	fetched, s3Fetched int64
	cacheBytes         int64 // span cache and whole layers afterwards
	layerBytes         int64 // compressed size of the layers cached whole
	peakRSS            int64 // of `clipbuild mount`
	stats              *MountStats
}

// lazyMounts reads one file, every tenth file and every file, each on a
// fresh mount with empty caches (cold) and then on a fresh mount with the
// caches the cold read filled (warm), of the pulled archive and of the
// built one side by side; the warm read of every file of the pulled
// archive is read a second time on its mount. Every tenth file is also
// read on a fresh mount with an empty span cache but the read trace the
// warm mount left (trace). The last two sets are then read from the
// image's own tree (`buildah mount`), the native floor for the warm rows.
func (s *suite) lazyMounts(ctx context.Context) error {
	mnt := filepath.Join(s.work, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	s.defer_(func() { unmountIfMounted(mnt) })
	files, err := s.listFiles(ctx)
	if err != nil {
		return err
	}
	s.im.Files = len(files)
	for _, n := range s.sizes {
		s.im.FileBytes += n
	}
	var tenth []string
	for i := 0; i < len(files); i += 10 {
		tenth = append(tenth, files[i])
	}
	sets := []readSet{
		{"one-file", []string{s.gen.OneFile}},
		{"10pct", tenth},
		{"all", files},
	}
	targets := []lazyTarget{
		{prefix: "lazy", tmpl: cmdMount, reg: s.pull},
		{prefix: "lazy-built", tmpl: cmdMountBuilt, reg: s.built},
	}
	for _, set := range sets {
		for _, t := range targets {
			reread := set.name == "all" && t.prefix == "lazy"
			if err := s.lazySet(ctx, t, set, reread, set.name == "10pct"); err != nil {
				return err
			}
		}
	}
	return s.nativeReads(ctx, sets[1:])
}

// nativeReads reads each set from the image's tree as `buildah mount`
// shows it, with the page cache warm (one unmeasured read first, as the
// warm mount rows read layer data the cold read left in the page cache).
func (s *suite) nativeReads(ctx context.Context, sets []readSet) error {
	ctr := fmt.Sprintf("clipbuild-bench-native-%d", os.Getpid())
	if _, err := s.r.plain(ctx, "buildah", "from", "--pull=never", "--name", ctr, s.image); err != nil {
		return err
	}
	defer func() {
		// rm unmounts the container's tree too.
		if _, err := s.r.plain(context.Background(), "buildah", "rm", ctr); err != nil {
			s.logf("removing %s: %v", ctr, err)
		}
	}()
	out, err := s.r.plain(ctx, "buildah", "mount", ctr)
	if err != nil {
		return err
	}
	root := strings.TrimSpace(string(out))
	for _, set := range sets {
		smp := newSamples("native-"+set.name, cmdNative)
		smp.filesRead = len(set.files)
		if _, _, err := readFiles(root, set.files); err != nil {
			return fmt.Errorf("%s: %w", smp.name, err)
		}
		for i := 0; i < s.o.Runs; i++ {
			ttfb, total, err := readFiles(root, set.files)
			if err != nil {
				return fmt.Errorf("%s: %w", smp.name, err)
			}
			smp.time(total)
			smp.ttfb = append(smp.ttfb, ttfb.Seconds())
			s.logf("   %s %d: first byte %.3fs, all %.2fs", smp.name, i+1, ttfb.Seconds(), total.Seconds())
		}
		s.im.Rows = append(s.im.Rows, smp.row())
	}
	return nil
}

// lazySet measures one read set through t's archive, cold and warm, Runs
// times each; with reread, the warm mount reads the set twice; with
// trace, a third mount reads it with an empty span cache but the trace
// the warm mount wrote.
func (s *suite) lazySet(ctx context.Context, t lazyTarget, set readSet, reread, trace bool) error {
	name := t.prefix + "-" + set.name
	cold := newSamples(name+"-cold", display(t.tmpl))
	warm := newSamples(name+"-warm", display(t.tmpl))
	all := []*samples{cold, warm}
	// The reread of every file shows what the kernel keeps: the same mount,
	// its page cache and entries filled by the warm read.
	var rr, tr, np *samples
	if reread {
		rr = newSamples(name+"-reread", display(t.tmpl))
		all = append(all, rr)
	}
	// Every file warm again with --no-prefetch: what a fresh mount costs
	// without the kernel prefill of the files the last mount read.
	if set.name == "all" {
		np = newSamples(name+"-warm-noprefetch", display(t.tmpl+noPrefetch))
		all = append(all, np)
	}
	if trace {
		tr = newSamples(name+"-trace", display(t.tmpl))
		all = append(all, tr)
	}
	var bytesRead int64
	for _, f := range set.files {
		bytesRead += s.sizes[f]
	}
	for _, smp := range all {
		smp.filesRead = len(set.files)
		smp.bytesRead = []int64{bytesRead}
	}
	spans, cache := filepath.Join(s.work, "spans"), filepath.Join(s.work, "cache")
	for i := 0; i < s.o.Runs; i++ {
		steps := []mountStep{{cold, []string{spans, cache}}, {warm, nil}}
		if np != nil {
			steps = append(steps, mountStep{np, nil})
		}
		if tr != nil {
			// The span cache goes, the trace in spans/traces stays.
			steps = append(steps, mountStep{tr, []string{filepath.Join(spans, "sha256"), cache}})
		}
		for _, st := range steps {
			for _, d := range st.empty {
				if err := os.RemoveAll(d); err != nil {
					return err
				}
			}
			mt := t
			if st.smp == np {
				mt.tmpl += noPrefetch
			}
			r, err := s.mountRead(ctx, mt, set.files, st.smp == warm && rr != nil)
			if err != nil {
				return fmt.Errorf("%s: %w", st.smp.name, err)
			}
			st.smp.read(r)
			s.logf("   %s %d: first byte %.3fs, all %.2fs (%.2fs from the mount's start), %d bytes fetched", st.smp.name, i+1, r.ttfb.Seconds(), r.total.Seconds(), r.start.Seconds(), r.fetched+r.s3Fetched)
			if st.smp == warm && rr != nil {
				rr.time(r.reread)
				s.logf("   %s %d: all %.2fs", rr.name, i+1, r.reread.Seconds())
			}
		}
	}
	_ = os.RemoveAll(spans)
	_ = os.RemoveAll(cache)
	for _, smp := range all {
		s.im.Rows = append(s.im.Rows, smp.row())
	}
	return nil
}

// mountStep is one mount of a run of lazySet: its row, and the
// directories emptied before it.
type mountStep struct {
	smp   *samples
	empty []string
}

// read records one read through a mount.
func (s *samples) read(r readResult) {
	s.seconds = append(s.seconds, r.total.Seconds())
	s.ttfb = append(s.ttfb, r.ttfb.Seconds())
	s.start = append(s.start, r.start.Seconds())
	s.fetched = append(s.fetched, r.fetched)
	s.cache = append(s.cache, r.cacheBytes)
	s.layer = append(s.layer, r.layerBytes)
	s.rss = append(s.rss, r.peakRSS)
	s.mount = append(s.mount, r.stats)
	if r.s3Fetched > 0 {
		s.s3Fetched = append(s.s3Fetched, r.s3Fetched)
	}
}

// mountRead mounts t's archive (with $WORK/spans and $WORK/cache as they
// are), reads files in order, again if reread, and unmounts. The reads
// are timed from the first open, and from the mount command's start; the
// bytes are counted from the mount command's start to its exit.
func (s *suite) mountRead(ctx context.Context, t lazyTarget, files []string, reread bool) (readResult, error) {
	var r readResult
	mnt := filepath.Join(s.work, "mnt")
	statsPath := filepath.Join(s.work, "mount-stats.json")
	if err := os.Remove(statsPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r, err
	}
	t.reg.Proxy.Reset()
	if t.s3 != nil {
		t.s3.Reset()
	}
	began := time.Now()
	bg, err := s.r.start(s.argv(t.tmpl, ""))
	if err != nil {
		return r, err
	}
	if err := waitMounted(ctx, mnt, bg); err != nil {
		_, _ = bg.stop(15 * time.Second)
		unmountIfMounted(mnt)
		return r, err
	}
	r.ttfb, r.total, err = readFiles(mnt, files)
	r.start = time.Since(began)
	if err == nil && reread {
		_, r.reread, err = readFiles(mnt, files)
	}
	rss, serr := bg.stop(30 * time.Second)
	unmountIfMounted(mnt)
	r.fetched = t.reg.Proxy.Reset().Fetched
	if t.s3 != nil {
		r.s3Fetched = t.s3.Reset().Fetched
	}
	if err = errors.Join(err, serr); err != nil {
		return r, err
	}
	r.peakRSS = rss
	if r.stats, err = readMountStats(statsPath); err != nil {
		return r, err
	}
	cache := filepath.Join(s.work, "cache")
	r.cacheBytes = dirBytes(cache) + dirBytes(filepath.Join(s.work, "spans", "sha256"))
	r.layerBytes = s.cachedLayerBytes(cache)
	return r, nil
}

// readMountStats reads `clipbuild mount --stats`; a mount that keeps no
// statistics (every layer read whole) writes none, and that is nil.
func readMountStats(path string) (*MountStats, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m MountStats
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return &m, nil
}

// readFiles reads every file to the end, in order, and returns the time to
// the first byte of the first file and to the end of the last.
func readFiles(root string, files []string) (ttfb, total time.Duration, err error) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	for i, p := range files {
		f, err := os.Open(filepath.Join(root, p))
		if err != nil {
			return 0, 0, err
		}
		for first := i == 0; ; first = false {
			n, rerr := f.Read(buf)
			if first {
				ttfb = time.Since(start)
			}
			if rerr == io.EOF || (rerr == nil && n == 0) {
				break
			}
			if rerr != nil {
				f.Close()
				return 0, 0, fmt.Errorf("reading %s: %w", p, rerr)
			}
		}
		f.Close()
	}
	return ttfb, time.Since(start), nil
}

// listFiles lists the image's regular files through a mount of its own
// (metadata only: listing reads no file data), and records their sizes in
// s.sizes.
func (s *suite) listFiles(ctx context.Context) ([]string, error) {
	mnt := filepath.Join(s.work, "mnt")
	bg, err := s.r.start(s.argv(cmdMount, ""))
	if err != nil {
		return nil, err
	}
	defer func() {
		_, _ = bg.stop(30 * time.Second)
		unmountIfMounted(mnt)
		_ = os.RemoveAll(filepath.Join(s.work, "cache"))
		_ = os.RemoveAll(filepath.Join(s.work, "spans"))
	}()
	if err := waitMounted(ctx, mnt, bg); err != nil {
		return nil, err
	}
	var files []string
	s.sizes = map[string]int64{}
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			f := strings.TrimPrefix(p, mnt)
			files = append(files, f)
			s.sizes[f] = fi.Size()
		}
		return nil
	})
	slices.Sort(files)
	if !slices.Contains(files, s.gen.OneFile) {
		return nil, fmt.Errorf("the mount has no %s", s.gen.OneFile)
	}
	if s.gen.Whiteout != "" && slices.Contains(files, s.gen.Whiteout) {
		return nil, fmt.Errorf("%s was deleted by a later layer but the mount shows it", s.gen.Whiteout)
	}
	return files, err
}

// cachedLayerBytes is the compressed size of the layers in the cache.
func (s *suite) cachedLayerBytes(cache string) int64 {
	var n int64
	for _, l := range s.im.Layers {
		if _, err := os.Stat(filepath.Join(cache, "sha256", strings.TrimPrefix(l.Digest, "sha256:")+".tar")); err == nil {
			n += l.Size
		}
	}
	return n
}

// waitMounted waits until mnt is a mount point, or bg has exited.
func waitMounted(ctx context.Context, mnt string, bg *background) error {
	deadline := time.Now().Add(30 * time.Second)
	for !isMountPoint(mnt) {
		if done, err := bg.exited(); done {
			return fmt.Errorf("clipbuild mount exited: %v%s", err, tail(bg.log))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not mounted in 30s%s", mnt, tail(bg.log))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// isMountPoint reports whether p is on another device than its parent.
func isMountPoint(p string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(p, &a) != nil || syscall.Stat(filepath.Dir(p), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

// unmountIfMounted detaches a mount left behind.
func unmountIfMounted(mnt string) {
	if isMountPoint(mnt) {
		_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
	}
}
