package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testMember returns n pseudo-random bytes seeded by seed, and a member
// describing them as the i-th of a layer of n-byte members.
func testMember(seed uint64, i, n int) (Member, []byte) {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	sum := sha256.Sum256(b)
	return Member{COff: int64(i * n), CLen: int64(n), UOff: int64(i * n), ULen: int64(n), SHA256: hex.EncodeToString(sum[:])}, b
}

func openTestSpanCache(t *testing.T, dir string, opts ...SpanCacheOption) *SpanCache {
	t.Helper()
	c, err := OpenSpanCache(dir, append([]SpanCacheOption{WithSpanLog(testEntry(t))}, opts...)...)
	if err != nil {
		t.Fatalf("OpenSpanCache(%s) = %v", dir, err)
	}
	return c
}

// fetchFrom is a fetchFunc serving members from data by digest, counting
// the fetches and members fetched, after delay.
func fetchFrom(data map[string][]byte, delay time.Duration, fetches, fetched *atomic.Int32) fetchFunc {
	return func(ctx context.Context, run []Member) ([][]byte, error) {
		fetches.Add(1)
		fetched.Add(int32(len(run)))
		time.Sleep(delay)
		out := make([][]byte, len(run))
		for i, m := range run {
			out[i] = data[m.SHA256]
		}
		return out, nil
	}
}

func TestSpanCacheOneFetchPerSpan(t *testing.T) {
	m, b := testMember(1, 0, 64<<10)
	data := map[string][]byte{m.SHA256: b}
	tests := []struct {
		name string
		// caches returns the cache each of the readers uses.
		caches func(t *testing.T) []*SpanCache
	}{
		{"one process", func(t *testing.T) []*SpanCache {
			c := openTestSpanCache(t, t.TempDir())
			return []*SpanCache{c, c, c, c, c, c}
		}},
		{"two processes", func(t *testing.T) []*SpanCache {
			dir := t.TempDir() // two caches on one directory lock as two processes do
			a, b := openTestSpanCache(t, dir), openTestSpanCache(t, dir)
			return []*SpanCache{a, b, a, b, a, b}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fetches, fetched atomic.Int32
			fetch := fetchFrom(data, 100*time.Millisecond, &fetches, &fetched)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for _, c := range tt.caches(t) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					got, _, err := c.get(context.Background(), []Member{m}, fetch)
					if err != nil {
						t.Errorf("get() = %v", err)
						return
					}
					if string(got[0]) != string(b) {
						t.Error("get() returned other bytes")
					}
				}()
			}
			close(start)
			wg.Wait()
			if n := fetches.Load(); n != 1 {
				t.Errorf("%d fetches of one span by 6 readers, want 1", n)
			}
		})
	}
}

func TestSpanCacheFetchesRunsOfMissingMembers(t *testing.T) {
	c := openTestSpanCache(t, t.TempDir())
	var ms []Member
	data := map[string][]byte{}
	for i := range 6 {
		m, b := testMember(2, i, 4096)
		ms = append(ms, m)
		data[m.SHA256] = b
	}
	var fetches, fetched atomic.Int32
	fetch := fetchFrom(data, 0, &fetches, &fetched)
	if _, _, err := c.get(context.Background(), ms[2:3], fetch); err != nil {
		t.Fatal(err)
	}
	got, counts, err := c.get(context.Background(), ms, fetch)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if string(got[i]) != string(data[m.SHA256]) {
			t.Errorf("member %d: other bytes", i)
		}
	}
	if counts.hits != 1 || counts.misses != 5 {
		t.Errorf("get() counts = %+v, want 1 hit, 5 misses", counts)
	}
	// The cached member splits the rest into two runs: [0,1] and [3,5].
	if f, n := fetches.Load(), fetched.Load(); f != 3 || n != 6 {
		t.Errorf("%d fetches of %d members in all, want 3 of 6 (one, then two runs)", f, n)
	}
}

func TestSpanCacheEvictsLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	const size = 100 << 10
	c := openTestSpanCache(t, dir, WithCacheSize(3*size), WithMemoryCache(0))
	var ms []Member
	data := map[string][]byte{}
	for i := range 4 {
		m, b := testMember(3, i, size)
		ms = append(ms, m)
		data[m.SHA256] = b
	}
	var fetches, fetched atomic.Int32
	fetch := fetchFrom(data, 0, &fetches, &fetched)
	for i, age := range []time.Duration{10 * time.Minute, 5 * time.Minute, 4 * time.Minute} {
		if _, _, err := c.get(context.Background(), ms[i:i+1], fetch); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-age)
		if err := os.Chtimes(filepath.Join(dir, "sha256", ms[i].SHA256), old, old); err != nil {
			t.Fatal(err)
		}
	}
	// A hit makes the oldest the most recent; the fourth span passes the
	// budget, and the sweep goes down to 90% of it.
	if _, counts, err := c.get(context.Background(), ms[0:1], fetch); err != nil || counts.hits != 1 {
		t.Fatalf("get(cached) = %+v, %v, want a hit", counts, err)
	}
	if _, _, err := c.get(context.Background(), ms[3:4], fetch); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, false, true} {
		_, err := os.Stat(filepath.Join(dir, "sha256", ms[i].SHA256))
		if got := err == nil; got != want {
			t.Errorf("span %d cached = %t, want %t", i, got, want)
		}
	}
	if got := dirBytes(t, filepath.Join(dir, "sha256")); got > 3*size {
		t.Errorf("cache holds %d bytes, over its budget of %d", got, 3*size)
	}
}

func TestSpanCacheCorruptFileIsDropped(t *testing.T) {
	dir := t.TempDir()
	m, b := testMember(4, 0, 8192)
	data := map[string][]byte{m.SHA256: b}
	var fetches, fetched atomic.Int32
	fetch := fetchFrom(data, 0, &fetches, &fetched)
	if _, _, err := openTestSpanCache(t, dir).get(context.Background(), []Member{m}, fetch); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sha256", m.SHA256)
	tests := []struct {
		name    string
		corrupt func() error
	}{
		{"flipped byte", func() error {
			bad := append([]byte(nil), b...)
			bad[100] ^= 0x40
			return os.WriteFile(p, bad, 0o644)
		}},
		{"truncated", func() error { return os.Truncate(p, 10) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.corrupt(); err != nil {
				t.Fatal(err)
			}
			c := openTestSpanCache(t, dir) // a new process: nothing in memory
			before := fetches.Load()
			if _, _, err := c.get(context.Background(), []Member{m}, fetch); !errors.Is(err, ErrSpanCorrupt) {
				t.Fatalf("get(corrupt cached span) = %v, want ErrSpanCorrupt", err)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("corrupt span still cached: %v", err)
			}
			got, _, err := c.get(context.Background(), []Member{m}, fetch)
			if err != nil || string(got[0]) != string(b) {
				t.Fatalf("get(after the corrupt span was dropped) = %v, want its bytes", err)
			}
			if n := fetches.Load() - before; n != 1 {
				t.Errorf("%d fetches after dropping the corrupt span, want 1", n)
			}
		})
	}
}

func TestSpanCacheRefusesBadDigest(t *testing.T) {
	c := openTestSpanCache(t, t.TempDir())
	for _, sha := range []string{"../../../etc/passwd", "", "ABCDEF" + string(make([]byte, 58))} {
		m := Member{ULen: 1, CLen: 1, SHA256: sha}
		called := false
		_, _, err := c.get(context.Background(), []Member{m}, func(context.Context, []Member) ([][]byte, error) {
			called = true
			return [][]byte{{0}}, nil
		})
		if !errors.Is(err, ErrCorrupt) || called {
			t.Errorf("get(sha256 %q) = %v (fetched: %t), want ErrCorrupt before fetching", sha, err, called)
		}
	}
}

func TestSpanCacheDefaults(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	if got, want := DefaultSpanCacheDir(), filepath.Join(cache, "clipbuild", "spans"); got != want {
		t.Errorf("DefaultSpanCacheDir() = %s, want %s", got, want)
	}
	c := openTestSpanCache(t, DefaultSpanCacheDir())
	if got := c.Budget(); got <= 0 || got > DefaultSpanCacheSize {
		t.Errorf("default Budget() = %d, want in (0, %d]", got, DefaultSpanCacheSize)
	}
	if _, err := OpenSpanCache(t.TempDir(), WithCacheSize(0)); err == nil {
		t.Error("OpenSpanCache(WithCacheSize(0)) = nil error")
	}
}

// dirBytes is the bytes of the regular files in dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

