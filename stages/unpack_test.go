package stages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// entry is one member of a test layer.
type entry struct {
	name     string
	typ      byte
	mode     int64
	body     string
	linkname string
}

func dirEntry(name string, mode int64) entry { return entry{name: name, typ: tar.TypeDir, mode: mode} }
func fileEntry(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, mode: 0o644, body: body}
}
func symlinkEntry(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, mode: 0o777, linkname: target}
}
func hardlinkEntry(name, target string) entry {
	return entry{name: name, typ: tar.TypeLink, mode: 0o644, linkname: target}
}

// tarLayer makes an uncompressed layer owned by the current user, so it
// applies without root.
func tarLayer(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:     e.name,
			Typeflag: e.typ,
			Mode:     e.mode,
			Linkname: e.linkname,
			Size:     int64(len(e.body)),
			Uid:      os.Getuid(),
			Gid:      os.Getgid(),
			ModTime:  time.Unix(1700000000, 0),
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(h); err != nil {
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

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeBlob(t *testing.T, dir string, data []byte) imgspecv1.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	p := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return imgspecv1.Descriptor{Digest: d, Size: int64(len(data))}
}

func writeJSONBlob(t *testing.T, dir string, v any, mediaType string) imgspecv1.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := writeBlob(t, dir, b)
	d.MediaType = mediaType
	return d
}

// writeLayout makes an OCI layout of one image with the given layer blobs
// (plain or gzip-compressed tars) and reads it back with ReadLayout.
func writeLayout(t *testing.T, layers ...[]byte) *Layout {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	var descs []imgspecv1.Descriptor
	var diffIDs []digest.Digest
	for _, l := range layers {
		d := writeBlob(t, dir, l)
		d.MediaType = imgspecv1.MediaTypeImageLayer
		plain := l
		if bytes.HasPrefix(l, []byte{0x1f, 0x8b}) {
			d.MediaType = imgspecv1.MediaTypeImageLayerGzip
			zr, err := gzip.NewReader(bytes.NewReader(l))
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := buf.ReadFrom(zr); err != nil {
				t.Fatal(err)
			}
			plain = buf.Bytes()
		}
		descs = append(descs, d)
		diffIDs = append(diffIDs, digest.FromBytes(plain))
	}
	config := imgspecv1.Image{
		Platform: imgspecv1.Platform{Architecture: "amd64", OS: "linux"},
		Config:   imgspecv1.ImageConfig{Cmd: []string{"/bin/sh"}},
		RootFS:   imgspecv1.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cfg := writeJSONBlob(t, dir, config, imgspecv1.MediaTypeImageConfig)
	manifest := imgspecv1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: imgspecv1.MediaTypeImageManifest,
		Config:    cfg,
		Layers:    descs,
	}
	man := writeJSONBlob(t, dir, manifest, imgspecv1.MediaTypeImageManifest)
	index := imgspecv1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex,
		Manifests: []imgspecv1.Descriptor{man}}
	b, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := ReadLayout(dir)
	if err != nil {
		t.Fatalf("ReadLayout() = %v", err)
	}
	return l
}

// unpack unpacks l into a new rootfs and returns its path.
func unpack(t *testing.T, l *Layout) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := Unpack(context.Background(), l, dir); err != nil {
		t.Fatalf("Unpack() = %v", err)
	}
	// Let t.TempDir's cleanup remove a 0555 root as a non-root user.
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	return dir
}

// listTree returns every path under root, relative, in walk order.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReadLayout(t *testing.T) {
	layer := tarLayer(t, fileEntry("a", "x"))
	l := writeLayout(t, layer, gzipped(t, layer))
	if got, want := len(l.Manifest.Layers), 2; got != want {
		t.Fatalf("len(Manifest.Layers) = %d, want %d", got, want)
	}
	if got, want := l.Config.OS+"/"+l.Config.Architecture, "linux/amd64"; got != want {
		t.Errorf("Config platform = %q, want %q", got, want)
	}
	if got, want := l.LayerBytes(), int64(len(layer)+len(gzipped(t, layer))); got != want {
		t.Errorf("LayerBytes() = %d, want %d", got, want)
	}
	d := l.Manifest.Layers[0].Digest
	if got, want := l.BlobPath(d), filepath.Join(l.Dir, "blobs", "sha256", d.Encoded()); got != want {
		t.Errorf("BlobPath() = %q, want %q", got, want)
	}
}

