package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/klauspost/compress/gzip"
	godigest "github.com/opencontainers/go-digest"
)

// ErrMemberMismatch reports a gzip member whose bytes are not the ones its
// index entry describes: wrong compressed or uncompressed length, trailing
// bytes, or a different SHA-256.
var ErrMemberMismatch = errors.New("gzip member does not match its index entry")

// Member is one independent gzip member of a seekable layer blob: where it
// lies in the compressed blob (COff, CLen) and in the uncompressed layer
// (UOff, ULen), and the hex SHA-256 of its uncompressed bytes, against which
// every ranged read is verified.
type Member struct {
	COff   int64  `json:"coff"`
	CLen   int64  `json:"clen"`
	UOff   int64  `json:"uoff"`
	ULen   int64  `json:"ulen"`
	SHA256 string `json:"sha256"`
}

// GzipIndexOf returns clip's restart points for a seekable blob: one
// checkpoint at the start of every member. A member needs no inflate window,
// so clip can start decompressing at any of them.
func GzipIndexOf(layerDigest string, members []Member) common.GzipIndex {
	idx := common.GzipIndex{LayerDigest: layerDigest, Checkpoints: make([]common.GzipCheckpoint, len(members))}
	for i, m := range members {
		idx.Checkpoints[i] = common.GzipCheckpoint{COff: m.COff, UOff: m.UOff}
	}
	return idx
}

// The default level is measured (BenchmarkSeekable, bench/RESULTS.md):
// buildah push compresses with pgzip at its default, klauspost's deflate
// level 5 in blocks that share a dictionary. Independent 1 MiB members at
// the same level come within 0.3% of its size for 0.99-1.05x its CPU time
// (the difference is the SHA-256 of every member). Level 4 costs 10-15%
// less but is 6.5% larger on a tar of small text files, over the 5% budget.
// compress/gzip needs 1.25x the CPU of klauspost's for the same size.
const (
	defaultMemberSize       = 1 << 20
	defaultCompressionLevel = 5
	defaultLookahead        = 64 << 10
)

type seekableOptions struct {
	memberSize  int
	level       int
	concurrency int
	lookahead   int
	noDigests   bool
}

// SeekableOption configures NewSeekableWriter.
type SeekableOption func(*seekableOptions)

// WithMemberSize sets the most uncompressed bytes in one gzip member; a
// member is cut earlier, at a tar entry boundary, when one lies in its second
// half. Smaller members make ranged reads cheaper and compression worse. The
// default is 1 MiB. Values below 1 are ignored.
func WithMemberSize(n int) SeekableOption {
	return func(o *seekableOptions) {
		if n > 0 {
			o.memberSize = n
		}
	}
}

// WithCompressionLevel sets the deflate level, 1 (fastest) to 9 (smallest).
// The default is 5, the level buildah push uses, which keeps the blob within
// 0.3% of the size of buildah's. An invalid level is reported by the first
// Write or Close.
func WithCompressionLevel(level int) SeekableOption {
	return func(o *seekableOptions) { o.level = level }
}

// WithConcurrency sets how many members are compressed at once, and so how
// many are in flight: the writer holds at most about 2n+4 member sizes of
// data (n+3 buffers of input, n+1 of output), whatever the stream's size.
// The default is runtime.GOMAXPROCS(0). Values below 1 are ignored.
func WithConcurrency(n int) SeekableOption {
	return func(o *seekableOptions) {
		if n > 0 {
			o.concurrency = n
		}
	}
}

// WithLookahead sets how late, in bytes of stream written, a Boundary call
// may come and still decide where a member is cut: the writer holds member
// size + lookahead bytes before cutting. The default is 64 KiB. Negative
// values are ignored.
func WithLookahead(n int) SeekableOption {
	return func(o *seekableOptions) {
		if n >= 0 {
			o.lookahead = n
		}
	}
}

// WithoutDigests makes the writer hash neither the blob nor the
// uncompressed stream, leaving BlobDigest and DiffID empty: for a caller
// that has both hashed already on either side of it (publish: the store's
// diff stream checks its diff ID, the upload hashes the blob it sends),
// each hash of the whole layer being a core's work of a sizeable share of
// the pass. Members keep their SHA-256s. The default hashes both.
func WithoutDigests() SeekableOption {
	return func(o *seekableOptions) { o.noDigests = true }
}

// seekJob is one member on its way through the pipeline: filled by the
// producer, compressed and hashed by a worker, written by the writer.
type seekJob struct {
	data []byte
	uoff int64
	out  *bytes.Buffer
	sum  [sha256.Size]byte
	err  error
	done chan struct{}
}

