package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clipbuild/clipbuild/archive"
)

// TestLazyReadFetchesOnlyItsSpan mounts a freshly built v2 archive with a
// cold cache and reads one 6-byte file: the registry must send at most one
// member (1 MiB uncompressed, less compressed) of the 8 MB layer holding it,
// by single-range GETs. Then every file is read through the same mount and
// the tree must equal buildah's, so the ranged reader serves exact bytes.
func TestLazyReadFetchesOnlyItsSpan(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	proxy := startByteProxy(t, reg.addr)
	dir := inlineContext(t, busyboxBase+
		"RUN head -c 4000000 /dev/urandom > /a.bin && printf 'hello\\n' > /small.txt && head -c 4000000 /dev/urandom > /z.bin\n")
	image := imageName("lazy")
	out, res := buildV2(t, dir, image, "--clip-version", "2", "--registry", proxy.addr+"/lazy")
	checkV2Result(t, out, res, proxy.addr+"/lazy/")
	a := openArchive(t, out.Archive)
	if len(a.Trailer.Members) == 0 {
		t.Fatalf("archive lists no seekable members")
	}

	proxy.reset()
	stats := filepath.Join(t.TempDir(), "stats.json")
	m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir(), "--stats", stats)
	got, err := os.ReadFile(filepath.Join(m.dir, "small.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello\n" {
		t.Fatalf("small.txt = %q, want %q", got, "hello\n")
	}
	sent, _ := proxy.stats()
	t.Logf("one 6-byte file: the registry sent %d bytes (image %d compressed bytes)", sent, out.ImageBytes)
	if sent == 0 || sent > 1<<20 {
		t.Errorf("reading one 6-byte file cold made the registry send %d bytes, want 1..%d (one member)", sent, 1<<20)
	}
	if n := proxy.count("GET", "/blobs/sha256:"); n == 0 {
		t.Errorf("no blob GET for a cold read")
	}

	reference := buildahRootfs(t, image, namePrefix+"-lazy-ref")
	compareTrees(t, "buildah mount", reference, "clipbuild mount (ranged v2)", m.dir)
	if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
		t.Fatalf("stopping mount: exit %d, %v", code, err)
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatalf("mount --stats wrote nothing: %v", err)
	}
	var st archive.RangedStats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stats file: %v\n%s", err, b)
	}
	if st.BytesFetched == 0 || st.SpansFetched == 0 || st.Reads == 0 {
		t.Errorf("stats = %+v, want reads, spans and bytes fetched", st)
	}
	if st.Errors != 0 {
		t.Errorf("stats report %d read errors", st.Errors)
	}
}

