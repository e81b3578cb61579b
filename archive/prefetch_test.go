package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// waitPrefetched waits for the prefetch of the last mount's trace to end.
func (s *rangedStorage) waitPrefetched(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case <-s.prefetched:
	case <-ctx.Done():
		t.Fatal("the prefetch did not end in 20s")
	}
}

// membersOf are the indexes of the members holding the bytes of file p.
func (f *seekableFixture) membersOf(p string) []int {
	r := f.nodes[p].Remote
	var out []int
	for i := f.member(r.UOffset); i <= f.member(r.UOffset+r.ULength-1); i++ {
		out = append(out, i)
	}
	return out
}

// fetchedMembers are the indexes of the members that blob GETs since the
// first skip ones asked for, each as often as it was asked for.
func (f *seekableFixture) fetchedMembers(t *testing.T, skip int) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, g := range f.proxy.blobGets()[skip:] {
		var lo, hi int64
		if _, err := fmt.Sscanf(g.rng, "bytes=%d-%d", &lo, &hi); err != nil {
			t.Fatalf("blob GET with Range %q: %v", g.rng, err)
		}
		for i, m := range f.members {
			if m.COff >= lo && m.COff <= hi {
				out[i]++
			}
		}
	}
	return out
}

func readFiles(t *testing.T, s Storage, f *seekableFixture, paths ...string) {
	t.Helper()
	for _, p := range paths {
		got, err := readAll(t, s, f.nodes[p])
		if err != nil {
			t.Fatalf("reading %s: %v", p, err)
		}
		if string(got) != string(f.files[p]) {
			t.Fatalf("%s: read other bytes than were written", p)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen in 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDenseReadsFetchTheRestOfTheLayer(t *testing.T) {
	tests := []struct {
		name      string
		threshold float64
		files     []string
		wantRest  bool
	}{
		{"past the threshold", 0.3, []string{"/small.txt", "/mid.bin"}, true},
		{"one member is never dense", 0.01, []string{"/small.txt"}, false},
		{"below the threshold", 0.9, []string{"/small.txt", "/mid.bin"}, false},
		{"off", 0, []string{"/small.txt", "/mid.bin"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSeekableFixture(t)
			cache := openTestSpanCache(t, t.TempDir())
			s := newTestRanged(t, f, cache, nil, withReadAhead(0), withDenseThreshold(tt.threshold))
			readFiles(t, s, f, tt.files...)
			read := map[int]bool{}
			for _, p := range tt.files {
				for _, i := range f.membersOf(p) {
					read[i] = true
				}
			}
			if tt.wantRest {
				if float64(len(read)) < tt.threshold*float64(len(f.members)) {
					t.Fatalf("the fixture's reads need %d of %d members, under the threshold %g", len(read), len(f.members), tt.threshold)
				}
				rest := int64(len(f.members) - len(read))
				waitFor(t, "the dense fetch", func() bool { return s.Stats().DenseSpans >= rest })
				s.Cleanup()
				if got := s.Stats().DenseSpans; got != rest {
					t.Errorf("Stats().DenseSpans = %d, want %d (the members not read)", got, rest)
				}
				for i, m := range f.members {
					if b, err := cache.lookup(m); b == nil || err != nil {
						t.Errorf("member %d is not cached after the dense fetch (%v)", i, err)
					}
				}
				if got, limit := f.proxy.wireBytes(t), int64(len(f.blob))*11/10; got > limit {
					t.Errorf("%d bytes fetched for a blob of %d, want at most %d", got, len(f.blob), limit)
				}
				for i, n := range f.fetchedMembers(t, 0) {
					if n != 1 {
						t.Errorf("member %d was fetched %d times, want once", i, n)
					}
				}
				return
			}
			time.Sleep(200 * time.Millisecond) // a fetch that wrongly started has sent its GETs
			s.Cleanup()
			if got := s.Stats().DenseSpans; got != 0 {
				t.Errorf("Stats().DenseSpans = %d, want 0", got)
			}
			fetched := f.fetchedMembers(t, 0)
			want := map[int]int{}
			for i := range read {
				want[i] = 1
			}
			if diff := cmp.Diff(want, fetched); diff != "" {
				t.Errorf("members fetched (-want +got):\n%s", diff)
			}
		})
	}
}

func readTraceFile(t *testing.T, path string) traceFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the trace: %v", err)
	}
	var tf traceFile
	if err := json.Unmarshal(b, &tf); err != nil {
		t.Fatalf("trace %s: %v", b, err)
	}
	return tf
}

func refsOf(f *seekableFixture, paths ...string) []spanRef {
	var out []spanRef
	seen := map[int]bool{}
	for _, p := range paths {
		for _, i := range f.membersOf(p) {
			if !seen[i] {
				seen[i] = true
				out = append(out, spanRef{f.digest, i})
			}
		}
	}
	return out
}

func TestPrefetchTraceRecordsTheWindow(t *testing.T) {
	f := newSeekableFixture(t)
	path := TracePath(t.TempDir(), "sha256:"+fmt.Sprintf("%064x", 1))
	s := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil, withReadAhead(0), withDenseThreshold(0), withTrace(path, time.Second, true))
	readFiles(t, s, f, "/big2.bin", "/small.txt")
	waitFor(t, "the trace's writing at the window's end", func() bool { _, err := os.Stat(path); return err == nil })
	readFiles(t, s, f, "/mid.bin") // after the window: not in the trace
	s.Cleanup()
	tf := readTraceFile(t, path)
	// big2.bin is over prefillMaxFile: only its spans are listed.
	want := traceFile{Version: traceVersion, Spans: refsOf(f, "/big2.bin", "/small.txt"), Files: []string{"/small.txt"}}
	if diff := cmp.Diff(want, tf); diff != "" {
		t.Errorf("trace (-want +got):\n%s", diff)
	}
	if got, want := s.Stats().TracedSpans, int64(len(tf.Spans)); got != want {
		t.Errorf("Stats().TracedSpans = %d, want %d", got, want)
	}
}

