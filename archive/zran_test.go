package archive

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/clipbuild/clipbuild/registry"
)

// zranSample is text and incompressible random data in turns, so a
// gzip -6 stream of it has stored blocks between compressed ones.
func zranSample(seed int64, n int) []byte {
	rng := rand.New(rand.NewSource(seed))
	var b bytes.Buffer
	words := []string{"alpha ", "beta ", "gamma\n", "delta ", "/usr/lib/x86_64-linux-gnu/", "epsilon\t", "0123456789"}
	for b.Len() < n {
		chunk := 16<<10 + rng.Intn(300<<10)
		if rng.Intn(3) == 0 {
			r := make([]byte, chunk)
			rng.Read(r)
			b.Write(r)
			continue
		}
		for end := b.Len() + chunk; b.Len() < end; {
			b.WriteString(words[rng.Intn(len(words))])
		}
	}
	return b.Bytes()[:n]
}

// farMatches returns n bytes of units of fresh random bytes (2 to 30 KiB)
// each followed by a copy of up to 12 KiB of the bytes before them, as far
// back as gzip's matches reach: a match nearly 32 KiB back after up to 30 KiB
// of literals.
func farMatches(seed int64, n int) []byte {
	rng := rand.New(rand.NewSource(seed))
	b := make([]byte, 32<<10, n+64<<10)
	rng.Read(b)
	for len(b) < n {
		fresh := make([]byte, 2<<10+rng.Intn(28<<10))
		rng.Read(fresh)
		// gzip matches at most 32 KiB - 262 bytes back
		reach := 32<<10 - 512 - len(fresh)
		size := min(12<<10, reach)
		from := len(b) - reach
		prev := append([]byte(nil), b[from:from+size]...)
		b = append(append(b, fresh...), prev...)
	}
	return b[:n]
}

// gzipCLI compresses b with the gzip command at the given level.
func gzipCLI(t *testing.T, b []byte, level int) []byte {
	t.Helper()
	cmd := exec.Command("gzip", fmt.Sprintf("-%d", level), "-c", "-n")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gzip -%d: %v", level, err)
	}
	return out
}

