package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	godigest "github.com/opencontainers/go-digest"

	"github.com/clipbuild/clipbuild/archive"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// seekEntry is one regular file of a generated tar stream.
type seekEntry struct {
	name string
	size int
	text bool // compressible text rather than random bytes
}

// seekTar returns a tar stream of entries and the offset of every header
// (the boundaries a tar reader would report).
func seekTar(t testing.TB, entries []seekEntry) ([]byte, []int64) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	rng := rand.New(rand.NewSource(1))
	var offs []int64
	for _, e := range entries {
		if err := tw.Flush(); err != nil {
			t.Fatal(err)
		}
		offs = append(offs, int64(buf.Len()))
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(e.size), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(seekData(rng, e.size, e.text)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), offs
}

var seekWords = []string{"layer", "gzip", "member", "clip", "archive", "tar", "entry", "boundary", "\n", "func", "return", "err", "0x1f8b", "usr/lib"}

func seekData(rng *rand.Rand, n int, text bool) []byte {
	b := make([]byte, 0, n+16)
	if !text {
		b = b[:n]
		rng.Read(b)
		return b
	}
	for len(b) < n {
		b = append(b, seekWords[rng.Intn(len(seekWords))]...)
		b = append(b, ' ')
	}
	return b[:n]
}

// seekTextTar is a tar of many small text files and a few random ones.
func seekTextTar(t testing.TB, files int) ([]byte, []int64) {
	rng := rand.New(rand.NewSource(2))
	var es []seekEntry
	for i := 0; i < files; i++ {
		es = append(es, seekEntry{name: fmt.Sprintf("etc/f%04d", i), size: rng.Intn(40 * kib), text: i%7 != 0})
	}
	return seekTar(t, es)
}

// seekCompress feeds data to a SeekableWriter in chunk-sized writes and
// reports each boundary once delay bytes past it have been written, the way
// a tee into a tar reader reports headers late.
func seekCompress(t testing.TB, data []byte, bounds []int64, chunk int, delay int64, opts ...archive.SeekableOption) ([]byte, *archive.SeekableWriter) {
	t.Helper()
	var out bytes.Buffer
	sw := archive.NewSeekableWriter(&out, opts...)
	written := int64(0)
	next := 0
	report := func() {
		for next < len(bounds) && bounds[next]+delay <= written {
			sw.Boundary(bounds[next])
			next++
		}
	}
	for len(data) > 0 {
		report()
		n := min(chunk, len(data))
		if _, err := sw.Write(data[:n]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		data, written = data[n:], written+int64(n)
	}
	for ; next < len(bounds); next++ {
		sw.Boundary(bounds[next])
	}
	if err := sw.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return out.Bytes(), sw
}

func seekGzipT(t *testing.T, blob []byte) {
	t.Helper()
	gz, err := exec.LookPath("gzip")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("gzip not found (apt-get install gzip): %v", err)
		}
		t.Skipf("gzip not found: %v", err)
	}
	cmd := exec.Command(gz, "-t")
	cmd.Stdin = bytes.NewReader(blob)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("gzip -t: %v: %s", err, out)
	}
}

func seekSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// seekCheckMembers checks everything a blob's members promise: contiguous
// coverage of both streams, and that each one inflates on its own to
// exactly its bytes.
func seekCheckMembers(t *testing.T, blob, data []byte, ms []archive.Member) {
	t.Helper()
	var coff, uoff int64
	for i, m := range ms {
		if m.COff != coff || m.UOff != uoff {
			t.Fatalf("member %d starts at (c %d, u %d), want (c %d, u %d)", i, m.COff, m.UOff, coff, uoff)
		}
		if m.CLen <= 0 || m.COff+m.CLen > int64(len(blob)) || m.UOff+m.ULen > int64(len(data)) {
			t.Fatalf("member %d = %+v out of bounds (blob %d, data %d)", i, m, len(blob), len(data))
		}
		want := data[m.UOff : m.UOff+m.ULen]
		if m.SHA256 != seekSHA(want) {
			t.Errorf("member %d SHA256 = %s, want %s", i, m.SHA256, seekSHA(want))
		}
		src := blob[m.COff : m.COff+m.CLen]
		got, err := archive.InflateMember(src, m)
		if err != nil {
			t.Fatalf("InflateMember(member %d): %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("InflateMember(member %d) returned the wrong bytes", i)
		}
		// An independent reader started at COff must stop after exactly
		// this member: no inflate window or state from earlier members.
		zr, err := gzip.NewReader(bytes.NewReader(blob[m.COff:]))
		if err != nil {
			t.Fatalf("gzip.NewReader at member %d: %v", i, err)
		}
		zr.Multistream(false)
		got, err = io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("stdlib gzip at member %d: %d bytes, err %v; want %d bytes", i, len(got), err, len(want))
		}
		coff, uoff = coff+m.CLen, uoff+m.ULen
	}
	if coff != int64(len(blob)) || uoff != int64(len(data)) {
		t.Errorf("members cover (c %d, u %d), want (c %d, u %d)", coff, uoff, len(blob), len(data))
	}
}

func TestSeekableRoundTrip(t *testing.T) {
	bigTar, bigBounds := seekTar(t, []seekEntry{
		{name: "a", size: 3 * kib, text: true},
		{name: "big.bin", size: 5 * mib},
		{name: "b", size: 700 * kib, text: true},
		{name: "c", size: 10, text: true},
	})
	textTar, textBounds := seekTextTar(t, 300)
	random := seekData(rand.New(rand.NewSource(3)), 4*mib+17, false)
	tests := []struct {
		name   string
		data   []byte
		bounds []int64
		chunk  int
		opts   []archive.SeekableOption
	}{
		{name: "empty", data: nil, chunk: 1},
		{name: "one byte", data: []byte{'x'}, chunk: 1},
		{name: "5 MiB file", data: bigTar, bounds: bigBounds, chunk: 32 * kib},
		{name: "many small text files", data: textTar, bounds: textBounds, chunk: 10 * kib},
		{name: "text files, small members, odd writes", data: textTar, bounds: textBounds, chunk: 4093,
			opts: []archive.SeekableOption{archive.WithMemberSize(64 * kib), archive.WithConcurrency(3)}},
		{name: "incompressible, one big write", data: random, chunk: len(random)},
		{name: "exact multiple of member size", data: random[:4*mib], chunk: mib},
		{name: "level 1, one worker", data: bigTar, bounds: bigBounds, chunk: 64 * kib,
			opts: []archive.SeekableOption{archive.WithCompressionLevel(1), archive.WithConcurrency(1)}},
		{name: "level 9, no lookahead", data: textTar, bounds: textBounds, chunk: 8 * kib,
			opts: []archive.SeekableOption{archive.WithCompressionLevel(9), archive.WithLookahead(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, sw := seekCompress(t, tt.data, tt.bounds, tt.chunk, 0, tt.opts...)
			seekGzipT(t, blob)

			zr, err := gzip.NewReader(bytes.NewReader(blob))
			if err != nil {
				t.Fatalf("gzip.NewReader: %v", err)
			}
			got, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("reading whole blob: %v", err)
			}
			if !bytes.Equal(got, tt.data) {
				t.Fatalf("whole blob inflates to %d bytes, want the %d written", len(got), len(tt.data))
			}

			ms := sw.Members()
			if len(ms) == 0 {
				t.Fatal("Members() is empty")
			}
			seekCheckMembers(t, blob, tt.data, ms)

			if got, want := sw.BlobDigest(), godigest.FromBytes(blob); got != want {
				t.Errorf("BlobDigest() = %s, want %s", got, want)
			}
			if got, want := sw.DiffID(), godigest.FromBytes(tt.data); got != want {
				t.Errorf("DiffID() = %s, want %s", got, want)
			}
			if got, want := sw.BlobSize(), int64(len(blob)); got != want {
				t.Errorf("BlobSize() = %d, want %d", got, want)
			}
			if got, want := sw.UncompressedSize(), int64(len(tt.data)); got != want {
				t.Errorf("UncompressedSize() = %d, want %d", got, want)
			}
			idx := archive.GzipIndexOf("sha256:x", ms)
			if len(idx.Checkpoints) != len(ms) || idx.Checkpoints[len(ms)-1].COff != ms[len(ms)-1].COff ||
				idx.Checkpoints[len(ms)-1].UOff != ms[len(ms)-1].UOff {
				t.Errorf("GzipIndexOf = %+v, want one checkpoint per member start", idx.Checkpoints)
			}
		})
	}
}