func TestReadLayoutErrors(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		wantMsg string
	}{
		{"no index.json", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "index.json")) }, "index.json is missing"},
		{"two manifests", func(t *testing.T, dir string) {
			var idx imgspecv1.Index
			b, _ := os.ReadFile(filepath.Join(dir, "index.json"))
			json.Unmarshal(b, &idx)
			idx.Manifests = append(idx.Manifests, idx.Manifests[0])
			b, _ = json.Marshal(idx)
			os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644)
		}, "holds 2 manifests"},
		{"bad manifest digest", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:zz","size":1}]}`), 0o644)
		}, "manifest digest"},
		{"manifest blob missing", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:`+strings.Repeat("0", 64)+`","size":1}]}`), 0o644)
		}, "is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := writeLayout(t, tarLayer(t, fileEntry("a", "x")))
			tt.corrupt(t, l.Dir)
			_, err := ReadLayout(l.Dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ReadLayout() = %v, want an error containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestUnpackLayers(t *testing.T) {
	l := writeLayout(t,
		tarLayer(t, dirEntry("etc/", 0o755), fileEntry("etc/os-release", "ID=test\n"), fileEntry("etc/hostname", "h\n"),
			dirEntry("usr/", 0o755), dirEntry("usr/bin/", 0o755), fileEntry("usr/bin/tool", "v1")),
		gzipped(t, tarLayer(t, fileEntry("usr/bin/tool", "v2"), symlinkEntry("bin", "usr/bin"), hardlinkEntry("etc/hn", "etc/hostname"))),
	)
	dir := unpack(t, l)
	tests := []struct{ path, want string }{
		{"etc/os-release", "ID=test\n"},
		{"usr/bin/tool", "v2"},
		{"bin/tool", "v2"},
		{"etc/hn", "h\n"},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join(dir, tt.path))
		if err != nil {
			t.Errorf("reading %s: %v", tt.path, err)
			continue
		}
		if string(b) != tt.want {
			t.Errorf("%s = %q, want %q", tt.path, b, tt.want)
		}
	}
	a, errA := os.Stat(filepath.Join(dir, "etc/hn"))
	b, errB := os.Stat(filepath.Join(dir, "etc/hostname"))
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		t.Errorf("etc/hn and etc/hostname are not the same file (%v, %v)", errA, errB)
	}
}

func TestUnpackWhiteout(t *testing.T) {
	l := writeLayout(t,
		tarLayer(t, dirEntry("etc/", 0o755), fileEntry("etc/keep", "k"), fileEntry("etc/gone", "g"), fileEntry("top", "t")),
		tarLayer(t, fileEntry("etc/.wh.gone", ""), fileEntry(".wh.top", "")),
	)
	dir := unpack(t, l)
	if got, want := listTree(t, dir), []string{"etc", "etc/keep"}; !slices.Equal(got, want) {
		t.Errorf("rootfs holds %q, want %q", got, want)
	}
}

func TestUnpackOpaqueDir(t *testing.T) {
	l := writeLayout(t,
		tarLayer(t, dirEntry("opt/", 0o755), fileEntry("opt/old", "o"), dirEntry("opt/sub/", 0o755), fileEntry("opt/sub/deep", "d"),
			dirEntry("other/", 0o755), fileEntry("other/stays", "s")),
		tarLayer(t, dirEntry("opt/", 0o755), fileEntry("opt/.wh..wh..opq", ""), fileEntry("opt/new", "n")),
	)
	dir := unpack(t, l)
	want := []string{"opt", "opt/new", "other", "other/stays"}
	if got := listTree(t, dir); !slices.Equal(got, want) {
		t.Errorf("rootfs holds %q, want %q", got, want)
	}
}

func TestUnpackRootMode(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]entry
		want   os.FileMode
	}{
		{"no root entry", [][]entry{{fileEntry("a", "x")}}, 0o555},
		{"only ./-prefixed entries", [][]entry{{dirEntry("./etc/", 0o755), fileEntry("./etc/a", "x")}}, 0o555},
		{"root entry", [][]entry{{dirEntry("./", 0o700), fileEntry("a", "x")}}, 0o700},
		{"root entry in first layer only", [][]entry{{dirEntry("./", 0o751)}, {fileEntry("b", "y")}}, 0o751},
		{"root entry in second layer", [][]entry{{fileEntry("a", "x")}, {dirEntry("./", 0o711)}}, 0o711},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var blobs [][]byte
			for _, es := range tt.layers {
				blobs = append(blobs, tarLayer(t, es...))
			}
			dir := unpack(t, writeLayout(t, blobs...))
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != tt.want {
				t.Errorf("root mode = %#o, want %#o", got, tt.want)
			}
		})
	}
}

