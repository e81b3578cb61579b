package archive_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/clipbuild/clipbuild/archive"
)

// openTree opens the archive at p and describes its tree.
func openTree(t *testing.T, p string) (*archive.Archive, archive.Tree) {
	t.Helper()
	a, err := archive.Open(p)
	if err != nil {
		t.Fatalf("Open(%s) = %v", p, err)
	}
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatalf("OpenStorage() = %v", err)
	}
	t.Cleanup(func() { s.Cleanup() })
	tree, err := archive.TreeFromArchive(context.Background(), a, s)
	if err != nil {
		t.Fatalf("TreeFromArchive() = %v", err)
	}
	return a, tree
}

func nodesByPath(a *archive.Archive) map[string]*common.ClipNode {
	m := map[string]*common.ClipNode{}
	for _, n := range a.Nodes() {
		m[n.Path] = n
	}
	return m
}

func TestWriteV1RoundTripMatchesSource(t *testing.T) {
	root, clip := fixtureArchive(t)
	want, err := archive.TreeFromDir(context.Background(), root)
	if err != nil {
		t.Fatalf("TreeFromDir() = %v", err)
	}
	_, got := openTree(t, clip)
	if d := archive.Diff(want, got); len(d) != 0 {
		t.Errorf("Diff(source, archive) = %q, want none", d)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("TreeFromArchive() mismatch with TreeFromDir() (-source +archive):\n%s", d)
	}
	if len(got) != fixtureEntries() {
		t.Errorf("len(TreeFromArchive()) = %d, want %d", len(got), fixtureEntries())
	}
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestWriteV1RoundTripFields(t *testing.T) {
	_, clip := fixtureArchive(t)
	_, tree := openTree(t, clip)
	file := func(perm uint32, data []byte) archive.Entry {
		return archive.Entry{Type: "file", Perm: perm, Nlink: 1, Size: int64(len(data)), Digest: sha(data)}
	}
	linked := file(0o640, linkData)
	linked.Nlink, linked.Link = 3, pathHL1
	tests := []struct {
		path string
		want archive.Entry
	}{
		{"/", archive.Entry{Type: "dir", Perm: 0o755}},
		{pathEmpty, file(0o644, nil)},
		{pathSmall, file(0o644, smallData)},
		{pathBig, file(0o600, fixtureBytes(bigSize, 1))},
		{pathSetuid, file(0o4755, []byte("#!/bin/sh\n"))},
		{pathSetgid, file(0o2755, []byte("#!/bin/sh\n"))},
		{pathSticky, archive.Entry{Type: "dir", Perm: 0o1777}},
		{pathPrivate, archive.Entry{Type: "dir", Perm: 0o700}},
		{pathFIFO, archive.Entry{Type: "fifo", Perm: 0o620, Nlink: 1}},
		{pathHL1, linked},
		{pathHL2, linked},
		{pathHL3, linked},
		{pathAbsLink, archive.Entry{Type: "symlink", Perm: 0o777, Nlink: 1, Target: "/etc/passwd"}},
		{pathRelLink, archive.Entry{Type: "symlink", Perm: 0o777, Nlink: 1, Target: "small.txt"}},
		{pathDangling, archive.Entry{Type: "symlink", Perm: 0o777, Nlink: 1, Target: "does/not/exist"}},
		{pathSpaces, file(0o644, []byte("spaces\n"))},
		{pathUnicode, file(0o644, []byte("unicode\n"))},
		{pathNested, file(0o444, []byte("deep\n"))},
	}
	if withNoPerm() {
		tests = append(tests, struct {
			path string
			want archive.Entry
		}{pathNoPerm, file(0o000, noPermData)})
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, ok := tree[tt.path]
			if !ok {
				t.Fatalf("%s missing from archive", tt.path)
			}
			want := tt.want
			want.UID, want.GID = uint32(os.Geteuid()), uint32(os.Getegid())
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("entry %s (-want +got):\n%s", tt.path, d)
			}
		})
	}
}

