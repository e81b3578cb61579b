package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	godigest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// Two kinds of background fetch keep a ranged mount from losing to a plain
// pull. Dense: once reads of a layer have needed a large enough share of
// its members, the rest of the layer is fetched in parallel ranges, so that
// reading everything costs about one download of the blob. Learned: the
// members a mount reads in its first seconds are written to a trace in the
// span cache directory, keyed by the image's manifest digest, and the next
// mount of that image fetches them, in the order they were read, before
// they are asked for. The trace also lists the files those reads were of
// (up to prefillMaxFile each and prefillBudget in all), which the next
// mount stores in the kernel's caches ahead of the reads (prefill.go).

const (
	// DefaultDenseThreshold is the share of a layer's members that reads
	// must have needed for the rest of the layer to be fetched.
	DefaultDenseThreshold = 0.25
	// DefaultPrefetchWindow is how long after it starts a mount records
	// the members it reads.
	DefaultPrefetchWindow = 30 * time.Second
	// DefaultPrefetchConcurrency is how many range reads one background
	// fetch keeps in flight (each may go out as a few parallel GETs).
	DefaultPrefetchConcurrency = 4

	// bulkRun is the most members fetched by one range read in the
	// background: about 8 MiB inflated (and the compressed bytes), held in
	// memory at once by each of the concurrent reads; bulkBytes bounds a
	// learned prefetch's runs so, whatever the spans' size (a pulled
	// layer's are 4 MiB), one span at least.
	bulkRun   = 8
	bulkBytes = 8 << 20
	// traceVersion is the format of trace files.
	traceVersion = 1

	// prefillMaxFile is the largest file a trace lists for the kernel
	// prefill: larger files cost few requests per byte when read (up to
	// 1 MiB each), small ones a request or two each.
	prefillMaxFile = 1 << 20
	// prefillBudget bounds the bytes of the files a trace lists: what
	// one mount may put in the kernel's page cache ahead of reads (which
	// the kernel reclaims like any page cache).
	prefillBudget = 1 << 30
)

// withDenseThreshold sets the share of a layer's members (0 to 1) that
// reads must have needed, two at least, before the rest of the layer is
// fetched in the background; 0 turns it off. The default is
// DefaultDenseThreshold.
func withDenseThreshold(f float64) rangedOption {
	return func(o *rangedOptions) {
		if f >= 0 && f <= 1 {
			o.dense = f
		}
	}
}

// withPrefetchConcurrency bounds the range reads in flight for one
// background fetch. The default is DefaultPrefetchConcurrency.
func withPrefetchConcurrency(n int) rangedOption {
	return func(o *rangedOptions) {
		if n > 0 {
			o.concurrency = n
		}
	}
}

// withTrace records the members read in the first window of the mount to
// path when the window ends or the storage is cleaned up, whichever comes
// first, and, with prefetch, first fetches in the background the members
// that the trace already at path lists. An empty path records nothing.
func withTrace(path string, window time.Duration, prefetch bool) rangedOption {
	return func(o *rangedOptions) {
		o.tracePath, o.prefetch = path, prefetch
		if window > 0 {
			o.window = window
		}
	}
}

// TracePath is where a mount of the image with manifest digest dg keeps
// its trace in the span cache directory spanDir: traces/<hex>.json. It is
// empty when dg is not a valid digest.
func TracePath(spanDir, dg string) string {
	d, err := godigest.Parse(dg)
	if err != nil {
		return ""
	}
	return filepath.Join(spanDir, "traces", d.Encoded()+".json")
}

// traceFile is the JSON of a trace. Files are archive paths, in the order
// they were first read; traces written before files were recorded have
// none.
type traceFile struct {
	Version int       `json:"version"`
	Spans   []spanRef `json:"spans"`
	Files   []string  `json:"files,omitempty"`
}

// spanRef names one member of a seekable layer by its index among the
// layer's non-empty members, which the archive fixes.
type spanRef struct {
	Layer  string `json:"layer"`
	Member int    `json:"member"`
}

// traceRecorder collects the members read in a mount's first window.
type traceRecorder struct {
	path     string
	deadline time.Time
	timer    *time.Timer

	mu        sync.Mutex
	seen      map[spanRef]bool
	spans     []spanRef
	seenFiles map[string]bool
	files     []string
	fileBytes int64 // the sizes of files
	written   bool
}

// startTrace starts recording for s, if it is to record.
func (s *rangedStorage) startTrace() {
	if s.ro.tracePath == "" {
		return
	}
	r := &traceRecorder{path: s.ro.tracePath, deadline: time.Now().Add(s.ro.window), seen: map[spanRef]bool{}, seenFiles: map[string]bool{}}
	r.timer = time.AfterFunc(s.ro.window, func() { s.writeTrace() })
	s.trace = r
}

