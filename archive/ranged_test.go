package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/registry"
)

func testEntry(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// seekableFixture is a seekable layer blob in a registry, and the nodes
// of its files.
type seekableFixture struct {
	repo    string // host/path of the registry in front of which proxy sits
	digest  string
	blob    []byte
	tar     []byte
	members []Member
	nodes   map[string]*common.ClipNode
	files   map[string][]byte
	proxy   *blobProxy
}

// fixtureFiles are the layer's files: big ones that span members, and a
// 6-byte one between them.
var fixtureFiles = []struct {
	name string
	size int
}{
	{"big1.bin", 2<<20 + 512<<10},
	{"small.txt", 6},
	{"big2.bin", 1<<20 + 300<<10},
	{"mid.bin", 300 << 10},
}

// nodeList returns the fixture's nodes.
func (f *seekableFixture) nodeList() []*common.ClipNode {
	var nodes []*common.ClipNode
	for _, n := range f.nodes {
		nodes = append(nodes, n)
	}
	return nodes
}

// newSeekableFixture pushes a seekable layer of fixtureFiles, in 1 MiB
// members, to the embedded registry and puts a counting proxy in front.
func newSeekableFixture(t *testing.T) *seekableFixture {
	t.Helper()
	f := &seekableFixture{files: map[string][]byte{}, nodes: map[string]*common.ClipNode{}}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	r := rand.New(rand.NewPCG(7, 7))
	for _, ff := range fixtureFiles {
		b := make([]byte, ff.size)
		for i := range b {
			b[i] = "abcdefghijklmnop"[r.IntN(16)] // compresses about 2:1
		}
		if ff.size == 6 {
			b = []byte("hello\n")
		}
		f.files["/"+ff.name] = b
		if err := tw.WriteHeader(&tar.Header{Name: ff.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	f.tar = tb.Bytes()

	var blob bytes.Buffer
	sw := NewSeekableWriter(&blob)
	scan, err := ScanLayer(context.Background(), io.TeeReader(bytes.NewReader(f.tar), sw), WithBoundaries(sw.Boundary))
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	f.blob, f.members, f.digest = blob.Bytes(), sw.Members(), sw.BlobDigest().String()
	if len(f.members) < 4 {
		t.Fatalf("fixture has %d members, want at least 4", len(f.members))
	}
	ix := NewIndexer()
	if err := ix.Apply(f.digest, scan); err != nil {
		t.Fatal(err)
	}
	for _, n := range ix.Nodes() {
		f.nodes[n.Path] = n
	}

	addr := startTestRegistry(t)
	p, err := registry.NewPusher(context.Background(), addr+"/ranged/layer", registry.DefaultOptions(), registry.WithPushLog(testEntry(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.UploadBlob(context.Background(), bytes.NewReader(f.blob)); err != nil {
		t.Fatal(err)
	}
	f.proxy = newBlobProxy(t, addr)
	f.repo = f.proxy.addr() + "/ranged/layer"
	return f
}

// member returns the index of the member holding uncompressed offset off.
func (f *seekableFixture) member(off int64) int {
	for i, m := range f.members {
		if off >= m.UOff && off < m.UOff+m.ULen {
			return i
		}
	}
	return -1
}

func startTestRegistry(t *testing.T) string {
	t.Helper()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, v := range []string{"REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	registry.RouteLogs(quiet)
	s, err := registry.Start(context.Background(), "127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s.Addr
}

// blobProxy is a reverse proxy in front of a registry that records blob
// GETs and their body bytes, and can delay, corrupt or un-range them.
type blobProxy struct {
	srv *httptest.Server

	arrived atomic.Int32 // blob GETs received, answered or not

	mu         sync.Mutex
	gets       []proxiedGet
	delay      time.Duration
	flip       bool // flip a byte in the middle of every blob body
	stripRange bool
}

type proxiedGet struct {
	rng    string
	status int
	body   int64 // bytes of the answer's body
}

func newBlobProxy(t *testing.T, upstream string) *blobProxy {
	t.Helper()
	px := &blobProxy{}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	px.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			rp.ServeHTTP(w, r)
			return
		}
		px.arrived.Add(1)
		px.mu.Lock()
		delay, flip, strip := px.delay, px.flip, px.stripRange
		px.mu.Unlock()
		g := proxiedGet{rng: r.Header.Get("Range")}
		if strip {
			r.Header.Del("Range")
		}
		time.Sleep(delay)
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if flip && len(body) > 0 {
			body[len(body)/2] ^= 0x01
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		// Recorded before the client can have the answer, so a test sees
		// every GET that its read made.
		g.status, g.body = rec.Code, int64(len(body))
		px.mu.Lock()
		px.gets = append(px.gets, g)
		px.mu.Unlock()
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(px.srv.Close)
	return px
}

func (px *blobProxy) addr() string { return px.srv.Listener.Addr().String() }

func (px *blobProxy) blobGets() []proxiedGet {
	px.mu.Lock()
	defer px.mu.Unlock()
	return append([]proxiedGet(nil), px.gets...)
}

func (px *blobProxy) set(fn func(px *blobProxy)) {
	px.mu.Lock()
	defer px.mu.Unlock()
	fn(px)
}

// wireBytes is the body bytes of every blob GET so far, and checks that
// each asked for a single range.
func (px *blobProxy) wireBytes(t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, g := range px.blobGets() {
		if !strings.HasPrefix(g.rng, "bytes=") || strings.Contains(g.rng, ",") {
			t.Errorf("blob GET with Range %q, want one range", g.rng)
		}
		n += g.body
	}
	return n
}

// newTestRanged opens a ranged storage of f through a new RangeReader.
func newTestRanged(t *testing.T, f *seekableFixture, cache *SpanCache, fallback Storage, opts ...rangedOption) *rangedStorage {
	t.Helper()
	rr, err := registry.NewRangeReader(f.repo, registry.DefaultOptions(), registry.WithRangeLog(testEntry(t)),
		registry.WithRangeBackoff(registry.Backoff{Attempts: 2, Initial: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]rangedOption{withRangedLog(testEntry(t))}, opts...)
	s, err := newRangedStorage(memArchive(f.nodeList()...).Metadata, map[string][]Member{f.digest: f.members}, rr, cache, fallback, opts...)
	if err != nil {
		t.Fatalf("newRangedStorage() = %v", err)
	}
	t.Cleanup(func() { s.Cleanup() })
	return s
}

func readAll(t *testing.T, s Storage, n *common.ClipNode) ([]byte, error) {
	t.Helper()
	return io.ReadAll(newNodeReader(s, n))
}

func TestRangedReadOfSmallFileFetchesOneMember(t *testing.T) {
	f := newSeekableFixture(t)
	s := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil)
	n := f.nodes["/small.txt"]
	dest := make([]byte, 4096)
	got, err := s.ReadFile(n, dest, 0)
	if err != nil {
		t.Fatalf("ReadFile(/small.txt) = %v", err)
	}
	if string(dest[:got]) != "hello\n" {
		t.Fatalf("ReadFile(/small.txt) = %q, want %q", dest[:got], "hello\n")
	}
	m := f.members[f.member(n.Remote.UOffset)]
	gets := f.proxy.blobGets()
	if len(gets) != 1 {
		t.Fatalf("%d blob GETs, want 1", len(gets))
	}
	wantRange := fmt.Sprintf("bytes=%d-%d", m.COff, m.COff+m.CLen-1)
	if g := gets[0]; g.rng != wantRange || g.body != m.CLen || g.status != http.StatusPartialContent {
		t.Errorf("GET: Range %q, %d bytes, status %d; want %q, %d bytes (the member), 206", g.rng, g.body, g.status, wantRange, m.CLen)
	}
	if m.CLen > 1<<20 {
		t.Errorf("the member is %d bytes compressed, over 1 MiB", m.CLen)
	}
	// Again: from the cache, with nothing on the wire.
	if _, err := s.ReadFile(n, dest, 0); err != nil {
		t.Fatal(err)
	}
	st, ok := StatsOf(s)
	if !ok {
		t.Fatal("StatsOf(ranged storage) = false")
	}
	if _, ok := StatsOf(&tarStorage{}); ok {
		t.Error("StatsOf(another storage) = true")
	}
	if len(f.proxy.blobGets()) != 1 || st.Requests != 1 || st.BytesFetched != m.CLen || st.SpansFetched != 1 || st.CacheMisses != 1 || st.CacheHits != 1 || st.Reads != 2 {
		t.Errorf("after two reads: %d GETs, Stats() = %+v; want 1 GET, 1 request of %d bytes, 1 span, 1 miss, 1 hit, 2 reads", len(f.proxy.blobGets()), st, m.CLen)
	}
	if st.Latency.Max <= 0 || st.Latency.P50 > st.Latency.P99 || st.Latency.P99 > st.Latency.Max {
		t.Errorf("Stats().Latency = %+v, want 0 < P50 <= P99 <= Max", st.Latency)
	}
}

func TestRangedReadsEveryFileFetchingEachMemberOnce(t *testing.T) {
	f := newSeekableFixture(t)
	s := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil)
	for _, ff := range fixtureFiles {
		p := "/" + ff.name
		got, err := readAll(t, s, f.nodes[p])
		if err != nil {
			t.Fatalf("reading %s: %v", p, err)
		}
		if !bytes.Equal(got, f.files[p]) {
			t.Fatalf("%s: read %d bytes, other than the %d written", p, len(got), len(f.files[p]))
		}
	}
	s.Cleanup() // waits for read-ahead
	// Every byte of the files is in the blob's members, each wanted once.
	if got, want := f.proxy.wireBytes(t), int64(len(f.blob)); got > want {
		t.Errorf("%d bytes fetched, more than the %d of the whole blob: a member was fetched twice", got, want)
	}
	if st := s.Stats(); st.SpansFetched != int64(len(f.members)) {
		t.Errorf("Stats().SpansFetched = %d, want %d, each member once", st.SpansFetched, len(f.members))
	}
}

func TestRangedReadsAhead(t *testing.T) {
	f := newSeekableFixture(t)
	s := newTestRanged(t, f, openTestSpanCache(t, t.TempDir()), nil, withReadAhead(2))
	n := f.nodes["/big1.bin"]
	dest := make([]byte, 128<<10)
	for off := int64(0); off < 3*int64(len(dest)); off += int64(len(dest)) {
		if _, err := s.ReadFile(n, dest, off); err != nil {
			t.Fatal(err)
		}
	}
	// The third sequential read started fetching the two members after.
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().ReadAheadSpans < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.Stats().ReadAheadSpans; got != 2 {
		t.Fatalf("Stats().ReadAheadSpans = %d, want 2", got)
	}
	next, after := f.members[1], f.members[2]
	got, err := s.ReadFile(n, dest, next.UOff-n.Remote.UOffset)
	if err != nil {
		t.Fatal(err)
	}
	want := f.files["/big1.bin"][next.UOff-n.Remote.UOffset:][:got]
	if !bytes.Equal(dest[:got], want) {
		t.Error("read of the member read ahead returned other bytes")
	}
	s.Cleanup()
	// Members 1 and 2 came in one GET, ahead of the read of member 1,
	// which made none of its own.
	aheadRange := fmt.Sprintf("bytes=%d-%d", next.COff, after.COff+after.CLen-1)
	var covering []string
	for _, g := range f.proxy.blobGets() {
		var lo, hi int64
		fmt.Sscanf(g.rng, "bytes=%d-%d", &lo, &hi)
		if lo <= next.COff && next.COff <= hi {
			covering = append(covering, g.rng)
		}
	}
	if len(covering) != 1 || covering[0] != aheadRange {
		t.Errorf("GETs of member 1 = %q, want one: %q", covering, aheadRange)
	}
}

func TestRangedCorruptBytesOnTheWire(t *testing.T) {
	f := newSeekableFixture(t)
	cache := openTestSpanCache(t, t.TempDir())
	s := newTestRanged(t, f, cache, nil)
	f.proxy.set(func(px *blobProxy) { px.flip = true })
	n := f.nodes["/small.txt"]
	dest := make([]byte, 6)
	got, err := s.ReadFile(n, dest, 0)
	if !errors.Is(err, ErrSpanCorrupt) {
		t.Fatalf("ReadFile(corrupted on the wire) = %d, %v; want ErrSpanCorrupt", got, err)
	}
	if got != 0 || string(dest) != "\x00\x00\x00\x00\x00\x00" {
		t.Errorf("ReadFile(corrupted on the wire) gave %d bytes %q, want none", got, dest)
	}
	if b := dirBytes(t, filepath.Join(cache.Dir(), "sha256")); b != 0 {
		t.Errorf("%d bytes cached from a corrupt fetch, want 0", b)
	}
	f.proxy.set(func(px *blobProxy) { px.flip = false })
	if _, err := s.ReadFile(n, dest, 0); err != nil || string(dest) != "hello\n" {
		t.Errorf("ReadFile(after the wire is fixed) = %q, %v; want %q", dest, err, "hello\n")
	}
	if st := s.Stats(); st.Errors != 1 {
		t.Errorf("Stats().Errors = %d, want 1", st.Errors)
	}
}

func TestRangedCorruptCachedSpan(t *testing.T) {
	f := newSeekableFixture(t)
	dir := t.TempDir()
	n := f.nodes["/small.txt"]
	dest := make([]byte, 6)
	if _, err := newTestRanged(t, f, openTestSpanCache(t, dir), nil).ReadFile(n, dest, 0); err != nil {
		t.Fatal(err)
	}
	m := f.members[f.member(n.Remote.UOffset)]
	p := filepath.Join(dir, "sha256", m.SHA256)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("span not cached: %v", err)
	}
	b[n.Remote.UOffset-m.UOff] ^= 0x20 // "hello" -> "Hello"
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A new mount: nothing in memory.
	s := newTestRanged(t, f, openTestSpanCache(t, dir), nil)
	clear(dest)
	if got, err := s.ReadFile(n, dest, 0); !errors.Is(err, ErrSpanCorrupt) || got != 0 {
		t.Fatalf("ReadFile(corrupt cached span) = %d (%q), %v; want 0, ErrSpanCorrupt", got, dest, err)
	}
	before := len(f.proxy.blobGets())
	if _, err := s.ReadFile(n, dest, 0); err != nil || string(dest) != "hello\n" {
		t.Fatalf("ReadFile(again) = %q, %v; want %q", dest, err, "hello\n")
	}
	if got := len(f.proxy.blobGets()) - before; got != 1 {
		t.Errorf("the read after the corrupt span made %d GETs, want 1 (refetch)", got)
	}
}

func TestRangedCacheStaysWithinBudget(t *testing.T) {
	f := newSeekableFixture(t)
	const budget = 2 << 20
	dir := t.TempDir()
	cache := openTestSpanCache(t, dir, WithCacheSize(budget), WithMemoryCache(0))
	s := newTestRanged(t, f, cache, nil)
	var read int64
	for _, ff := range fixtureFiles {
		p := "/" + ff.name
		got, err := readAll(t, s, f.nodes[p])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.files[p]) {
			t.Fatalf("%s: other bytes", p)
		}
		read += int64(len(got))
	}
	s.Cleanup()
	if read <= budget {
		t.Fatalf("read %d bytes, not more than the budget of %d", read, budget)
	}
	if got := dirBytes(t, filepath.Join(dir, "sha256")); got > budget || got == 0 {
		t.Errorf("cache holds %d bytes, want 1..%d", got, budget)
	}
}

func TestRangedTwoMountsFetchOnce(t *testing.T) {
	tests := []struct {
		name   string
		shared bool // one SpanCache for both, as mounts in one process
	}{
		{"two processes", false},
		{"one process", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSeekableFixture(t)
			f.proxy.set(func(px *blobProxy) { px.delay = 200 * time.Millisecond })
			dir := t.TempDir()
			c1 := openTestSpanCache(t, dir)
			c2 := c1
			if !tt.shared {
				c2 = openTestSpanCache(t, dir)
			}
			mounts := []*rangedStorage{newTestRanged(t, f, c1, nil), newTestRanged(t, f, c2, nil)}
			n := f.nodes["/small.txt"]
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, s := range mounts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					dest := make([]byte, 6)
					if _, err := s.ReadFile(n, dest, 0); err != nil || string(dest) != "hello\n" {
						t.Errorf("mount %d: ReadFile() = %q, %v", i, dest, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if got := f.proxy.arrived.Load(); got != 1 {
				t.Errorf("two mounts reading one file made %d GETs, want 1", got)
			}
		})
	}
}

// tarStorage is a whole-layer reader over an uncompressed layer in memory,
// counting its reads.
type tarStorage struct {
	layer []byte
	reads atomic.Int32
}

func (s *tarStorage) ReadFile(n *common.ClipNode, dest []byte, off int64) (int, error) {
	s.reads.Add(1)
	r := n.Remote
	end := min(r.ULength, off+int64(len(dest)))
	if off >= end {
		return 0, nil
	}
	return copy(dest, s.layer[r.UOffset+off:r.UOffset+end]), nil
}
func (s *tarStorage) Metadata() *common.ClipArchiveMetadata { return nil }
func (s *tarStorage) CachedLocally() bool                   { return false }
func (s *tarStorage) Cleanup() error                        { return nil }

func TestRangedWholeBlobAnswers(t *testing.T) {
	f := newSeekableFixture(t)
	f.proxy.set(func(px *blobProxy) { px.stripRange = true })
	whole := &tarStorage{layer: f.tar}
	rr, err := registry.NewRangeReader(f.repo, registry.DefaultOptions(), registry.WithRangeLog(testEntry(t)), registry.WithMaxDiscard(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newRangedStorage(nil, map[string][]Member{f.digest: f.members}, rr, openTestSpanCache(t, t.TempDir()), whole, withRangedLog(testEntry(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup()
	// big1.bin starts in the first member: the registry's 200 is read up
	// to it. small.txt lies megabytes in: the layer is read whole instead.
	dest := make([]byte, 1000)
	if _, err := s.ReadFile(f.nodes["/big1.bin"], dest, 0); err != nil || !bytes.Equal(dest, f.files["/big1.bin"][:1000]) {
		t.Fatalf("ReadFile(big1.bin) = %v, or other bytes", err)
	}
	if got := whole.reads.Load(); got != 0 {
		t.Errorf("the first member's read used the whole-layer reader %d times, want 0", got)
	}
	for i := range 2 {
		got, err := s.ReadFile(f.nodes["/small.txt"], dest, 0)
		if err != nil || string(dest[:got]) != "hello\n" {
			t.Fatalf("read %d: ReadFile(small.txt) = %q, %v; want %q", i, dest[:got], err, "hello\n")
		}
	}
	if got := whole.reads.Load(); got != 2 {
		t.Errorf("whole-layer reads = %d, want 2", got)
	}
	if got := f.proxy.arrived.Load(); got != 2 {
		t.Errorf("%d blob GETs, want 2 (the layer is read whole after the first refusal)", got)
	}
}

func TestRangedLayerWithoutMembersUsesFallback(t *testing.T) {
	f := newSeekableFixture(t)
	whole := &tarStorage{layer: f.tar}
	s, err := newRangedStorage(nil, nil, nil, openTestSpanCache(t, t.TempDir()), whole)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, s, f.nodes["/big2.bin"])
	if err != nil || !bytes.Equal(got, f.files["/big2.bin"]) {
		t.Fatalf("reading big2.bin = %v, or other bytes", err)
	}
	if whole.reads.Load() == 0 {
		t.Error("the whole-layer reader was not used")
	}
	noFallback, _ := newRangedStorage(nil, nil, nil, openTestSpanCache(t, t.TempDir()), nil)
	if _, err := noFallback.ReadFile(f.nodes["/big2.bin"], make([]byte, 10), 0); err == nil {
		t.Error("ReadFile(no members, no fallback) = nil error")
	}
}

func TestNewRangedStorageChecksMembers(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	good := []Member{{0, 10, 0, 100, sha}, {10, 5, 100, 50, sha}}
	tests := []struct {
		name    string
		members []Member
		wantErr bool
	}{
		{"good", good, false},
		{"empty member dropped", []Member{good[0], {10, 20, 100, 0, sha}, {30, 5, 100, 50, sha}}, false},
		{"gap in the blob", []Member{good[0], {11, 5, 100, 50, sha}}, true},
		{"overlap in the layer", []Member{good[0], {10, 5, 99, 50, sha}}, true},
		{"zero compressed length", []Member{{0, 0, 0, 100, sha}}, true},
		{"bad digest", []Member{{0, 10, 0, 100, "../x"}}, true},
		{"not from the layer's start", []Member{{0, 10, 5, 100, sha}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newRangedStorage(nil, map[string][]Member{"sha256:x": tt.members}, nil, nil, nil)
			if gotErr := err != nil; gotErr != tt.wantErr || (err != nil && !errors.Is(err, ErrCorrupt)) {
				t.Errorf("newRangedStorage() = %v, want error: %t (ErrCorrupt)", err, tt.wantErr)
			}
		})
	}
}

func TestHistogramPercentiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 100; i++ {
		h.observe(time.Duration(i) * time.Millisecond)
	}
	st := h.stats()
	within := func(got, want time.Duration) bool { return got >= want && float64(got) <= float64(want)*1.2 }
	if !within(st.P50, 50*time.Millisecond) || !within(st.P90, 90*time.Millisecond) || !within(st.P99, 99*time.Millisecond) || st.Max != 100*time.Millisecond {
		t.Errorf("stats() = %+v, want P50 ~50ms, P90 ~90ms, P99 ~99ms (at most 20%% over), Max 100ms", st)
	}
	var empty histogram
	if st := empty.stats(); st != (LatencyStats{}) {
		t.Errorf("stats() of nothing = %+v, want zero", st)
	}
}
