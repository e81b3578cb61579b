package archive

/*
#cgo LDFLAGS: -lz
#include <stdlib.h>
#include <zlib.h>

// zr_new allocates a stream and initialises it for windowBits wbits
// (31: gzip members; -15: raw deflate).
static z_stream *zr_new(int wbits, int *ret) {
	z_stream *s = calloc(1, sizeof(z_stream));
	if (s == NULL) {
		*ret = Z_MEM_ERROR;
		return NULL;
	}
	*ret = inflateInit2(s, wbits);
	if (*ret != Z_OK) {
		free(s);
		return NULL;
	}
	// No CRC-32 of gzip members: SHA-256 checks every byte already (the
	// blob's digest and diff ID while indexing, each span's when reading).
	*ret = inflateValidate(s, 0);
	if (*ret != Z_OK) {
		inflateEnd(s);
		free(s);
		return NULL;
	}
	return s;
}

// zr_reset starts a new gzip member, still without its CRC-32.
static int zr_reset(z_stream *s) {
	int ret = inflateReset2(s, 31);
	if (ret != Z_OK) {
		return ret;
	}
	return inflateValidate(s, 0);
}

// zr_reset_raw starts raw deflate afresh, with no history.
static int zr_reset_raw(z_stream *s) {
	return inflateReset2(s, -15);
}

static void zr_free(z_stream *s) {
	inflateEnd(s);
	free(s);
}

// zr_inflate runs one inflate call on the given buffers, which it forgets
// before returning (they are Go memory), and reports what it used.
static int zr_inflate(z_stream *s, unsigned char *in, unsigned inlen,
                      unsigned char *out, unsigned outlen, int flush,
                      unsigned *inused, unsigned *outused, int *dtype) {
	s->next_in = in;
	s->avail_in = inlen;
	s->next_out = out;
	s->avail_out = outlen;
	int ret = inflate(s, flush);
	*inused = inlen - s->avail_in;
	*outused = outlen - s->avail_out;
	*dtype = s->data_type;
	s->next_in = Z_NULL;
	s->avail_in = 0;
	s->next_out = Z_NULL;
	s->avail_out = 0;
	return ret;
}

static int zr_window(z_stream *s, unsigned char *buf, unsigned *n) {
	uInt len = 0;
	int ret = inflateGetDictionary(s, buf, &len);
	*n = len;
	return ret;
}

static int zr_set_window(z_stream *s, unsigned char *buf, unsigned n) {
	return inflateSetDictionary(s, buf, n);
}
*/
import "C"

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/sirupsen/logrus"
)

// DefaultZranSpan is how much uncompressed data lies between two restart
// points of a pulled layer, at most (points fall at the first deflate
// block boundary after it). A span's compressed bytes are cut span/32
// earlier (3.875 MiB), so that with the rest of the block it ends in they
// stay within span: a cold read of one small file fetches at most about
// 4 MiB. Measured on a gzip -6 tar of Go's tree and /usr/lib parts (80 MB
// of gzip): the restart points take 1.2% of the blob at 4 MiB, 1.6% at
// 3 MiB, 2.2% at 2 MiB and 4.4% at 1 MiB (their windows are 32 KiB each,
// deflated at level 4, base64 in the trailer's JSON). Windows are kept only
// where resuming needs them (ZranReader.startProbe): on the bench's large
// image (940 MB of gzip, 80% of it random data in stored blocks) 45 of 264
// points keep one, and the pulled archive went from 23.9 MB to 14.6 MB.
const DefaultZranSpan = 4 << 20

// zranWindow is deflate's history: the most a match can reach back.
const zranWindow = 32 << 10

// ZranIndex holds the restart points of one gzip layer blob (one or more
// members), found while the blob was inflated once for indexing. Points
// lie at deflate block boundaries; the span of point i is its layer's
// uncompressed bytes from Points[i].UOff up to the next point's UOff (or
// Size), and its SHA-256 checks every read of the span.
type ZranIndex struct {
	Size   int64       `json:"size"`  // uncompressed bytes of the layer
	CSize  int64       `json:"csize"` // bytes of the blob
	Points []ZranPoint `json:"points"`
}

// ZranPoint is one restart point: inflating resumes at compressed byte
// COff with the Bits (0-7) high bits of byte COff-1 still unread, in raw
// deflate mode, with Window (the up to 32 KiB of output before UOff,
// itself deflate-compressed) as history. It is zlib's zran method. Window
// is absent where resuming needs no history (checked while indexing: see
// ZranReader.startProbe).
type ZranPoint struct {
	COff   int64  `json:"coff"`
	Bits   uint8  `json:"bits,omitempty"`
	UOff   int64  `json:"uoff"`
	Window []byte `json:"window,omitempty"`
	SHA256 string `json:"sha256"` // of the span's uncompressed bytes
}