func seekULens(ms []archive.Member) []int64 {
	var ls []int64
	for _, m := range ms {
		ls = append(ls, m.ULen)
	}
	return ls
}

func TestSeekableCuts(t *testing.T) {
	const size = 64 * kib
	const look = 8 * kib
	data := seekData(rand.New(rand.NewSource(4)), 4*size+100, true)
	tests := []struct {
		name   string
		n      int     // bytes of data written
		bounds []int64 // reported boundaries
		delay  int64   // how late each is reported
		chunk  int     // bytes per Write; 1000 if zero
		want   []int64 // member lengths
	}{
		{name: "no boundaries", n: 4*size + 100, want: []int64{size, size, size, size, 100}},
		{name: "boundary in second half", n: 2 * size, bounds: []int64{size * 3 / 4},
			want: []int64{size * 3 / 4, size, size / 4}},
		{name: "last of several in range wins", n: 2 * size, bounds: []int64{size * 6 / 10, size * 9 / 10},
			want: []int64{size * 9 / 10, size, size - size*9/10}},
		{name: "boundaries only in first half", n: 2 * size, bounds: []int64{size / 4, size * 4 / 10},
			want: []int64{size, size}},
		{name: "boundary exactly at half", n: size + 10, bounds: []int64{size / 2},
			want: []int64{size / 2, size/2 + 10}},
		{name: "boundary exactly at member size", n: 2 * size, bounds: []int64{size * 3 / 4, size},
			want: []int64{size, size}},
		{name: "boundary one past member size", n: 2*size + 1, bounds: []int64{size + 1},
			want: []int64{size, size, 1}},
		{name: "boundaries counted from each member's start", n: 3 * size,
			bounds: []int64{size * 3 / 4, size*3/4 + size*7/8},
			want:   []int64{size * 3 / 4, size * 7 / 8, size, 3*size - size*3/4 - size*7/8 - size}},
		{name: "late by the lookahead", n: 2 * size, bounds: []int64{size * 3 / 4, size * 3 / 2}, delay: look,
			want: []int64{size * 3 / 4, size * 3 / 4, size / 2}},
		{name: "at member size, exactly the lookahead late", n: 2 * size, bounds: []int64{size * 3 / 4, size},
			delay: look, chunk: kib, want: []int64{size, size}},
		{name: "last member over size at close", n: size + 100, bounds: []int64{size * 5 / 8},
			want: []int64{size * 5 / 8, size*3/8 + 100}},
		{name: "short stream is one member", n: size - 1, bounds: []int64{size / 2},
			want: []int64{size - 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chunk := tt.chunk
			if chunk == 0 {
				chunk = 1000
			}
			_, sw := seekCompress(t, data[:tt.n], tt.bounds, chunk, tt.delay,
				archive.WithMemberSize(size), archive.WithLookahead(look), archive.WithConcurrency(2))
			if diff := cmp.Diff(tt.want, seekULens(sw.Members())); diff != "" {
				t.Errorf("member lengths (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSeekableTooLateBoundaryIgnored(t *testing.T) {
	// A boundary reported after its member was cut cannot move the cut;
	// the writer cuts at the member size and carries on.
	const size = 64 * kib
	data := seekData(rand.New(rand.NewSource(5)), 2*size, true)
	var out bytes.Buffer
	sw := archive.NewSeekableWriter(&out, archive.WithMemberSize(size), archive.WithLookahead(0))
	if _, err := sw.Write(data[:size+kib]); err != nil {
		t.Fatal(err)
	}
	sw.Boundary(size * 3 / 4)
	if _, err := sw.Write(data[size+kib:]); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int64{size, size}, seekULens(sw.Members())); diff != "" {
		t.Errorf("member lengths (-want +got):\n%s", diff)
	}
}

func TestSeekableFiveMiBFileSpansMembers(t *testing.T) {
	// "big" starts in the second half of the first member, so the first
	// member ends at its header; it then fills five whole members, and the
	// header after it lies in the second half of the sixth, which ends there
	// (the rest is more than a member, so the last cut follows the rule too).
	data, bounds := seekTar(t, []seekEntry{
		{name: "small", size: 600 * kib, text: true},
		{name: "big", size: 5*mib + 700*kib},
		{name: "after", size: 400 * kib, text: true},
	})
	_, sw := seekCompress(t, data, bounds, 32*kib, 0)
	want := []int64{bounds[1], mib, mib, mib, mib, mib, bounds[2] - bounds[1] - 5*mib, int64(len(data)) - bounds[2]}
	if diff := cmp.Diff(want, seekULens(sw.Members())); diff != "" {
		t.Errorf("member lengths (-want +got):\n%s", diff)
	}
}

func TestSeekableDeterministic(t *testing.T) {
	data, bounds := seekTextTar(t, 400)
	var first []byte
	var firstMembers []archive.Member
	for _, conc := range []int{1, 2, 7} {
		blob, sw := seekCompress(t, data, bounds, 16*kib, 0, archive.WithConcurrency(conc), archive.WithMemberSize(128*kib))
		if first == nil {
			first, firstMembers = blob, sw.Members()
			continue
		}
		if !bytes.Equal(blob, first) {
			t.Errorf("concurrency %d: blob differs from concurrency 1", conc)
		}
		if diff := cmp.Diff(firstMembers, sw.Members()); diff != "" {
			t.Errorf("concurrency %d: members differ (-c1 +got):\n%s", conc, diff)
		}
	}
}

// TestSeekableWithoutDigests: the writer that hashes neither the blob nor
// the stream writes the same blob and members, and reports no digests.
func TestSeekableWithoutDigests(t *testing.T) {
	data, bounds := seekTextTar(t, 200)
	want, wsw := seekCompress(t, data, bounds, 16*kib, 0, archive.WithMemberSize(128*kib))
	got, sw := seekCompress(t, data, bounds, 16*kib, 0, archive.WithMemberSize(128*kib), archive.WithoutDigests())
	if !bytes.Equal(got, want) {
		t.Errorf("WithoutDigests: blob differs from the default writer's")
	}
	if diff := cmp.Diff(wsw.Members(), sw.Members()); diff != "" {
		t.Errorf("WithoutDigests: members differ (-default +got):\n%s", diff)
	}
	if sw.BlobDigest() != "" || sw.DiffID() != "" {
		t.Errorf("WithoutDigests: BlobDigest() = %q, DiffID() = %q, want both empty", sw.BlobDigest(), sw.DiffID())
	}
	if wsw.BlobDigest() == "" || wsw.DiffID() == "" || sw.BlobSize() != int64(len(got)) {
		t.Errorf("default writer: BlobDigest() = %q, DiffID() = %q; BlobSize() WithoutDigests = %d, want %d",
			wsw.BlobDigest(), wsw.DiffID(), sw.BlobSize(), len(got))
	}
}

var errSeekDest = errors.New("destination is full")

// seekFailWriter accepts limit bytes, then fails every write.
type seekFailWriter struct{ limit, n int }

func (w *seekFailWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.limit {
		return 0, errSeekDest
	}
	w.n += len(p)
	return len(p), nil
}

// seekWaitGoroutines waits until no goroutine of a SeekableWriter is left.
// It looks at stacks rather than counts so goroutines of other tests in the
// package cannot hide a leak or fake one.
func seekWaitGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "archive.(*SeekableWriter)") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SeekableWriter goroutines still running:\n%s", stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSeekableFailingWriter(t *testing.T) {
	data := seekData(rand.New(rand.NewSource(6)), 40*64*kib, false)
	tests := []struct {
		name  string
		limit int
		close bool
	}{
		{name: "fails at once, closed", limit: 0, close: true},
		{name: "fails after some members, closed", limit: 5 * 64 * kib, close: true},
		{name: "fails after some members, never closed", limit: 5 * 64 * kib},
		{name: "fails on the last member", limit: -1, close: true},
	}
	whole, _ := seekCompress(t, data, nil, 8*kib, 0, archive.WithMemberSize(64*kib))
	for _, tt := range tests {
		if tt.limit < 0 {
			tt.limit = len(whole) - 1
		}
		t.Run(tt.name, func(t *testing.T) {
			sw := archive.NewSeekableWriter(&seekFailWriter{limit: tt.limit},
				archive.WithMemberSize(64*kib), archive.WithConcurrency(4))
			var err error
			for p := data; len(p) > 0 && err == nil; p = p[min(len(p), 8*kib):] {
				_, err = sw.Write(p[:min(len(p), 8*kib)])
			}
			if err == nil || tt.close {
				if cerr := sw.Close(); err == nil {
					err = cerr
				} else if !errors.Is(cerr, errSeekDest) {
					t.Errorf("Close() after a failed Write = %v, want %v", cerr, errSeekDest)
				}
			}
			if !errors.Is(err, errSeekDest) {
				t.Fatalf("Write/Close = %v, want %v", err, errSeekDest)
			}
			if _, err := sw.Write([]byte("more")); err == nil {
				t.Error("Write after a failure = nil, want an error")
			}
			seekWaitGoroutines(t)
		})
	}
}

func TestSeekableInvalidLevel(t *testing.T) {
	sw := archive.NewSeekableWriter(io.Discard, archive.WithCompressionLevel(42))
	if _, err := sw.Write([]byte("x")); err == nil {
		t.Error("Write with level 42 = nil, want an error")
	}
	if err := sw.Close(); err == nil {
		t.Error("Close with level 42 = nil, want an error")
	}
	seekWaitGoroutines(t)
}

func TestSeekableInflateMemberCorrupt(t *testing.T) {
	data := seekData(rand.New(rand.NewSource(7)), 3*4*kib, true)
	blob, sw := seekCompress(t, data, nil, 4*kib, 0, archive.WithMemberSize(4*kib))
	ms := sw.Members()
	if len(ms) != 3 {
		t.Fatalf("%d members, want 3", len(ms))
	}
	m := ms[1]
	src := blob[m.COff : m.COff+m.CLen]
	want := data[m.UOff : m.UOff+m.ULen]

	t.Run("every flipped byte", func(t *testing.T) {
		detected := 0
		for i := range src {
			bad := bytes.Clone(src)
			bad[i] ^= 0xff
			got, err := archive.InflateMember(bad, m)
			if err == nil && !bytes.Equal(got, want) {
				t.Fatalf("byte %d flipped: InflateMember returned wrong bytes and no error", i)
			}
			if err != nil {
				detected++
				if got != nil {
					t.Errorf("byte %d flipped: InflateMember returned %d bytes with error %v", i, len(got), err)
				}
			} else if i >= 10 {
				// Only the header's MTIME, XFL and OS bytes (4..9) may
				// change without changing what the member decodes to.
				t.Errorf("byte %d flipped: InflateMember = nil error", i)
			}
		}
		if detected < len(src)-6 {
			t.Errorf("%d of %d byte flips detected, want all but the 6 informational header bytes", detected, len(src))
		}
	})

	withSum := func(f func(*archive.Member)) archive.Member { c := m; f(&c); return c }
	tests := []struct {
		name     string
		src      []byte
		m        archive.Member
		mismatch bool // must wrap ErrMemberMismatch (else any error)
	}{
		{name: "wrong sha256", src: src, m: withSum(func(c *archive.Member) { c.SHA256 = seekSHA([]byte("other")) }), mismatch: true},
		{name: "ulen one short", src: src, m: withSum(func(c *archive.Member) { c.ULen-- }), mismatch: true},
		{name: "ulen one long", src: src, m: withSum(func(c *archive.Member) { c.ULen++ }), mismatch: true},
		{name: "impossible ulen", src: src, m: withSum(func(c *archive.Member) { c.ULen = 1 << 40 }), mismatch: true},
		{name: "negative ulen", src: src, m: withSum(func(c *archive.Member) { c.ULen = -1 }), mismatch: true},
		{name: "clen does not match src", src: src[:len(src)-1], m: m, mismatch: true},
		{name: "truncated member", src: src[:len(src)-1], m: withSum(func(c *archive.Member) { c.CLen-- })},
		{name: "two members as one", src: blob[m.COff : m.COff+m.CLen+ms[2].CLen],
			m: withSum(func(c *archive.Member) { c.CLen += ms[2].CLen }), mismatch: true},
		{name: "the next member's bytes", src: blob[ms[2].COff:], m: withSum(func(c *archive.Member) { c.CLen = ms[2].CLen })},
		{name: "not gzip", src: want[:m.CLen], m: m},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := archive.InflateMember(tt.src, tt.m)
			if err == nil {
				t.Fatalf("InflateMember = %d bytes, nil error; want an error", len(got))
			}
			if got != nil {
				t.Errorf("InflateMember returned %d bytes with error %v", len(got), err)
			}
			if tt.mismatch && !errors.Is(err, archive.ErrMemberMismatch) {
				t.Errorf("InflateMember = %v, want it to wrap ErrMemberMismatch", err)
			}
		})
	}
}

