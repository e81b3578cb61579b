package stages

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"

	"github.com/clipbuild/clipbuild/archive"
)

// hdrLayer makes an uncompressed layer of headers, each followed by its
// body; owners default to the current user so it unpacks without root.
func hdrLayer(t *testing.T, entries ...struct {
	hdr  tar.Header
	body string
}) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.body))
		if h.Uid == 0 && h.Gid == 0 {
			h.Uid, h.Gid = os.Getuid(), os.Getgid()
		}
		h.ModTime = time.Unix(1700000000, 0)
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type hdrEntry = struct {
	hdr  tar.Header
	body string
}

func hdrDir(name string, mode int64) hdrEntry {
	return hdrEntry{tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}, ""}
}

func hdrFile(name string, mode int64, body string) hdrEntry {
	return hdrEntry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, body}
}

// v1Layers are layers with every rule a v1 archive must follow: a whiteout,
// an opaque directory, a replaced file, a hard link across layers whose
// first path is then deleted, a 0000 file, setuid and setgid, a FIFO, a
// symlink and, as root, a device node and extended attributes. Every byte
// a later layer removes carries "GONE-MARKER". With crossLayer a layer
// hard-links a file of a lower layer and writes a file through a symlink a
// lower layer made: an unpack onto one rootfs (and the vfs driver) takes
// both, an overlay store's per-layer directory neither (a diff buildah
// makes there holds a copy instead).
func v1Layers(t *testing.T, crossLayer bool) [][]byte {
	first := []hdrEntry{
		hdrDir("etc/", 0o755), hdrFile("etc/passwd", 0o644, "root:x:0:0\n"), hdrFile("etc/shadow", 0o600, "GONE-MARKER shadow\n"),
		hdrDir("opt/", 0o755), hdrFile("opt/old", 0o644, "GONE-MARKER opaque\n"), hdrDir("opt/sub/", 0o700), hdrFile("opt/sub/deep", 0o644, "GONE-MARKER deep\n"),
		hdrDir("usr/", 0o755), hdrDir("usr/bin/", 0o755), hdrFile("usr/bin/tool", 0o4755, "tool v1 GONE-MARKER\n"),
		hdrDir("data/", 0o755), hdrFile("data/orig", 0o640, "linked bytes\n"),
		hdrFile("locked", 0, "no permission bits\n"),
		{tar.Header{Name: "run.fifo", Typeflag: tar.TypeFifo, Mode: 0o620}, ""},
		{tar.Header{Name: "lib", Typeflag: tar.TypeSymlink, Linkname: "usr/lib", Mode: 0o777}, ""},
		hdrFile("big", 0o644, string(bytes.Repeat([]byte("0123456789abcdef"), 70000))),
	}
	if os.Geteuid() == 0 {
		first = append(first,
			hdrEntry{tar.Header{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, ""},
			hdrEntry{tar.Header{Name: "noted", Typeflag: tar.TypeReg, Mode: 0o644,
				PAXRecords: map[string]string{"SCHILY.xattr.user.mime": "text/plain", "SCHILY.xattr.trusted.note": "kept"}}, "noted\n"},
			hdrEntry{tar.Header{Name: "xdir/", Typeflag: tar.TypeDir, Mode: 0o755, PAXRecords: map[string]string{"SCHILY.xattr.trusted.d": "dir"}}, ""},
		)
	}
	second := []hdrEntry{
		hdrDir("./", 0o751),
		hdrFile("etc/.wh.shadow", 0, ""),
		hdrDir("opt/", 0o755), hdrFile("opt/.wh..wh..opq", 0, ""), hdrFile("opt/new", 0o644, "new\n"),
		hdrFile("usr/bin/tool", 0o2755, "tool v2, longer\n"),
		hdrDir("usr/lib/", 0o755),
	}
	last := []hdrEntry{hdrFile("data/.wh.orig", 0, "")}
	if crossLayer {
		second = append(second, hdrEntry{tar.Header{Name: "data/link", Typeflag: tar.TypeLink, Linkname: "data/orig", Mode: 0o640}, ""})
		last = append(last, hdrFile("lib/through", 0o644, "written through the symlink\n"))
	}
	return [][]byte{
		hdrLayer(t, first...),
		gzipped(t, hdrLayer(t, second...)),
		hdrLayer(t, last...),
	}
}

// checkV1Archive opens the v1 archive at out and checks it against want,
// and that no removed bytes are in it.
func checkV1Archive(t *testing.T, out string, want archive.Tree) *archive.Archive {
	t.Helper()
	a, err := archive.Open(out)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	if a.Version() != 1 {
		t.Errorf("Version() = %d, want 1", a.Version())
	}
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup()
	got, err := archive.TreeFromArchive(context.Background(), a, s)
	if err != nil {
		t.Fatalf("TreeFromArchive() = %v", err)
	}
	if d := archive.Diff(want, got); len(d) != 0 {
		t.Errorf("Diff(unpacked, v1 archive) = %q, want none", d)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("v1 tree (-unpacked +archive):\n%s", d)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("GONE-MARKER")) {
		t.Errorf("the archive holds bytes of a deleted or replaced file")
	}
	return a
}

// TestArchiveLayoutMatchesUnpack archives an OCI layout's blobs straight
// (ArchiveLayout) and checks the archive's tree against the tree
// containers-storage's applier unpacks from the same blobs; sparse files in
// GNU and PAX formats included.
func TestArchiveLayoutMatchesUnpack(t *testing.T) {
	layers := append(v1Layers(t, true), sparseLayer(t, "mixed"), gzipped(t, sparseLayer(t, "pax-0.1")))
	l := writeLayout(t, layers...)
	want, err := archive.TreeFromDir(context.Background(), unpack(t, l))
	if err != nil {
		t.Fatalf("TreeFromDir() = %v", err)
	}
	if _, ok := want["/sparse/hole-middle"]; !ok {
		t.Fatalf("the unpacked tree has no /sparse/hole-middle: the fixture is wrong")
	}
	out := filepath.Join(t.TempDir(), "out.clip")
	w, err := ArchiveLayout(context.Background(), l, "localhost/x:1", out)
	if err != nil {
		t.Fatalf("ArchiveLayout() = %v", err)
	}
	a := checkV1Archive(t, out, want)
	if w.Path != out || w.ManifestDigest != l.ManifestDigest.String() || w.ImageBytes != l.LayerBytes() {
		t.Errorf("ArchiveLayout() = %+v, want path %s, manifest %s, %d image bytes", w, out, l.ManifestDigest, l.LayerBytes())
	}
	tr := a.Trailer
	if tr.ManifestDigest != l.ManifestDigest.String() || tr.Image == nil || tr.Image.Name != "localhost/x:1" || len(tr.Image.Layers) != len(layers) {
		t.Errorf("trailer = %+v, want manifest %s, image localhost/x:1 with %d layers", tr, l.ManifestDigest, len(layers))
	}
}

// TestStoreArchiverMatchesUnpack archives an image straight from
// containers-storage (StoreArchiver) and checks it against the unpack of
// the same layers, on each driver, with and without a stored manifest.
func TestStoreArchiverMatchesUnpack(t *testing.T) {
	for _, driver := range drivers() {
		layers := v1Layers(t, driver != "overlay")
		plain := make([][]byte, len(layers))
		for i, l := range layers {
			var buf bytes.Buffer
			if _, err := buf.ReadFrom(plainLayer(t, l)); err != nil {
				t.Fatal(err)
			}
			plain[i] = buf.Bytes()
		}
		want, err := archive.TreeFromDir(context.Background(), unpack(t, writeLayout(t, plain...)))
		if err != nil {
			t.Fatalf("TreeFromDir() = %v", err)
		}
		for _, noManifest := range []bool{false, true} {
			name := driver
			if noManifest {
				name += "-no-manifest"
			}
			t.Run(name, func(t *testing.T) {
				store, opts := testStore(t, driver)
				id := putImage(t, store, "localhost/v1:latest", plain, nil, noManifest)
				out := filepath.Join(t.TempDir(), "out.clip")
				w, err := StoreArchiver{StoreOptions: &opts}.Archive(context.Background(), "@"+id, "localhost/v1:latest", out)
				if err != nil {
					t.Fatalf("Archive() = %v", err)
				}
				a := checkV1Archive(t, out, want)
				var size int64
				var diffIDs []string
				for _, l := range plain {
					size += int64(len(l))
					diffIDs = append(diffIDs, digest.FromBytes(l).String())
				}
				if w.UncompressedBytes != size || w.ImageBytes != size {
					t.Errorf("Archive() bytes = %d uncompressed, %d image, want %d both", w.UncompressedBytes, w.ImageBytes, size)
				}
				tr := a.Trailer
				if tr.Image == nil || tr.Image.Name != "localhost/v1:latest" || !cmp.Equal(tr.Image.Layers, diffIDs) {
					t.Errorf("trailer image = %+v, want localhost/v1:latest with layers %v", tr.Image, diffIDs)
				}
				if noManifest != (w.ManifestDigest == "") || tr.ManifestDigest != w.ManifestDigest {
					t.Errorf("manifest digest = %q (trailer %q), want one only when a manifest is stored", w.ManifestDigest, tr.ManifestDigest)
				}
			})
		}
	}
}