// start is the first blob byte a resume from p reads.
func (p ZranPoint) start() int64 {
	if p.Bits > 0 {
		return p.COff - 1
	}
	return p.COff
}

// zlibError names a zlib return code.
func zlibError(ret C.int, s *C.z_stream) error {
	msg := ""
	if s != nil && s.msg != nil {
		msg = ": " + C.GoString(s.msg)
	}
	switch ret {
	case C.Z_DATA_ERROR:
		return fmt.Errorf("corrupt deflate data%s", msg)
	case C.Z_MEM_ERROR:
		return errors.New("zlib: out of memory")
	case C.Z_STREAM_ERROR:
		return fmt.Errorf("zlib: stream error%s", msg)
	case C.Z_NEED_DICT:
		return errors.New("zlib: stream needs a preset dictionary")
	}
	return fmt.Errorf("zlib: error %d%s", int(ret), msg)
}

// zstream is one zlib inflate stream in C memory.
type zstream struct{ s *C.z_stream }

func newZstream(wbits int) (*zstream, error) {
	var ret C.int
	s := C.zr_new(C.int(wbits), &ret)
	if s == nil {
		return nil, zlibError(ret, nil)
	}
	return &zstream{s: s}, nil
}

func (z *zstream) close() {
	if z.s != nil {
		C.zr_free(z.s)
		z.s = nil
	}
}

// inflate runs inflate on in and out and returns the bytes it consumed and
// produced, zlib's data_type and its return code.
func (z *zstream) inflate(in, out []byte, flush C.int) (nin, nout int, dtype int, ret C.int) {
	var inp, outp *C.uchar
	if len(in) > 0 {
		inp = (*C.uchar)(unsafe.Pointer(&in[0]))
	}
	if len(out) > 0 {
		outp = (*C.uchar)(unsafe.Pointer(&out[0]))
	}
	var iu, ou C.uint
	var dt C.int
	ret = C.zr_inflate(z.s, inp, C.uint(len(in)), outp, C.uint(len(out)), flush, &iu, &ou, &dt)
	return int(iu), int(ou), int(dt), ret
}

// resetRaw starts raw deflate afresh, with no history.
func (z *zstream) resetRaw() error {
	if ret := C.zr_reset_raw(z.s); ret != C.Z_OK {
		return zlibError(ret, z.s)
	}
	return nil
}

// reset starts a new gzip member.
func (z *zstream) reset() error {
	if ret := C.zr_reset(z.s); ret != C.Z_OK {
		return zlibError(ret, z.s)
	}
	return nil
}

// ZranOption configures NewZranReader.
type ZranOption func(*zranOptions)

type zranOptions struct {
	span int64
}

// WithZranSpan sets how far apart restart points are: n uncompressed
// bytes or n-n/32 compressed ones, whichever comes first, rounded up to a
// deflate block boundary. The default is DefaultZranSpan.
func WithZranSpan(n int64) ZranOption {
	return func(o *zranOptions) {
		if n > 0 {
			o.span = n
		}
	}
}

// ZranReader inflates a gzip blob (one member or several) as it is read
// and records restart points for its ZranIndex. The blob is read on a
// goroutine of its own, a few buffers ahead of zlib; zlib runs on another,
// a few buffers ahead of Read; and Read hashes the spans: reading the
// blob, inflating it and what the caller does with the bytes overlap.
// Close it to free zlib's memory.
type ZranReader struct {
	// Owned by the reading goroutine until it exits.
	src io.Reader

	// Owned by the inflating goroutine until it exits.
	zs    *zstream
	o     zranOptions
	in    []byte // the input buffer being inflated: in[inLo:inHi] is left
	inLo  int
	inHi  int
	srcE  error   // the error src returned, once it has
	cin   int64   // blob bytes consumed by inflate
	uout  int64   // uncompressed bytes produced
	crc   uint32  // CRC-32 of the current member's bytes so far
	msize uint32  // and their count, modulo 2^32
	tail  [8]byte // the last bytes consumed
	idx   ZranIndex
	win   []byte
	fw    *flate.Writer
	out   []byte // the buffer being filled: out[:outHi]
	outHi int
	cuts  []int // offsets in out where points were recorded
	done  bool
	err   error
	// The probe of the latest point's window (see maybePoint): probe
	// inflates from the point with no history, probing is the point's
	// index (-1: none), probeLeft the output still to check, probeOut
	// scratch for it, and pending the point's window, uncompressed.
	probe     *zstream
	probing   int
	probeLeft int
	probeOut  []byte
	pending   []byte

	full   chan zchunk
	free   chan []byte
	inFull chan zinput // read input, for the inflating goroutine
	inFree chan []byte // input buffers back to the reading goroutine
	quit   chan struct{}
	exited chan struct{}
	read   chan struct{} // closed when the reading goroutine returns
	once   sync.Once

	// Owned by Read.
	cur    []byte    // what Read has not returned of the current chunk
	curBuf []byte    // the current chunk's buffer
	h      hash.Hash // of the current span
	spans  int       // points seen by Read
	sums   []string  // SHA-256 of each span Read has finished
	eof    bool
}