func gzipGo(t *testing.T, b []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipMember compresses b as one gzip member with Go's writer, with a
// name, comment and extra field in its header (FNAME, FCOMMENT, FEXTRA),
// and flushes (an empty stored block, as pigz writes between its chunks)
// every flushEvery bytes when that is above 0.
func gzipMember(t *testing.T, b []byte, level, flushEvery int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Name, zw.Comment, zw.Extra = "layer.tar", "a comment", []byte{'c', 'b', 4, 0, 1, 2, 3, 4}
	for len(b) > 0 {
		n := len(b)
		if flushEvery > 0 {
			n = min(n, flushEvery)
		}
		zw.Write(b[:n])
		b = b[n:]
		if flushEvery > 0 {
			zw.Flush()
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzipFHCRC compresses b as one gzip member whose header carries its own
// CRC-16 (FHCRC), which Go's writer never sets.
func gzipFHCRC(t *testing.T, b []byte, level int) []byte {
	t.Helper()
	plain := gzipGo(t, b, level)
	hdr := bytes.Clone(plain[:10])
	hdr[3] |= 0x02
	crc := crc32.ChecksumIEEE(hdr)
	return append(append(hdr, byte(crc), byte(crc>>8)), plain[10:]...)
}

// seekableGzip compresses b as clipbuild's builds do: independent members
// of at most memberSize bytes (klauspost's deflate, level 5).
func seekableGzip(t *testing.T, b []byte, memberSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	sw := NewSeekableWriter(&buf, WithMemberSize(memberSize))
	if _, err := sw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if len(sw.Members()) < 2 {
		t.Fatalf("%d gzip members, want several", len(sw.Members()))
	}
	return buf.Bytes()
}

// members concatenates gzip members of the pieces of b cut at cuts, each
// compressed by gz with the next of levels in turn.
func members(t *testing.T, b []byte, cuts []int, levels []int, gz func(*testing.T, []byte, int) []byte) []byte {
	t.Helper()
	var out []byte
	at := 0
	for i, c := range append(cuts, len(b)) {
		out = append(out, gz(t, b[at:c], levels[i%len(levels)])...)
		at = c
	}
	return out
}

// zranIndexOf reads blob through a ZranReader, checks the bytes it gives
// against want, and returns the index.
func zranIndexOf(t *testing.T, blob, want []byte, span int64) *ZranIndex {
	t.Helper()
	zr, err := NewZranReader(bytes.NewReader(blob), WithZranSpan(span))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("inflated %d bytes, want the %d original ones", len(got), len(want))
	}
	ix, err := zr.Index()
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.check(); err != nil {
		t.Fatal(err)
	}
	if ix.Size != int64(len(want)) || ix.CSize != int64(len(blob)) {
		t.Fatalf("index sizes %d/%d, want %d/%d", ix.Size, ix.CSize, len(want), len(blob))
	}
	return ix
}

// sliceRanger serves byte ranges of in-memory blobs and counts bytes sent.
type sliceRanger struct {
	blobs map[string][]byte
	sent  atomic.Int64
	gets  atomic.Int64
	flip  int64 // when >= 0, this blob offset is served corrupted
}

func (r *sliceRanger) ReadRange(_ context.Context, dg string, off, n int64) ([]byte, error) {
	b := r.blobs[dg]
	if off < 0 || n < 0 || off+n > int64(len(b)) {
		return nil, fmt.Errorf("range %d+%d outside blob of %d", off, n, len(b))
	}
	out := bytes.Clone(b[off : off+n])
	if r.flip >= off && r.flip < off+n {
		out[r.flip-off] ^= 0x40
	}
	r.sent.Add(n)
	r.gets.Add(1)
	return out, nil
}

func TestZranResumesExactly(t *testing.T) {
	text := zranSample(1, 6<<20)
	other := zranSample(2, 3<<20)
	multi := append(append(gzipCLI(t, text[:2<<20], 6), gzipGo(t, text[2<<20:4<<20], 1)...), gzipCLI(t, text[4<<20:], 9)...)
	// Members far smaller than a span, at every gzip level, so one span
	// holds several member ends and starts.
	var cuts []int
	for c := 150 << 10; c < len(text); c += 150<<10 + len(cuts)*7<<10 {
		cuts = append(cuts, c)
	}
	small := members(t, text, cuts, []int{1, 2, 3, 4, 5, 6, 7, 8, 9}, gzipCLI)
	// Empty members first, last and in a row in the middle, with headers
	// that have a name, a comment and an extra field.
	empties := members(t, other, []int{0, 0, 1 << 20, 1 << 20, 1 << 20, 2 << 20, len(other)}, []int{6},
		func(t *testing.T, b []byte, level int) []byte { return gzipMember(t, b, level, 0) })
	// Matches that reach far back after a stretch of literals: fresh
	// random bytes, then a copy of the bytes before them, so a point's
	// window may go unused for kilobytes and then be needed.
	far := farMatches(4, 8<<20)
	tests := []struct {
		name string
		blob []byte
		want []byte
		span int64
	}{
		{"gzip -6 text and random", gzipCLI(t, text, 6), text, 128 << 10},
		{"gzip -6, far matches after literals", gzipCLI(t, far, 6), far, 64 << 10},
		{"gzip -1", gzipCLI(t, other, 1), other, 64 << 10},
		{"gzip -9", gzipCLI(t, other, 9), other, 200 << 10},
		{"go gzip default", gzipGo(t, other, gzip.DefaultCompression), other, 100 << 10},
		{"stored blocks only", gzipGo(t, other, gzip.NoCompression), other, 300 << 10},
		{"flushed every 128 KiB, as pigz", gzipMember(t, text, 6, 128<<10), text, 256 << 10},
		{"multi-member", multi, text, 96 << 10},
		{"multi-member, spans across members", multi, text, 3 << 20},
		{"seekable 1 MiB members, default span", seekableGzip(t, text, 1<<20), text, DefaultZranSpan},
		{"seekable 1 MiB members, 1.5 MiB span", seekableGzip(t, text, 1<<20), text, 3 << 19},
		{"seekable 64 KiB members", seekableGzip(t, other, 64<<10), other, 1 << 20},
		{"150 KiB members, gzip -1 to -9", small, text, 1 << 20},
		{"empty members", empties, other, 700 << 10},
		{"header CRCs", members(t, other, []int{500 << 10, 1 << 20}, []int{6, 1}, gzipFHCRC), other, 400 << 10},
		{"empty", gzipCLI(t, nil, 6), []byte{}, 1 << 20},
		{"empty members only", append(gzipCLI(t, nil, 6), gzipGo(t, nil, 6)...), []byte{}, 1 << 20},
		{"default span", gzipCLI(t, text, 6), text, DefaultZranSpan},
	}
	primed := 0 // points that need inflatePrime (stored blocks end byte-aligned)
	// Points past a member's start, with and without the window that
	// resuming there needs (kept only then): both kinds must resume
	// exactly.
	windowed, bare := 0, 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix := zranIndexOf(t, tc.blob, tc.want, tc.span)
			for _, p := range ix.Points[1:] {
				if len(p.Window) > 0 {
					windowed++
				} else {
					bare++
				}
			}
			if tc.name == "stored blocks only" {
				for i, p := range ix.Points {
					if len(p.Window) > 0 {
						t.Errorf("point %d in stored blocks keeps a %d-byte window: resuming there needs none", i, len(p.Window))
					}
				}
			}
			// Points fall on block boundaries, and a block may be long.
			if min := len(tc.want) / int(tc.span*8); len(ix.Points) < min {
				t.Fatalf("%d points, want at least %d", len(ix.Points), min)
			}
			// What a read of a span fetches: its compressed bytes are cut
			// at span-span/32 and end with the block they are in.
			for i, p := range ix.Points {
				if got, limit := ix.cEnd(i)-p.start(), tc.span-tc.span/32+128<<10; got > limit {
					t.Errorf("span %d has %d compressed bytes, want at most %d", i, got, limit)
				}
			}
			bits := 0
			for i, p := range ix.Points {
				if p.Bits > 0 {
					bits++
				}
				spans, err := ix.Inflate(tc.blob[p.start():ix.cEnd(i)], i, i)
				if err != nil {
					t.Fatalf("span %d: %v", i, err)
				}
				if !bytes.Equal(spans[0], tc.want[p.UOff:ix.spanEnd(i)]) {
					t.Fatalf("span %d differs from the original", i)
				}
			}
			primed += bits
			// Runs of spans, as one fetch inflates them: every pair, and
			// the whole layer from the first point.
			runs := [][2]int{{0, len(ix.Points) - 1}}
			for i := 0; i+1 < len(ix.Points); i++ {
				runs = append(runs, [2]int{i, i + 1})
			}
			for _, r := range runs {
				p := ix.Points[r[0]]
				spans, err := ix.Inflate(tc.blob[p.start():ix.cEnd(r[1])], r[0], r[1])
				if err != nil {
					t.Fatalf("spans %d-%d: %v", r[0], r[1], err)
				}
				if got := bytes.Join(spans, nil); !bytes.Equal(got, tc.want[p.UOff:ix.spanEnd(r[1])]) {
					t.Fatalf("spans %d-%d differ from the original", r[0], r[1])
				}
			}
			// Random reads through the storage, each compared with the original.
			fr := &sliceRanger{blobs: map[string][]byte{"sha256:l": tc.blob}, flip: -1}
			s, err := newZranStorage(nil, map[string]*ZranIndex{"sha256:l": ix}, fr, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewSource(3))
			for k := 0; k < 60 && len(tc.want) > 0; k++ {
				off := rng.Int63n(int64(len(tc.want)))
				n := 1 + rng.Int63n(min(int64(len(tc.want))-off, 300<<10))
				node := &common.ClipNode{Path: "/f", Remote: &common.RemoteRef{LayerDigest: "sha256:l", UOffset: off, ULength: n}}
				dest := make([]byte, n)
				if got, err := s.ReadFile(node, dest, 0); err != nil || got != int(n) {
					t.Fatalf("read %d+%d: %d, %v", off, n, got, err)
				}
				if !bytes.Equal(dest, tc.want[off:off+n]) {
					t.Fatalf("read %d+%d differs from the original", off, n)
				}
			}
		})
	}
	if primed == 0 {
		t.Error("no point needs inflatePrime: the bit offset path is untested")
	}
	if windowed == 0 || bare == 0 {
		t.Errorf("%d points with a window and %d without: both must be tested", windowed, bare)
	}
}