func TestUnpackDigestMismatch(t *testing.T) {
	tests := []struct {
		name   string
		tamper func([]byte) []byte
	}{
		{"content changed", func(b []byte) []byte {
			i := bytes.Index(b, []byte("payload"))
			b[i] = 'P'
			return b
		}},
		{"trailing bytes", func(b []byte) []byte { return append(b, make([]byte, 1024)...) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := writeLayout(t, tarLayer(t, fileEntry("f", "payload")))
			d := l.Manifest.Layers[0].Digest
			p := l.BlobPath(d)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, tt.tamper(b), 0o644); err != nil {
				t.Fatal(err)
			}
			err = Unpack(context.Background(), l, filepath.Join(t.TempDir(), "rootfs"))
			if err == nil {
				t.Fatal("Unpack(tampered layer) = nil, want an error")
			}
			if !strings.Contains(err.Error(), d.String()) {
				t.Errorf("Unpack() = %q, want it to name the digest %s", err, d)
			}
		})
	}
}

func TestUnpackGzipDigestMismatch(t *testing.T) {
	l := writeLayout(t, gzipped(t, tarLayer(t, fileEntry("f", "payload"))))
	p := l.BlobPath(l.Manifest.Layers[0].Digest)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The gzip header's mtime: the stream still decompresses.
	b[4] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Unpack(context.Background(), l, filepath.Join(t.TempDir(), "rootfs")); err == nil {
		t.Fatal("Unpack(tampered gzip layer) = nil, want an error")
	}
}

// TestUnpackRefusesEscape checks that nothing is written outside the rootfs:
// the sentinel directory beside it stays empty.
func TestUnpackRefusesEscape(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		wantErr bool
	}{
		{"dot-dot file", []entry{fileEntry("../sentinel/escape", "x")}, true},
		{"dot-dot at top", []entry{fileEntry("../escape", "x")}, true},
		{"hard link out", []entry{hardlinkEntry("h", "../sentinel/target")}, true},
		// Through a symlink the write is kept inside the rootfs.
		{"relative symlink parent", []entry{symlinkEntry("link", "../sentinel"), fileEntry("link/escape", "x")}, false},
		{"absolute symlink parent", []entry{symlinkEntry("abs", "SENTINEL"), fileEntry("abs/escape", "x")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			sentinel := filepath.Join(parent, "sentinel")
			if err := os.Mkdir(sentinel, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(sentinel, "target"), []byte("outside"), 0o644); err != nil {
				t.Fatal(err)
			}
			entries := slices.Clone(tt.entries)
			for i := range entries {
				entries[i].linkname = strings.ReplaceAll(entries[i].linkname, "SENTINEL", sentinel)
			}
			l := writeLayout(t, tarLayer(t, entries...))
			rootfs := filepath.Join(parent, "rootfs")
			err := Unpack(context.Background(), l, rootfs)
			t.Cleanup(func() { os.Chmod(rootfs, 0o755) })
			if tt.wantErr && err == nil {
				t.Error("Unpack() = nil, want an error")
			}
			if !tt.wantErr && err != nil {
				t.Errorf("Unpack() = %v, want nil", err)
			}
			inside := false
			for _, p := range listTree(t, parent) {
				if strings.HasPrefix(p, "rootfs/") && filepath.Base(p) == "escape" {
					inside = true
				}
				if p != "rootfs" && !strings.HasPrefix(p, "rootfs/") && p != "sentinel" && p != "sentinel/target" {
					t.Errorf("%s was written outside the rootfs", filepath.Join(parent, p))
				}
			}
			if !tt.wantErr && !inside {
				t.Errorf("the file written through the symlink is not in the rootfs: %q", listTree(t, parent))
			}
			b, err := os.ReadFile(filepath.Join(sentinel, "target"))
			if err != nil || string(b) != "outside" {
				t.Errorf("sentinel/target = %q, %v; want %q untouched", b, err, "outside")
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(sentinel, "target"), &st); err != nil || st.Nlink != 1 {
				t.Errorf("sentinel/target has %d links (%v), want 1", st.Nlink, err)
			}
		})
	}
}

func TestUnpackExistingDir(t *testing.T) {
	l := writeLayout(t, tarLayer(t, fileEntry("a", "x")))
	dir := t.TempDir()
	if err := Unpack(context.Background(), l, dir); !errors.Is(err, os.ErrExist) {
		t.Errorf("Unpack(existing dir) = %v, want an error wrapping os.ErrExist", err)
	}
}

