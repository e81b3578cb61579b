package archive

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/registry"
)

// BlobRanger reads byte ranges of registry blobs by digest.
// *registry.RangeReader is one.
type BlobRanger interface {
	ReadRange(ctx context.Context, digest string, off, n int64) ([]byte, error)
}

// rangedStorage serves a v2 archive's files from seekable layers by byte
// range: a read fetches only the gzip members that hold its bytes, with
// one single-range GET for each run of adjacent members it lacks, inflates
// and checks each against the SHA-256 in the archive's trailer, and keeps
// it in the span cache that every mount on the host shares. Layers the
// trailer has no members for (pulled images, one gzip stream), and layers
// whose registry turns out to ignore ranges, are read through the
// whole-layer fallback. When reads of a layer go on sequentially, the
// members after them are fetched in the background.
type rangedStorage struct {
	meta     *common.ClipArchiveMetadata
	layers   map[string]*seekableLayer
	blobs    BlobRanger
	cache    *SpanCache
	fallback Storage
	ro       rangedOptions

	closed    chan struct{}
	closeOnce sync.Once
	bg        sync.WaitGroup

	trace      *traceRecorder // nil when not recording
	prefetched chan struct{}  // closed when the trace's prefetch has ended
	// traceRefs and traceFiles are what the last mount's trace lists,
	// when prefetching, read in the background (not to delay the mount);
	// traceLoaded is closed once they are.
	traceRefs   []spanRef
	traceFiles  []string
	traceLoaded chan struct{}

	stats rangedCounters
}

// seekableLayer is one layer's members and how it is being read.
type seekableLayer struct {
	digest  string
	members []Member
	end     int64 // the uncompressed size the members cover

	// noRanges is set when the registry ignored a range too far into the
	// blob to read up to: the layer is read whole from then on.
	noRanges atomic.Bool

	mu      sync.Mutex
	last    int    // the last member the previous read needed, -1 before any
	streak  int    // reads in a row that started where the previous one ended
	aheadTo int    // members before this have been read ahead
	ahead   bool   // a read-ahead is running
	seen    []bool // members reads have needed
	nseen   int    // how many are seen
	dense   bool   // the rest of the layer has been fetched
}

type rangedOptions struct {
	log         *logrus.Entry
	timeout     time.Duration
	readAhead   int
	dense       float64
	concurrency int
	tracePath   string
	window      time.Duration
	prefetch    bool
}

// rangedOption configures newRangedStorage.
type rangedOption func(*rangedOptions)

// withRangedLog is where failed reads are reported, one line each. The
// default is logrus's standard logger.
func withRangedLog(l *logrus.Entry) rangedOption {
	return func(o *rangedOptions) { o.log = l }
}

// withRangedTimeout bounds one read, retries and waits for other readers'
// fetches included. The default is 2 minutes.
func withRangedTimeout(d time.Duration) rangedOption {
	return func(o *rangedOptions) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// withReadAhead sets how many members after a sequential read are fetched
// in the background; 0 turns read-ahead off. A read is sequential when it
// starts in the member where the previous read of its layer ended or in
// the next one, and read-ahead starts at the third read of a sequential
// run (so reading two small files that share a member starts none).
// The default is 4 (about 4 MiB, which goes out as parallel parts).
func withReadAhead(n int) rangedOption {
	return func(o *rangedOptions) {
		if n >= 0 {
			o.readAhead = n
		}
	}
}

// newRangedStorage serves the nodes of meta from the seekable layers in
// members (by layer blob digest) through blobs and cache, and every other
// layer through fallback, which may be nil when there are none. Each
// layer's member table is checked here: in blob order, back to back in the
// blob and in the layer, each with a hex SHA-256.
func newRangedStorage(meta *common.ClipArchiveMetadata, members map[string][]Member, blobs BlobRanger, cache *SpanCache, fallback Storage, opts ...rangedOption) (*rangedStorage, error) {
	ro := rangedOptions{log: logrus.NewEntry(logrus.StandardLogger()), timeout: 2 * time.Minute, readAhead: 4,
		dense: DefaultDenseThreshold, concurrency: DefaultPrefetchConcurrency, window: DefaultPrefetchWindow}
	for _, o := range opts {
		o(&ro)
	}
	s := &rangedStorage{meta: meta, layers: map[string]*seekableLayer{}, blobs: blobs, cache: cache, fallback: fallback, ro: ro,
		closed: make(chan struct{}), prefetched: make(chan struct{}), traceLoaded: make(chan struct{})}
	if zs, ok := fallback.(*zranStorage); ok {
		zs.stats = &s.stats // pulled layers' reads count with the others
		zs.noteRead = func(dg string, first, last int) { s.trace.note(dg, first, last) }
	}
	for dg, ms := range members {
		l, err := newSeekableLayer(dg, ms)
		if err != nil {
			return nil, err
		}
		if l != nil {
			s.layers[dg] = l
		}
	}
	s.startTrace()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.loadTrace()
		close(s.traceLoaded)
		s.prefetchTrace()
	}()
	return s, nil
}

