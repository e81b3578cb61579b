package archive

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ErrSpanCorrupt reports span bytes that are not the ones the archive's
// trailer describes: a member fetched from the registry that does not
// inflate to its length and SHA-256, or a cached one that no longer hashes
// to its name. The bytes are never served; a mount answers EIO.
var ErrSpanCorrupt = errors.New("span does not match its digest")

// Span cache defaults. The disk budget is the smaller of 2 GiB and a tenth
// of the cache's filesystem, so a small root disk is not filled by images
// nobody runs any more; the memory tier holds the members that the
// kernel's 128 KiB reads are working through, so each is read from disk
// and hashed once, not once per read.
const (
	DefaultSpanCacheSize = 2 << 30
	DefaultMemoryCache   = 32 << 20
	// spanTouchAge is how stale a cached span's time must be before a hit
	// refreshes it: the LRU order needs no finer grain than this, and most
	// hits then cost no write.
	spanTouchAge = time.Minute
	// lockStripes is how many lock files the cross-process fetch locks are
	// spread over, by the first byte of the span's digest.
	lockStripes = 256
)

// SpanCache keeps the inflated gzip members of seekable layers on disk,
// one file per member named by the SHA-256 of its bytes, so that it is
// shared by every mount on the host and by every layer or image that holds
// the same member, and survives restarts. A span read from disk is hashed
// before it is served, once: the check leaves a seal on the file
// (spanseal.go), and a process that finds the seal matching the file's
// present size and modification time trusts it unhashed. A trusted file
// stays open and reads take their bytes from it in place while it is
// unchanged (spanFiles). The cache is bounded: past its budget, the
// spans used least recently (by file time, refreshed on hits) are removed
// down to 90% of it by one process at a time (flock on DIR/lock); files
// that vanish meanwhile are fine. Writes are atomic (an unnamed file linked
// into place), so a reader sees a whole span or none.
//
// Each span is fetched once however many readers want it: in a process,
// later readers wait for the first; across processes, the fetcher holds an
// flock on one of DIR/locks/NN, and a process that waits for it finds the
// span on disk afterwards. A SpanCache is safe for concurrent use.
type SpanCache struct {
	dir   string
	spans string
	so    spanCacheOptions

	mu       sync.Mutex
	inflight map[string]*spanCall
	mem      *memLRU
	files    *spanFiles

	// estimate is the bytes on disk found by the last sweep plus those this
	// process has written since: a sweep runs when it passes the budget.
	estimate atomic.Int64
	// hashed counts the bytes of span files hashed on disk (those without
	// a seal of their present state).
	hashed atomic.Int64
}

// spanCall is one fetch of a span that other readers wait for.
type spanCall struct {
	done chan struct{}
	data []byte
	err  error
}

type spanCacheOptions struct {
	size    int64
	memory  int64
	log     *logrus.Entry
	sizeSet bool
}

// SpanCacheOption configures OpenSpanCache.
type SpanCacheOption func(*spanCacheOptions) error

// WithCacheSize bounds the bytes of spans kept on disk. The default is the
// smaller of DefaultSpanCacheSize (2 GiB) and a tenth of the size of the
// filesystem the cache is on.
func WithCacheSize(n int64) SpanCacheOption {
	return func(o *spanCacheOptions) error {
		if n <= 0 {
			return fmt.Errorf("span cache size %d: must be positive", n)
		}
		o.size, o.sizeSet = n, true
		return nil
	}
}

// WithMemoryCache bounds the bytes of recently used spans kept in memory,
// in front of the disk; 0 keeps none. The default is DefaultMemoryCache
// (32 MiB).
func WithMemoryCache(n int64) SpanCacheOption {
	return func(o *spanCacheOptions) error {
		if n < 0 {
			return fmt.Errorf("memory cache size %d: must not be negative", n)
		}
		o.memory = n
		return nil
	}
}

// WithSpanLog is where corrupt cached spans and failed sweeps are
// reported. The default is logrus's standard logger.
func WithSpanLog(l *logrus.Entry) SpanCacheOption {
	return func(o *spanCacheOptions) error {
		o.log = l
		return nil
	}
}

// DefaultSpanCacheDir is the default span cache directory, beside the
// layer cache: $XDG_CACHE_HOME/clipbuild/spans (~/.cache/clipbuild/spans).
func DefaultSpanCacheDir() string {
	return filepath.Join(filepath.Dir(DefaultCacheDir()), "spans")
}