// zinput is a buffer of blob bytes and, with the last, what ended them.
type zinput struct {
	b   []byte
	err error
}

// zranInputBuffers of zranInputSize bytes hold the blob ahead of zlib.
const (
	zranInputBuffers = 4
	zranInputSize    = 256 << 10
)

// zchunk is a buffer of inflated bytes, with the offsets in it where
// restart points lie.
type zchunk struct {
	b    []byte
	cuts []int
}

// NewZranReader returns a reader of r's inflated bytes that indexes them.
func NewZranReader(r io.Reader, opts ...ZranOption) (*ZranReader, error) {
	o := zranOptions{span: DefaultZranSpan}
	for _, opt := range opts {
		opt(&o)
	}
	zs, err := newZstream(31)
	if err != nil {
		return nil, err
	}
	// Level 4 takes a third of level 9's time for windows 3% larger (0.03%
	// of the blob), measured on the gzip -6 tar of DefaultZranSpan's note.
	fw, _ := flate.NewWriter(io.Discard, 4)
	const buffers = 3
	z := &ZranReader{src: r, zs: zs, o: o, h: sha256.New(), win: make([]byte, zranWindow), fw: fw, probing: -1,
		full: make(chan zchunk, buffers), free: make(chan []byte, buffers),
		inFull: make(chan zinput, zranInputBuffers), inFree: make(chan []byte, zranInputBuffers),
		quit: make(chan struct{}), exited: make(chan struct{}), read: make(chan struct{})}
	for range zranInputBuffers {
		z.inFree <- make([]byte, zranInputSize)
	}
	go z.readBlob()
	// A blob that is not gzip fails here, as gzip.NewReader would. The
	// reading goroutine ends at its next read: the caller closes r.
	fail := func(err error) (*ZranReader, error) {
		close(z.quit)
		zs.close()
		return nil, err
	}
	if err := z.fill(); err != nil && !errors.Is(err, io.EOF) {
		return fail(err)
	}
	if z.inHi-z.inLo < 2 || z.in[z.inLo] != 0x1f || z.in[z.inLo+1] != 0x8b {
		return fail(errors.New("not gzip: bad magic"))
	}
	for range buffers {
		z.free <- make([]byte, 512<<10)
	}
	go z.run()
	return z, nil
}

// run inflates the blob into free buffers and hands them to Read.
func (z *ZranReader) run() {
	defer close(z.exited)
	defer close(z.full)
	for !z.done && z.err == nil {
		select {
		case z.out = <-z.free:
		case <-z.quit:
			return
		}
		z.outHi, z.cuts = 0, nil
		z.inflateMore()
		if z.outHi == 0 && len(z.cuts) == 0 {
			continue
		}
		select {
		case z.full <- zchunk{b: z.out[:z.outHi], cuts: z.cuts}:
		case <-z.quit:
			return
		}
	}
}

// readBlob reads src into free input buffers, each filled whole but the
// last, and hands them to the inflating goroutine until src ends or fails.
func (z *ZranReader) readBlob() {
	defer close(z.read)
	for {
		select {
		case <-z.quit:
			return
		default:
		}
		var b []byte
		select {
		case b = <-z.inFree:
		case <-z.quit:
			return
		}
		n, err := io.ReadFull(z.src, b)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		// inFull has room for every buffer: this never blocks.
		z.inFull <- zinput{b: b[:n], err: err}
		if err != nil {
			return
		}
	}
}

// errZranClosed ends inflating when Close stops it.
var errZranClosed = errors.New("zran reader closed")