// SeekableWriter compresses a layer stream into seekable gzip: a sequence
// of independent gzip members of at most the member size of uncompressed
// data, cut at tar entry boundaries where the caller reports them, compressed
// in parallel and written to the destination in order. The blob is ordinary
// multi-member gzip, readable by any gzip reader.
//
// Write, Close and the accessors are for one goroutine; Boundary may be
// called from another (a tar reader fed by a tee of the same stream).
type SeekableWriter struct {
	opts seekableOptions
	dst  io.Writer

	// Producer side, owned by the goroutine calling Write.
	cur      []byte // uncompressed bytes of the member being filled
	curStart int64  // uncompressed offset of cur[0]
	closed   bool
	err      error // sticky: first error seen by Write or Close

	bmu        sync.Mutex
	boundaries []int64 // reported entry starts past curStart, ascending

	work      chan *seekJob
	order     chan *seekJob
	failed    chan struct{} // closed by the writer goroutine on a write error
	writerErr error         // set before failed is closed
	wdone     chan struct{} // closed when the writer goroutine returns
	workers   sync.WaitGroup
	// Free lists sized to the members in flight, so buffers keep their
	// capacity across members instead of being dropped at every GC.
	freeIn  chan []byte
	freeOut chan *bytes.Buffer

	// Written by the writer goroutine, read after wdone.
	members []Member
	blobSum hash.Hash
	diffSum hash.Hash
	cSize   int64
	uSize   int64
}

// NewSeekableWriter returns a writer that compresses what is written to it
// into seekable gzip on dst. Close must be called to flush the last member
// and stop the workers; the accessors are valid after it.
func NewSeekableWriter(dst io.Writer, opts ...SeekableOption) *SeekableWriter {
	o := seekableOptions{
		memberSize:  defaultMemberSize,
		level:       defaultCompressionLevel,
		concurrency: runtime.GOMAXPROCS(0),
		lookahead:   defaultLookahead,
	}
	for _, opt := range opts {
		opt(&o)
	}
	var blobSum, diffSum hash.Hash
	if !o.noDigests {
		blobSum, diffSum = sha256.New(), sha256.New()
	}
	sw := &SeekableWriter{
		blobSum: blobSum,
		diffSum: diffSum,
		opts:    o,
		dst:     dst,
		work:    make(chan *seekJob),
		order:   make(chan *seekJob, o.concurrency),
		failed:  make(chan struct{}),
		wdone:   make(chan struct{}),
	}
	sw.freeIn = make(chan []byte, o.concurrency+3)
	sw.freeOut = make(chan *bytes.Buffer, o.concurrency+1)
	if _, err := gzip.NewWriterLevel(io.Discard, o.level); err != nil {
		sw.err = fmt.Errorf("creating seekable gzip writer: %w", err)
		close(sw.wdone)
		return sw
	}
	sw.cur = sw.getIn()
	for i := 0; i < o.concurrency; i++ {
		sw.workers.Add(1)
		go sw.compressLoop()
	}
	go sw.writeLoop()
	return sw
}

// Boundary reports that uncompressed offset off starts a tar entry, a good
// place to cut a member. Offsets must come in increasing order; one that is
// not past the last reported, or that lies in a member already cut, is
// ignored. It may come up to the lookahead after the bytes at off were
// written.
func (sw *SeekableWriter) Boundary(off int64) {
	sw.bmu.Lock()
	defer sw.bmu.Unlock()
	if n := len(sw.boundaries); n > 0 && off <= sw.boundaries[n-1] {
		return
	}
	sw.boundaries = append(sw.boundaries, off)
}

// Write buffers p and hands every full member to the compressors. It
// returns the first error of the destination writer.
func (sw *SeekableWriter) Write(p []byte) (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if sw.closed {
		return 0, errors.New("writing seekable gzip: writer is closed")
	}
	hold := sw.opts.memberSize + sw.opts.lookahead
	n := 0
	for len(p) > 0 {
		// Cut only when a byte past the lookahead arrives, so a boundary
		// reported just after the lookahead was written still counts.
		if len(sw.cur) >= hold {
			if err := sw.cut(false); err != nil {
				sw.err = err
				return n, err
			}
		}
		k := min(len(p), hold-len(sw.cur))
		sw.cur = append(sw.cur, p[:k]...)
		p, n = p[k:], n+k
	}
	return n, nil
}

