package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/test/hostile"
)

// countedLayers serves layers from memory as LayerStreams and counts how
// often each is opened.
type countedLayers struct {
	data  [][]byte
	opens []int
}

func newCountedLayers(data ...[]byte) *countedLayers {
	return &countedLayers{data: data, opens: make([]int, len(data))}
}

func (c *countedLayers) streams() []archive.LayerStream {
	out := make([]archive.LayerStream, len(c.data))
	for i := range c.data {
		out[i] = archive.LayerStream{Digest: digest.FromBytes(c.data[i]).String(), Open: func(context.Context) (io.ReadCloser, error) {
			c.opens[i]++
			return io.NopCloser(bytes.NewReader(c.data[i])), nil
		}}
	}
	return out
}

// writeV1Layers writes the v1 archive of layers to a new file and opens it.
func writeV1Layers(t *testing.T, layers []archive.LayerStream) (*archive.Archive, []byte, archive.Stats) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "v1.clip")
	var st archive.Stats
	err := archive.WriteFileAtomic(out, func(f *os.File) (err error) {
		st, err = archive.WriteV1FromLayers(context.Background(), layers, f, archive.Trailer{Tool: "clipbuild"})
		return err
	})
	if err != nil {
		t.Fatalf("WriteV1FromLayers() = %v", err)
	}
	a, err := archive.Open(out)
	if err != nil {
		t.Fatalf("Open(v1) = %v", err)
	}
	if a.Version() != 1 {
		t.Errorf("Version() = %d, want 1", a.Version())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return a, data, st
}

func archiveTreeOf(t *testing.T, a *archive.Archive, opts ...archive.StorageOption) archive.Tree {
	t.Helper()
	s, err := archive.OpenStorage(a, opts...)
	if err != nil {
		t.Fatalf("OpenStorage() = %v", err)
	}
	defer s.Cleanup()
	tr, err := archive.TreeFromArchive(context.Background(), a, s)
	if err != nil {
		t.Fatalf("TreeFromArchive() = %v", err)
	}
	return tr
}