// fill moves on to the next input buffer when this one is used up.
func (z *ZranReader) fill() error {
	if z.inLo < z.inHi {
		return nil
	}
	if z.srcE != nil {
		return z.srcE
	}
	if z.in != nil {
		z.inFree <- z.in[:cap(z.in)] // inFree has room for every buffer
		z.in = nil
	}
	var c zinput
	select {
	case c = <-z.inFull:
	case <-z.quit:
		return errZranClosed
	}
	z.in, z.inLo, z.inHi, z.srcE = c.b, 0, len(c.b), c.err
	if z.inHi > 0 {
		return nil
	}
	return z.srcE
}

// Read fills p with inflated bytes.
func (z *ZranReader) Read(p []byte) (int, error) {
	for len(z.cur) == 0 {
		if z.eof {
			return 0, io.EOF
		}
		if z.curBuf != nil {
			z.free <- z.curBuf[:cap(z.curBuf)]
			z.curBuf = nil
		}
		c, ok := <-z.full
		if !ok {
			// The inflating goroutine has exited: its fields are ours.
			if z.err != nil {
				return 0, z.err
			}
			if z.spans > 0 {
				z.sums = append(z.sums, hex.EncodeToString(z.h.Sum(nil)))
			}
			z.eof = true
			return 0, io.EOF
		}
		z.hashChunk(c)
		z.cur, z.curBuf = c.b, c.b
	}
	n := copy(p, z.cur)
	z.cur = z.cur[n:]
	return n, nil
}

// hashChunk adds a chunk to the span hashes, ending a span at each point.
func (z *ZranReader) hashChunk(c zchunk) {
	at := 0
	for _, cut := range c.cuts {
		z.h.Write(c.b[at:cut])
		at = cut
		if z.spans > 0 {
			z.sums = append(z.sums, hex.EncodeToString(z.h.Sum(nil)))
		}
		z.spans++
		z.h.Reset()
	}
	z.h.Write(c.b[at:])
}

// inflateMore inflates into the empty output buffer until it is full, the
// blob ends or an error stops it, recording points on the way.
func (z *ZranReader) inflateMore() {
	for z.outHi < len(z.out) && !z.done && z.err == nil {
		if err := z.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			z.err = fmt.Errorf("inflating: %w", err)
			return
		}
		nin, nout, dtype, ret := z.zs.inflate(z.in[z.inLo:z.inHi], z.out[z.outHi:], C.Z_BLOCK)
		z.keepTail(z.in[z.inLo : z.inLo+nin])
		z.feedProbe(z.in[z.inLo : z.inLo+nin])
		z.inLo += nin
		z.cin += int64(nin)
		z.uout += int64(nout)
		z.crc = crc32.Update(z.crc, crc32.IEEETable, z.out[z.outHi:z.outHi+nout])
		z.msize += uint32(nout)
		z.outHi += nout
		switch ret {
		case C.Z_OK:
		case C.Z_BUF_ERROR:
			if nin == 0 && nout == 0 && z.inLo < z.inHi {
				z.err = zlibError(ret, z.zs.s)
			}
			continue
		case C.Z_STREAM_END:
			if z.err = z.checkTrailer(); z.err == nil {
				z.err = z.nextMember()
			}
			continue
		default:
			z.err = zlibError(ret, z.zs.s)
			continue
		}
		// At a block boundary (or just after a member's header), not
		// after the last block.
		if dtype&128 != 0 && dtype&64 == 0 {
			z.maybePoint(uint8(dtype & 7))
		}
	}
}

// keepTail keeps the last 8 bytes inflate has consumed: at the end of a
// member, its trailer.
func (z *ZranReader) keepTail(b []byte) {
	if len(b) >= len(z.tail) {
		copy(z.tail[:], b[len(b)-len(z.tail):])
		return
	}
	copy(z.tail[:], z.tail[len(b):])
	copy(z.tail[len(z.tail)-len(b):], b)
}

// checkTrailer checks the CRC-32 and size in the trailer of the member
// that just ended against its bytes, as gzip readers do (zlib is told not
// to: Go's CRC-32 is several times faster).
func (z *ZranReader) checkTrailer() error {
	crc, size := binary.LittleEndian.Uint32(z.tail[:4]), binary.LittleEndian.Uint32(z.tail[4:])
	if crc != z.crc || size != z.msize {
		return fmt.Errorf("inflating: gzip member ending at %d: trailer has crc %08x and size %d, the member's bytes crc %08x and size %d", z.cin, crc, size, z.crc, z.msize)
	}
	z.crc, z.msize = 0, 0
	return nil
}