func TestPrefetchFetchesTheLastMountsSpans(t *testing.T) {
	f := newSeekableFixture(t)
	path := TracePath(t.TempDir(), "sha256:"+fmt.Sprintf("%064x", 2))
	opts := func(prefetch bool) []rangedOption {
		return []rangedOption{withReadAhead(0), withDenseThreshold(0), withTrace(path, time.Minute, prefetch)}
	}
	first := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil, opts(true)...)
	first.waitPrefetched(t) // there is no trace yet
	if n := len(f.proxy.blobGets()); n != 0 {
		t.Fatalf("%d blob GETs before any read with no trace, want 0", n)
	}
	readFiles(t, first, f, "/small.txt", "/mid.bin")
	first.Cleanup() // before its window's end: writes the trace
	want := refsOf(f, "/small.txt", "/mid.bin")
	if diff := cmp.Diff(want, readTraceFile(t, path).Spans); diff != "" {
		t.Fatalf("trace (-want +got):\n%s", diff)
	}

	// A fresh span cache: the spans are fetched before anything is read,
	// and reading the files then fetches nothing more.
	gets := len(f.proxy.blobGets())
	second := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil, opts(true)...)
	second.waitPrefetched(t)
	wantFetched := map[int]int{}
	for _, r := range want {
		wantFetched[r.Member] = 1
	}
	if diff := cmp.Diff(wantFetched, f.fetchedMembers(t, gets)); diff != "" {
		t.Errorf("members prefetched before any read (-want +got):\n%s", diff)
	}
	before := len(f.proxy.blobGets())
	readFiles(t, second, f, "/small.txt", "/mid.bin")
	if n := len(f.proxy.blobGets()) - before; n != 0 {
		t.Errorf("reading the prefetched files made %d blob GETs, want 0", n)
	}
	st := second.Stats()
	if st.TraceSpans != int64(len(want)) || st.PrefetchSpans != int64(len(want)) || st.CacheMisses != 0 {
		t.Errorf("Stats() = %+v; want %d trace and prefetch spans, no cache misses", st, len(want))
	}
	second.Cleanup()

	// Without prefetch, nothing is fetched until it is read.
	gets = len(f.proxy.blobGets())
	third := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil, opts(false)...)
	third.waitPrefetched(t)
	time.Sleep(200 * time.Millisecond)
	if n := len(f.proxy.blobGets()) - gets; n != 0 {
		t.Errorf("%d blob GETs before any read without prefetch, want 0", n)
	}
	if st := third.Stats(); st.TraceSpans != 0 || st.PrefetchSpans != 0 {
		t.Errorf("Stats() = %+v without prefetch; want no trace or prefetch spans", st)
	}
}