func TestWriteV1HardLinksShareInode(t *testing.T) {
	_, clip := fixtureArchive(t)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	nodes := nodesByPath(a)
	first := nodes[pathHL1]
	if first == nil {
		t.Fatalf("%s missing from archive", pathHL1)
	}
	for _, p := range []string{pathHL1, pathHL2, pathHL3} {
		n := nodes[p]
		if n == nil {
			t.Fatalf("%s missing from archive", p)
		}
		if n.Attr.Ino != first.Attr.Ino {
			t.Errorf("%s: Ino = %d, want %d (that of %s)", p, n.Attr.Ino, first.Attr.Ino, pathHL1)
		}
		if n.Attr.Nlink != 3 {
			t.Errorf("%s: Nlink = %d, want 3", p, n.Attr.Nlink)
		}
		if n.DataPos != first.DataPos || n.DataLen != first.DataLen {
			t.Errorf("%s: data at %d+%d, want %d+%d (stored once)", p, n.DataPos, n.DataLen, first.DataPos, first.DataLen)
		}
	}
	// Every other node has an inode of its own.
	seen := map[uint64]string{}
	for _, n := range a.Nodes() {
		if n.Attr.Ino == first.Attr.Ino {
			continue
		}
		if prev, ok := seen[n.Attr.Ino]; ok {
			t.Errorf("%s and %s share inode %d, want distinct", prev, n.Path, n.Attr.Ino)
		}
		seen[n.Attr.Ino] = n.Path
	}
}

func TestWriteV1SpecialNodes(t *testing.T) {
	_, clip := fixtureArchive(t)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	nodes := nodesByPath(a)
	tests := []struct {
		path     string
		nodeType common.ClipNodeType
		mode     uint32 // full st_mode
		dataLen  int64
	}{
		{pathFIFO, common.FileNode, syscall.S_IFIFO | 0o620, 0},
		{pathSetuid, common.FileNode, syscall.S_IFREG | 0o4755, 10},
		{pathSetgid, common.FileNode, syscall.S_IFREG | 0o2755, 10},
		{pathSticky, common.DirNode, syscall.S_IFDIR | 0o1777, 0},
		{pathPrivate, common.DirNode, syscall.S_IFDIR | 0o700, 0},
		{pathEmpty, common.FileNode, syscall.S_IFREG | 0o644, 0},
		{pathBig, common.FileNode, syscall.S_IFREG | 0o600, bigSize},
		{pathRelLink, common.SymLinkNode, syscall.S_IFLNK | 0o777, 0},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			n := nodes[tt.path]
			if n == nil {
				t.Fatalf("%s missing from archive", tt.path)
			}
			if n.NodeType != tt.nodeType {
				t.Errorf("NodeType = %q, want %q", n.NodeType, tt.nodeType)
			}
			if n.Attr.Mode != tt.mode {
				t.Errorf("Attr.Mode = %#o, want %#o", n.Attr.Mode, tt.mode)
			}
			if n.DataLen != tt.dataLen {
				t.Errorf("DataLen = %d, want %d", n.DataLen, tt.dataLen)
			}
		})
	}
	if n := nodes[pathFIFO]; n != nil && n.Attr.Size != 0 {
		t.Errorf("FIFO Attr.Size = %d, want 0", n.Attr.Size)
	}
}

func TestWriteV1DirectoryLinkCounts(t *testing.T) {
	_, clip := fixtureArchive(t)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	nodes := nodesByPath(a)
	tests := []struct {
		path  string
		nlink uint32
	}{
		{"/", 2 + 7}, // bin, tmp, private, hl, "with space", ünïcödé, a
		{"/hl", 3},
		{"/hl/sub", 2},
		{"/a/b/c", 3},
	}
	for _, tt := range tests {
		n := nodes[tt.path]
		if n == nil {
			t.Errorf("%s missing from archive", tt.path)
			continue
		}
		if n.Attr.Nlink != tt.nlink {
			t.Errorf("%s: Nlink = %d, want %d", tt.path, n.Attr.Nlink, tt.nlink)
		}
	}
}

func TestWriteV1Stats(t *testing.T) {
	root := buildFixture(t)
	clip := filepath.Join(t.TempDir(), "x.clip")
	st := writeArchive(t, root, clip, testTrailer())
	if d := cmp.Diff(fixtureStats(), st); d != "" {
		t.Errorf("WriteV1() stats (-want +got):\n%s", d)
	}
}