// nextMember, at the end of a member, starts the next one or ends the blob.
func (z *ZranReader) nextMember() error {
	err := z.fill()
	if errors.Is(err, io.EOF) {
		z.done = true
		return z.finish()
	}
	if err != nil {
		return fmt.Errorf("inflating: %w", err)
	}
	if z.in[z.inLo] != 0x1f {
		return fmt.Errorf("%d bytes after gzip member end at %d are not a gzip member", z.inHi-z.inLo, z.cin)
	}
	return z.zs.reset()
}

// maybePoint records a restart point here if the span since the last one
// is long enough (or there is none yet).
func (z *ZranReader) maybePoint(bits uint8) {
	ps := z.idx.Points
	if len(ps) > 0 {
		last := ps[len(ps)-1]
		if z.uout-last.UOff < z.o.span && z.cin-last.COff < z.o.span-z.o.span/32 {
			return
		}
		if z.uout == last.UOff {
			return
		}
	}
	var wn C.uint
	if ret := C.zr_window(z.zs.s, (*C.uchar)(unsafe.Pointer(&z.win[0])), &wn); ret != C.Z_OK {
		z.err = zlibError(ret, z.zs.s)
		return
	}
	z.keepWindow() // a probe still under way (never, with spans over 32 KiB)
	z.cuts = append(z.cuts, z.outHi)
	z.idx.Points = append(z.idx.Points, ZranPoint{COff: z.cin, Bits: bits, UOff: z.uout})
	if wn > 0 {
		z.pending = append(z.pending[:0], z.win[:wn]...)
		z.probing = len(z.idx.Points) - 1
		if err := z.startProbe(bits); err != nil {
			z.keepWindow()
		}
	}
}

// A point's window is kept only when resuming there needs it. Only the
// first 32 KiB of output after a point can reach back past it (a match
// reaches at most 32 KiB back), so the probe inflates from the point with
// no history at all, alongside the main pass and fed the same input, until
// it has produced those 32 KiB or its member ends: zlib fails a match that
// reaches back before its first output byte ("invalid distance too far
// back"), so coming through without an error proves that resuming with no
// window gives the very bytes the main pass gave. Stored blocks (the data
// gzip could not shrink) and a point at a member's start never need one,
// and their windows, 32 KiB of incompressible bytes each, were most of a
// pulled archive's size.

// startProbe starts the probe at the point just recorded, with bits (0-7)
// of the last byte consumed still unread.
func (z *ZranReader) startProbe(bits uint8) error {
	if z.probe == nil {
		p, err := newZstream(-15)
		if err != nil {
			return err
		}
		z.probe, z.probeOut = p, make([]byte, zranWindow)
	} else if err := z.probe.resetRaw(); err != nil {
		return err
	}
	if bits > 0 {
		if ret := C.inflatePrime(z.probe.s, C.int(bits), C.int(z.tail[len(z.tail)-1]>>(8-bits))); ret != C.Z_OK {
			return zlibError(ret, z.probe.s)
		}
	}
	z.probeLeft = zranWindow
	return nil
}

// feedProbe gives the probe the input the main pass has just consumed,
// and settles the window once the probe has an answer.
func (z *ZranReader) feedProbe(in []byte) {
	for z.probing >= 0 && len(in) > 0 {
		nin, nout, _, ret := z.probe.inflate(in, z.probeOut[:min(len(z.probeOut), z.probeLeft)], C.Z_NO_FLUSH)
		in = in[nin:]
		z.probeLeft -= nout
		switch {
		case ret != C.Z_OK && ret != C.Z_BUF_ERROR && ret != C.Z_STREAM_END:
			z.keepWindow() // it reached back before the point, or failed
		case ret == C.Z_STREAM_END || z.probeLeft == 0:
			z.probing = -1 // no window needed
		case nin == 0 && nout == 0:
			z.keepWindow() // stuck: keep it, to be safe
		}
	}
}

// keepWindow gives the point being probed, if any, its window
// (deflated), and ends the probe.
func (z *ZranReader) keepWindow() {
	if z.probing < 0 {
		return
	}
	var buf bytes.Buffer
	z.fw.Reset(&buf)
	z.fw.Write(z.pending)
	z.fw.Close()
	z.idx.Points[z.probing].Window = buf.Bytes()
	z.probing = -1
}