// note records that a read needed members first to last of layer dg.
func (r *traceRecorder) note(dg string, first, last int) {
	if r == nil || time.Now().After(r.deadline) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written {
		return
	}
	for i := first; i <= last; i++ {
		ref := spanRef{dg, i}
		if !r.seen[ref] {
			r.seen[ref] = true
			r.spans = append(r.spans, ref)
		}
	}
}

// noteFile records that a read was of the file at path, of size bytes,
// if it is small enough for the prefill and the budget has room.
func (r *traceRecorder) noteFile(path string, size int64) {
	if r == nil || size > prefillMaxFile || time.Now().After(r.deadline) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written || r.seenFiles[path] || !prefillFits(r.fileBytes, size) {
		return
	}
	r.seenFiles[path] = true
	r.files = append(r.files, path)
	r.fileBytes += size
}

// prefillFits reports whether a trace listing files of fileBytes in all
// has room for one of size bytes: one the prefill takes, within its budget.
func prefillFits(fileBytes, size int64) bool {
	return size <= prefillMaxFile && fileBytes+size <= prefillBudget
}

// writeTrace writes the trace once, unless nothing was read (which would
// replace a useful trace with an empty one).
func (s *rangedStorage) writeTrace() {
	r := s.trace
	if r == nil {
		return
	}
	<-s.traceLoaded // the last trace is read before this one replaces it
	r.timer.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written {
		return
	}
	r.written = true
	if len(r.spans) == 0 {
		return
	}
	spans, files := r.spans, keepOrder(s.traceFiles, r.files)
	if time.Now().Before(r.deadline) {
		spans, files = s.withRestOfLastTrace(spans, files, r.fileBytes)
	}
	s.stats.traced.Store(int64(len(spans)))
	b, err := json.Marshal(traceFile{Version: traceVersion, Spans: spans, Files: files})
	if err == nil {
		err = os.MkdirAll(filepath.Dir(r.path), 0o700)
	}
	if err == nil {
		err = WriteFileAtomic(r.path, func(f *os.File) error {
			_, err := f.Write(b)
			return err
		})
	}
	if err != nil {
		s.ro.log.Warnf("writing the read trace %s: %v", r.path, err)
	}
}

// withRestOfLastTrace is for a mount that ended inside its window: what it
// read is only the start of what a mount of the image reads, so the spans
// and files that the last trace lists and this mount did not reach follow
// its own, in the last trace's order (files within the prefill's limits,
// fileBytes being those of files). A short mount would otherwise leave the
// next one a shorter trace than the last.
func (s *rangedStorage) withRestOfLastTrace(spans []spanRef, files []string, fileBytes int64) ([]spanRef, []string) {
	// A mount that prefetches read the last trace when it started
	// (loadTrace); another reads it now.
	lastSpans, lastFiles, err := s.traceRefs, s.traceFiles, error(nil)
	if !s.ro.prefetch {
		lastSpans, lastFiles, err = s.readTrace(s.trace.path)
	}
	if err != nil {
		s.ro.log.Debugf("read trace: keeping only this mount's: %v", err)
		return spans, files
	}
	seen := make(map[spanRef]bool, len(spans))
	for _, r := range spans {
		seen[r] = true
	}
	for _, r := range lastSpans {
		if !seen[r] {
			seen[r] = true
			spans = append(spans, r)
		}
	}
	have := make(map[string]bool, len(files))
	for _, f := range files {
		have[f] = true
	}
	for _, f := range lastFiles {
		var n *common.ClipNode
		if s.meta != nil && s.meta.Index != nil {
			n = s.meta.Get(f)
		}
		if have[f] || n == nil || !prefillFits(fileBytes, int64(n.Attr.Size)) {
			continue
		}
		have[f] = true
		files = append(files, f)
		fileBytes += int64(n.Attr.Size)
	}
	return spans, files
}

// keepOrder returns files, the files a mount read in its window, with
// those the last trace listed (last) first, in its order: the prefill put
// them in the kernel's page cache, so the mount saw them read in the
// prefill's order (several at once), not in its reader's, which the last
// trace kept. The files new to this mount follow, in the order read.
func keepOrder(last, files []string) []string {
	if len(last) == 0 {
		return files
	}
	read := make(map[string]bool, len(files))
	for _, f := range files {
		read[f] = true
	}
	out := make([]string, 0, len(files))
	for _, f := range last {
		if read[f] {
			out = append(out, f)
			delete(read, f)
		}
	}
	for _, f := range files {
		if read[f] {
			out = append(out, f)
		}
	}
	return out
}