func TestSummarize(t *testing.T) {
	_, clip := fixtureArchive(t)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	fi, err := os.Stat(clip)
	if err != nil {
		t.Fatal(err)
	}
	tr := testTrailer()
	want := archive.Summary{
		Path:           clip,
		Version:        1,
		ArchiveBytes:   fi.Size(),
		Image:          "localhost/fixture:latest",
		ManifestDigest: tr.ManifestDigest,
		Layers: []archive.LayerSummary{{
			Digest:    "sha256:1111111111111111111111111111111111111111111111111111111111111111",
			MediaType: "application/vnd.oci.image.layer.v1.tar",
			Size:      4242,
		}},
		Config: &archive.ImageConfig{
			Env:          tr.Image.Env,
			Cmd:          tr.Image.Cmd,
			Entrypoint:   tr.Image.Entrypoint,
			WorkingDir:   "/work",
			User:         "1000:1000",
			Architecture: "amd64",
			OS:           "linux",
		},
		Counts: fixtureStats(),
		Labels: map[string]string{"org.example": "yes"},
	}
	if d := cmp.Diff(want, archive.Summarize(a)); d != "" {
		t.Errorf("Summarize() (-want +got):\n%s", d)
	}
}

func TestSummarizeManifestDigestFallsBackToImageDigest(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := archive.Trailer{Image: &common.ImageMetadata{Name: "localhost/x:latest", Digest: "sha256:3333"}}
	clip := filepath.Join(t.TempDir(), "x.clip")
	writeArchive(t, root, clip, tr)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	s := archive.Summarize(a)
	if s.ManifestDigest != "sha256:3333" {
		t.Errorf("Summarize().ManifestDigest = %q, want %q", s.ManifestDigest, "sha256:3333")
	}
	if s.Layers == nil || len(s.Layers) != 0 {
		t.Errorf("Summarize().Layers = %#v, want empty non-nil", s.Layers)
	}
}

func TestTrailerRoundTrip(t *testing.T) {
	_, clip := fixtureArchive(t)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	if len(a.Trailer.MetadataSHA256) != 64 {
		t.Errorf("Open().Trailer.MetadataSHA256 = %q, want 64 hex digits", a.Trailer.MetadataSHA256)
	}
	if d := cmp.Diff(testTrailer(), a.Trailer, cmpopts.IgnoreFields(archive.Trailer{}, "MetadataSHA256")); d != "" {
		t.Errorf("Open().Trailer (-want +got):\n%s", d)
	}
	if got, want := a.Image().Name, "localhost/fixture:latest"; got != want {
		t.Errorf("Image().Name = %q, want %q", got, want)
	}
	if got := a.Version(); got != 1 {
		t.Errorf("Version() = %d, want 1", got)
	}
}

func TestWriteV1EmptyTrailer(t *testing.T) {
	root := t.TempDir()
	clip := filepath.Join(t.TempDir(), "x.clip")
	writeArchive(t, root, clip, archive.Trailer{})
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	if a.Image() != nil {
		t.Errorf("Image() = %+v, want nil", a.Image())
	}
	if got := len(a.Nodes()); got != 1 {
		t.Errorf("len(Nodes()) = %d, want 1 (the root)", got)
	}
}

func TestWriteV1Cancelled(t *testing.T) {
	root := buildFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(t.TempDir(), "x.clip")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := archive.WriteV1(ctx, root, f, archive.Trailer{}); !errors.Is(err, context.Canceled) {
		t.Errorf("WriteV1(cancelled) = %v, want context.Canceled", err)
	}
}

func TestWriteV1MissingRoot(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.clip")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := archive.WriteV1(context.Background(), missing, f, archive.Trailer{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WriteV1(missing root) = %v, want an error wrapping os.ErrNotExist", err)
	}
}