// newSeekableLayer checks a layer's member table, dropping empty members
// (they hold no bytes to look up). A layer with none is not seekable: nil.
func newSeekableLayer(dg string, ms []Member) (*seekableLayer, error) {
	l := &seekableLayer{digest: dg, last: -1}
	var coff, uoff int64
	for i, m := range ms {
		if i == 0 {
			coff, uoff = m.COff, m.UOff
		}
		if m.COff != coff || m.UOff != uoff || m.CLen <= 0 || m.ULen < 0 || !isHexDigest(m.SHA256) {
			return nil, corrupt("layer %s: member %d (compressed %d+%d, uncompressed %d+%d) does not follow the one before", dg, i, m.COff, m.CLen, m.UOff, m.ULen)
		}
		coff, uoff = m.COff+m.CLen, m.UOff+m.ULen
		if m.ULen > 0 {
			l.members = append(l.members, m)
		}
	}
	if len(l.members) == 0 {
		return nil, nil
	}
	if l.members[0].UOff != 0 {
		return nil, corrupt("layer %s: the first member starts at %d of the layer, not 0", dg, l.members[0].UOff)
	}
	l.end = uoff
	return l, nil
}

// ReadFile fills dest from node's bytes at off.
func (s *rangedStorage) ReadFile(node *common.ClipNode, dest []byte, off int64) (int, error) {
	var lr *layerRead
	if node.Remote != nil {
		if l := s.layers[node.Remote.LayerDigest]; l != nil {
			lr = &layerRead{digest: l.digest, noRanges: &l.noRanges, read: func(uoff int64, dest []byte) error { return s.readSpans(l, uoff, dest) }}
		}
	}
	n, err := readByRange(node, dest, off, lr, &s.stats, s.ro.log, s.fallback != nil,
		func(dest []byte) (int, error) { return s.readWhole(node, dest, off) })
	if err == nil && node.Remote != nil {
		s.trace.noteFile(node.Path, node.Remote.ULength)
	}
	return n, err
}

// layerRead is how a ranged storage reads one layer by range: read fills
// dest with its uncompressed bytes at uoff; noRanges is set once the
// registry is found to ignore ranges.
type layerRead struct {
	digest   string
	noRanges *atomic.Bool
	read     func(uoff int64, dest []byte) error
}