func TestZranNeverServesWrongBytes(t *testing.T) {
	data := zranSample(4, 4<<20)
	blob := gzipCLI(t, data, 6)
	ix := zranIndexOf(t, blob, data, 256<<10)
	if len(ix.Points) < 4 {
		t.Fatalf("%d points, want 4 or more", len(ix.Points))
	}
	i := len(ix.Points) / 2
	p := ix.Points[i]
	raw := blob[p.start():ix.cEnd(i)]
	tests := []struct {
		name   string
		mutate func(ix *ZranIndex, raw []byte) []byte
		// mayPass is set for changes to bits a resume may never need
		// (the end-of-block code after the span's last byte): they must
		// give an error or the exact bytes.
		mayPass bool
	}{
		{"flipped first byte", func(_ *ZranIndex, raw []byte) []byte { raw[0] ^= 0x80; return raw }, false},
		{"flipped middle byte", func(_ *ZranIndex, raw []byte) []byte { raw[len(raw)/2] ^= 0x10; return raw }, false},
		{"flipped last byte", func(_ *ZranIndex, raw []byte) []byte { raw[len(raw)-1] ^= 0x01; return raw }, true},
		{"every byte flipped in turn", nil, true},
		{"truncated", func(_ *ZranIndex, raw []byte) []byte { return raw[:len(raw)-1] }, false},
		{"wrong window", func(ix *ZranIndex, raw []byte) []byte { ix.Points[i].Window = ix.Points[i-1].Window; return raw }, false},
		{"no window", func(ix *ZranIndex, raw []byte) []byte { ix.Points[i].Window = nil; return raw }, false},
		{"wrong bits", func(ix *ZranIndex, raw []byte) []byte { ix.Points[i].Bits = (ix.Points[i].Bits + 3) % 8; return raw }, false},
		{"wrong digest", func(ix *ZranIndex, raw []byte) []byte {
			ix.Points[i].SHA256 = ix.Points[i-1].SHA256
			return raw
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := data[p.UOff:ix.spanEnd(i)]
			if tc.mutate == nil {
				// Every 97th byte, each flipped whole: an error or the
				// exact bytes, never others.
				errs := 0
				for k := 0; k < len(raw); k += 97 {
					in := bytes.Clone(raw)
					in[k] ^= 0xff
					spans, err := ix.Inflate(in, i, i)
					if err != nil {
						errs++
						continue
					}
					if !bytes.Equal(spans[0], want) {
						t.Fatalf("byte %d flipped: Inflate gave wrong bytes", k)
					}
				}
				if errs == 0 {
					t.Fatal("no flipped byte gave an error")
				}
				return
			}
			c := *ix
			c.Points = append([]ZranPoint(nil), ix.Points...)
			in := tc.mutate(&c, bytes.Clone(raw))
			// The fetched length must match what the point says, so a
			// wrong Bits value changes the range too.
			if c.Points[i].start() != p.start() {
				in = bytes.Clone(blob[c.Points[i].start():ix.cEnd(i)])
			}
			spans, err := c.Inflate(in, i, i)
			if err == nil && !(tc.mayPass && bytes.Equal(spans[0], want)) {
				t.Fatalf("Inflate gave %d bytes (equal to the original: %v), want an error", len(spans[0]), bytes.Equal(spans[0], want))
			}
		})
	}
	// On the wire: a flipped byte in the ranged response fails the read.
	fr := &sliceRanger{blobs: map[string][]byte{"sha256:l": blob}, flip: p.COff + 100}
	s, err := newZranStorage(nil, map[string]*ZranIndex{"sha256:l": ix}, fr, nil, nil, withZranLog(testEntry(t)))
	if err != nil {
		t.Fatal(err)
	}
	node := &common.ClipNode{Path: "/f", Remote: &common.RemoteRef{LayerDigest: "sha256:l", UOffset: p.UOff + 10, ULength: 6}}
	if _, err := s.ReadFile(node, make([]byte, 6), 0); !errors.Is(err, ErrSpanCorrupt) {
		t.Fatalf("read through a corrupted range: %v, want ErrSpanCorrupt", err)
	}
}

