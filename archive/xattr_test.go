package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	storarchive "go.podman.io/storage/pkg/archive"
	"golang.org/x/sys/unix"

	"github.com/clipbuild/clipbuild/archive"
)

// File capability values as `setcap cap_net_raw+ep` writes them
// (linux/capability.h): magic_etc (revision | the effective flag), then
// {permitted, inheritable} for capabilities 0-31 and 32-63; cap_net_raw is
// bit 13, 0x2000. Revision 3 adds the root id of the user namespace.
var (
	capNetRawV2      = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	capNetRawV3Root0 = []byte{0x01, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	capNetRawV3U1000 = []byte{0x01, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xe8, 0x03, 0, 0}
)

// xentry is one tar entry of a test layer, with its extended attributes.
type xentry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	xattrs     map[string]string
}

func xattrTar(t *testing.T, entries ...xentry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for name, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+name] = v
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
	return b.Bytes()
}

func xa(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func layerDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// xattrLayers has every case of how the unpack treats attributes: a file,
// a directory, the root and a hard link set them; a hard-link entry adds
// its own to the inode it shares; a later layer merges a directory (adding
// to its attributes), replaces a file (dropping them) and whites out one
// path of a hard-link pair (the other keeps them); attributes that are not
// the image's are dropped.
func xattrLayers(t *testing.T) [][]byte {
	return [][]byte{
		xattrTar(t,
			xentry{name: "./", typ: tar.TypeDir, xattrs: xa("user.root", "r")},
			xentry{name: "bin/", typ: tar.TypeDir, xattrs: xa("user.dir", "1")},
			xentry{name: "bin/ping", typ: tar.TypeReg, body: "ping", xattrs: xa("security.capability", string(capNetRawV2), "user.foo", "ping")},
			xentry{name: "bin/ping6", typ: tar.TypeLink, link: "bin/ping", xattrs: xa("user.bar", "link", "user.foo", "from the link")},
			xentry{name: "bin/v3root", typ: tar.TypeReg, xattrs: xa("security.capability", string(capNetRawV3Root0))},
			xentry{name: "bin/v3user", typ: tar.TypeReg, xattrs: xa("security.capability", string(capNetRawV3U1000))},
			xentry{name: "bin/sym", typ: tar.TypeSymlink, link: "ping", xattrs: xa("trusted.t", "on a symlink", "security.capability", string(capNetRawV2))},
			xentry{name: "fifo", typ: tar.TypeFifo, xattrs: xa("trusted.t", "on a fifo")},
			xentry{name: "empty", typ: tar.TypeReg, xattrs: xa("user.empty", "")},
			xentry{name: "host", typ: tar.TypeReg, xattrs: xa("security.selinux", "system_u:object_r:bin_t:s0", "security.SMACK64", "_",
				"trusted.overlay.opaque", "y", "user.overlay.x", "o", "nonamespace.x", "n", "user.kept", "k")},
			xentry{name: "etc/", typ: tar.TypeDir},
			xentry{name: "etc/over", typ: tar.TypeReg, xattrs: xa("user.o", "old")},
			xentry{name: "etc/gone", typ: tar.TypeReg, xattrs: xa("user.g", "g")},
			xentry{name: "etc/hl", typ: tar.TypeReg, xattrs: xa("user.h", "h")},
			xentry{name: "etc/hl2", typ: tar.TypeLink, link: "etc/hl"},
		),
		xattrTar(t,
			xentry{name: "./", typ: tar.TypeDir, xattrs: xa("user.root2", "r2")},
			xentry{name: "bin/", typ: tar.TypeDir, xattrs: xa("user.dir2", "2", "user.dir", "1 again")},
			xentry{name: "etc/over", typ: tar.TypeReg, body: "new"},
			xentry{name: "etc/.wh.gone", typ: tar.TypeReg},
			xentry{name: "etc/.wh.hl", typ: tar.TypeReg},
		),
	}
}

// wantXattrLayers is what xattrLayers must give, written out so that a
// mistake shared by the unpack and the indexer is still caught.
func wantXattrLayers() map[string]map[string][]byte {
	ping := map[string][]byte{"security.capability": capNetRawV2, "user.foo": []byte("from the link"), "user.bar": []byte("link")}
	return map[string]map[string][]byte{
		"/":           {"user.root": []byte("r"), "user.root2": []byte("r2")},
		"/bin":        {"user.dir": []byte("1 again"), "user.dir2": []byte("2")},
		"/bin/ping":   ping,
		"/bin/ping6":  ping,
		"/bin/v3root": {"security.capability": capNetRawV2},
		"/bin/v3user": {"security.capability": capNetRawV3U1000},
		"/bin/sym":    {"trusted.t": []byte("on a symlink"), "security.capability": capNetRawV2},
		"/fifo":       {"trusted.t": []byte("on a fifo")},
		"/empty":      {"user.empty": {}},
		"/host":       {"user.kept": []byte("k")},
		"/etc/hl2":    {"user.h": []byte("h")},
	}
}

// indexXattrs indexes layers and returns the attributes of every path.
func indexXattrs(t *testing.T, layers [][]byte) (*archive.Indexer, map[string]map[string][]byte) {
	t.Helper()
	ix := archive.NewIndexer()
	for i, l := range layers {
		if err := ix.AddLayer(context.Background(), layerDigest(l), bytes.NewReader(l)); err != nil {
			t.Fatalf("AddLayer(%d) = %v", i+1, err)
		}
	}
	xattrs := ix.Xattrs()
	got := map[string]map[string][]byte{}
	live := map[uint64]bool{}
	for _, n := range ix.Nodes() {
		live[n.Attr.Ino] = true
		if x := xattrs[n.Attr.Ino]; x != nil {
			got[n.Path] = x
		}
	}
	for ino := range xattrs {
		if !live[ino] {
			t.Errorf("Xattrs() has inode %d, which no path has", ino)
		}
	}
	return ix, got
}

func TestIndexerXattrs(t *testing.T) {
	_, got := indexXattrs(t, xattrLayers(t))
	if d := cmp.Diff(wantXattrLayers(), got); d != "" {
		t.Errorf("indexed attributes by path (-want +got):\n%s", d)
	}
}

// TestIndexerXattrsHardLinkShared checks that the paths of a hard-link
// group share one inode number and so one set of attributes, and that the
// inode keeps them when its first path is whited out.
func TestIndexerXattrsHardLinkShared(t *testing.T) {
	ix, got := indexXattrs(t, [][]byte{
		xattrTar(t,
			xentry{name: "a", typ: tar.TypeReg, xattrs: xa("user.a", "1")},
			xentry{name: "b", typ: tar.TypeLink, link: "a", xattrs: xa("user.b", "2")},
			xentry{name: "c", typ: tar.TypeLink, link: "b"},
		),
		xattrTar(t, xentry{name: ".wh.a", typ: tar.TypeReg}),
	})
	want := map[string][]byte{"user.a": []byte("1"), "user.b": []byte("2")}
	for _, p := range []string{"/b", "/c"} {
		if d := cmp.Diff(want, got[p]); d != "" {
			t.Errorf("%s attributes (-want +got):\n%s", p, d)
		}
	}
	if _, ok := got["/a"]; ok {
		t.Errorf("/a, whited out, still has attributes")
	}
	if n := len(ix.Xattrs()); n != 1 {
		t.Errorf("len(Xattrs()) = %d, want 1 (one inode for /b and /c)", n)
	}
}

// TestIndexerXattrErrors checks that the indexer refuses the attributes the
// kernel refuses, and so the unpack (as root) fails on, and that the unpack
// really does fail on them.
func TestIndexerXattrErrors(t *testing.T) {
	reg := func(x map[string]string) xentry { return xentry{name: "f", typ: tar.TypeReg, xattrs: x} }
	tests := []struct {
		name    string
		entries []xentry
		want    string
	}{
		{"user attribute on a symlink", []xentry{{name: "s", typ: tar.TypeSymlink, link: "x", xattrs: xa("user.foo", "1")}}, "user.foo on a symlink"},
		{"user attribute on a fifo", []xentry{{name: "p", typ: tar.TypeFifo, xattrs: xa("user.foo", "1")}}, "user.foo on a fifo"},
		{"user attribute through a hard link to a symlink", []xentry{{name: "s", typ: tar.TypeSymlink, link: "x"},
			{name: "h", typ: tar.TypeLink, link: "s", xattrs: xa("user.foo", "1")}}, "user.foo on a symlink"},
		{"capability of revision 1", []xentry{reg(xa("security.capability", "\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00"))}, "not a revision 2 or 3"},
		{"capability of an unknown revision", []xentry{reg(xa("security.capability", "\x09"+strings.Repeat("\x00", 19)))}, "not a revision 2 or 3"},
		{"revision 2 capability of revision 3 size", []xentry{reg(xa("security.capability", "\x01\x00\x00\x02"+strings.Repeat("\x00", 20)))}, "not a revision 2 or 3"},
		{"attribute name too long", []xentry{reg(xa("user."+strings.Repeat("n", 251), "1"))}, "longer than 255"},
		{"bare namespace", []xentry{reg(xa("user.", "1"))}, "no name after its namespace"},
		{"value too big", []xentry{reg(xa("trusted.big", strings.Repeat("v", 65537)))}, "more than the 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layer := xattrTar(t, tt.entries...)
			err := archive.NewIndexer().AddLayer(context.Background(), layerDigest(layer), bytes.NewReader(layer))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("AddLayer() = %v, want an error containing %q", err, tt.want)
			}
			if os.Geteuid() != 0 {
				return // only a root unpack fails on them; a rootless one drops some
			}
			if _, err := storarchive.ApplyUncompressedLayer(t.TempDir(), bytes.NewReader(layer), &storarchive.TarOptions{}); err == nil {
				t.Errorf("ApplyUncompressedLayer() = nil, want the error the indexer copies")
			}
		})
	}
}