func (z *ZranReader) finish() error {
	z.keepWindow()
	z.idx.Size = z.uout
	z.idx.CSize = z.cin
	if z.inLo < z.inHi {
		return fmt.Errorf("%d bytes after the last gzip member", z.inHi-z.inLo)
	}
	return nil
}

// Index returns the blob's restart points once Read has returned io.EOF.
func (z *ZranReader) Index() (*ZranIndex, error) {
	if !z.eof {
		return nil, errors.New("zran index asked for before the blob was read to its end")
	}
	if len(z.sums) != len(z.idx.Points) {
		return nil, fmt.Errorf("zran index: %d span digests for %d points", len(z.sums), len(z.idx.Points))
	}
	idx := z.idx
	idx.Points = append([]ZranPoint(nil), z.idx.Points...)
	for i := range idx.Points {
		idx.Points[i].SHA256 = z.sums[i]
	}
	return &idx, nil
}

// Close stops reading and inflating, and frees zlib's memory. It waits for
// a read of the blob under way to return: close the blob first if one may
// block.
func (z *ZranReader) Close() error {
	z.once.Do(func() {
		close(z.quit)
		<-z.exited
		<-z.read
		z.zs.close()
		if z.probe != nil {
			z.probe.close()
		}
	})
	return nil
}

// spanEnd is where span i ends in the layer.
func (ix *ZranIndex) spanEnd(i int) int64 {
	if i+1 < len(ix.Points) {
		return ix.Points[i+1].UOff
	}
	return ix.Size
}

// cEnd is the blob byte after the last one a resume through span i reads.
func (ix *ZranIndex) cEnd(i int) int64 {
	if i+1 < len(ix.Points) {
		return ix.Points[i+1].COff
	}
	return ix.CSize
}

// check validates the index's shape: points ascend, each span has a digest.
func (ix *ZranIndex) check() error {
	if len(ix.Points) == 0 || ix.Points[0].UOff != 0 {
		return errors.New("zran index: no point at the start of the layer")
	}
	for i, p := range ix.Points {
		if p.Bits > 7 || !isHexDigest(p.SHA256) || p.start() < 0 || ix.cEnd(i) < p.COff || ix.spanEnd(i) < p.UOff ||
			(i > 0 && (p.UOff <= ix.Points[i-1].UOff || p.COff <= ix.Points[i-1].COff)) {
			return fmt.Errorf("zran index: point %d (compressed %d.%d, uncompressed %d) is out of order", i, p.COff, p.Bits, p.UOff)
		}
	}
	if ix.CSize < ix.Points[len(ix.Points)-1].COff {
		return errors.New("zran index: blob size is before the last point")
	}
	return nil
}

// Inflate resumes at point first and returns the uncompressed bytes of
// spans first..last, each checked against its SHA-256. blob holds the
// blob's bytes from Points[first].start() to cEnd(last). It returns the
// exact bytes or an error, never wrong bytes.
func (ix *ZranIndex) Inflate(blob []byte, first, last int) ([][]byte, error) {
	if first < 0 || last < first || last >= len(ix.Points) {
		return nil, fmt.Errorf("zran spans %d-%d: the index has %d", first, last, len(ix.Points))
	}
	p := ix.Points[first]
	if want := ix.cEnd(last) - p.start(); int64(len(blob)) != want {
		return nil, fmt.Errorf("zran spans %d-%d: got %d compressed bytes, want %d", first, last, len(blob), want)
	}
	var window []byte
	if len(p.Window) > 0 {
		var err error
		if window, err = io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(p.Window)), zranWindow+1)); err != nil {
			return nil, fmt.Errorf("zran point %d: window: %w", first, err)
		}
		if len(window) > zranWindow {
			return nil, fmt.Errorf("zran point %d: window is over 32 KiB", first)
		}
	}
	zs, err := newZstream(-15)
	if err != nil {
		return nil, err
	}
	defer zs.close()
	in := blob
	if p.Bits > 0 {
		if ret := C.inflatePrime(zs.s, C.int(p.Bits), C.int(in[0]>>(8-p.Bits))); ret != C.Z_OK {
			return nil, zlibError(ret, zs.s)
		}
		in = in[1:]
	}
	if len(window) > 0 {
		if ret := C.zr_set_window(zs.s, (*C.uchar)(unsafe.Pointer(&window[0])), C.uint(len(window))); ret != C.Z_OK {
			return nil, zlibError(ret, zs.s)
		}
	}
	out := make([]byte, ix.spanEnd(last)-p.UOff)
	pos := 0
	// raw is whether zlib is still in the member resumed at p, as raw
	// deflate: zlib reads neither its header nor its trailer. A member
	// begun since is inflated as gzip, header and trailer included (the
	// trailer's CRC-32 unchecked: each span's SHA-256 is).
	raw := true
	for pos < len(out) {
		nin, nout, _, ret := zs.inflate(in, out[pos:], C.Z_NO_FLUSH)
		in = in[nin:]
		pos += nout
		switch ret {
		case C.Z_OK:
		case C.Z_BUF_ERROR:
			if nin == 0 && nout == 0 {
				return nil, fmt.Errorf("zran spans %d-%d: compressed bytes end %d bytes short of the spans", first, last, len(out)-pos)
			}
		case C.Z_STREAM_END:
			if pos == len(out) {
				break
			}
			// The member ended inside the spans: go on with the next
			// one, past the resumed member's trailer, which zlib left.
			if raw {
				if len(in) < 8 {
					return nil, fmt.Errorf("zran spans %d-%d: truncated gzip member trailer", first, last)
				}
				in = in[8:]
				raw = false
			}
			if err := zs.reset(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("zran spans %d-%d: %w", first, last, zlibError(ret, zs.s))
		}
	}
	spans := make([][]byte, 0, last-first+1)
	for i := first; i <= last; i++ {
		b := out[ix.Points[i].UOff-p.UOff : ix.spanEnd(i)-p.UOff : ix.spanEnd(i)-p.UOff]
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != ix.Points[i].SHA256 {
			return nil, fmt.Errorf("zran span %d (uncompressed %d+%d): sha256 %s, want %s", i, ix.Points[i].UOff, len(b), got, ix.Points[i].SHA256)
		}
		spans = append(spans, b)
	}
	return spans, nil
}

