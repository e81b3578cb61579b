package stages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/clipbuild/clipbuild/archive"
)

// layoutBlobs serves a layout's blobs as a registry would.
type layoutBlobs struct{ l *Layout }

func (b layoutBlobs) Open(_ context.Context, dg string) (io.ReadCloser, error) {
	d, err := digest.Parse(dg)
	if err != nil {
		return nil, err
	}
	return os.Open(b.l.BlobPath(d))
}

// plainLayer returns a layer blob's uncompressed tar stream.
func plainLayer(t *testing.T, blob []byte) io.Reader {
	t.Helper()
	if !bytes.HasPrefix(blob, []byte{0x1f, 0x8b}) {
		return bytes.NewReader(blob)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	return zr
}

// TestIndexerMatchesUnpack applies the same layers twice, once onto disk
// with Unpack (the reference) and once into an index with archive.Indexer (the
// v2 path), and checks that the v2 archive, read back through its layers,
// describes exactly the unpacked tree.
func TestIndexerMatchesUnpack(t *testing.T) {
	fifo := entry{name: "run.fifo", typ: tar.TypeFifo, mode: 0o620}
	setuid := entry{name: "usr/bin/tool", typ: tar.TypeReg, mode: 0o4755, body: "tool v1"}
	layers := [][]byte{
		tarLayer(t,
			dirEntry("etc/", 0o755), fileEntry("etc/passwd", "root:x:0:0\n"), fileEntry("etc/shadow", "root:*:1\n"),
			hardlinkEntry("etc/passwd-", "etc/passwd"),
			dirEntry("usr/", 0o755), dirEntry("usr/bin/", 0o755), setuid, dirEntry("usr/lib/", 0o755), fileEntry("usr/lib/a.so", "a"),
			symlinkEntry("lib", "usr/lib"), symlinkEntry("abs", "/usr/bin/tool"),
			dirEntry("opt/", 0o755), fileEntry("opt/old", "old"), dirEntry("opt/sub/", 0o700), fileEntry("opt/sub/deep", "deep"),
			dirEntry("tmp/", 0o1777), fifo, fileEntry("empty", ""),
		),
		gzipped(t, tarLayer(t,
			dirEntry("./", 0o751),
			fileEntry("etc/.wh.shadow", ""),
			dirEntry("opt/", 0o755), fileEntry("opt/.wh..wh..opq", ""), fileEntry("opt/new", "new"),
			entry{name: "usr/bin/tool", typ: tar.TypeReg, mode: 0o2755, body: "tool v2, longer"},
		)),
		tarLayer(t,
			fileEntry("lib/b.so", "through the symlink"),
			fileEntry("big", string(bytes.Repeat([]byte("0123456789abcdef"), 70000))),
		),
	}
	l := writeLayout(t, layers...)

	want, err := archive.TreeFromDir(context.Background(), unpack(t, l))
	if err != nil {
		t.Fatalf("TreeFromDir() = %v", err)
	}

	ix := archive.NewIndexer()
	var digests []string
	for i, d := range l.Manifest.Layers {
		if err := ix.AddLayer(context.Background(), d.Digest.String(), plainLayer(t, layers[i])); err != nil {
			t.Fatalf("AddLayer(%d) = %v", i+1, err)
		}
		digests = append(digests, d.Digest.String())
	}
	clip := filepath.Join(t.TempDir(), "v2.clip")
	oci := &common.OCIStorageInfo{RegistryURL: "http://127.0.0.1:1", Repository: "test/img", Reference: "t", Layers: digests}
	err = archive.WriteFileAtomic(clip, func(f *os.File) error {
		return archive.WriteV2(f, ix.Nodes(), oci, archive.Trailer{Tool: "clipbuild"})
	})
	if err != nil {
		t.Fatalf("WriteV2() = %v", err)
	}
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open(v2) = %v", err)
	}
	if a.Version() != 2 {
		t.Errorf("Version() = %d, want 2", a.Version())
	}
	s, err := archive.OpenStorage(a, archive.WithBlobOpener(layoutBlobs{l}), archive.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatalf("OpenStorage(v2) = %v", err)
	}
	defer s.Cleanup()
	got, err := archive.TreeFromArchive(context.Background(), a, s)
	if err != nil {
		t.Fatalf("TreeFromArchive(v2) = %v", err)
	}
	if d := archive.Diff(want, got); len(d) != 0 {
		t.Errorf("Diff(unpacked, v2 archive) = %q, want none", d)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("v2 tree (-unpacked +archive):\n%s", d)
	}
	// Spot checks, so a shared mistake in both paths is still caught.
	checks := map[string]struct {
		typ  string
		perm uint32
	}{
		"/":             {"dir", 0o751},
		"/usr/bin/tool": {"file", 0o2755},
		"/tmp":          {"dir", 0o1777},
		"/run.fifo":     {"fifo", 0o620},
		"/usr/lib/b.so": {"file", 0o644},
	}
	for p, c := range checks {
		if e := got[p]; e.Type != c.typ || e.Perm != c.perm {
			t.Errorf("%s = %s %#o, want %s %#o", p, e.Type, e.Perm, c.typ, c.perm)
		}
	}
	for _, p := range []string{"/etc/shadow", "/opt/old", "/opt/sub", "/lib/b.so"} {
		if _, ok := got[p]; ok {
			t.Errorf("%s is in the v2 tree, want it absent", p)
		}
	}
	if e := got["/etc/passwd-"]; e.Link != "/etc/passwd" || e.Nlink != 2 {
		t.Errorf("/etc/passwd- = Link %q Nlink %d, want Link /etc/passwd Nlink 2", e.Link, e.Nlink)
	}
}