// cut sends the next member off the front of cur: up to the last known
// boundary in the second half of the member size, or exactly the member size
// when there is none. The last member, at most the member size, is sent
// whole.
func (sw *SeekableWriter) cut(last bool) error {
	size := int64(sw.opts.memberSize)
	end := sw.curStart + min(size, int64(len(sw.cur)))
	sw.bmu.Lock()
	i := 0
	for ; i < len(sw.boundaries) && sw.boundaries[i] <= sw.curStart; i++ {
	}
	if !last {
		lo, hi := sw.curStart+size-size/2, end
		for j := i; j < len(sw.boundaries) && sw.boundaries[j] <= hi; j++ {
			if sw.boundaries[j] >= lo {
				end = sw.boundaries[j]
			}
		}
	}
	for ; i < len(sw.boundaries) && sw.boundaries[i] <= end; i++ {
	}
	sw.boundaries = append(sw.boundaries[:0], sw.boundaries[i:]...)
	sw.bmu.Unlock()

	n := int(end - sw.curStart)
	next := sw.getIn()
	next = append(next, sw.cur[n:]...)
	job := &seekJob{data: sw.cur[:n], uoff: sw.curStart, done: make(chan struct{})}
	sw.cur, sw.curStart = next, end
	return sw.submit(job)
}

// submit queues job for in-order writing, then for compression. The order
// queue's capacity bounds the members in flight.
func (sw *SeekableWriter) submit(job *seekJob) error {
	select {
	case sw.order <- job:
	case <-sw.failed:
		return sw.writerErr
	}
	select {
	case sw.work <- job:
		return nil
	case <-sw.failed:
		return sw.writerErr
	}
}

// compressLoop compresses members until the work queue closes or the writer
// fails.
func (sw *SeekableWriter) compressLoop() {
	defer sw.workers.Done()
	var zw *gzip.Writer
	for {
		var job *seekJob
		var ok bool
		select {
		case job, ok = <-sw.work:
			if !ok {
				return
			}
		case <-sw.failed:
			return
		}
		out := sw.getOut()
		if zw == nil {
			// The level was validated in NewSeekableWriter.
			zw, _ = gzip.NewWriterLevel(out, sw.opts.level)
		} else {
			zw.Reset(out)
		}
		if _, err := zw.Write(job.data); err != nil {
			job.err = err
		} else if err := zw.Close(); err != nil {
			job.err = err
		}
		job.out, job.sum = out, sha256.Sum256(job.data)
		close(job.done)
	}
}

// writeLoop writes compressed members to the destination in order, hashing
// both streams and recording each member, until the order queue closes or a
// write fails.
func (sw *SeekableWriter) writeLoop() {
	defer close(sw.wdone)
	for job := range sw.order {
		<-job.done
		if err := sw.writeMember(job); err != nil {
			sw.writerErr = err
			close(sw.failed)
			return
		}
	}
}

func (sw *SeekableWriter) writeMember(job *seekJob) error {
	if job.err != nil {
		return fmt.Errorf("compressing member at %d: %w", job.uoff, job.err)
	}
	b := job.out.Bytes()
	n, err := sw.dst.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("writing seekable gzip member at %d: %w", job.uoff, err)
	}
	if sw.blobSum != nil {
		sw.blobSum.Write(b)
		sw.diffSum.Write(job.data)
	}
	sw.members = append(sw.members, Member{
		COff: sw.cSize, CLen: int64(len(b)),
		UOff: job.uoff, ULen: int64(len(job.data)),
		SHA256: hex.EncodeToString(job.sum[:]),
	})
	sw.cSize += int64(len(b))
	sw.uSize += int64(len(job.data))
	sw.putOut(job.out)
	sw.putIn(job.data)
	return nil
}

func (sw *SeekableWriter) getIn() []byte {
	select {
	case b := <-sw.freeIn:
		return b[:0]
	default:
		return make([]byte, 0, sw.opts.memberSize+sw.opts.lookahead)
	}
}

func (sw *SeekableWriter) putIn(b []byte) {
	select {
	case sw.freeIn <- b:
	default:
	}
}

// getOut returns an empty buffer with room for a member that does not
// compress (deflate's stored blocks add 5 bytes per 64 KiB).
func (sw *SeekableWriter) getOut() *bytes.Buffer {
	var b *bytes.Buffer
	select {
	case b = <-sw.freeOut:
		b.Reset()
	default:
		b = new(bytes.Buffer)
	}
	b.Grow(sw.opts.memberSize + sw.opts.memberSize/1024 + 64)
	return b
}

func (sw *SeekableWriter) putOut(b *bytes.Buffer) {
	select {
	case sw.freeOut <- b:
	default:
	}
}

// Close compresses and writes what is buffered, waits for every member to
// be written and stops the workers. An empty stream becomes one empty
// member, so the blob is still valid gzip.
func (sw *SeekableWriter) Close() error {
	if sw.closed {
		return sw.err
	}
	sw.closed = true
	if sw.err == nil {
		for len(sw.cur) > sw.opts.memberSize && sw.err == nil {
			sw.err = sw.cut(false)
		}
		if sw.err == nil && (len(sw.cur) > 0 || sw.curStart == 0) {
			sw.err = sw.cut(true)
		}
	}
	close(sw.work)
	close(sw.order)
	sw.workers.Wait()
	<-sw.wdone
	if sw.err == nil {
		sw.err = sw.writerErr
	}
	return sw.err
}