// readTrace returns the spans the trace at path lists, in the order they
// were read, leaving out those that name no member of s (a trace is
// keyed by manifest, but is only a hint), and the files it lists. A
// missing trace lists none.
func (s *rangedStorage) readTrace(path string) ([]spanRef, []string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the read trace: %w", err)
	}
	var tf traceFile
	if err := json.Unmarshal(b, &tf); err != nil {
		return nil, nil, fmt.Errorf("reading the read trace %s: %w", path, err)
	}
	if tf.Version != traceVersion {
		return nil, nil, fmt.Errorf("reading the read trace %s: version %d, want %d", path, tf.Version, traceVersion)
	}
	var out []spanRef
	for _, ref := range tf.Spans {
		if ms, _ := s.layerSpans(ref.Layer); ref.Member >= 0 && ref.Member < len(ms) {
			out = append(out, ref)
		}
	}
	return out, tf.Files, nil
}

// loadTrace reads the last mount's trace, if the storage is to prefetch
// it, for prefetchTrace and the kernel prefill.
func (s *rangedStorage) loadTrace() {
	if !s.ro.prefetch || s.ro.tracePath == "" {
		return
	}
	refs, files, err := s.readTrace(s.ro.tracePath)
	if err != nil {
		s.ro.log.Warnf("prefetching: %v", err)
		return
	}
	s.traceRefs, s.traceFiles = refs, files
	s.stats.traceSpans.Store(int64(len(refs)))
	s.stats.traceFiles.Store(int64(len(files)))
}

// prefillFiles returns the files the last mount's trace lists, in the
// order they were read, for the mount to put in the kernel's caches, once
// the trace is read.
func (s *rangedStorage) prefillFiles() []string {
	<-s.traceLoaded
	return s.traceFiles
}

// notePrefilled counts a file of n bytes stored in the kernel's page cache.
func (s *rangedStorage) notePrefilled(n int64) {
	s.stats.prefillFiles.Add(1)
	s.stats.prefillBytes.Add(n)
}

func (s *rangedStorage) prefillLog() *logrus.Entry { return s.ro.log }

// prefillRead fills dest with the whole of node's bytes for the kernel
// prefill. Bytes of spans (a seekable layer's members, or a pulled layer's
// spans between restart points) are read in place from the span cache,
// once there (fetched as the learned prefetch fetches them, and counted
// with it), and noted in the trace as a read's are, but count as no read
// and start no read-ahead: the prefill is not the mount's reader. Anything
// else is read as ReadFile reads it.
func (s *rangedStorage) prefillRead(node *common.ClipNode, dest []byte) error {
	r := node.Remote
	if r == nil || int64(len(dest)) != r.ULength {
		return fmt.Errorf("reading %s: %d bytes asked for, the file has %d", node.Path, len(dest), node.Attr.Size)
	}
	if l := s.layers[r.LayerDigest]; l == nil || !l.noRanges.Load() {
		ms, fetch := s.layerSpans(r.LayerDigest)
		end := r.UOffset + r.ULength
		if n := len(ms); n > 0 && r.UOffset >= ms[0].UOff && end <= ms[n-1].UOff+ms[n-1].ULen {
			first := sort.Search(n, func(i int) bool { return ms[i].UOff+ms[i].ULen > r.UOffset })
			last := sort.Search(n, func(i int) bool { return ms[i].UOff >= end }) - 1
			inPlace := first <= last && readSpansInPlace(s.cache, ms[first:last+1], r.UOffset, dest)
			if !inPlace && first <= last {
				// Not cached yet: fetched as the learned prefetch
				// fetches (waiting for it when it is at them).
				ctx, cancel := s.opContext()
				counts, err := s.cache.ensure(ctx, ms[first:last+1], fetch)
				cancel()
				s.stats.prefetchSpans.Add(int64(counts.owned))
				inPlace = err == nil && readSpansInPlace(s.cache, ms[first:last+1], r.UOffset, dest)
			}
			if inPlace {
				s.trace.note(r.LayerDigest, first, last)
				s.trace.noteFile(node.Path, r.ULength)
				return nil
			}
		}
	}
	n, err := s.ReadFile(node, dest, 0)
	if err == nil && n != len(dest) {
		err = fmt.Errorf("reading %s: %d of %d bytes", node.Path, n, len(dest))
	}
	return err
}

