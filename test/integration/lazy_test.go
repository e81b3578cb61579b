package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"

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