// v1TestLayers are layers that exercise every rule of the tree: whiteouts,
// an opaque directory, a file replaced, a hard link across layers whose
// first path is then deleted, a 0000 file, setuid and setgid, a FIFO, a
// character device, extended attributes. Each byte a later layer removes
// carries "GONE-MARKER", which the archive must not hold. Layer 3 holds
// only a file that layer 4 deletes, so no second read of it is needed.
func v1TestLayers(t *testing.T) [][]byte {
	cap2 := string([]byte{0, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // cap_net_bind_service, revision 2
	dir := func(name string, mode int64) tarFile {
		return tarFile{&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}, nil}
	}
	file := func(name string, mode int64, body string) tarFile {
		return tarFile{&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, []byte(body)}
	}
	return [][]byte{
		layerTar(t, []tarFile{
			dir("etc/", 0o755), file("etc/passwd", 0o644, "root:x:0:0\n"), file("etc/shadow", 0o600, "GONE-MARKER shadow\n"),
			dir("opt/", 0o755), file("opt/old", 0o644, "GONE-MARKER opaque\n"), dir("opt/sub/", 0o700), file("opt/sub/deep", 0o644, "GONE-MARKER deep\n"),
			dir("usr/", 0o755), dir("usr/bin/", 0o755), file("usr/bin/tool", 0o4755, "tool v1 GONE-MARKER overwritten\n"),
			dir("data/", 0o755), file("data/orig", 0o640, "linked bytes, stored once\n"),
			file("locked", 0, "no permission bits at all\n"),
			{&tar.Header{Name: "run.fifo", Typeflag: tar.TypeFifo, Mode: 0o620}, nil},
			{&tar.Header{Name: "null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}, nil},
			{&tar.Header{Name: "caps", Typeflag: tar.TypeReg, Mode: 0o755, Uid: 1000, Gid: 1000,
				PAXRecords: map[string]string{"SCHILY.xattr.security.capability": cap2, "SCHILY.xattr.user.mime": "text/plain"}}, []byte("capable\n")},
			{&tar.Header{Name: "xdir/", Typeflag: tar.TypeDir, Mode: 0o755, PAXRecords: map[string]string{"SCHILY.xattr.trusted.note": "dir note"}}, nil},
			file("empty", 0o644, ""),
		}),
		layerTar(t, []tarFile{
			dir("./", 0o751),
			file("etc/.wh.shadow", 0, ""),
			dir("opt/", 0o755), file("opt/.wh..wh..opq", 0, ""), file("opt/new", 0o644, "new in the opaque dir\n"),
			file("usr/bin/tool", 0o2755, "tool v2, longer than v1 was\n"),
			{&tar.Header{Name: "data/link", Typeflag: tar.TypeLink, Linkname: "data/orig", Mode: 0o640}, nil},
			{&tar.Header{Name: "data/link2", Typeflag: tar.TypeLink, Linkname: "data/orig", Mode: 0o640}, nil},
		}),
		layerTar(t, []tarFile{file("lonely", 0o644, "GONE-MARKER lonely\n")}),
		layerTar(t, []tarFile{file(".wh.lonely", 0, ""), file("data/.wh.orig", 0, "")}),
	}
}

// TestWriteV1FromLayers writes a v1 archive straight from layer streams and
// checks it against the v2 archive of the same layers (the same tree
// builder, data read back from the layers) and against the tree the rules
// give, that nothing removed is in its bytes, and that only layers holding
// surviving files are read a second time.
func TestWriteV1FromLayers(t *testing.T) {
	layers := v1TestLayers(t)
	src := newCountedLayers(layers...)
	a, data, st := writeV1Layers(t, src.streams())
	got := archiveTreeOf(t, a)

	// The v2 archive of the same layers, read back through them.
	ix := archive.NewIndexer()
	reg := &blobs{layers: map[string][]byte{}}
	oci := &common.OCIStorageInfo{RegistryURL: "127.0.0.1:1", Repository: "t/img", Reference: "1", DecompressedHashByLayer: map[string]string{}}
	for _, l := range layers {
		dg := digest.FromBytes(l)
		if err := ix.AddLayer(context.Background(), dg.String(), bytes.NewReader(l)); err != nil {
			t.Fatalf("AddLayer() = %v", err)
		}
		reg.layers[dg.String()] = l
		oci.Layers = append(oci.Layers, dg.String())
		oci.DecompressedHashByLayer[dg.String()] = dg.Encoded()
	}
	v2 := filepath.Join(t.TempDir(), "v2.clip")
	err := archive.WriteFileAtomic(v2, func(f *os.File) error {
		return archive.WriteV2(f, ix.Nodes(), oci, archive.Trailer{Tool: "clipbuild", Xattrs: ix.Xattrs()})
	})
	if err != nil {
		t.Fatalf("WriteV2() = %v", err)
	}
	a2, err := archive.Open(v2)
	if err != nil {
		t.Fatal(err)
	}
	want := archiveTreeOf(t, a2, archive.WithBlobOpener(reg), archive.WithCacheDir(t.TempDir()))
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("v1 tree (-v2 of the same layers +v1):\n%s", d)
	}

	// The rules, spelled out, so a mistake the two share is caught too.
	wantPaths := []string{"/", "/caps", "/data", "/data/link", "/data/link2", "/empty", "/etc", "/etc/passwd", "/locked", "/null",
		"/opt", "/opt/new", "/run.fifo", "/usr", "/usr/bin", "/usr/bin/tool", "/xdir"}
	var paths []string
	for p := range got {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	if d := cmp.Diff(wantPaths, paths); d != "" {
		t.Errorf("paths (-want +got):\n%s", d)
	}
	checks := map[string]archive.Entry{
		"/":             {Type: "dir", Perm: 0o751},
		"/usr/bin/tool": {Type: "file", Perm: 0o2755, Size: 28, Nlink: 1, Digest: digest.FromString("tool v2, longer than v1 was\n").String()},
		"/locked":       {Type: "file", Perm: 0, Size: 26, Nlink: 1, Digest: digest.FromString("no permission bits at all\n").String()},
		"/run.fifo":     {Type: "fifo", Perm: 0o620, Nlink: 1},
		"/null":         {Type: "char", Perm: 0o666, Nlink: 1, Rdev: unix.Mkdev(1, 3)},
		"/data/link": {Type: "file", Perm: 0o640, Size: 26, Nlink: 2, Link: "/data/link",
			Digest: digest.FromString("linked bytes, stored once\n").String()},
		"/caps": {Type: "file", Perm: 0o755, UID: 1000, GID: 1000, Size: 8, Nlink: 1, Digest: digest.FromString("capable\n").String(),
			Xattrs: archive.XattrString(map[string][]byte{
				"security.capability": {0, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "user.mime": []byte("text/plain")})},
		"/xdir": {Type: "dir", Perm: 0o755, Xattrs: archive.XattrString(map[string][]byte{"trusted.note": []byte("dir note")})},
	}
	for p, w := range checks {
		if d := cmp.Diff(w, got[p]); d != "" {
			t.Errorf("%s (-want +got):\n%s", p, d)
		}
	}

	if bytes.Contains(data, []byte("GONE-MARKER")) {
		t.Errorf("the archive holds bytes of a deleted or replaced file (GONE-MARKER at %d)", bytes.Index(data, []byte("GONE-MARKER")))
	}
	if n := bytes.Count(data, []byte("linked bytes, stored once")); n != 1 {
		t.Errorf("a hard-linked file's bytes are in the archive %d times, want once", n)
	}
	if d := cmp.Diff([]int{2, 2, 1, 1}, src.opens); d != "" {
		t.Errorf("opens per layer (-want +got):\n%s", d)
	}
	wantStats := archive.Stats{Files: 8, Dirs: 7, Special: 2, Hardlinks: 1, XattrInodes: 2,
		DataBytes: int64(len("root:x:0:0\n") + len("linked bytes, stored once\n") + len("no permission bits at all\n") + len("capable\n") +
			len("new in the opaque dir\n") + len("tool v2, longer than v1 was\n"))}
	if d := cmp.Diff(wantStats, st); d != "" {
		t.Errorf("stats (-want +got):\n%s", d)
	}
}

// TestWriteV1FromLayersSparse: a sparse file in each of GNU tar's
// encodings is archived expanded, holes as zeros, at its logical size; the
// default indexer still refuses it.
func TestWriteV1FromLayersSparse(t *testing.T) {
	for _, format := range append(append([]string(nil), hostile.SparseFormats...), "mixed") {
		t.Run(format, func(t *testing.T) {
			layer, err := hostile.SparseLayer(format)
			if err != nil {
				t.Fatal(err)
			}
			if err := archive.NewIndexer().AddLayer(context.Background(), "x", bytes.NewReader(layer)); !errors.Is(err, archive.ErrSparse) {
				t.Errorf("NewIndexer().AddLayer(sparse %s) = %v, want ErrSparse", format, err)
			}
			a, _, _ := writeV1Layers(t, newCountedLayers(layer).streams())
			files := hostile.SparseFiles("/sparse")
			if format == "mixed" {
				files = hostile.SparseFiles("/mixed/gnu")
				for p, b := range hostile.SparseFiles("/mixed/pax") {
					files[p] = b
				}
			}
			got := archiveTreeOf(t, a)
			for p, b := range files {
				w := archive.Entry{Type: "file", Perm: 0o644, Size: int64(len(b)), Nlink: 1, Digest: digest.FromBytes(b).String()}
				if d := cmp.Diff(w, got[p]); d != "" {
					t.Errorf("%s (-want +got):\n%s", p, d)
				}
			}
		})
	}
}

// TestWriteV1FromLayersHoles: runs of zeros of a MiB or more (a chunk of
// the copy) are left as holes in the archive, which reads back the same
// bytes; shorter ones are written.
func TestWriteV1FromLayersHoles(t *testing.T) {
	data := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	files := map[string][]byte{
		"middle": cat(data('a', 100<<10), make([]byte, 4<<20), data('b', 100<<10)),
		"end":    cat(data('c', 1<<20), make([]byte, 3<<20)),
		"zeros":  make([]byte, 2<<20),
		"short":  make([]byte, 10<<10), // under holeMin: written
	}
	var tf []tarFile
	for _, name := range []string{"middle", "end", "zeros", "short"} {
		tf = append(tf, tarFile{&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, files[name]})
	}
	a, raw, st := writeV1Layers(t, newCountedLayers(layerTar(t, tf)).streams())
	got := archiveTreeOf(t, a)
	var total int64
	for p, b := range files {
		total += int64(len(b))
		w := archive.Entry{Type: "file", Perm: 0o644, Size: int64(len(b)), Nlink: 1, Digest: digest.FromBytes(b).String()}
		if d := cmp.Diff(w, got["/"+p]); d != "" {
			t.Errorf("%s (-want +got):\n%s", p, d)
		}
	}
	if st.DataBytes != total {
		t.Errorf("DataBytes = %d, want %d", st.DataBytes, total)
	}
	var fs syscall.Stat_t
	if err := syscall.Stat(a.Path, &fs); err != nil {
		t.Fatal(err)
	}
	// Chunks count from a file's start: the whole chunks of zeros are 3
	// MiB of "middle" (its first and last hold data too), 3 of "end" and 2
	// of "zeros". Each hole may lose a block at either edge, where it does
	// not line up with the filesystem's blocks.
	if used := fs.Blocks * 512; used > int64(len(raw))-15<<19 {
		t.Errorf("the %d-byte archive takes %d bytes on disk: its zero runs were written", len(raw), used)
	}
}

// TestWriteV1FromLayersCancelledInAFile: cancelling while a large file is
// copied stops the copy within a chunk, not at the file's end.
func TestWriteV1FromLayersCancelledInAFile(t *testing.T) {
	const size = 64 << 20
	layer := layerTar(t, []tarFile{{&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644}, bytes.Repeat([]byte("0123456789abcdef"), size/16)}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opens := 0
	var read *countingCancel
	l := archive.LayerStream{Digest: "sha256:x", Open: func(context.Context) (io.ReadCloser, error) {
		opens++
		if opens == 1 {
			return io.NopCloser(bytes.NewReader(layer)), nil
		}
		// The second read is the copy: cancel once 4 MiB of it are read.
		read = &countingCancel{r: bytes.NewReader(layer), at: 4 << 20, cancel: cancel}
		return io.NopCloser(read), nil
	}}
	f, err := os.Create(filepath.Join(t.TempDir(), "out.clip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = archive.WriteV1FromLayers(ctx, []archive.LayerStream{l}, f, archive.Trailer{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteV1FromLayers() = %v, want context.Canceled", err)
	}
	if read == nil || read.n > 8<<20 {
		t.Errorf("the copy read %d bytes of the layer after the cancel at 4 MiB, want at most a chunk more", read.n)
	}
}

// countingCancel counts the bytes read from r and calls cancel once they
// reach at.
type countingCancel struct {
	r      io.Reader
	n, at  int64
	cancel func()
}

func (c *countingCancel) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n += int64(n); c.n >= c.at {
		c.cancel()
	}
	return n, err
}

// TestWriteV1FromLayersStreamChanged: a layer that reads differently the
// second time is an error, not an archive with the wrong bytes.
func TestWriteV1FromLayersStreamChanged(t *testing.T) {
	first := layerTar(t, []tarFile{{&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("first read")}})
	tests := []struct {
		name   string
		second []byte
	}{
		{"other size", layerTar(t, []tarFile{{&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("second, longer read")}})},
		{"other type", layerTar(t, []tarFile{{&tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "b", Mode: 0o777}, nil}})},
		{"entry gone", layerTar(t, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opens := 0
			l := archive.LayerStream{Digest: "sha256:x", Open: func(context.Context) (io.ReadCloser, error) {
				opens++
				if opens == 1 {
					return io.NopCloser(bytes.NewReader(first)), nil
				}
				return io.NopCloser(bytes.NewReader(tt.second)), nil
			}}
			f, err := os.Create(filepath.Join(t.TempDir(), "out.clip"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = archive.WriteV1FromLayers(context.Background(), []archive.LayerStream{l}, f, archive.Trailer{})
			if err == nil || !strings.Contains(err.Error(), "changed between the reads") {
				t.Errorf("WriteV1FromLayers() = %v, want an error saying the stream changed", err)
			}
		})
	}
}

// TestWriteV1FromLayersErrors: an open that fails, a stream that fails and
// a cancelled context all stop the write with their error.
func TestWriteV1FromLayersErrors(t *testing.T) {
	layer := layerTar(t, []tarFile{{&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, bytes.Repeat([]byte("x"), 100000)}})
	boom := errors.New("boom")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		open func(context.Context) (io.ReadCloser, error)
		want error
	}{
		{"open fails", context.Background(), func(context.Context) (io.ReadCloser, error) { return nil, boom }, boom},
		{"read fails", context.Background(), func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(bytes.NewReader(layer[:5000]), iotestErr{boom})), nil
		}, boom},
		{"cancelled", cancelled, func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil }, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "out.clip"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = archive.WriteV1FromLayers(tt.ctx, []archive.LayerStream{{Digest: "sha256:x", Open: tt.open}}, f, archive.Trailer{})
			if !errors.Is(err, tt.want) {
				t.Errorf("WriteV1FromLayers() = %v, want %v", err, tt.want)
			}
		})
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// TestWriteV1FromLayersMounts mounts the archive with our FUSE filesystem:
// contents, the hard link's shared inode, modes and xattrs as a container
// sees them.
func TestWriteV1FromLayersMounts(t *testing.T) {
	requireRoot(t)
	a, _, _ := writeV1Layers(t, newCountedLayers(v1TestLayers(t)...).streams())
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountFuse(t, a, s)
	for p, want := range map[string]string{"/usr/bin/tool": "tool v2, longer than v1 was\n", "/data/link2": "linked bytes, stored once\n",
		"/locked": "no permission bits at all\n", "/empty": ""} {
		if got, err := os.ReadFile(filepath.Join(mnt, p)); err != nil || string(got) != want {
			t.Errorf("ReadFile(%s) = %q, %v, want %q", p, got, err, want)
		}
	}
	var l1, l2, tool unix.Stat_t
	for p, st := range map[string]*unix.Stat_t{"/data/link": &l1, "/data/link2": &l2, "/usr/bin/tool": &tool} {
		if err := unix.Lstat(filepath.Join(mnt, p), st); err != nil {
			t.Fatal(err)
		}
	}
	if l1.Ino != l2.Ino || l1.Nlink != 2 {
		t.Errorf("hard links: inodes %d, %d with nlink %d, want one inode with nlink 2", l1.Ino, l2.Ino, l1.Nlink)
	}
	if tool.Mode != syscall.S_IFREG|0o2755 {
		t.Errorf("/usr/bin/tool mode = %#o, want %#o", tool.Mode, syscall.S_IFREG|0o2755)
	}
	if got, err := getxattr(filepath.Join(mnt, "caps"), "user.mime"); err != nil || string(got) != "text/plain" {
		t.Errorf("user.mime of /caps = %q, %v, want %q", got, err, "text/plain")
	}
}

// TestWriteV1FromLayersClipMount mounts the archive with clip's own
// runtime (clip.MountArchive), which is what reads v1 archives in
// production: every entry must be there with its type and contents.
// clip's filesystem keeps neither our modes nor xattrs, so those are not
// compared.
func TestWriteV1FromLayersClipMount(t *testing.T) {
	requireRoot(t)
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	archive.RouteClipLogs(l)
	a, _, _ := writeV1Layers(t, newCountedLayers(v1TestLayers(t)...).streams())
	want := archiveTreeOf(t, a)
	mnt := filepath.Join(t.TempDir(), "mnt")
	start, serverErr, server, err := clip.MountArchive(clip.MountOptions{ArchivePath: a.Path, MountPoint: mnt, CachePath: t.TempDir()})
	if err != nil {
		t.Fatalf("clip.MountArchive() = %v", err)
	}
	if err := start(); err != nil {
		t.Fatal(err)
	}
	if err := server.WaitMount(); err != nil {
		t.Fatalf("clip's server: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmounting clip's mount: %v", err)
		}
		select {
		case <-serverErr:
		case <-time.After(10 * time.Second):
			t.Errorf("clip's server did not stop")
		}
	})
	got, err := archive.TreeFromDir(context.Background(), mnt)
	if err != nil {
		t.Fatalf("TreeFromDir(clip's mount) = %v", err)
	}
	contents := func(tr archive.Tree) map[string]archive.Entry {
		m := map[string]archive.Entry{}
		for p, e := range tr {
			m[p] = archive.Entry{Type: e.Type, Size: e.Size, Digest: e.Digest, Target: e.Target}
		}
		return m
	}
	if d := cmp.Diff(contents(want), contents(got)); d != "" {
		t.Errorf("clip's mount differs from the archive in types or contents (-archive +clip):\n%s", d)
	}
}