// seekRepeatReader yields n bytes cycling through pattern, so a large
// stream needs no memory of its own.
type seekRepeatReader struct {
	pattern []byte
	off, n  int
}

func (r *seekRepeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.pattern)-r.off%len(r.pattern))
	copy(p, r.pattern[r.off%len(r.pattern):])
	r.off, r.n = r.off+k, r.n-k
	return k, nil
}

// seekSlowWriter is a destination slower than the compressors, so a
// writer that did not bound its members in flight would pile them up.
type seekSlowWriter struct{ n int64 }

func (w *seekSlowWriter) Write(p []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	w.n += int64(len(p))
	return len(p), nil
}

func TestSeekableBoundedMemory(t *testing.T) {
	// 96 MiB through the writer to a slow destination must not be
	// buffered: in flight are a few members per worker, whatever the
	// stream's size.
	const total = 96 * mib
	pattern := seekData(rand.New(rand.NewSource(8)), 3*mib+5, true)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sw := archive.NewSeekableWriter(&seekSlowWriter{}, archive.WithCompressionLevel(1), archive.WithConcurrency(4))
	src := &seekRepeatReader{pattern: pattern, n: total}
	buf := make([]byte, 32*kib)
	var peak uint64
	for i := 0; ; i++ {
		n, err := src.Read(buf)
		if err == io.EOF {
			break
		}
		if _, err := sw.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if i%128 == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sw.UncompressedSize(); got != total {
		t.Fatalf("UncompressedSize() = %d, want %d", got, total)
	}
	grew, limit := int64(peak)-int64(before.HeapInuse), int64(32*mib)
	t.Logf("heap grew by %.1f MiB", float64(grew)/mib)
	if grew > limit {
		t.Errorf("heap grew by %d MiB while compressing %d MiB, want at most %d MiB", grew/mib, total/mib, limit/mib)
	}
}