func TestUnpackCancelled(t *testing.T) {
	l := writeLayout(t, tarLayer(t, fileEntry("a", "x")))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := Unpack(ctx, l, dir); !errors.Is(err, context.Canceled) {
		t.Errorf("Unpack(cancelled) = %v, want context.Canceled", err)
	}
}

func TestEntryGateNotesRootEntry(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		want   bool
	}{
		{"./", tarLayer(t, dirEntry("./", 0o755)), true},
		{".", tarLayer(t, dirEntry(".", 0o755)), true},
		{"/", tarLayer(t, dirEntry("/", 0o755)), true},
		{"no root", tarLayer(t, dirEntry("./etc/", 0o755), fileEntry("etc/a", "x")), false},
		{"root after files", tarLayer(t, fileEntry("a", "x"), dirEntry("./", 0o755)), true},
		{"empty stream", nil, false},
		{"garbage", []byte(strings.Repeat("not a tar ", 100)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newEntryGate(bytes.NewReader(tt.stream), t.TempDir())
			got, err := io.ReadAll(g)
			if err != nil {
				t.Fatalf("reading through the gate: %v", err)
			}
			if !bytes.Equal(got, tt.stream) {
				t.Errorf("the gate changed the stream: %d bytes in, %d out", len(tt.stream), len(got))
			}
			if g.rootSet != tt.want {
				t.Errorf("rootSet = %v, want %v", g.rootSet, tt.want)
			}
		})
	}
}