// layerSpans returns the spans of layer dg by which reads are recorded and
// prefetched (a seekable layer's members, or the spans between a pulled
// layer's restart points), and how to fetch a run of them; none when the
// layer has neither.
func (s *rangedStorage) layerSpans(dg string) ([]Member, fetchFunc) {
	if l := s.layers[dg]; l != nil {
		return l.members, s.fetcher(dg)
	}
	if zs, ok := s.fallback.(*zranStorage); ok {
		if l := zs.layers[dg]; l != nil && !l.noRanges.Load() {
			return l.members, zs.fetcher(l)
		}
	}
	return nil, nil
}

// prefetchTrace fetches in the background the members that the last
// mount's trace lists, in its order, a few runs at a time.
func (s *rangedStorage) prefetchTrace() {
	defer close(s.prefetched)
	refs := s.traceRefs
	if len(refs) == 0 {
		return
	}
	var runs []layerRun
	for _, ref := range refs {
		ms, fetch := s.layerSpans(ref.Layer)
		if n := len(runs); n > 0 {
			r := &runs[n-1]
			if r.digest == ref.Layer && ref.Member == r.to && r.bytes+ms[ref.Member].ULen <= bulkBytes {
				r.to++
				r.bytes += ms[ref.Member].ULen
				continue
			}
		}
		runs = append(runs, layerRun{digest: ref.Layer, members: ms, fetch: fetch, from: ref.Member, to: ref.Member + 1, bytes: ms[ref.Member].ULen})
	}
	s.ro.log.Debugf("prefetching %d spans the last mount read first, in %d runs", len(refs), len(runs))
	start := time.Now()
	s.fetchRuns(runs, &s.stats.prefetchSpans, "prefetching", true)
	s.ro.log.Debugf("prefetched the last mount's spans in %s", time.Since(start).Round(time.Millisecond))
}

// layerRun is spans from to to (exclusive) of layer digest, bytes of
// them inflated, and how to fetch them.
type layerRun struct {
	digest   string
	members  []Member
	fetch    fetchFunc
	from, to int
	bytes    int64
}

// fetchRuns fetches runs into the cache, in order, with up to the
// configured concurrency, counting in n the members it fetched (not
// already cached, nor being fetched for a read). With trust, the members already on disk are hashed too
// (SpanCache.trustFile), so that the reads soon to come find them ready to
// be read in place. It stops when the storage is cleaned up.
func (s *rangedStorage) fetchRuns(runs []layerRun, n interface{ Add(int64) int64 }, what string, trust bool) {
	work := make(chan layerRun)
	var wg sync.WaitGroup
	for range min(s.ro.concurrency, len(runs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				ctx, cancel := s.opContext()
				counts, err := s.cache.ensure(ctx, r.members[r.from:r.to], r.fetch)
				cancel()
				n.Add(int64(counts.owned))
				if err != nil && !s.isClosed() {
					s.ro.log.WithField("layer", r.digest).Debugf("%s: %v", what, err)
				}
				for _, m := range r.members[r.from:r.to] {
					if !trust || err != nil || s.isClosed() {
						break
					}
					if s.cache.mem.get(m.SHA256) == nil {
						s.cache.trustFile(m)
					}
				}
			}
		}()
	}
	for _, r := range runs {
		if s.isClosed() {
			break
		}
		work <- r
	}
	close(work)
	wg.Wait()
}

func (s *rangedStorage) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// noteDense marks members first to last of l as read and, the first time
// reads have needed the dense threshold's share of them, fetches all the
// others in the background, in runs of adjacent ones.
func (s *rangedStorage) noteDense(l *seekableLayer, first, last int) {
	if s.ro.dense <= 0 {
		return
	}
	l.mu.Lock()
	if l.seen == nil {
		l.seen = make([]bool, len(l.members))
	}
	for i := first; i <= last; i++ {
		if !l.seen[i] {
			l.seen[i] = true
			l.nseen++
		}
	}
	if l.dense || l.nseen < 2 || float64(l.nseen) < s.ro.dense*float64(len(l.members)) || l.nseen == len(l.members) {
		l.mu.Unlock()
		return
	}
	l.dense = true
	seen := l.nseen
	var runs []layerRun
	for i := 0; i < len(l.members); {
		if l.seen[i] {
			i++
			continue
		}
		j := i + 1
		for j < len(l.members) && !l.seen[j] && j-i < bulkRun {
			j++
		}
		runs = append(runs, layerRun{digest: l.digest, members: l.members, fetch: s.fetcher(l.digest), from: i, to: j})
		i = j
	}
	l.mu.Unlock()
	if s.isClosed() {
		return
	}
	s.ro.log.WithField("layer", l.digest).Debugf("reads needed %d of %d spans: fetching the rest", seen, len(l.members))
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.fetchRuns(runs, &s.stats.denseSpans, "fetching a dense layer", false)
	}()
}