func TestZranSmallReadFetchesOneSpan(t *testing.T) {
	data := zranSample(5, 12<<20)
	blob := gzipCLI(t, data, 6)
	ix := zranIndexOf(t, blob, data, DefaultZranSpan)
	fr := &sliceRanger{blobs: map[string][]byte{"sha256:l": blob}, flip: -1}
	cache, err := OpenSpanCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := newZranStorage(nil, map[string]*ZranIndex{"sha256:l": ix}, fr, cache, nil, withZranTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// As OpenStorage serves a pulled layer: through rangedStorage, which
	// has no members for it, with the zran storage as its fallback.
	rs, err := newRangedStorage(nil, nil, fr, cache, s)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(len(data)) / 2
	node := &common.ClipNode{Path: "/f", Remote: &common.RemoteRef{LayerDigest: "sha256:l", UOffset: off, ULength: 6}}
	for range 2 {
		dest := make([]byte, 6)
		if _, err := rs.ReadFile(node, dest, 0); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(data[off:off+6], dest); diff != "" {
			t.Fatalf("bytes (-want +got):\n%s", diff)
		}
	}
	if got, want := fr.gets.Load(), int64(1); got != want {
		t.Errorf("range requests: got %d, want %d (the second read is a cache hit)", got, want)
	}
	st := rs.Stats()
	want := RangedStats{Reads: 2, BytesRead: 12, Requests: 1, BytesFetched: fr.sent.Load(), SpansFetched: 1, CacheHits: 1, CacheMisses: 1}
	if diff := cmp.Diff(want, st, cmpopts.IgnoreFields(RangedStats{}, "Latency")); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if got, limit := fr.sent.Load(), int64(4<<20); got > limit {
		t.Errorf("fetched %d bytes for a 6-byte read, want at most %d", got, limit)
	}
	t.Logf("blob %d bytes, %d points, 6-byte read fetched %d bytes", len(blob), len(ix.Points), fr.sent.Load())
}

func TestZranReaderRejectsBadInput(t *testing.T) {
	good := gzipCLI(t, []byte("hello, world\n"), 6)
	tests := []struct {
		name string
		blob []byte
	}{
		{"not gzip", []byte("plain text, not gzip")},
		{"truncated", good[:len(good)-5]},
		{"bad crc", append(bytes.Clone(good[:len(good)-8]), 1, 2, 3, 4, 13, 0, 0, 0)},
		{"bad size", append(bytes.Clone(good[:len(good)-4]), 14, 0, 0, 0)},
		{"bad crc in the first of two members", append(append(bytes.Clone(good[:len(good)-8]), 1, 2, 3, 4, 13, 0, 0, 0), good...)},
		{"garbage after member", append(bytes.Clone(good), "trailing"...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			zr, err := NewZranReader(bytes.NewReader(tc.blob))
			if err != nil {
				return
			}
			defer zr.Close()
			if _, err := io.ReadAll(zr); err == nil {
				t.Fatal("read succeeded, want an error")
			}
		})
	}
}

// TestZranReaderCloseEarly closes readers that have read nothing, a little
// or all of a blob: Close returns (its goroutines end) every time.
func TestZranReaderCloseEarly(t *testing.T) {
	data := zranSample(6, 3<<20)
	blob := gzipCLI(t, data, 6)
	for _, n := range []int64{0, 1, 700 << 10, int64(len(data))} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			zr, err := NewZranReader(bytes.NewReader(blob), WithZranSpan(256<<10))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.LimitReader(zr, n))
			if err != nil || !bytes.Equal(got, data[:n]) {
				t.Fatalf("reading %d bytes: %d bytes, %v", n, len(got), err)
			}
			done := make(chan struct{})
			go func() {
				zr.Close()
				zr.Close()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return within 10s")
			}
		})
	}
}