// readByRange is the ReadFile of the ranged storages (seekable members,
// and pulled layers' restart points): it clamps the read to the file,
// reads the bytes by range (lr nil: the layer has nothing to read by
// range), goes over to reading the layer whole (when canWhole) once its
// registry turns out to ignore ranges, and counts the read in st.
func readByRange(node *common.ClipNode, dest []byte, off int64, lr *layerRead, st *rangedCounters, log *logrus.Entry,
	canWhole bool, whole func(dest []byte) (int, error)) (int, error) {
	if node.Remote == nil {
		return 0, nil // FIFOs, devices and empty files have no data
	}
	r := node.Remote
	if off >= r.ULength {
		return 0, nil
	}
	if rem := r.ULength - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	if lr == nil || lr.noRanges.Load() {
		return whole(dest)
	}
	start := time.Now()
	err := lr.read(r.UOffset+off, dest)
	if errors.Is(err, registry.ErrRangeUnsupported) && canWhole {
		if lr.noRanges.CompareAndSwap(false, true) {
			log.Warnf("reading layer %s whole: %v", lr.digest, err)
		}
		return whole(dest)
	}
	if err != nil {
		st.errors.Add(1)
		log.WithField("layer", lr.digest).Errorf("reading %s: %v", node.Path, err)
		return 0, fmt.Errorf("reading %s: %w", node.Path, err)
	}
	st.reads.Add(1)
	st.bytesRead.Add(int64(len(dest)))
	st.latency.observe(time.Since(start))
	return len(dest), nil
}

// readWhole reads through the whole-layer fallback.
func (s *rangedStorage) readWhole(node *common.ClipNode, dest []byte, off int64) (int, error) {
	if s.fallback == nil {
		return 0, fmt.Errorf("reading %s: layer %s has no gzip members to read by range, and no whole-layer reader", node.Path, node.Remote.LayerDigest)
	}
	if _, ok := s.fallback.(*zranStorage); !ok {
		s.stats.fallbackReads.Add(1) // else it counts what it reads whole
	}
	return s.fallback.ReadFile(node, dest, off)
}

// readSpans fills dest with the layer's uncompressed bytes at uoff.
func (s *rangedStorage) readSpans(l *seekableLayer, uoff int64, dest []byte) error {
	end := uoff + int64(len(dest))
	if uoff < 0 || end > l.end {
		return corrupt("bytes %d-%d lie outside the %d bytes of layer %s", uoff, end, l.end, l.digest)
	}
	ms := l.members
	first := sort.Search(len(ms), func(i int) bool { return ms[i].UOff+ms[i].ULen > uoff })
	last := sort.Search(len(ms), func(i int) bool { return ms[i].UOff >= end }) - 1
	if !s.readInPlace(ms[first:last+1], uoff, dest) {
		spans, err := s.spans(l, ms[first:last+1])
		if err != nil {
			return err
		}
		copySpans(dest, uoff, ms[first:last+1], spans)
	}
	s.trace.note(l.digest, first, last)
	s.readAhead(l, first, last)
	s.noteDense(l, first, last)
	return nil
}

// spans returns the bytes of members ms of l: straight from memory when
// all are there (most reads), else through the cache, fetching what it lacks.
func (s *rangedStorage) spans(l *seekableLayer, ms []Member) ([][]byte, error) {
	if spans := s.cache.inMemory(ms); spans != nil {
		s.stats.hits.Add(int64(len(ms)))
		return spans, nil
	}
	ctx, cancel := s.opContext()
	defer cancel()
	spans, counts, err := s.cache.get(ctx, ms, s.fetcher(l.digest))
	s.stats.hits.Add(int64(counts.hits))
	s.stats.misses.Add(int64(counts.misses))
	return spans, err
}

// fetcher fetches runs of adjacent members of layer dg with one range
// request each, and inflates and checks every member.
func (s *rangedStorage) fetcher(dg string) fetchFunc {
	return func(ctx context.Context, run []Member) ([][]byte, error) {
		coff := run[0].COff
		clen := run[len(run)-1].COff + run[len(run)-1].CLen - coff
		raw, err := s.blobs.ReadRange(ctx, dg, coff, clen)
		s.stats.requests.Add(1)
		if err != nil {
			return nil, err
		}
		s.stats.bytesFetched.Add(int64(len(raw)))
		if int64(len(raw)) != clen {
			return nil, fmt.Errorf("layer %s: %d bytes at %d, asked for %d: %w", dg, len(raw), coff, clen, ErrSpanCorrupt)
		}
		out := make([][]byte, len(run))
		for i, m := range run {
			b, err := InflateMember(raw[m.COff-coff:m.COff-coff+m.CLen], m)
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w: %w", dg, ErrSpanCorrupt, err)
			}
			out[i] = b
		}
		s.stats.spansFetched.Add(int64(len(run)))
		return out, nil
	}
}