// unpackLayers applies layers with containers-storage's applier, as the v1
// path does.
func unpackLayers(t *testing.T, layers [][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		if _, err := storarchive.ApplyUncompressedLayer(dir, bytes.NewReader(l), &storarchive.TarOptions{}); err != nil {
			t.Fatalf("ApplyUncompressedLayer(%d) = %v", i+1, err)
		}
	}
	return dir
}

// memBlobs serves uncompressed layers by digest, as a registry would.
type memBlobs map[string][]byte

func (b memBlobs) Open(_ context.Context, dg string) (io.ReadCloser, error) {
	l, ok := b[dg]
	if !ok {
		return nil, errors.New("no blob " + dg)
	}
	return io.NopCloser(bytes.NewReader(l)), nil
}

// TestXattrsV1V2MatchUnpack unpacks the layers with containers-storage (as
// root: trusted.* and security.capability need it) and checks that the
// unpacked tree, its v1 archive and the v2 archive of the same layers have
// the same attributes, and the ones written out in wantXattrLayers.
func TestXattrsV1V2MatchUnpack(t *testing.T) {
	requireRoot(t)
	layers := xattrLayers(t)
	rootfs := unpackLayers(t, layers)
	want, err := archive.TreeFromDir(context.Background(), rootfs)
	if err != nil {
		t.Fatalf("TreeFromDir() = %v", err)
	}
	for p, x := range wantXattrLayers() {
		if got := want[p].Xattrs; got != archive.XattrString(x) {
			t.Errorf("unpacked %s: Xattrs = %q, want %q", p, got, archive.XattrString(x))
		}
	}

	v1 := filepath.Join(t.TempDir(), "v1.clip")
	err = archive.WriteFileAtomic(v1, func(f *os.File) error {
		_, err := archive.WriteV1(context.Background(), rootfs, f, archive.Trailer{Tool: "clipbuild"})
		return err
	})
	if err != nil {
		t.Fatalf("WriteV1() = %v", err)
	}
	a1, tree1 := openTree(t, v1)
	if d := archive.Diff(want, tree1); len(d) != 0 {
		t.Errorf("Diff(unpacked, v1) = %q, want none", d)
	}
	ping := nodesByPath(a1)["/bin/ping"]
	if got := a1.XattrsOf(ping.Attr.Ino)["security.capability"]; !bytes.Equal(got, capNetRawV2) {
		t.Errorf("v1 XattrsOf(/bin/ping)[security.capability] = %x, want %x", got, capNetRawV2)
	}

	ix := archive.NewIndexer()
	blobs := memBlobs{}
	var digests []string
	for i, l := range layers {
		dg := layerDigest(l)
		blobs[dg] = l
		digests = append(digests, dg)
		if err := ix.AddLayer(context.Background(), dg, bytes.NewReader(l)); err != nil {
			t.Fatalf("AddLayer(%d) = %v", i+1, err)
		}
	}
	v2 := filepath.Join(t.TempDir(), "v2.clip")
	oci := &common.OCIStorageInfo{RegistryURL: "http://127.0.0.1:1", Repository: "test/xattrs", Reference: "t", Layers: digests}
	err = archive.WriteFileAtomic(v2, func(f *os.File) error {
		return archive.WriteV2(f, ix.Nodes(), oci, archive.Trailer{Tool: "clipbuild", Xattrs: ix.Xattrs()})
	})
	if err != nil {
		t.Fatalf("WriteV2() = %v", err)
	}
	a2, err := archive.Open(v2)
	if err != nil {
		t.Fatalf("Open(v2) = %v", err)
	}
	s, err := archive.OpenStorage(a2, archive.WithBlobOpener(blobs), archive.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatalf("OpenStorage(v2) = %v", err)
	}
	defer s.Cleanup()
	tree2, err := archive.TreeFromArchive(context.Background(), a2, s)
	if err != nil {
		t.Fatalf("TreeFromArchive(v2) = %v", err)
	}
	if d := archive.Diff(want, tree2); len(d) != 0 {
		t.Errorf("Diff(unpacked, v2) = %q, want none", d)
	}

	// clip's own reader still reads both: the attributes live in our
	// trailer, after clip's sections, and leave its index as it was.
	for _, a := range []*archive.Archive{a1, a2} {
		md, err := clip.NewClipArchiver().ExtractMetadata(a.Path)
		if err != nil {
			t.Fatalf("clip's ExtractMetadata(v%d) = %v", a.Version(), err)
		}
		var got []*common.ClipNode
		md.Index.Ascend(md.Index.Min(), func(item interface{}) bool {
			got = append(got, item.(*common.ClipNode))
			return true
		})
		if d := cmp.Diff(a.Nodes(), got); d != "" {
			t.Errorf("clip's index of v%d (-ours +clip's):\n%s", a.Version(), d)
		}
	}
}