// TestWriteV1OwnersAndDevices needs root: it gives files to other users and
// makes device nodes.
func TestWriteV1OwnersAndDevices(t *testing.T) {
	requireRoot(t)
	b := treeBuilder{t: t, root: t.TempDir()}
	b.chmod("/", 0o755)
	b.file("/owned", []byte("mine\n"), 0o640)
	if err := os.Lchown(b.path("/owned"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	b.symlink("owned", "/owned-link")
	if err := os.Lchown(b.path("/owned-link"), 4321, 8765); err != nil {
		t.Fatal(err)
	}
	null := uint64(1<<8 | 3) // char 1:3, like /dev/null
	if err := syscall.Mknod(b.path("/null"), syscall.S_IFCHR|0o666, int(null)); err != nil {
		t.Fatal(err)
	}
	b.chmod("/null", 0o666)
	loop := uint64(7<<8 | 0) // block 7:0
	if err := syscall.Mknod(b.path("/loop0"), syscall.S_IFBLK|0o660, int(loop)); err != nil {
		t.Fatal(err)
	}
	b.chmod("/loop0", 0o660)

	clip := filepath.Join(t.TempDir(), "x.clip")
	st := writeArchive(t, b.root, clip, archive.Trailer{})
	if st.Special != 2 {
		t.Errorf("WriteV1() Special = %d, want 2", st.Special)
	}
	want, err := archive.TreeFromDir(context.Background(), b.root)
	if err != nil {
		t.Fatal(err)
	}
	_, got := openTree(t, clip)
	if d := archive.Diff(want, got); len(d) != 0 {
		t.Errorf("Diff(source, archive) = %q, want none", d)
	}
	checks := []struct {
		path     string
		typ      string
		uid, gid uint32
		rdev     uint64
	}{
		{"/owned", "file", 1234, 5678, 0},
		{"/owned-link", "symlink", 4321, 8765, 0},
		{"/null", "char", 0, 0, null},
		{"/loop0", "block", 0, 0, loop},
	}
	for _, c := range checks {
		e := got[c.path]
		if e.Type != c.typ || e.UID != c.uid || e.GID != c.gid || e.Rdev != c.rdev {
			t.Errorf("%s = {Type:%s UID:%d GID:%d Rdev:%d}, want {Type:%s UID:%d GID:%d Rdev:%d}",
				c.path, e.Type, e.UID, e.GID, e.Rdev, c.typ, c.uid, c.gid, c.rdev)
		}
	}
}

// TestWriteV1UnreadableFile archives a file nobody may read (mode 0000, as
// /etc/shadow is in some images). A rootless run unpacks such a file as the
// user's own, and must still be able to archive it. Root reads any file, so
// as root the test runs itself again as an unprivileged user.
func TestWriteV1UnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		runUnprivileged(t, "TestWriteV1UnreadableFile")
		return
	}
	b := treeBuilder{t: t, root: t.TempDir()}
	b.chmod("/", 0o755)
	b.file("/shadow", noPermData, 0o000)
	clip := filepath.Join(t.TempDir(), "x.clip")
	err := archive.WriteFileAtomic(clip, func(f *os.File) error {
		_, err := archive.WriteV1(context.Background(), b.root, f, archive.Trailer{})
		return err
	})
	if err != nil {
		t.Fatalf("WriteV1() = %v, want nil (as uid %d)", err, os.Geteuid())
	}
	_, tree := openTree(t, clip)
	want := archive.Entry{Type: "file", Perm: 0, UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()),
		Size: int64(len(noPermData)), Digest: sha(noPermData), Nlink: 1}
	if d := cmp.Diff(want, tree["/shadow"]); d != "" {
		t.Errorf("/shadow (-want +got):\n%s", d)
	}
}

// TestTreeFromArchiveChecksContentHash: a file whose data does not read as
// the content hash the archive records is an ErrCorrupt naming the file,
// not a tree (verify then fails rather than comparing wrong bytes).
func TestTreeFromArchiveChecksContentHash(t *testing.T) {
	_, clip := fixtureArchive(t)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	n := nodesByPath(a)[pathSmall]
	if n == nil || n.ContentHash != sha(smallData)[len("sha256:"):] {
		t.Fatalf("%s: ContentHash = %v, want the sha256 of its data", pathSmall, n)
	}
	n.ContentHash = sha([]byte("other"))[len("sha256:"):]
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatalf("OpenStorage() = %v", err)
	}
	defer s.Cleanup()
	_, err = archive.TreeFromArchive(context.Background(), a, s)
	if !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), pathSmall) {
		t.Errorf("TreeFromArchive() with a wrong content hash = %v, want ErrCorrupt naming %s", err, pathSmall)
	}
}