// readAhead notes that a read of l needed members first to last and, when
// reads have gone on sequentially, fetches the members after them in the
// background, one read-ahead per layer at a time.
func (s *rangedStorage) readAhead(l *seekableLayer, first, last int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last >= 0 && (first == l.last || first == l.last+1) {
		l.streak++
	} else {
		l.streak, l.aheadTo = 0, 0
	}
	l.last = last
	from, to := max(last+1, l.aheadTo), min(last+1+s.ro.readAhead, len(l.members))
	if s.ro.readAhead == 0 || l.streak < 2 || l.ahead || from >= to {
		return
	}
	select {
	case <-s.closed:
		return
	default:
	}
	l.ahead, l.aheadTo = true, to
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer func() { l.mu.Lock(); l.ahead = false; l.mu.Unlock() }()
		ctx, cancel := s.opContext()
		defer cancel()
		counts, err := s.cache.ensure(ctx, l.members[from:to], s.fetcher(l.digest))
		s.stats.readAhead.Add(int64(counts.misses))
		if err != nil && ctx.Err() == nil {
			s.ro.log.WithField("layer", l.digest).Debugf("reading ahead: %v", err)
		}
	}()
}

// opContext bounds one read or read-ahead, and ends it when the storage is
// cleaned up.
func (s *rangedStorage) opContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), s.ro.timeout)
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// fileRange lets a mount splice the bytes of layers read whole from the
// fallback's files; bytes of seekable layers are read with ReadFile.
func (s *rangedStorage) fileRange(node *common.ClipNode, off int64, size int) (*os.File, int64, int, error) {
	if node.Remote == nil {
		return nil, 0, 0, nil
	}
	if l := s.layers[node.Remote.LayerDigest]; l != nil && !l.noRanges.Load() {
		return nil, 0, 0, nil
	}
	fr, ok := s.fallback.(interface {
		fileRange(*common.ClipNode, int64, int) (*os.File, int64, int, error)
	})
	if !ok {
		return nil, 0, 0, nil
	}
	return fr.fileRange(node, off, size)
}

func (s *rangedStorage) Metadata() *common.ClipArchiveMetadata { return s.meta }
func (s *rangedStorage) CachedLocally() bool                   { return false }

// Cleanup writes the read trace if its window has not ended yet, stops
// read-ahead and prefetches, waits for them, and cleans up the fallback.
func (s *rangedStorage) Cleanup() error {
	s.writeTrace()
	s.closeOnce.Do(func() { close(s.closed) })
	s.bg.Wait()
	if s.fallback != nil {
		return s.fallback.Cleanup()
	}
	return nil
}

// RangedStats are the counters of a ranged storage, for --stats.
type RangedStats struct {
	// Reads and BytesRead count the reads served by range: from seekable
	// layers' members and pulled layers' restart points.
	Reads     int64 `json:"reads"`
	BytesRead int64 `json:"bytes_read"`
	// Requests counts range reads of the registry (each one or, when large,
	// a few parallel GETs), BytesFetched their compressed bytes and
	// SpansFetched the members they held.
	Requests     int64 `json:"requests"`
	BytesFetched int64 `json:"bytes_fetched"`
	SpansFetched int64 `json:"spans_fetched"`
	// CacheHits and CacheMisses count the members reads needed that were,
	// or were not, in the span cache (memory or disk).
	CacheHits   int64 `json:"cache_hits"`
	CacheMisses int64 `json:"cache_misses"`
	// ReadAheadSpans counts members fetched ahead of sequential reads.
	ReadAheadSpans int64 `json:"read_ahead_spans"`
	// DenseSpans counts members fetched because reads of their layer
	// had got dense.
	DenseSpans int64 `json:"dense_spans"`
	// TraceSpans counts the members the last mount's trace listed, and
	// PrefetchSpans those of them fetched (not already cached) before
	// they were asked for, by the prefetch or the kernel prefill.
	TraceSpans    int64 `json:"trace_spans"`
	PrefetchSpans int64 `json:"prefetch_spans"`
	// TracedSpans counts the members this mount recorded in its trace
	// (once the trace is written).
	TracedSpans int64 `json:"traced_spans"`
	// TraceFiles counts the files the last mount's trace listed, and
	// PrefillFiles and PrefillBytes those of them (and their bytes) the
	// mount stored in the kernel's page cache before they were read.
	TraceFiles   int64 `json:"trace_files"`
	PrefillFiles int64 `json:"prefill_files"`
	PrefillBytes int64 `json:"prefill_bytes"`
	// FallbackReads counts reads of layers read whole (with neither
	// members nor restart points, or whose registry ignores ranges).
	FallbackReads int64 `json:"fallback_reads"`
	// Errors counts failed reads.
	Errors int64 `json:"errors"`
	// Latency is the distribution of the reads' times.
	Latency LatencyStats `json:"latency"`
}