// TestSpanCacheReadsInPlace: a span this process stored (or loaded and
// hashed) is read in place, a few bytes at a time, without a fetch; a
// change to its file stops that, and the next load hashes it again and
// refuses it when it is wrong.
func TestSpanCacheReadsInPlace(t *testing.T) {
	dir := t.TempDir()
	m, b := testMember(4, 0, 8192)
	data := map[string][]byte{m.SHA256: b}
	var fetches, fetched atomic.Int32
	fetch := fetchFrom(data, 0, &fetches, &fetched)
	c, err := OpenSpanCache(dir, WithMemoryCache(0))
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 100)
	if c.readAt(m, p, 10) {
		t.Fatalf("readAt() before the span is cached = true, want false")
	}
	if _, _, err := c.get(context.Background(), []Member{m}, fetch); err != nil {
		t.Fatal(err)
	}
	if !c.readAt(m, p, 10) || !bytes.Equal(p, b[10:110]) {
		t.Fatalf("readAt(stored span) = %q, want %q", p, b[10:110])
	}
	if c.readAt(m, p, int64(len(b))-50) {
		t.Errorf("readAt() past the span's end = true, want false")
	}

	// Another process loads it from disk once (its seal spares the hash),
	// then reads in place.
	c2, err := OpenSpanCache(dir, WithMemoryCache(0))
	if err != nil {
		t.Fatal(err)
	}
	if c2.readAt(m, p, 0) {
		t.Fatalf("readAt() in a process that has not hashed the span = true, want false")
	}
	if got, _, err := c2.get(context.Background(), []Member{m}, fetch); err != nil || !bytes.Equal(got[0], b) {
		t.Fatalf("get(cached span) = %v", err)
	}
	if !c2.readAt(m, p, 0) || !bytes.Equal(p, b[:100]) {
		t.Fatalf("readAt(loaded span) = %q, want %q", p, b[:100])
	}

	// Rewritten in place with other bytes: no longer read in place, and
	// refused when loaded.
	bad := append([]byte(nil), b...)
	bad[5] ^= 0x40
	time.Sleep(10 * time.Millisecond) // a modification time of its own
	if err := os.WriteFile(filepath.Join(dir, "sha256", m.SHA256), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if c2.readAt(m, p, 0) {
		t.Errorf("readAt() after the file changed = true (%q), want false", p[:10])
	}
	if _, _, err := c2.get(context.Background(), []Member{m}, fetch); !errors.Is(err, ErrSpanCorrupt) {
		t.Errorf("get(changed span) = %v, want ErrSpanCorrupt", err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// TestSpanFilesBound: past its bound the set keeps no more files (the
// spans are still served, loaded and hashed each time), and a file once
// handed out stays open while the cache is in use.
func TestSpanFilesBound(t *testing.T) {
	dir := t.TempDir()
	m1, b1 := testMember(5, 0, 4096)
	m2, b2 := testMember(6, 1, 4096)
	data := map[string][]byte{m1.SHA256: b1, m2.SHA256: b2}
	var fetches, fetched atomic.Int32
	c, err := OpenSpanCache(dir, WithMemoryCache(0))
	if err != nil {
		t.Fatal(err)
	}
	c.files = newSpanFiles(1)
	for _, m := range []Member{m1, m2} {
		if _, _, err := c.get(context.Background(), []Member{m}, fetchFrom(data, 0, &fetches, &fetched)); err != nil {
			t.Fatal(err)
		}
	}
	p := make([]byte, 16)
	if !c.readAt(m1, p, 0) || !bytes.Equal(p, b1[:16]) {
		t.Errorf("readAt(first span) = false or wrong bytes, want its bytes in place")
	}
	if c.readAt(m2, p, 0) {
		t.Errorf("readAt(span past the bound) = true, want false")
	}
	if got, _, err := c.get(context.Background(), []Member{m2}, fetchFrom(data, 0, &fetches, &fetched)); err != nil || !bytes.Equal(got[0], b2) {
		t.Errorf("get(span past the bound) = %v, want its bytes", err)
	}
	sf := c.files.acquire(m1.SHA256)
	c.files.drop(sf)
	if _, err := sf.f.Stat(); err != nil {
		t.Errorf("a dropped span file was closed while the cache is in use: %v", err)
	}
}

// TestSpanCacheTouchKeepsFileTrusted: the LRU touch of a stale span (its
// time refreshed by this process) does not make the span's open file
// untrusted, nor open another.
func TestSpanCacheTouchKeepsFileTrusted(t *testing.T) {
	dir := t.TempDir()
	m, b := testMember(8, 0, 4096)
	var fetches, fetched atomic.Int32
	c, err := OpenSpanCache(dir, WithMemoryCache(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.get(context.Background(), []Member{m}, fetchFrom(map[string][]byte{m.SHA256: b}, 0, &fetches, &fetched)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sha256", m.SHA256)
	old := time.Now().Add(-2 * spanTouchAge)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	// Aged by someone else: no longer trusted; loaded and hashed again.
	if got, err := c.load(m); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("load(aged span) = %v", err)
	}
	// The load refreshed its time (a touch of our own) and holds it again.
	if fi, err := os.Stat(p); err != nil || time.Since(fi.ModTime()) > spanTouchAge {
		t.Fatalf("span time not refreshed: %v", err)
	}
	// As if the span had been held, untouched, for longer than the touch
	// age: its time is old and the set trusts that (the setup's retime).
	// Then this process touches it, as a hit does.
	dropped := len(c.files.dropped)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	c.files.retime(m.SHA256, mustStat(t, p))
	c.touch(m)
	p2 := make([]byte, 8)
	if !c.readAt(m, p2, 0) {
		t.Errorf("readAt() after this process's touch = false, want the file still trusted")
	}
	if n := len(c.files.dropped); n != dropped {
		t.Errorf("%d files dropped by the touch, want none", n-dropped)
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// TestSpanSealSparesLaterProcessesTheHash: a span checked once (here,
// stored from fetched bytes) carries a seal, so a later process trusts its
// file without hashing it, for reading in place and for loading; a file
// written to since, one whose seal names another span, and one with no
// seal are hashed, and only the right bytes are served.
func TestSpanSealSparesLaterProcessesTheHash(t *testing.T) {
	dir := t.TempDir()
	m, b := testMember(9, 0, 64<<10)
	m2, b2 := testMember(9, 1, 64<<10)
	data := map[string][]byte{m.SHA256: b, m2.SHA256: b2}
	var fetches, fetched atomic.Int32
	fetch := fetchFrom(data, 0, &fetches, &fetched)
	process := func() *SpanCache { return openTestSpanCache(t, dir, WithMemoryCache(0)) }
	if _, _, err := process().get(context.Background(), []Member{m, m2}, fetch); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sha256", m.SHA256)
	if _, err := unix.Getxattr(p, sealXattr, make([]byte, 128)); err != nil {
		t.Fatalf("the stored span has no seal (%s): %v; the test directory's filesystem must keep user xattrs", sealXattr, err)
	}

	c := process()
	if !c.trustFile(m) || c.hashed.Load() != 0 {
		t.Fatalf("trustFile(sealed span) in a new process: trusted %t, %d bytes hashed; want trusted, none hashed", c.files.acquire(m.SHA256) != nil, c.hashed.Load())
	}
	got := make([]byte, 100)
	if !c.readAt(m, got, 7) || !bytes.Equal(got, b[7:107]) {
		t.Fatalf("readAt(sealed span) = %q, want %q", got, b[7:107])
	}
	c = process()
	if spans, _, err := c.get(context.Background(), []Member{m}, fetch); err != nil || !bytes.Equal(spans[0], b) || c.hashed.Load() != 0 {
		t.Fatalf("get(sealed span) in a new process: %v, %d bytes hashed; want its bytes, none hashed", err, c.hashed.Load())
	}

	// No seal: hashed once, and sealed for the next process.
	if err := unix.Removexattr(p, sealXattr); err != nil {
		t.Fatal(err)
	}
	if c = process(); !c.trustFile(m) || c.hashed.Load() != m.ULen {
		t.Fatalf("trustFile(unsealed span): %d bytes hashed, want %d and trusted", c.hashed.Load(), m.ULen)
	}
	if c = process(); !c.trustFile(m) || c.hashed.Load() != 0 {
		t.Fatalf("trustFile(span sealed by the last process): %d bytes hashed, want none", c.hashed.Load())
	}

	// Written to since its seal: hashed, refused, dropped.
	bad := append([]byte(nil), b...)
	bad[len(bad)/2] ^= 0x04
	time.Sleep(10 * time.Millisecond) // a modification time of its own
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if c = process(); c.trustFile(m) || c.hashed.Load() != m.ULen {
		t.Errorf("trustFile(span written since its seal) = %t with %d bytes hashed, want false with %d", c.files.acquire(m.SHA256) != nil, c.hashed.Load(), m.ULen)
	}
	if _, _, err := process().get(context.Background(), []Member{m}, fetch); !errors.Is(err, ErrSpanCorrupt) {
		t.Errorf("get(span written since its seal) = %v, want ErrSpanCorrupt", err)
	}

	// Another span's file, seal and all, under this span's name.
	p2 := filepath.Join(dir, "sha256", m2.SHA256)
	if err := os.Rename(p2, p); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p, p2); err != nil {
		t.Fatal(err)
	}
	if c = process(); c.trustFile(m) {
		t.Errorf("trustFile(span under another's name, with its seal) = true, want false")
	}
	if _, _, err := process().get(context.Background(), []Member{m}, fetch); !errors.Is(err, ErrSpanCorrupt) {
		t.Errorf("get(span under another's name, with its seal) = %v, want ErrSpanCorrupt", err)
	}
}