// noRanges is a registry that ignores ranges, counting the requests.
type noRanges struct{ asked atomic.Int32 }

func (r *noRanges) ReadRange(context.Context, string, int64, int64) ([]byte, error) {
	r.asked.Add(1)
	return nil, fmt.Errorf("blob sha256:l: %w", registry.ErrRangeUnsupported)
}

// TestZranRegistryWithoutRanges reads a pulled layer from a registry that
// ignores ranges: through the whole-layer reader, with the exact bytes,
// and without asking for a range again.
func TestZranRegistryWithoutRanges(t *testing.T) {
	data := zranSample(8, 2<<20)
	ix := zranIndexOf(t, seekableGzip(t, data, 256<<10), data, 512<<10)
	whole := &tarStorage{layer: data}
	nr := &noRanges{}
	s, err := newZranStorage(nil, map[string]*ZranIndex{"sha256:l": ix}, nr, nil, whole, withZranLog(testEntry(t)))
	if err != nil {
		t.Fatal(err)
	}
	off := int64(len(data)) * 2 / 3
	node := &common.ClipNode{Path: "/f", Remote: &common.RemoteRef{LayerDigest: "sha256:l", UOffset: off, ULength: 1000}}
	for range 2 {
		dest := make([]byte, 1000)
		if n, err := s.ReadFile(node, dest, 0); err != nil || n != len(dest) {
			t.Fatalf("ReadFile() = %d, %v, want %d, nil", n, err, len(dest))
		}
		if diff := cmp.Diff(data[off:off+1000], dest); diff != "" {
			t.Errorf("bytes (-want +got):\n%s", diff)
		}
	}
	if got, want := whole.reads.Load(), int32(2); got != want {
		t.Errorf("whole-layer reads: got %d, want %d", got, want)
	}
	if got, want := nr.asked.Load(), int32(1); got != want {
		t.Errorf("range requests: got %d, want %d", got, want)
	}
	if got, want := s.stats.fallbackReads.Load(), int64(2); got != want {
		t.Errorf("fallback reads counted: got %d, want %d", got, want)
	}
}