// members describes the spans as Members, so the span cache can hold them
// content-addressed: a span's compressed range runs from its point's
// start to the next point.
func (ix *ZranIndex) members() []Member {
	ms := make([]Member, len(ix.Points))
	for i, p := range ix.Points {
		ms[i] = Member{COff: p.start(), CLen: ix.cEnd(i) - p.start(), UOff: p.UOff, ULen: ix.spanEnd(i) - p.UOff, SHA256: p.SHA256}
	}
	return ms
}

// zranLayer is one pulled layer read through its restart points.
type zranLayer struct {
	digest  string
	idx     *ZranIndex
	members []Member

	// noRanges is set when the registry ignored a range too far into the
	// blob to read up to: the layer is read whole from then on.
	noRanges atomic.Bool
}

// zranStorage serves the files of pulled layers (one gzip stream each, of
// one member or several) by byte range: a read fetches, with one
// single-range GET, the compressed bytes from the restart point before it
// to the one after it, inflates them from that point's window, checks each
// span against its SHA-256 and keeps it in the span cache. Layers with no
// restart points, and layers whose registry ignores ranges, are read
// through the whole-layer fallback.
type zranStorage struct {
	meta     *common.ClipArchiveMetadata
	layers   map[string]*zranLayer
	blobs    BlobRanger
	cache    *SpanCache
	fallback Storage
	log      *logrus.Entry
	timeout  time.Duration
	// stats are counted here, or in the ranged storage whose fallback
	// this is (which sets it before any read).
	stats *rangedCounters
	// noteRead, set by that ranged storage, records the spans each read
	// needed in its trace.
	noteRead func(dg string, first, last int)
}

// zranStorageOption configures newZranStorage.
type zranStorageOption func(*zranStorage)

// withZranLog is where failed reads are reported, one line each. The
// default is logrus's standard logger.
func withZranLog(l *logrus.Entry) zranStorageOption {
	return func(s *zranStorage) {
		if l != nil {
			s.log = l
		}
	}
}