// LatencyStats summarise a distribution of durations. The percentiles are
// upper bounds of histogram buckets 19% wide, capped at Max.
type LatencyStats struct {
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// rangedCounters are the live counters behind RangedStats.
type rangedCounters struct {
	reads, bytesRead, requests, bytesFetched, spansFetched atomic.Int64
	hits, misses, readAhead, fallbackReads, errors         atomic.Int64
	denseSpans, traceSpans, prefetchSpans, traced          atomic.Int64
	traceFiles, prefillFiles, prefillBytes                 atomic.Int64
	latency                                                histogram
}

// StatsOf returns the counters of s if it reads by range (a v2 archive
// with seekable layers or restart points), for mount --stats.
func StatsOf(s Storage) (RangedStats, bool) {
	rs, ok := s.(*rangedStorage)
	if !ok {
		return RangedStats{}, false
	}
	return rs.Stats(), true
}

// Stats returns the storage's counters so far.
func (s *rangedStorage) Stats() RangedStats {
	c := &s.stats
	return RangedStats{
		Reads: c.reads.Load(), BytesRead: c.bytesRead.Load(),
		Requests: c.requests.Load(), BytesFetched: c.bytesFetched.Load(), SpansFetched: c.spansFetched.Load(),
		CacheHits: c.hits.Load(), CacheMisses: c.misses.Load(), ReadAheadSpans: c.readAhead.Load(),
		DenseSpans: c.denseSpans.Load(), TraceSpans: c.traceSpans.Load(), PrefetchSpans: c.prefetchSpans.Load(), TracedSpans: c.traced.Load(),
		TraceFiles: c.traceFiles.Load(), PrefillFiles: c.prefillFiles.Load(), PrefillBytes: c.prefillBytes.Load(),
		FallbackReads: c.fallbackReads.Load(), Errors: c.errors.Load(),
		Latency: c.latency.stats(),
	}
}

// histogram counts durations in buckets a quarter of a power of two wide:
// bucket k holds durations below 2^((k+1)/4) ns.
type histogram struct {
	buckets [4 * 64]atomic.Int64
	max     atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	ns := max(int64(d), 1)
	h.buckets[bucketOf(ns)].Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// bucketOf is the bucket of ns >= 1: 4*floor(log2 ns) plus which quarter
// of that power of two it is in.
func bucketOf(ns int64) int {
	exp := bits.Len64(uint64(ns)) - 1
	k := 4 * exp
	for q := 3; q >= 1; q-- {
		if float64(ns) >= math.Exp2(float64(exp)+float64(q)/4) {
			k += q
			break
		}
	}
	return k
}

func (h *histogram) stats() LatencyStats {
	var counts [len(h.buckets)]int64
	var total int64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	maxD := time.Duration(h.max.Load())
	pct := func(p float64) time.Duration {
		if total == 0 {
			return 0
		}
		rank := int64(math.Ceil(p * float64(total)))
		var seen int64
		for k, c := range counts {
			if seen += c; seen >= rank {
				return min(time.Duration(math.Exp2(float64(k+1)/4)), maxD)
			}
		}
		return maxD
	}
	return LatencyStats{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: maxD}
}
