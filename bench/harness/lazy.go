package harness

import (
	"context"
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
)

// cmdMount mounts the pulled v2 archive; $WORK/cache is emptied before
// every cold read.
const cmdMount = "$CLIPBUILD mount $WORK/pull-v2.clip $WORK/mnt --cache-dir $WORK/cache"

// cmdNative is how the native rows reach the image's tree: `buildah mount`
// of a working container of the built image (overlay, in the run's own
// containers-storage).
const cmdNative = "buildah from --pull=never --name $CTR $IMAGE; buildah mount $CTR"

// readSet is a set of files read through a mount.
type readSet struct {
	name  string
	files []string // paths inside the image, read in this order
}

// readResult is one read of a set through a fresh mount.
type readResult struct {
	ttfb, total time.Duration
	// reread is a second read of the same files on the same mount, when
	// asked for: the kernel's page cache serves it.
	reread     time.Duration
	fetched    int64 // bytes the registry sent (through the proxy)
	cacheBytes int64 // uncompressed layer data in the cache afterwards
	layerBytes int64 // compressed size of the layers in the cache
	peakRSS    int64 // of `clipbuild mount`
}

// lazyMounts reads one file, every tenth file and every file, each on a
// fresh mount with an empty cache (cold) and then on a fresh mount with the
// cache the cold read filled (warm); the warm read of every file is read a
// second time on its mount. The last two sets are then read from the
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
	var tenth []string
	for i := 0; i < len(files); i += 10 {
		tenth = append(tenth, files[i])
	}
	sets := []readSet{
		{"one-file", []string{s.gen.OneFile}},
		{"10pct", tenth},
		{"all", files},
	}
	for _, set := range sets {
		if err := s.lazySet(ctx, set); err != nil {
			return err
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

// lazySet measures one read set, cold and warm, Runs times each.
func (s *suite) lazySet(ctx context.Context, set readSet) error {
	cold := newSamples("lazy-"+set.name+"-cold", display(cmdMount))
	warm := newSamples("lazy-"+set.name+"-warm", display(cmdMount))
	cold.filesRead, warm.filesRead = len(set.files), len(set.files)
	// The reread of every file shows what the kernel keeps: the same mount,
	// its page cache and entries filled by the warm read.
	var reread *samples
	if set.name == "all" {
		reread = newSamples("lazy-all-reread", display(cmdMount))
		reread.filesRead = len(set.files)
	}
	cache := filepath.Join(s.work, "cache")
	for i := 0; i < s.o.Runs; i++ {
		if err := os.RemoveAll(cache); err != nil {
			return err
		}
		for _, smp := range []*samples{cold, warm} {
			r, err := s.readThroughMount(ctx, set.files, smp == warm && reread != nil)
			if err != nil {
				return fmt.Errorf("%s: %w", smp.name, err)
			}
			smp.seconds = append(smp.seconds, r.total.Seconds())
			smp.ttfb = append(smp.ttfb, r.ttfb.Seconds())
			smp.fetched = append(smp.fetched, r.fetched)
			smp.cache = append(smp.cache, r.cacheBytes)
			smp.layer = append(smp.layer, r.layerBytes)
			smp.rss = append(smp.rss, r.peakRSS)
			s.logf("   %s %d: first byte %.3fs, all %.2fs, %d bytes fetched", smp.name, i+1, r.ttfb.Seconds(), r.total.Seconds(), r.fetched)
			if smp == warm && reread != nil {
				reread.time(r.reread)
				s.logf("   %s %d: all %.2fs", reread.name, i+1, r.reread.Seconds())
			}
		}
	}
	_ = os.RemoveAll(cache)
	s.im.Rows = append(s.im.Rows, cold.row(), warm.row())
	if reread != nil {
		s.im.Rows = append(s.im.Rows, reread.row())
	}
	return nil
}

// readThroughMount mounts the archive (with $WORK/cache as it is), reads
// files in order, again if reread, and unmounts. Only the reads are timed.
func (s *suite) readThroughMount(ctx context.Context, files []string, reread bool) (readResult, error) {
	var r readResult
	mnt := filepath.Join(s.work, "mnt")
	bg, err := s.r.start(s.argv(cmdMount, ""))
	if err != nil {
		return r, err
	}
	if err := waitMounted(ctx, mnt, bg); err != nil {
		_, _ = bg.stop(15 * time.Second)
		unmountIfMounted(mnt)
		return r, err
	}
	s.pull.Proxy.Reset()
	r.ttfb, r.total, err = readFiles(mnt, files)
	if err == nil && reread {
		_, r.reread, err = readFiles(mnt, files)
	}
	r.fetched = s.pull.Proxy.Reset().Fetched
	rss, serr := bg.stop(30 * time.Second)
	unmountIfMounted(mnt)
	if err = errors.Join(err, serr); err != nil {
		return r, err
	}
	r.peakRSS = rss
	cache := filepath.Join(s.work, "cache")
	r.cacheBytes = dirBytes(cache)
	r.layerBytes = s.cachedLayerBytes(cache)
	return r, nil
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
// (metadata only: listing reads no file data).
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
	}()
	if err := waitMounted(ctx, mnt, bg); err != nil {
		return nil, err
	}
	var files []string
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, strings.TrimPrefix(p, mnt))
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