// OpenSpanCache opens (creating it if need be) the span cache in dir, and
// trims it to its budget.
func OpenSpanCache(dir string, opts ...SpanCacheOption) (*SpanCache, error) {
	so := spanCacheOptions{size: DefaultSpanCacheSize, memory: DefaultMemoryCache, log: logrus.NewEntry(logrus.StandardLogger())}
	for _, o := range opts {
		if err := o(&so); err != nil {
			return nil, err
		}
	}
	c := &SpanCache{dir: dir, spans: filepath.Join(dir, "sha256"), so: so, inflight: map[string]*spanCall{}, mem: newMemLRU(so.memory),
		files: newSpanFiles(defaultOpenSpans)}
	for _, d := range []string{c.spans, filepath.Join(dir, "locks")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating span cache: %w", err)
		}
	}
	if !so.sizeSet {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && st.Bsize > 0 {
			c.so.size = min(c.so.size, int64(st.Blocks)*st.Bsize/10)
		}
	}
	if err := c.sweep(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir is the cache's directory.
func (c *SpanCache) Dir() string { return c.dir }

// Budget is the most bytes of spans the cache keeps on disk.
func (c *SpanCache) Budget() int64 { return c.so.size }

// fetchFunc fetches a run of adjacent members of one layer, ascending, and
// returns each one's inflated bytes, verified against the member.
type fetchFunc func(ctx context.Context, run []Member) ([][]byte, error)

// spanCounts says how a get or an ensure was served. Of the misses,
// ensure counts in owned those it fetched itself (the others another
// caller was fetching).
type spanCounts struct {
	hits, misses, owned int
}

// get returns the inflated bytes of each of ms, adjacent members of one
// layer in ascending order, from memory, from disk, or by fetching the
// runs of them that are missing with fetch. The returned slices are shared:
// callers must not modify them.
func (c *SpanCache) get(ctx context.Context, ms []Member, fetch fetchFunc) ([][]byte, spanCounts, error) {
	out := make([][]byte, len(ms))
	var counts spanCounts
	var missing []int
	for i, m := range ms {
		b, err := c.lookup(m)
		if err != nil {
			return nil, counts, err
		}
		if b != nil {
			out[i] = b
			counts.hits++
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) == 0 {
		return out, counts, nil
	}
	counts.misses = len(missing)
	owned, waits := c.claim(ms, missing)
	if err := c.fetchOwned(ctx, ms, owned, fetch); err != nil {
		return nil, counts, err
	}
	for _, i := range missing {
		call := waits[ms[i].SHA256]
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, counts, fmt.Errorf("waiting for span at %d: %w", ms[i].UOff, ctx.Err())
		}
		if call.err != nil {
			return nil, counts, call.err
		}
		out[i] = call.data
	}
	return out, counts, nil
}

// ensure makes sure each of ms (adjacent members of one layer, ascending)
// is in the cache, fetching the runs of them that are not, as get does,
// but without loading what is already there: a read-ahead or a prefetch
// over spans on disk costs a stat each, not a read and a hash. hits counts
// the members found there.
func (c *SpanCache) ensure(ctx context.Context, ms []Member, fetch fetchFunc) (spanCounts, error) {
	var counts spanCounts
	var missing []int
	for i, m := range ms {
		if c.present(m) {
			counts.hits++
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) == 0 {
		return counts, nil
	}
	counts.misses = len(missing)
	owned, waits := c.claim(ms, missing)
	counts.owned = len(owned)
	if err := c.fetchOwned(ctx, ms, owned, fetch); err != nil {
		return counts, err
	}
	for _, i := range missing {
		call := waits[ms[i].SHA256]
		select {
		case <-call.done:
		case <-ctx.Done():
			return counts, fmt.Errorf("waiting for span at %d: %w", ms[i].UOff, ctx.Err())
		}
		if call.err != nil {
			return counts, call.err
		}
	}
	return counts, nil
}

// present reports whether m is in memory, or on disk with its length (its
// bytes are hashed when they are read).
func (c *SpanCache) present(m Member) bool {
	if c.mem.get(m.SHA256) != nil {
		return true
	}
	if c.files.acquire(m.SHA256) != nil {
		return true
	}
	p, err := c.spanPath(m)
	if err != nil {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == m.ULen
}

// inMemory returns the bytes of each of ms if all are in the memory tier,
// else nil.
func (c *SpanCache) inMemory(ms []Member) [][]byte {
	out := make([][]byte, len(ms))
	for i, m := range ms {
		if out[i] = c.mem.get(m.SHA256); out[i] == nil {
			return nil
		}
	}
	return out
}

// readAt reads len(p) bytes at off of member m from memory, or in place
// from its file if this process has hashed it already, and reports
// whether it could; it never fetches, nor loads a whole span.
func (c *SpanCache) readAt(m Member, p []byte, off int64) bool {
	if b := c.mem.get(m.SHA256); b != nil {
		if off < 0 || off+int64(len(p)) > int64(len(b)) {
			return false
		}
		copy(p, b[off:])
		return true
	}
	return c.files.readAt(m.SHA256, p, off)
}

// lookup returns a member's bytes from memory or disk, or nil if the cache
// does not have them. A cached file that fails its check is removed and
// reported as ErrSpanCorrupt.
func (c *SpanCache) lookup(m Member) ([]byte, error) {
	if b := c.mem.get(m.SHA256); b != nil {
		return b, nil
	}
	b, err := c.load(m)
	if b != nil {
		c.mem.put(m.SHA256, b)
	}
	return b, err
}

// claim registers this caller as the fetcher of each missing member no one
// is fetching yet (owned, as indexes into ms), and returns the calls to
// wait for, by digest, for all of them.
func (c *SpanCache) claim(ms []Member, missing []int) (owned []int, waits map[string]*spanCall) {
	waits = make(map[string]*spanCall, len(missing))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range missing {
		key := ms[i].SHA256
		if _, ok := waits[key]; ok {
			continue // the same bytes twice in one read
		}
		call := c.inflight[key]
		if call == nil {
			call = &spanCall{done: make(chan struct{})}
			c.inflight[key] = call
			owned = append(owned, i)
		}
		waits[key] = call
	}
	return owned, waits
}

// finish completes the call for a member's digest with its bytes or error.
func (c *SpanCache) finish(key string, data []byte, err error) {
	c.mu.Lock()
	call := c.inflight[key]
	delete(c.inflight, key)
	c.mu.Unlock()
	if call != nil {
		call.data, call.err = data, err
		close(call.done)
	}
}

// fetchOwned fetches the members this caller claimed, a run of adjacent
// ones at a time, and completes their calls whatever happens.
func (c *SpanCache) fetchOwned(ctx context.Context, ms []Member, owned []int, fetch fetchFunc) error {
	pending := map[string]bool{}
	for _, i := range owned {
		pending[ms[i].SHA256] = true
	}
	defer func() {
		for key := range pending {
			c.finish(key, nil, fmt.Errorf("span %s was not fetched", key))
		}
	}()
	for start := 0; start < len(owned); {
		end := start + 1
		for end < len(owned) && owned[end] == owned[end-1]+1 {
			end++
		}
		run := ms[owned[start] : owned[end-1]+1]
		err := c.fetchRun(ctx, run, fetch, func(m Member, data []byte, err error) {
			if pending[m.SHA256] {
				delete(pending, m.SHA256)
				c.finish(m.SHA256, data, err)
			}
		})
		if err != nil {
			return err
		}
		start = end
	}
	return nil
}

// fetchRun fetches one run under the cross-process locks of its members,
// unless another process stored them while this one waited for the locks,
// and reports each member's outcome to done.
func (c *SpanCache) fetchRun(ctx context.Context, run []Member, fetch fetchFunc, done func(Member, []byte, error)) error {
	unlock, err := c.lockSpans(ctx, run)
	if err != nil {
		for _, m := range run {
			done(m, nil, err)
		}
		return err
	}
	defer unlock()
	// Another process may have fetched some while this one waited.
	first, last := -1, -1
	for i, m := range run {
		b, err := c.lookup(m)
		if err != nil {
			done(m, nil, err)
			return err
		}
		if b != nil {
			done(m, b, nil)
			continue
		}
		if first < 0 {
			first = i
		}
		last = i
	}
	if first < 0 {
		return nil
	}
	sub := run[first : last+1]
	data, err := fetch(ctx, sub)
	if err == nil && len(data) != len(sub) {
		err = fmt.Errorf("fetching %d spans returned %d", len(sub), len(data))
	}
	if err != nil {
		for _, m := range sub {
			done(m, nil, err)
		}
		return err
	}
	for i, m := range sub {
		if err := c.store(m, data[i]); err != nil {
			c.so.log.Warnf("caching span %s: %v", m.SHA256, err)
		}
		c.mem.put(m.SHA256, data[i])
		done(m, data[i], nil)
	}
	c.maybeSweep()
	return nil
}

// spanPath is where a member's bytes are cached. The digest comes from an
// archive, which anyone can write: it must be plain hex to be a file name.
func (c *SpanCache) spanPath(m Member) (string, error) {
	if !isHexDigest(m.SHA256) {
		return "", fmt.Errorf("member at %d: sha256 %q is not a hex digest: %w", m.UOff, m.SHA256, ErrCorrupt)
	}
	return filepath.Join(c.spans, m.SHA256), nil
}

func isHexDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// load reads a member's bytes from disk and checks them, or returns nil if
// they are not there. A file of the wrong length or digest is removed, so
// the next read fetches the span again, and reported as ErrSpanCorrupt.
func (c *SpanCache) load(m Member) ([]byte, error) {
	if m.ULen < 0 {
		return nil, fmt.Errorf("member at %d: length %d: %w", m.UOff, m.ULen, ErrCorrupt)
	}
	// A file this process hashed has the member's length (it was checked),
	// so the buffer is never larger than a file on disk.
	if sf := c.files.acquire(m.SHA256); sf != nil && sf.size == m.ULen {
		if b := make([]byte, m.ULen); c.files.readAt(m.SHA256, b, 0) {
			c.touch(m)
			return b, nil // hashed when this process first read or wrote it
		}
	}
	p, err := c.spanPath(m)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading cached span %s: %w", p, err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading cached span %s: %w", p, err)
	}
	var b []byte
	if st.Size() == m.ULen {
		b = make([]byte, m.ULen)
		if _, err := f.ReadAt(b, 0); err != nil && !(errors.Is(err, io.EOF) && m.ULen == 0) {
			return nil, fmt.Errorf("reading cached span %s: %w", p, err)
		}
	}
	// Sealed and unchanged since the stat, the bytes read are the ones
	// checked.
	if b == nil || !sealed(f, m.SHA256, st) || !unchanged(f, st) {
		sum := sha256.Sum256(b)
		c.hashed.Add(int64(len(b)))
		if b == nil || hex.EncodeToString(sum[:]) != m.SHA256 {
			os.Remove(p)
			return nil, fmt.Errorf("cached span %s: %d bytes with sha256 %x, want %d bytes with its name; removed it: %w", p, st.Size(), sum, m.ULen, ErrSpanCorrupt)
		}
		if !seal(f, m.SHA256, st) {
			return b, nil // checked as read, but changed since: not to be read in place
		}
	}
	keep = true
	c.files.add(m.SHA256, f, st)
	c.touch(m)
	return b, nil
}

// touch refreshes a cached span's time when it is stale, for the LRU.
func (c *SpanCache) touch(m Member) {
	p, err := c.spanPath(m)
	if err != nil {
		return
	}
	if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > spanTouchAge {
		now := time.Now()
		if os.Chtimes(p, now, now) == nil { // a span evicted meanwhile is no matter
			// The file held open is still trusted: the change is ours.
			c.files.retime(m.SHA256, fi)
		}
	}
}

// store writes a member's bytes into the cache, atomically: readers in
// other processes see the whole span or none. It is not synced: a span
// lost or torn by a crash fails its check and is fetched again.
func (c *SpanCache) store(m Member, data []byte) error {
	p, err := c.spanPath(m)
	if err != nil {
		return err
	}
	f, named, err := createTemp(c.spans, m.SHA256)
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			if named {
				os.Remove(tmp)
			}
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if !named {
		if tmp, err = linkTemp(f, c.spans, m.SHA256); err != nil {
			return err
		}
		named = true
	}
	written, _ := f.Stat()
	if written != nil {
		seal(f, m.SHA256, written) // the bytes were checked before they were stored
	}
	if err := f.Close(); err != nil {
		return err
	}
	ok = true
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	c.estimate.Add(int64(len(data)))
	// The bytes were checked before they were stored: the file, if it is
	// still the one written, may be read in place from now on.
	if rf, err := os.Open(p); err == nil {
		if st, err := rf.Stat(); err == nil && written != nil && os.SameFile(st, written) && st.Size() == int64(len(data)) {
			c.files.add(m.SHA256, rf, st)
		} else {
			rf.Close()
		}
	}
	return nil
}

// lockSpans takes the cross-process fetch locks of run's members, in
// order of stripe so that two processes never wait for each other, and
// returns their release.
func (c *SpanCache) lockSpans(ctx context.Context, run []Member) (func(), error) {
	var stripes []string
	for _, m := range run {
		if _, err := c.spanPath(m); err != nil {
			return nil, err
		}
		stripes = append(stripes, m.SHA256[:2])
	}
	slices.Sort(stripes)
	stripes = slices.Compact(stripes)
	var held []*os.File
	release := func() {
		for _, f := range held {
			f.Close() // closing drops the flock
		}
	}
	for _, s := range stripes {
		f, err := lockFile(ctx, filepath.Join(c.dir, "locks", s), true)
		if err != nil {
			release()
			return nil, fmt.Errorf("locking span cache: %w", err)
		}
		held = append(held, f)
	}
	return release, nil
}

// lockFile opens p and takes an exclusive flock on it. With wait it polls
// until it has the lock or ctx is done (a blocking flock could not be
// cancelled); without, a lock held elsewhere returns a nil file.
func lockFile(ctx context.Context, p string, wait bool) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, &os.PathError{Op: "flock", Path: p, Err: err}
		}
		if !wait {
			f.Close()
			return nil, nil
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// maybeSweep sweeps when this process's estimate of the cache passes its
// budget. A failed sweep is reported and tried again at the next store.
func (c *SpanCache) maybeSweep() {
	if c.estimate.Load() <= c.so.size {
		return
	}
	if err := c.sweep(); err != nil {
		c.so.log.Warnf("trimming the span cache: %v", err)
	}
}

// sweep trims the cache to 90% of its budget, least recently used first,
// unless another process is sweeping it, and removes temporary files that
// a killed process left. It also corrects this process's estimate.
func (c *SpanCache) sweep() error {
	lock, err := lockFile(context.Background(), filepath.Join(c.dir, "lock"), false)
	if err != nil {
		return err
	}
	if lock == nil {
		return nil // someone else is sweeping
	}
	defer lock.Close()
	entries, err := os.ReadDir(c.spans)
	if err != nil {
		return err
	}
	type span struct {
		path string
		size int64
		used time.Time
	}
	var spans []span
	var total int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue // gone meanwhile
		}
		p := filepath.Join(c.spans, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			if time.Since(fi.ModTime()) > time.Hour {
				os.Remove(p)
			}
			continue
		}
		spans = append(spans, span{p, fi.Size(), fi.ModTime()})
		total += fi.Size()
	}
	if total > c.so.size {
		slices.SortFunc(spans, func(a, b span) int { return a.used.Compare(b.used) })
		low := c.so.size / 10 * 9
		for _, s := range spans {
			if total <= low {
				break
			}
			if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			total -= s.size
		}
	}
	c.estimate.Store(total)
	return nil
}

// memLRU holds recently used spans in memory, up to a byte budget.
type memLRU struct {
	mu     sync.Mutex
	budget int64
	size   int64
	order  *list.List // of *memEntry, most recent first
	byKey  map[string]*list.Element
}

type memEntry struct {
	key  string
	data []byte
}

func newMemLRU(budget int64) *memLRU {
	return &memLRU{budget: budget, order: list.New(), byKey: map[string]*list.Element{}}
}

func (l *memLRU) get(key string) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.byKey[key]
	if e == nil {
		return nil
	}
	l.order.MoveToFront(e)
	return e.Value.(*memEntry).data
}

func (l *memLRU) put(key string, data []byte) {
	if int64(len(data)) > l.budget {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.byKey[key]; e != nil {
		l.order.MoveToFront(e)
		return
	}
	l.byKey[key] = l.order.PushFront(&memEntry{key, data})
	l.size += int64(len(data))
	for l.size > l.budget {
		e := l.order.Back()
		me := e.Value.(*memEntry)
		l.order.Remove(e)
		delete(l.byKey, me.key)
		l.size -= int64(len(me.data))
	}
}