// sparseLayer reads one of the GNU tar sparse layers of the hostile corpus
// (test/hostile/testdata/mksparse.sh).
func sparseLayer(t *testing.T, format string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "test", "hostile", "testdata", "sparse-"+format+".tar"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sparseFiles are the bytes of the sparse layers' files, as mksparse.sh
// wrote them (`yes WORD | head -c N` at an offset, holes elsewhere).
func sparseFiles() map[string][]byte {
	at := func(size int, parts ...any) []byte {
		b := make([]byte, size)
		for i := 0; i < len(parts); i += 3 {
			off, word, n := parts[i].(int), parts[i+1].(string), parts[i+2].(int)
			copy(b[off:], strings.Repeat(word+"\n", n/len(word)+1)[:n])
		}
		return b
	}
	return map[string][]byte{
		"sparse/hole-start":  at(262144, 200000, "hole-start", 1000),
		"sparse/hole-middle": at(153000, 0, "hole-middle-a", 3000, 150000, "hole-middle-b", 3000),
		"sparse/hole-end":    at(262144, 0, "hole-end", 3000),
		"sparse/all-hole":    at(100000),
		"sparse/after":       []byte("a regular file after the sparse ones\n"),
	}
}

var sparseFormats = []string{"gnu", "pax-0.0", "pax-0.1", "pax-1.0"}

func TestUnpackSparse(t *testing.T) {
	for _, format := range sparseFormats {
		for _, compress := range []bool{false, true} {
			name := format
			layer := sparseLayer(t, format)
			if compress {
				name, layer = format+"+gzip", gzipped(t, layer)
			}
			t.Run(name, func(t *testing.T) {
				dir := unpack(t, writeLayout(t, layer))
				if got, want := listTree(t, dir), []string{"sparse", "sparse/after", "sparse/all-hole",
					"sparse/hole-end", "sparse/hole-middle", "sparse/hole-start"}; !slices.Equal(got, want) {
					t.Errorf("unpacked tree = %v, want %v", got, want)
				}
				for p, want := range sparseFiles() {
					got, err := os.ReadFile(filepath.Join(dir, p))
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("%s: %d bytes, want %d (the first difference at %d)", p, len(got), len(want), firstDiff(got, want))
					}
					fi, err := os.Stat(filepath.Join(dir, p))
					if err != nil {
						t.Fatal(err)
					}
					if got, want := fi.Mode(), os.FileMode(0o644); got != want {
						t.Errorf("%s: mode %v, want %v", p, got, want)
					}
					if got, want := fi.ModTime(), time.Unix(1700000000, 0); !got.Equal(want) {
						t.Errorf("%s: mtime %v, want %v", p, got, want)
					}
				}
			})
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestUnpackSparseThenLayers checks the entries after a rewritten sparse
// file, in its layer and the next: whiteouts of sparse files, a sparse file
// replaced by a plain one, and a plain file after them.
func TestUnpackSparseThenLayers(t *testing.T) {
	for _, format := range sparseFormats {
		t.Run(format, func(t *testing.T) {
			l := writeLayout(t, sparseLayer(t, format),
				tarLayer(t, fileEntry("sparse/.wh.hole-start", ""), fileEntry("sparse/hole-end", "now plain"), fileEntry("z", "z")))
			dir := unpack(t, l)
			want := sparseFiles()
			delete(want, "sparse/hole-start")
			want["sparse/hole-end"] = []byte("now plain")
			want["z"] = []byte("z")
			if got, wantList := listTree(t, dir), []string{"sparse", "sparse/after", "sparse/all-hole",
				"sparse/hole-end", "sparse/hole-middle", "z"}; !slices.Equal(got, wantList) {
				t.Errorf("unpacked tree = %v, want %v", got, wantList)
			}
			for p, w := range want {
				if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || !bytes.Equal(got, w) {
					t.Errorf("%s: %d bytes (%v), want %d", p, len(got), err, len(w))
				}
			}
		})
	}
}

// TestUnpackSparseDamaged checks that a sparse layer cut short, or with a
// digest that does not match, fails with a clear error.
func TestUnpackSparseDamaged(t *testing.T) {
	for _, format := range sparseFormats {
		t.Run(format, func(t *testing.T) {
			layer := sparseLayer(t, format)
			// Cut inside hole-middle's second run of data: the first 4 KiB
			// of the layer hold the directory and hole-start's headers.
			short := layer[:bytes.Index(layer, []byte("hole-middle-b"))+100]
			l := writeLayout(t, short)
			err := Unpack(context.Background(), l, filepath.Join(t.TempDir(), "rootfs"))
			if err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
				t.Errorf("Unpack(cut short) = %v, want an unexpected EOF", err)
			}

			l = writeLayout(t, layer)
			blob := l.BlobPath(l.Manifest.Layers[0].Digest)
			damaged := bytes.Clone(layer)
			i := bytes.Index(damaged, []byte("hole-end\n"))
			damaged[i] = 'H'
			if err := os.WriteFile(blob, damaged, 0o644); err != nil {
				t.Fatal(err)
			}
			err = Unpack(context.Background(), l, filepath.Join(t.TempDir(), "rootfs"))
			if err == nil || !strings.Contains(err.Error(), "does not match digest") {
				t.Errorf("Unpack(damaged) = %v, want a digest mismatch", err)
			}
		})
	}
}

// TestEntryGateRewritesSparse reads a sparse layer through the gate: what
// the applier gets must be a tar of plain regular files with the expanded
// bytes, and the gate must read all of its source.
func TestEntryGateRewritesSparse(t *testing.T) {
	for _, format := range sparseFormats {
		t.Run(format, func(t *testing.T) {
			layer := sparseLayer(t, format)
			src := bytes.NewReader(layer)
			out, err := io.ReadAll(newEntryGate(src, t.TempDir()))
			if err != nil {
				t.Fatalf("reading through the gate: %v", err)
			}
			if src.Len() != 0 {
				t.Errorf("the gate left %d bytes of its source unread", src.Len())
			}
			if len(out)%512 != 0 {
				t.Errorf("the gate's stream is %d bytes, not whole blocks", len(out))
			}
			want := sparseFiles()
			tr := tar.NewReader(bytes.NewReader(out))
			var names []string
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("reading the gate's stream: %v", err)
				}
				names = append(names, hdr.Name)
				for k := range hdr.PAXRecords {
					if strings.HasPrefix(k, "GNU.sparse.") {
						t.Errorf("%s keeps the record %s", hdr.Name, k)
					}
				}
				body, err := io.ReadAll(tr)
				if err != nil {
					t.Fatalf("reading %s from the gate's stream: %v", hdr.Name, err)
				}
				if hdr.Typeflag == tar.TypeDir {
					continue
				}
				if hdr.Typeflag != tar.TypeReg {
					t.Errorf("%s has type %q, want a regular file", hdr.Name, hdr.Typeflag)
				}
				if hdr.Mode != 0o644 || hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(time.Unix(1700000000, 0)) {
					t.Errorf("%s: mode %o, owner %d:%d, mtime %v; want 0644, 0:0, %v", hdr.Name, hdr.Mode, hdr.Uid, hdr.Gid, hdr.ModTime, time.Unix(1700000000, 0))
				}
				if w := want[hdr.Name]; !bytes.Equal(body, w) {
					t.Errorf("%s: %d bytes, want %d (the first difference at %d)", hdr.Name, len(body), len(w), firstDiff(body, w))
				}
			}
			if wantNames := []string{"sparse/", "sparse/hole-start", "sparse/hole-middle", "sparse/hole-end",
				"sparse/all-hole", "sparse/after"}; !slices.Equal(names, wantNames) {
				t.Errorf("entries = %v, want %v", names, wantNames)
			}
		})
	}
}