// withZranTimeout bounds one read, its fetch included. The default is 2
// minutes.
func withZranTimeout(d time.Duration) zranStorageOption {
	return func(s *zranStorage) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// newZranStorage serves meta's nodes from the layers in zran through blobs
// and cache (which may be nil: then spans are fetched for every read), and
// the others through fallback, which may be nil when there are none. Each
// layer's points are checked here.
func newZranStorage(meta *common.ClipArchiveMetadata, zran map[string]*ZranIndex, blobs BlobRanger, cache *SpanCache, fallback Storage, opts ...zranStorageOption) (*zranStorage, error) {
	s := &zranStorage{meta: meta, layers: map[string]*zranLayer{}, blobs: blobs, cache: cache, fallback: fallback,
		log: logrus.NewEntry(logrus.StandardLogger()), timeout: 2 * time.Minute, stats: &rangedCounters{}}
	for _, o := range opts {
		o(s)
	}
	for dg, ix := range zran {
		if ix == nil {
			continue
		}
		if err := ix.check(); err != nil {
			return nil, corrupt("layer %s: %v", dg, err)
		}
		s.layers[dg] = &zranLayer{digest: dg, idx: ix, members: ix.members()}
	}
	return s, nil
}

// ReadFile fills dest from node's bytes at off.
func (s *zranStorage) ReadFile(node *common.ClipNode, dest []byte, off int64) (int, error) {
	var lr *layerRead
	if node.Remote != nil {
		if l := s.layers[node.Remote.LayerDigest]; l != nil {
			lr = &layerRead{digest: l.digest, noRanges: &l.noRanges, read: func(uoff int64, dest []byte) error { return s.read(l, uoff, dest) }}
		}
	}
	return readByRange(node, dest, off, lr, s.stats, s.log, s.fallback != nil,
		func(dest []byte) (int, error) { return s.readWhole(node, dest, off) })
}

// readWhole reads through the whole-layer fallback.
func (s *zranStorage) readWhole(node *common.ClipNode, dest []byte, off int64) (int, error) {
	if s.fallback == nil {
		return 0, fmt.Errorf("reading %s: layer %s has no restart points to read by range, and no whole-layer reader", node.Path, node.Remote.LayerDigest)
	}
	s.stats.fallbackReads.Add(1)
	return s.fallback.ReadFile(node, dest, off)
}

// read fills dest with the layer's uncompressed bytes at uoff.
func (s *zranStorage) read(l *zranLayer, uoff int64, dest []byte) (err error) {
	end := uoff + int64(len(dest))
	if uoff < 0 || end > l.idx.Size {
		return corrupt("bytes %d-%d lie outside the %d bytes of layer %s", uoff, end, l.idx.Size, l.digest)
	}
	if len(dest) == 0 {
		return nil
	}
	ms := l.members
	first := sort.Search(len(ms), func(i int) bool { return ms[i].UOff+ms[i].ULen > uoff })
	last := sort.Search(len(ms), func(i int) bool { return ms[i].UOff >= end }) - 1
	if s.noteRead != nil {
		defer func() {
			if err == nil {
				s.noteRead(l.digest, first, last)
			}
		}()
	}
	if s.cache != nil && readSpansInPlace(s.cache, ms[first:last+1], uoff, dest) {
		s.stats.hits.Add(int64(last + 1 - first))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	var spans [][]byte
	fetch := s.fetcher(l)
	if s.cache != nil {
		var counts spanCounts
		spans, counts, err = s.cache.get(ctx, ms[first:last+1], fetch)
		s.stats.hits.Add(int64(counts.hits))
		s.stats.misses.Add(int64(counts.misses))
	} else {
		spans, err = fetch(ctx, ms[first:last+1])
	}
	if err != nil {
		return err
	}
	copySpans(dest, uoff, ms[first:last+1], spans)
	return nil
}

// fetcher fetches a run of adjacent spans of l with one range request and
// inflates it from the run's first restart point.
func (s *zranStorage) fetcher(l *zranLayer) fetchFunc {
	return func(ctx context.Context, run []Member) ([][]byte, error) {
		first := sort.Search(len(l.members), func(i int) bool { return l.members[i].UOff >= run[0].UOff })
		last := first + len(run) - 1
		if last >= len(l.members) || l.members[first].UOff != run[0].UOff {
			return nil, fmt.Errorf("layer %s: no restart point at %d", l.digest, run[0].UOff)
		}
		coff := run[0].COff
		clen := run[len(run)-1].COff + run[len(run)-1].CLen - coff
		raw, err := s.blobs.ReadRange(ctx, l.digest, coff, clen)
		s.stats.requests.Add(1)
		if err != nil {
			return nil, err
		}
		s.stats.bytesFetched.Add(int64(len(raw)))
		spans, err := l.idx.Inflate(raw, first, last)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w: %w", l.digest, ErrSpanCorrupt, err)
		}
		s.stats.spansFetched.Add(int64(len(run)))
		return spans, nil
	}
}

func (s *zranStorage) Metadata() *common.ClipArchiveMetadata { return s.meta }
func (s *zranStorage) CachedLocally() bool                   { return false }

// Cleanup cleans up the fallback.
func (s *zranStorage) Cleanup() error {
	if s.fallback != nil {
		return s.fallback.Cleanup()
	}
	return nil
}