// TestPrefetchFromTheLastMount mounts a built v2 archive, reads two small
// files and unmounts: the mount leaves a trace of the spans it read in its
// span cache directory. A second mount with a fresh span cache and that
// trace must fetch those spans before anything is read, so reading the
// files then sends nothing; a third with --no-prefetch must fetch nothing
// until asked.
func TestPrefetchFromTheLastMount(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	proxy := startByteProxy(t, reg.addr)
	var run strings.Builder
	run.WriteString("RUN mkdir /d")
	for i := range 6 {
		fmt.Fprintf(&run, " && head -c 1500000 /dev/urandom > /d/f%d.bin && printf 'file %d\\n' > /d/f%d.txt", i, i, i)
	}
	dir := inlineContext(t, busyboxBase+run.String()+"\n")
	image := imageName("prefetch")
	out, res := buildV2(t, dir, image, "--clip-version", "2", "--registry", proxy.addr+"/prefetch")
	checkV2Result(t, out, res, proxy.addr+"/prefetch/")
	a := openArchive(t, out.Archive)
	if a.Trailer.ManifestDigest == "" || len(a.Trailer.Members) == 0 {
		t.Fatalf("archive has manifest digest %q and %d seekable layers, want both", a.Trailer.ManifestDigest, len(a.Trailer.Members))
	}
	files := []string{"d/f1.txt", "d/f4.txt"}
	readFiles := func(m *fuseMount) time.Duration {
		t.Helper()
		start := time.Now()
		for i, f := range files {
			got, err := os.ReadFile(filepath.Join(m.dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("file %d\n", []int{1, 4}[i]); string(got) != want {
				t.Fatalf("%s = %q, want %q", f, got, want)
			}
		}
		return time.Since(start)
	}
	blobGets := func() int { return proxy.count("GET", "/blobs/sha256:") }
	mount := func(spans string, extra ...string) (*fuseMount, string) {
		stats := filepath.Join(t.TempDir(), "stats.json")
		args := append([]string{"--cache-dir", t.TempDir(), "--span-cache-dir", spans, "--stats", stats, "--dense-threshold", "0"}, extra...)
		return mountArchive(t, out.Archive, args...), stats
	}
	stop := func(m *fuseMount, stats string) archive.RangedStats {
		t.Helper()
		if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
			t.Fatalf("stopping mount: exit %d, %v", code, err)
		}
		return readStats(t, stats)
	}

	// First start: cold, no trace.
	first := t.TempDir()
	proxy.reset()
	m, stats := mount(first)
	coldFirst := readFiles(m)
	st := stop(m, stats)
	tracePath := archive.TracePath(first, a.Trailer.ManifestDigest)
	if _, err := os.Stat(tracePath); err != nil {
		t.Fatalf("the first mount left no trace: %v", err)
	}
	if st.TracedSpans == 0 || st.PrefetchSpans != 0 {
		t.Fatalf("first mount: stats = %+v, want traced spans and none prefetched", st)
	}
	traced := st.TracedSpans

	// Second start: fresh span cache, the trace kept.
	withTrace := func() string {
		d := t.TempDir()
		if err := os.MkdirAll(filepath.Join(d, "traces"), 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(tracePath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(archive.TracePath(d, a.Trailer.ManifestDigest), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	// It prefetches the trace's spans and stores the two files in the
	// kernel's page cache, so reading them reaches the mount process not
	// at all.
	proxy.reset()
	m, stats = mount(withTrace())
	deadline := time.Now().Add(30 * time.Second)
	var ready archive.RangedStats
	for {
		if err := m.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if b, err := os.ReadFile(stats); err == nil {
			if json.Unmarshal(b, &ready) == nil && ready.PrefetchSpans == traced && ready.PrefillFiles == int64(len(files)) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second mount did not prefetch %d spans and prefill %d files in 30s (stats %+v):\n%s", traced, len(files), ready, m.stderr.String())
		}
	}
	prefetchGets := blobGets()
	coldSecond := readFiles(m)
	if n := blobGets() - prefetchGets; n != 0 {
		t.Errorf("reading the files the trace lists made %d blob GETs after the prefetch, want 0", n)
	}
	st = stop(m, stats)
	if st.TraceSpans != traced || st.PrefetchSpans != traced || st.CacheMisses != 0 {
		t.Errorf("second mount: stats = %+v, want %d trace and prefetch spans and no cache misses", st, traced)
	}
	if st.Reads != ready.Reads || st.TraceFiles != int64(len(files)) {
		t.Errorf("second mount: %d reads reached the mount after the prefill (stats %+v), want none, and %d trace files", st.Reads-ready.Reads, st, len(files))
	}
	t.Logf("reading %d files: first cold start %v, second (prefetched, %d spans in %d GETs) %v", len(files), coldFirst, traced, prefetchGets, coldSecond)

	// --no-prefetch: nothing is fetched until it is read.
	proxy.reset()
	m, stats = mount(withTrace(), "--no-prefetch")
	time.Sleep(time.Second)
	if n := blobGets(); n != 0 {
		t.Errorf("with --no-prefetch, %d blob GETs before any read, want 0", n)
	}
	readFiles(m)
	if blobGets() == 0 {
		t.Error("with --no-prefetch, reading cold files made no blob GET")
	}
	if st := stop(m, stats); st.PrefetchSpans != 0 || st.TraceSpans != 0 || st.PrefillFiles != 0 || st.Reads == 0 {
		t.Errorf("with --no-prefetch: stats = %+v, want no trace, prefetch or prefill, and the reads counted", st)
	}
}

func readStats(t *testing.T, path string) archive.RangedStats {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("mount --stats wrote nothing: %v", err)
	}
	var st archive.RangedStats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stats file: %v\n%s", err, b)
	}
	return st
}