// TestZranPrefetchFromTrace: a pulled layer's reads are recorded in the
// mount's trace, and the next mount with a fresh span cache fetches those
// spans before anything is read, so that reading the same bytes then
// fetches nothing.
func TestZranPrefetchFromTrace(t *testing.T) {
	data := zranSample(7, 20<<20)
	blob := gzipCLI(t, data, 6)
	ix := zranIndexOf(t, blob, data, DefaultZranSpan)
	if len(ix.Points) < 4 {
		t.Fatalf("%d restart points, want several", len(ix.Points))
	}
	fr := &sliceRanger{blobs: map[string][]byte{"sha256:l": blob}, flip: -1}
	path := TracePath(t.TempDir(), "sha256:"+fmt.Sprintf("%064x", 3))
	mount := func() *rangedStorage {
		cache, err := OpenSpanCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		zs, err := newZranStorage(nil, map[string]*ZranIndex{"sha256:l": ix}, fr, cache, nil, withZranTimeout(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		rs, err := newRangedStorage(nil, nil, fr, cache, zs, withReadAhead(0), withDenseThreshold(0), withTrace(path, time.Minute, true))
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	offs := []int64{int64(len(data)) / 5, int64(len(data)) * 4 / 5}
	read := func(rs *rangedStorage) {
		for _, off := range offs {
			node := &common.ClipNode{Path: "/f", Remote: &common.RemoteRef{LayerDigest: "sha256:l", UOffset: off, ULength: 100}}
			dest := make([]byte, 100)
			if _, err := rs.ReadFile(node, dest, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dest, data[off:off+100]) {
				t.Fatalf("bytes at %d differ", off)
			}
		}
	}
	first := mount()
	first.waitPrefetched(t)
	read(first)
	first.Cleanup()
	if n := len(readTraceFile(t, path).Spans); n != len(offs) {
		t.Fatalf("trace lists %d spans, want %d (one per read)", n, len(offs))
	}
	gets := fr.gets.Load()
	second := mount()
	second.waitPrefetched(t)
	if n := fr.gets.Load() - gets; n != int64(len(offs)) {
		t.Errorf("%d range reads before any read of the second mount, want %d (the trace's spans)", n, len(offs))
	}
	gets = fr.gets.Load()
	read(second)
	if n := fr.gets.Load() - gets; n != 0 {
		t.Errorf("reading the prefetched bytes made %d range reads, want 0", n)
	}
	if st := second.Stats(); st.TraceSpans != int64(len(offs)) || st.PrefetchSpans != int64(len(offs)) {
		t.Errorf("Stats() = %+v; want %d trace and prefetch spans", st, len(offs))
	}
	second.Cleanup()
}