// setXattr sets an attribute on p, not following a symlink.
func setXattr(t *testing.T, p, name string, v []byte) {
	t.Helper()
	if err := unix.Lsetxattr(p, name, v, 0); err != nil {
		t.Fatalf("lsetxattr %s %s: %v", p, name, err)
	}
}

// TestWriteV1Xattrs archives a tree whose files carry attributes: user.* on
// a file, a directory and a hard-linked file, and (as root) a capability
// and an SELinux label, which is the host's and must be left out.
func TestWriteV1Xattrs(t *testing.T) {
	b := treeBuilder{t: t, root: t.TempDir()}
	b.chmod("/", 0o755)
	b.dir("/d", 0o755)
	b.file("/d/f", []byte("f"), 0o644)
	b.file("/d/h", []byte("h"), 0o644)
	b.link("/d/h", "/d/h2")
	b.file("/plain", []byte("p"), 0o644)
	setXattr(t, b.path("/d"), "user.dir", []byte("d"))
	setXattr(t, b.path("/d/f"), "user.mime", []byte("text/plain"))
	setXattr(t, b.path("/d/h"), "user.h", []byte("shared"))
	want := map[string]map[string][]byte{
		"/d":    {"user.dir": []byte("d")},
		"/d/f":  {"user.mime": []byte("text/plain")},
		"/d/h":  {"user.h": []byte("shared")},
		"/d/h2": {"user.h": []byte("shared")},
	}
	if os.Geteuid() == 0 {
		setXattr(t, b.path("/d/f"), "security.capability", capNetRawV2)
		setXattr(t, b.path("/plain"), "security.selinux", []byte("system_u:object_r:container_file_t:s0"))
		want["/d/f"]["security.capability"] = capNetRawV2
	}
	clip := filepath.Join(t.TempDir(), "x.clip")
	var st archive.Stats
	err := archive.WriteFileAtomic(clip, func(f *os.File) (err error) {
		st, err = archive.WriteV1(context.Background(), b.root, f, archive.Trailer{Tool: "clipbuild"})
		return err
	})
	if err != nil {
		t.Fatalf("WriteV1() = %v", err)
	}
	if st.XattrInodes != 3 {
		t.Errorf("WriteV1() stats XattrInodes = %d, want 3", st.XattrInodes)
	}
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	got := map[string]map[string][]byte{}
	for p, n := range nodesByPath(a) {
		if x := a.XattrsOf(n.Attr.Ino); x != nil {
			got[p] = x
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("archived attributes by path (-want +got):\n%s", d)
	}
	if n := len(a.Trailer.Xattrs); n != 3 {
		t.Errorf("len(Trailer.Xattrs) = %d, want 3 (/d/h and /d/h2 share an inode)", n)
	}
	if s := archive.Summarize(a); s.Counts.XattrInodes != 3 {
		t.Errorf("Summarize().Counts.XattrInodes = %d, want 3", s.Counts.XattrInodes)
	}
}

// TestVerifyDetectsMissingXattr archives a tree, then gives a file of the
// tree an attribute the archive lacks: the diff must name it.
func TestVerifyDetectsMissingXattr(t *testing.T) {
	b := treeBuilder{t: t, root: t.TempDir()}
	b.chmod("/", 0o755)
	b.file("/ping", []byte("ping"), 0o755)
	setXattr(t, b.path("/ping"), "user.foo", []byte("1"))
	clip := filepath.Join(t.TempDir(), "x.clip")
	writeArchive(t, b.root, clip, archive.Trailer{Tool: "clipbuild"})
	name, want := "user.bar", "/ping: xattr user.bar missing from archive"
	if os.Geteuid() == 0 {
		name, want = "security.capability", "/ping: xattr security.capability missing from archive"
	}
	value := capNetRawV2
	setXattr(t, b.path("/ping"), name, value)
	image, err := archive.TreeFromDir(context.Background(), b.root)
	if err != nil {
		t.Fatal(err)
	}
	_, tree := openTree(t, clip)
	if d := archive.Diff(image, tree); !cmp.Equal(d, []string{want}) {
		t.Errorf("Diff() = %q, want [%q]", d, want)
	}
}

func TestDiffXattrs(t *testing.T) {
	x := func(kv ...string) string {
		m := map[string][]byte{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = []byte(kv[i+1])
		}
		return archive.XattrString(m)
	}
	tests := []struct {
		name      string
		want, got string
		diff      []string
	}{
		{"same", x("user.a", "1", "security.capability", "c"), x("security.capability", "c", "user.a", "1"), nil},
		{"missing", x("security.capability", "c", "user.a", "1"), x("user.a", "1"),
			[]string{"/bin/ping: xattr security.capability missing from archive"}},
		{"extra", x("user.a", "1"), x("user.a", "1", "user.b", "2"),
			[]string{"/bin/ping: xattr user.b not in image"}},
		{"different", x("user.a", "1"), x("user.a", "2"),
			[]string{"/bin/ping: xattr user.a is 0x32, want 0x31"}},
		{"empty value", x("user.a", ""), x("user.a", "1"),
			[]string{"/bin/ping: xattr user.a is 0x31, want empty"}},
		{"names holding = and spaces", x("user.a=b c", "1"), x("user.a=b", "c=1"),
			[]string{"/bin/ping: xattr user.a=b not in image", "/bin/ping: xattr user.a=b c missing from archive"}},
		{"all missing", x("user.a", "1", "user.b", "2"), "",
			[]string{"/bin/ping: xattr user.a missing from archive", "/bin/ping: xattr user.b missing from archive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := baseTree()
			got := baseTree()
			e := want["/bin/busybox"]
			e.Xattrs = tt.want
			want["/bin/ping"] = e
			e.Xattrs = tt.got
			got["/bin/ping"] = e
			if d := archive.Diff(want, got); !cmp.Equal(d, tt.diff, cmpopts.EquateEmpty()) {
				t.Errorf("Diff() = %q, want %q", d, tt.diff)
			}
		})
	}
}