// TestPrefetchShortMountKeepsTheRestOfTheTrace: a mount that ends inside
// its window writes what it read first, then what the last trace listed
// that it did not reach; one whose window closed writes only its own.
func TestPrefetchShortMountKeepsTheRestOfTheTrace(t *testing.T) {
	// A mount that prefetches has the last trace in memory; one that does
	// not reads it when it writes its own.
	for _, prefetch := range []bool{false, true} {
		t.Run(fmt.Sprintf("prefetch=%v", prefetch), func(t *testing.T) { testShortMountKeepsTheRestOfTheTrace(t, prefetch) })
	}
}

func testShortMountKeepsTheRestOfTheTrace(t *testing.T, prefetch bool) {
	f := newSeekableFixture(t)
	path := TracePath(t.TempDir(), "sha256:"+fmt.Sprintf("%064x", 4))
	mount := func(window time.Duration, files ...string) {
		s := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil, withReadAhead(0), withDenseThreshold(0), withTrace(path, window, prefetch))
		readFiles(t, s, f, files...)
		if window < time.Minute {
			waitFor(t, "the trace's writing at the window's end", func() bool {
				s.trace.mu.Lock()
				defer s.trace.mu.Unlock()
				return s.trace.written
			})
		}
		s.Cleanup()
	}
	mount(time.Minute, "/small.txt", "/mid.bin")
	mount(time.Minute, "/mid.bin")
	want := traceFile{Version: traceVersion, Spans: refsOf(f, "/mid.bin", "/small.txt"), Files: []string{"/mid.bin", "/small.txt"}}
	if diff := cmp.Diff(want, readTraceFile(t, path)); diff != "" {
		t.Errorf("trace of a mount that ended inside its window (-want +got):\n%s", diff)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	mount(time.Minute, "/small.txt", "/mid.bin")
	mount(300*time.Millisecond, "/mid.bin")
	want = traceFile{Version: traceVersion, Spans: refsOf(f, "/mid.bin"), Files: []string{"/mid.bin"}}
	if diff := cmp.Diff(want, readTraceFile(t, path)); diff != "" {
		t.Errorf("trace of a mount whose window closed (-want +got):\n%s", diff)
	}
}

func TestPrefetchIgnoresTraceOfOtherMembers(t *testing.T) {
	f := newSeekableFixture(t)
	path := TracePath(t.TempDir(), "sha256:"+fmt.Sprintf("%064x", 3))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(traceFile{Version: traceVersion, Spans: []spanRef{
		{"sha256:" + fmt.Sprintf("%064x", 9), 0}, {f.digest, len(f.members)}, {f.digest, -1}, {f.digest, 1},
	}})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil, withReadAhead(0), withDenseThreshold(0), withTrace(path, time.Minute, true))
	s.waitPrefetched(t)
	if diff := cmp.Diff(map[int]int{1: 1}, f.fetchedMembers(t, 0)); diff != "" {
		t.Errorf("members prefetched from a trace naming others (-want +got):\n%s", diff)
	}
	if TracePath("/c", "not a digest") != "" {
		t.Error(`TracePath("not a digest") is not empty`)
	}
}

func TestKeepOrder(t *testing.T) {
	for _, tt := range []struct {
		name              string
		last, files, want []string
	}{
		{"no last trace", nil, []string{"/b", "/a"}, []string{"/b", "/a"}},
		{"the last order first", []string{"/a", "/b", "/c"}, []string{"/c", "/x", "/a"}, []string{"/a", "/c", "/x"}},
		{"nothing read", []string{"/a"}, nil, []string{}},
	} {
		if got := keepOrder(tt.last, tt.files); !cmp.Equal(got, tt.want, cmpopts.EquateEmpty()) {
			t.Errorf("%s: keepOrder(%q, %q) = %q, want %q", tt.name, tt.last, tt.files, got, tt.want)
		}
	}
}