// Members returns the members written, in order. It is valid after Close.
func (sw *SeekableWriter) Members() []Member {
	return append([]Member(nil), sw.members...)
}

// BlobDigest returns the digest of the compressed blob, empty
// WithoutDigests. It is valid after Close.
func (sw *SeekableWriter) BlobDigest() godigest.Digest {
	if sw.blobSum == nil {
		return ""
	}
	return godigest.NewDigest(godigest.SHA256, sw.blobSum)
}

// BlobSize returns the size of the compressed blob. It is valid after Close.
func (sw *SeekableWriter) BlobSize() int64 { return sw.cSize }

// DiffID returns the digest of the uncompressed stream, empty
// WithoutDigests. It is valid after Close.
func (sw *SeekableWriter) DiffID() godigest.Digest {
	if sw.diffSum == nil {
		return ""
	}
	return godigest.NewDigest(godigest.SHA256, sw.diffSum)
}

// UncompressedSize returns the size of the uncompressed stream. It is valid
// after Close.
func (sw *SeekableWriter) UncompressedSize() int64 { return sw.uSize }

// maxDeflateRatio bounds what a deflate stream can expand to (258 bytes per
// 2-bit code, about 1032:1), so a corrupt index cannot make InflateMember
// allocate more than the data could ever hold.
const maxDeflateRatio = 1032

// InflateMember decompresses one member from src, which must hold exactly
// its m.CLen compressed bytes, and checks the result's length, the gzip
// trailer's CRC-32 and size, and the SHA-256 against m. A mismatch wraps
// ErrMemberMismatch; corrupt gzip is an invalid header or deflate data.
// It never returns bytes that fail the checks. It inflates with libdeflate
// (inflate.go).
func InflateMember(src []byte, m Member) ([]byte, error) {
	if int64(len(src)) != m.CLen {
		return nil, fmt.Errorf("inflating member at %d: %d compressed bytes, index says %d: %w", m.UOff, len(src), m.CLen, ErrMemberMismatch)
	}
	if m.ULen < 0 || m.ULen > maxDeflateRatio*m.CLen+1024 {
		return nil, fmt.Errorf("inflating member at %d: impossible length %d for %d compressed bytes: %w", m.UOff, m.ULen, m.CLen, ErrMemberMismatch)
	}
	if len(src) < 18 {
		return nil, fmt.Errorf("inflating member at %d: %d bytes are too few for a gzip member: %w", m.UOff, len(src), ErrMemberMismatch)
	}
	hdr, err := gzipHeaderLen(src)
	if err != nil {
		return nil, fmt.Errorf("inflating member at %d: %w", m.UOff, err)
	}
	// One byte of room more than the member should need, to tell a
	// longer one.
	out := make([]byte, m.ULen+1)
	nin, nout, err := inflateRaw(src[hdr:], out)
	switch {
	case errors.Is(err, errDeflateRoom) || err == nil && int64(nout) > m.ULen:
		return nil, fmt.Errorf("inflating member at %d: member longer than %d bytes: %w", m.UOff, m.ULen, ErrMemberMismatch)
	case err != nil:
		return nil, fmt.Errorf("inflating member at %d: %w", m.UOff, err)
	case int64(nout) < m.ULen:
		return nil, fmt.Errorf("inflating member at %d: member shorter than %d bytes: %w", m.UOff, m.ULen, ErrMemberMismatch)
	case hdr+nin+8 != len(src):
		return nil, fmt.Errorf("inflating member at %d: its deflate stream ends at byte %d of %d, want 8 before the end (the trailer): %w", m.UOff, hdr+nin, len(src), ErrMemberMismatch)
	}
	out = out[:m.ULen:m.ULen]
	trailer := src[len(src)-8:]
	crc, size, sum := binary.LittleEndian.Uint32(trailer), binary.LittleEndian.Uint32(trailer[4:]), crc32.ChecksumIEEE(out)
	if crc != sum || size != uint32(m.ULen) {
		return nil, fmt.Errorf("inflating member at %d: gzip trailer has crc %08x and size %d, the member's bytes crc %08x and size %d: %w", m.UOff, crc, size, sum, uint32(m.ULen), ErrMemberMismatch)
	}
	if sum := sha256.Sum256(out); hex.EncodeToString(sum[:]) != m.SHA256 {
		return nil, fmt.Errorf("inflating member at %d: sha256 %x, index says %s: %w", m.UOff, sum, m.SHA256, ErrMemberMismatch)
	}
	return out, nil
}
