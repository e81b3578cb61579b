package archive_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/clipbuild/clipbuild/archive"
)

// Paths of the tree the mount tests archive.
const (
	fuseNested  = "/a/b/c/deep.txt"
	fuseNoPerm  = "/noperm"
	fuseSetuid  = "/bin/su"
	fuseSetgid  = "/bin/sg"
	fuseCaps    = "/bin/ping"
	fuseSticky  = "/tmp"
	fuseFIFO    = "/fifo"
	fuseChar    = "/null"
	fuseBlock   = "/loop0"
	fuseSymlink = "/link"
	fuseHL1     = "/hl/one"
	fuseHL2     = "/hl/two"
	fuseBig     = "/big.bin"
	fuseOwned   = "/owned"
)

// capNetRaw is a revision 2 security.capability value: cap_net_raw+ep.
var capNetRaw = []byte{
	0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	0x00, 0x20, 0x00, 0x00, // permitted[0]: 1 << CAP_NET_RAW
	0x00, 0x00, 0x00, 0x00, // inheritable[0]
	0x00, 0x00, 0x00, 0x00, // permitted[1]
	0x00, 0x00, 0x00, 0x00, // inheritable[1]
}

// fuseXattrs are the extended attributes of the tree, by path.
var fuseXattrs = map[string]map[string][]byte{
	fuseCaps: {"security.capability": capNetRaw, "user.a": []byte("alpha")},
	fuseHL1:  {"user.hl": []byte("shared by both names")},
}

// fuseTime is the modification time of fuseNested.
var fuseTime = time.Date(2021, 3, 4, 5, 6, 7, 890123456, time.UTC)

// buildFuseTree makes the tree the mount tests archive, every kind of entry
// the mount must serve exactly, and returns its root.
func buildFuseTree(t *testing.T) string {
	t.Helper()
	b := treeBuilder{t: t, root: filepath.Join(t.TempDir(), "rootfs")}
	b.dir("/", 0o755)
	b.dir("/a/b/c", 0o755)
	b.file(fuseNested, []byte("deep\n"), 0o644)
	b.file(fuseNoPerm, []byte("nobody may read this\n"), 0o000)
	b.dir("/bin", 0o755)
	b.file(fuseSetuid, []byte("#!/bin/sh\n"), 0o4755)
	b.file(fuseSetgid, []byte("#!/bin/sh\n"), 0o2711)
	b.file(fuseCaps, []byte("ping\n"), 0o755)
	b.dir(fuseSticky, 0o1777)
	b.fifo(fuseFIFO, 0o620)
	for _, d := range []struct {
		path string
		mode uint32
		dev  uint64
	}{
		{fuseChar, syscall.S_IFCHR | 0o666, unix.Mkdev(1, 3)},
		{fuseBlock, syscall.S_IFBLK | 0o660, unix.Mkdev(7, 0)},
	} {
		if err := unix.Mknod(b.path(d.path), d.mode, int(d.dev)); err != nil {
			t.Fatalf("mknod %s: %v", d.path, err)
		}
		b.chmod(d.path, d.mode&07777)
	}
	b.symlink("a/b/c/deep.txt", fuseSymlink)
	b.dir("/hl", 0o755)
	b.file(fuseHL1, linkData, 0o640)
	b.link(fuseHL1, fuseHL2)
	b.file(fuseBig, fixtureBytes(bigSize, 7), 0o644)
	b.file(fuseOwned, []byte("owned\n"), 0o600)
	if err := os.Lchown(b.path(fuseOwned), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	for p, x := range fuseXattrs {
		for k, v := range x {
			if err := unix.Lsetxattr(b.path(p), k, v, 0); err != nil {
				t.Fatalf("setting %s on %s: %v", k, p, err)
			}
		}
	}
	if err := os.Chtimes(b.path(fuseNested), fuseTime, fuseTime); err != nil {
		t.Fatal(err)
	}
	return b.root
}

// writeFuseArchive archives root as v1 with the tree's extended attributes
// in the trailer. Inode numbers are known only once written, so the archive
// is written twice; the writer numbers inodes in walk order, so both agree.
func writeFuseArchive(t *testing.T, root string) *archive.Archive {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fuse.clip")
	writeArchive(t, root, out, testTrailer())
	a, err := archive.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	tr := testTrailer()
	tr.Xattrs = map[uint64]map[string][]byte{}
	for p, x := range fuseXattrs {
		tr.Xattrs[a.Metadata.Get(p).Attr.Ino] = x
	}
	writeArchive(t, root, out, tr)
	if a, err = archive.Open(out); err != nil {
		t.Fatal(err)
	}
	for p, x := range fuseXattrs {
		if got := a.XattrsOf(a.Metadata.Get(p).Attr.Ino); !cmp.Equal(got, x) {
			t.Fatalf("XattrsOf(%s) = %q, want %q", p, got, x)
		}
	}
	return a
}

// countingStorage counts the reads that reach the storage.
type countingStorage struct {
	archive.Storage
	reads   atomic.Int64
	maxRead atomic.Int64
}

func (c *countingStorage) ReadFile(n *common.ClipNode, dest []byte, off int64) (int, error) {
	c.reads.Add(1)
	for {
		m := c.maxRead.Load()
		if int64(len(dest)) <= m || c.maxRead.CompareAndSwap(m, int64(len(dest))) {
			break
		}
	}
	return c.Storage.ReadFile(n, dest, off)
}

// mountFuse mounts a over s with MountArchive until the test ends.
func mountFuse(t *testing.T, a *archive.Archive, s archive.Storage) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := archive.MountArchive(a, s, mnt)
	if err != nil {
		t.Fatalf("MountArchive() = %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount() = %v", err)
		}
	})
	return mnt
}

// fuseFixture builds, archives and mounts the tree, and returns the source
// root, the archive, the mount point and the storage's read counter.
func fuseFixture(t *testing.T) (src string, a *archive.Archive, mnt string, cs *countingStorage) {
	t.Helper()
	requireRoot(t)
	src = buildFuseTree(t)
	a = writeFuseArchive(t, src)
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatal(err)
	}
	cs = &countingStorage{Storage: s}
	return src, a, mountFuse(t, a, cs), cs
}

func TestFuseMountMatchesSource(t *testing.T) {
	src, _, mnt, _ := fuseFixture(t)
	want, err := archive.TreeFromDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := archive.TreeFromDir(context.Background(), mnt)
	if err != nil {
		t.Fatalf("TreeFromDir(mount) = %v", err)
	}
	if d := archive.Diff(want, got); len(d) != 0 {
		t.Errorf("Diff(source, mount) = %q, want none", d)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("mount differs from source (-source +mount):\n%s", d)
	}
}

func TestFuseMountAttrs(t *testing.T) {
	src, a, mnt, _ := fuseFixture(t)
	tests := []struct {
		path           string
		mode           uint32
		uid, gid       uint32
		nlink          uint64
		rdev           uint64
		size           int64
		sameAsInSource bool // compare the times with the source's
	}{
		{path: "/", mode: syscall.S_IFDIR | 0o755, nlink: 2 + 4}, // a, bin, hl, tmp
		{path: "/a/b/c", mode: syscall.S_IFDIR | 0o755, nlink: 2},
		{path: fuseNested, mode: syscall.S_IFREG | 0o644, nlink: 1, size: 5, sameAsInSource: true},
		{path: fuseNoPerm, mode: syscall.S_IFREG, nlink: 1, size: 21},
		{path: fuseSetuid, mode: syscall.S_IFREG | 0o4755, nlink: 1, size: 10},
		{path: fuseSetgid, mode: syscall.S_IFREG | 0o2711, nlink: 1, size: 10},
		{path: fuseSticky, mode: syscall.S_IFDIR | 0o1777, nlink: 2},
		{path: fuseFIFO, mode: syscall.S_IFIFO | 0o620, nlink: 1},
		{path: fuseChar, mode: syscall.S_IFCHR | 0o666, nlink: 1, rdev: unix.Mkdev(1, 3)},
		{path: fuseBlock, mode: syscall.S_IFBLK | 0o660, nlink: 1, rdev: unix.Mkdev(7, 0)},
		{path: fuseSymlink, mode: syscall.S_IFLNK | 0o777, nlink: 1, size: int64(len("a/b/c/deep.txt"))},
		{path: fuseHL1, mode: syscall.S_IFREG | 0o640, nlink: 2, size: int64(len(linkData))},
		{path: fuseHL2, mode: syscall.S_IFREG | 0o640, nlink: 2, size: int64(len(linkData))},
		{path: fuseBig, mode: syscall.S_IFREG | 0o644, nlink: 1, size: bigSize},
		{path: fuseOwned, mode: syscall.S_IFREG | 0o600, uid: 1234, gid: 5678, nlink: 1, size: 6},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, tc.path), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode != tc.mode {
				t.Errorf("mode = %#o, want %#o", st.Mode, tc.mode)
			}
			if st.Uid != tc.uid || st.Gid != tc.gid {
				t.Errorf("owner = %d:%d, want %d:%d", st.Uid, st.Gid, tc.uid, tc.gid)
			}
			if uint64(st.Nlink) != tc.nlink {
				t.Errorf("nlink = %d, want %d", st.Nlink, tc.nlink)
			}
			if st.Rdev != tc.rdev {
				t.Errorf("rdev = %#x, want %#x", st.Rdev, tc.rdev)
			}
			var sst unix.Stat_t
			if err := unix.Lstat(filepath.Join(src, tc.path), &sst); err != nil {
				t.Fatal(err)
			}
			if tc.mode&syscall.S_IFMT == syscall.S_IFDIR {
				tc.size = sst.Size // as recorded
			}
			if st.Size != tc.size {
				t.Errorf("size = %d, want %d", st.Size, tc.size)
			}
			if want := a.Metadata.Get(tc.path).Attr.Ino; st.Ino != want {
				t.Errorf("ino = %d, want the archive's %d", st.Ino, want)
			}
			if tc.sameAsInSource {
				if got, want := time.Unix(st.Mtim.Unix()), fuseTime; !got.Equal(want) {
					t.Errorf("mtime = %v, want %v", got, want)
				}
				// The archive records the modification time as all three.
				if st.Ctim != sst.Mtim || st.Atim != sst.Mtim {
					t.Errorf("ctime, atime = %v, %v, want the source's mtime %v", st.Ctim, st.Atim, sst.Mtim)
				}
			}
		})
	}
}

func TestFuseMountHardLinksShareOneInode(t *testing.T) {
	_, _, mnt, _ := fuseFixture(t)
	var one, two, other unix.Stat_t
	for p, st := range map[string]*unix.Stat_t{fuseHL1: &one, fuseHL2: &two, fuseNested: &other} {
		if err := unix.Lstat(filepath.Join(mnt, p), st); err != nil {
			t.Fatal(err)
		}
	}
	if one.Ino != two.Ino || one.Dev != two.Dev {
		t.Errorf("%s and %s: inodes %d and %d, want one", fuseHL1, fuseHL2, one.Ino, two.Ino)
	}
	if one.Nlink != 2 {
		t.Errorf("nlink of %s = %d, want 2", fuseHL1, one.Nlink)
	}
	if other.Ino == one.Ino {
		t.Errorf("%s shares inode %d with the hard links", fuseNested, one.Ino)
	}
	// One inode to the kernel: an extended attribute of the first name is
	// the second's.
	if got, err := getxattr(filepath.Join(mnt, fuseHL2), "user.hl"); err != nil || string(got) != "shared by both names" {
		t.Errorf("user.hl of %s = %q, %v, want %q", fuseHL2, got, err, "shared by both names")
	}
}

// getxattr reads an attribute with a buffer of its exact size.
func getxattr(p, name string) ([]byte, error) {
	n, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	n, err = unix.Lgetxattr(p, name, buf)
	return buf[:n], err
}

func TestFuseMountXattrs(t *testing.T) {
	_, _, mnt, _ := fuseFixture(t)
	caps := filepath.Join(mnt, fuseCaps)
	for _, tc := range []struct {
		path, name string
		want       []byte
	}{
		{caps, "security.capability", capNetRaw},
		{caps, "user.a", []byte("alpha")},
		{filepath.Join(mnt, fuseHL1), "user.hl", []byte("shared by both names")},
	} {
		if n, err := unix.Lgetxattr(tc.path, tc.name, nil); err != nil || n != len(tc.want) {
			t.Errorf("Lgetxattr(%s, %s, nil) = %d, %v, want the size %d", tc.path, tc.name, n, err, len(tc.want))
		}
		got, err := getxattr(tc.path, tc.name)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("Lgetxattr(%s, %s) = %q, %v, want %q", tc.path, tc.name, got, err, tc.want)
		}
		if _, err := unix.Lgetxattr(tc.path, tc.name, make([]byte, len(tc.want)-1)); !errors.Is(err, unix.ERANGE) {
			t.Errorf("Lgetxattr(%s, %s) into %d bytes = %v, want ERANGE", tc.path, tc.name, len(tc.want)-1, err)
		}
	}
	for _, tc := range []struct{ path, name string }{
		{caps, "user.missing"},
		{caps, "security.selinux"},
		{caps, "system.posix_acl_access"},
		{filepath.Join(mnt, fuseNested), "security.capability"},
		{filepath.Join(mnt, fuseNested), "user.a"},
		{mnt, "security.selinux"},
	} {
		if _, err := unix.Lgetxattr(tc.path, tc.name, make([]byte, 64)); !errors.Is(err, unix.ENODATA) {
			t.Errorf("Lgetxattr(%s, %s) = %v, want ENODATA", tc.path, tc.name, err)
		}
	}

	wantList := "security.capability\x00user.a\x00"
	if n, err := unix.Llistxattr(caps, nil); err != nil || n != len(wantList) {
		t.Errorf("Llistxattr(%s, nil) = %d, %v, want the size %d", caps, n, err, len(wantList))
	}
	buf := make([]byte, 256)
	n, err := unix.Llistxattr(caps, buf)
	if err != nil || string(buf[:n]) != wantList {
		t.Errorf("Llistxattr(%s) = %q, %v, want %q", caps, buf[:n], err, wantList)
	}
	if _, err := unix.Llistxattr(caps, make([]byte, len(wantList)-1)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("Llistxattr(%s) into %d bytes = %v, want ERANGE", caps, len(wantList)-1, err)
	}
	if n, err := unix.Llistxattr(filepath.Join(mnt, fuseNested), buf); err != nil || n != 0 {
		t.Errorf("Llistxattr(%s) = %q, %v, want none", fuseNested, buf[:n], err)
	}
}

func TestFuseMountReads(t *testing.T) {
	src, _, mnt, _ := fuseFixture(t)
	big := fixtureBytes(bigSize, 7)
	f, err := os.Open(filepath.Join(mnt, fuseBig))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		off  int64
		size int
	}{
		{0, 100},
		{1<<20 - 7, 4096},
		{2<<20 + 3, 1 << 20},
		{bigSize - 100, 100},
		{bigSize - 10, 100}, // short read at the end
		{bigSize, 10},       // at the end
		{bigSize + 4096, 10},
	} {
		buf := make([]byte, tc.size)
		n, err := f.ReadAt(buf, tc.off)
		want := []byte{}
		if tc.off < bigSize {
			want = big[tc.off:min(tc.off+int64(tc.size), bigSize)]
		}
		if err != nil && err != io.EOF {
			t.Errorf("ReadAt(%d bytes at %d) = %v", tc.size, tc.off, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Errorf("ReadAt(%d bytes at %d) read %d bytes, want %d bytes of the file", tc.size, tc.off, n, len(want))
		}
	}
	for _, p := range []string{fuseNoPerm, fuseNested, fuseHL2} {
		got, err := os.ReadFile(filepath.Join(mnt, p))
		want, _ := os.ReadFile(filepath.Join(src, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadFile(%s) = %q, %v, want %q", p, got, err, want)
		}
	}
	if got, err := os.Readlink(filepath.Join(mnt, fuseSymlink)); err != nil || got != "a/b/c/deep.txt" {
		t.Errorf("Readlink(%s) = %q, %v, want %q", fuseSymlink, got, err, "a/b/c/deep.txt")
	}
}

// TestFuseMountSplicedReads reads files of sizes around page multiples, at
// every alignment the archive gives them, through a mount of the archive's
// own storage, which splices whatever fits a pipe: every byte must be the
// file's, and go-fuse must never have had to give up a splice (it logs
// that, then copies).
func TestFuseMountSplicedReads(t *testing.T) {
	requireRoot(t)
	var logged bytes.Buffer
	log.SetOutput(&logged)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	page := os.Getpagesize()
	b := treeBuilder{t: t, root: filepath.Join(t.TempDir(), "rootfs")}
	b.dir("/", 0o755)
	files := map[string][]byte{}
	seed := byte(0)
	for _, pages := range []int{1, 3, 4, 7, 8, 31, 32, 254, 255, 256, 300} {
		for _, extra := range []int{-20, -1, 0, 1, 100} {
			seed++
			p := fmt.Sprintf("/f%d%+d", pages, extra)
			files[p] = fixtureBytes(pages*page+extra, seed)
			b.file(p, files[p], 0o644)
		}
	}
	out := filepath.Join(t.TempDir(), "splice.clip")
	writeArchive(t, b.root, out, testTrailer())
	a, err := archive.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountFuse(t, a, s)
	// Smallest first: go-fuse's pipes only grow, and a pipe grown by a
	// larger read would hide a small read that does not fit.
	names := slices.SortedFunc(maps.Keys(files), func(x, y string) int { return len(files[x]) - len(files[y]) })
	for _, p := range names {
		want := files[p]
		got, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadFile(%s) = %d bytes, %v; want its %d bytes", p, len(got), err, len(want))
		}
	}
	if logged.Len() > 0 {
		t.Errorf("go-fuse logged while serving reads:\n%s", logged.String())
	}
}

// TestFuseMountKeepsPageCache reads a file twice through two opens: the
// second must come from the kernel's page cache, never the storage.
func TestFuseMountKeepsPageCache(t *testing.T) {
	_, _, mnt, cs := fuseFixture(t)
	p := filepath.Join(mnt, fuseBig)
	want := fixtureBytes(bigSize, 7)
	readAll := func() {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got, err := io.ReadAll(bufio.NewReaderSize(f, 1<<20))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("reading %s: %d bytes, %v; want its %d bytes", p, len(got), err, len(want))
		}
	}
	readAll()
	first := cs.reads.Load()
	if first == 0 {
		t.Fatalf("reading %s made no storage reads", p)
	}
	readAll()
	if got := cs.reads.Load(); got != first {
		t.Errorf("storage reads after a second open and read = %d, want still %d (page cache kept)", got, first)
	}
	// Requests are larger than go-fuse's 64 KiB default and the kernel's
	// 128 KiB FUSE read-ahead (root raises it).
	if got := cs.maxRead.Load(); got <= 128<<10 {
		t.Errorf("largest read request = %d bytes, want more than 128 KiB", got)
	}
	t.Logf("%d storage reads for %d bytes, the largest %d bytes", first, bigSize, cs.maxRead.Load())
}

func TestFuseMountReaddir(t *testing.T) {
	src, _, mnt, _ := fuseFixture(t)
	for _, dir := range []string{"/", "/a", "/a/b/c", "/bin", "/hl", fuseSticky} {
		list := func(root string) []string {
			ents, err := os.ReadDir(filepath.Join(root, dir))
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, e := range ents {
				out = append(out, fmt.Sprintf("%s %v", e.Name(), e.Type()))
			}
			return out
		}
		got, want := list(mnt), list(src)
		if !cmp.Equal(got, want) {
			t.Errorf("ReadDir(%s) = %q, want %q", dir, got, want)
		}
		if !slices.IsSorted(got) {
			t.Errorf("ReadDir(%s) = %q, want sorted", dir, got)
		}
	}
	want := []string{"a", "big.bin", "bin", "fifo", "hl", "link", "loop0", "noperm", "null", "owned", "tmp"}
	f, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1) // in the order the filesystem gives
	if err != nil || !cmp.Equal(names, want) {
		t.Errorf("Readdirnames(/) = %q, %v, want %q", names, err, want)
	}
}

func TestFuseMountReadOnly(t *testing.T) {
	_, _, mnt, _ := fuseFixture(t)
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"create", func() error { return os.WriteFile(p("/new"), nil, 0o644) }},
		{"open for writing", func() error {
			f, err := os.OpenFile(p(fuseNested), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(p(fuseNested), 0) }},
		{"mkdir", func() error { return os.Mkdir(p("/newdir"), 0o755) }},
		{"remove", func() error { return os.Remove(p(fuseNested)) }},
		{"rmdir", func() error { return os.Remove(p("/a/b/c")) }},
		{"rename", func() error { return os.Rename(p(fuseNested), p("/moved")) }},
		{"symlink", func() error { return os.Symlink("x", p("/newlink")) }},
		{"link", func() error { return os.Link(p(fuseNested), p("/newhard")) }},
		{"mkfifo", func() error { return syscall.Mkfifo(p("/newfifo"), 0o644) }},
		{"chmod", func() error { return os.Chmod(p(fuseNested), 0o600) }},
		{"chown", func() error { return os.Lchown(p(fuseNested), 1, 1) }},
		{"utimes", func() error { return os.Chtimes(p(fuseNested), time.Now(), time.Now()) }},
		{"setxattr", func() error { return unix.Lsetxattr(p(fuseNested), "user.x", []byte("y"), 0) }},
		{"removexattr", func() error { return unix.Lremovexattr(p(fuseCaps), "user.a") }},
	} {
		if err := tc.op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s = %v, want EROFS", tc.name, err)
		}
	}
}

func TestFuseMountStatfsAndOptions(t *testing.T) {
	_, a, mnt, _ := fuseFixture(t)
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	const fuseSuperMagic = 0x65735546
	if st.Type != fuseSuperMagic {
		t.Errorf("statfs type = %#x, want FUSE's %#x", st.Type, fuseSuperMagic)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs flags = %#x, want ST_RDONLY", st.Flags)
	}
	// A container's rootfs: setuid bits and file capabilities must work.
	if st.Flags&unix.ST_NOSUID != 0 {
		t.Errorf("statfs flags = %#x, want no ST_NOSUID", st.Flags)
	}
	// Every path is an inode of its own but the two names of the hard link.
	if got, want := st.Files, uint64(len(a.Nodes())-1); got != want {
		t.Errorf("statfs files = %d, want the archive's %d inodes", got, want)
	}
	if st.Bsize != 4096 || st.Blocks*4096 < bigSize {
		t.Errorf("statfs = %d blocks of %d bytes, want the data (%d+ bytes) in 4 KiB blocks", st.Blocks, st.Bsize, bigSize)
	}
	opts := mountOptions(t, mnt)
	for _, o := range []string{"ro", "default_permissions", "allow_other"} {
		if !slices.Contains(opts, o) {
			t.Errorf("mount options %q lack %s", opts, o)
		}
	}
}

// mountOptions returns the options of the mount at dir, per-mount and
// per-superblock together, from /proc/self/mountinfo.
func mountOptions(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 10 || f[4] != dir {
			continue
		}
		opts := strings.Split(f[5], ",")
		return append(opts, strings.Split(f[len(f)-1], ",")...)
	}
	t.Fatalf("%s is not in /proc/self/mountinfo", dir)
	return nil
}

// blobs serves layer blobs from memory, as a registry would.
type blobs struct {
	layers map[string][]byte
	opens  atomic.Int64
}

func (b *blobs) Open(ctx context.Context, dg string) (io.ReadCloser, error) {
	b.opens.Add(1)
	l, ok := b.layers[dg]
	if !ok {
		return nil, fmt.Errorf("blob %s: not found", dg)
	}
	return io.NopCloser(bytes.NewReader(l)), nil
}

// layerTar makes an uncompressed layer from headers, each followed by its
// contents.
func layerTar(t *testing.T, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		f.hdr.Size = int64(len(f.data))
		f.hdr.ModTime = time.Unix(1700000000, 0)
		f.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(f.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type tarFile struct {
	hdr  *tar.Header
	data []byte
}

// TestFuseMountV2 mounts a metadata-only archive whose layers come from a
// fake registry: file data is read by layer offset, a hard link is one
// inode, extended attributes come from the trailer, a layer the registry
// cannot serve fails with EIO, and concurrent reads all see the right bytes.
func TestFuseMountV2(t *testing.T) {
	requireRoot(t)
	big := fixtureBytes(2<<20+77, 3)
	base := layerTar(t, []tarFile{
		{&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{&tar.Header{Name: "etc/a.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("alpha\n")},
		{&tar.Header{Name: "etc/b.txt", Typeflag: tar.TypeReg, Mode: 0o4750, Uid: 7, Gid: 8}, []byte("bravo bravo\n")},
		{&tar.Header{Name: "etc/b-link", Typeflag: tar.TypeLink, Linkname: "etc/b.txt", Mode: 0o4750, Uid: 7, Gid: 8}, nil},
		{&tar.Header{Name: "etc/rel", Typeflag: tar.TypeSymlink, Linkname: "a.txt", Mode: 0o777}, nil},
		{&tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o600}, nil},
		{&tar.Header{Name: "empty", Typeflag: tar.TypeReg, Mode: 0}, nil},
		{&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644}, big},
	})
	gone := layerTar(t, []tarFile{{&tar.Header{Name: "gone.txt", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("never served\n")}})
	baseDg, goneDg := digest.FromBytes(base).String(), digest.FromBytes(gone).String()
	ix := archive.NewIndexer()
	for _, l := range []struct {
		dg   string
		data []byte
	}{{baseDg, base}, {goneDg, gone}} {
		if err := ix.AddLayer(context.Background(), l.dg, bytes.NewReader(l.data)); err != nil {
			t.Fatalf("AddLayer() = %v", err)
		}
	}
	nodes := ix.Nodes()
	var inoA, inoB uint64
	for _, n := range nodes {
		switch n.Path {
		case "/etc/a.txt":
			inoA = n.Attr.Ino
		case "/etc/b.txt":
			inoB = n.Attr.Ino
		}
	}
	tr := archive.Trailer{Tool: "clipbuild", ImageRef: "127.0.0.1:5000/fuse/img@sha256:" + strings.Repeat("1", 64),
		Xattrs: map[uint64]map[string][]byte{inoA: {"user.mime": []byte("text/plain")}}}
	oci := &common.OCIStorageInfo{RegistryURL: "127.0.0.1:5000", Repository: "fuse/img", Reference: "1", Layers: []string{baseDg, goneDg},
		DecompressedHashByLayer: map[string]string{baseDg: digest.FromBytes(base).Encoded(), goneDg: digest.FromBytes(gone).Encoded()}}
	out := filepath.Join(t.TempDir(), "v2.clip")
	if err := archive.WriteFileAtomic(out, func(f *os.File) error { return archive.WriteV2(f, nodes, oci, tr) }); err != nil {
		t.Fatalf("WriteV2() = %v", err)
	}
	a, err := archive.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	reg := &blobs{layers: map[string][]byte{baseDg: base}}
	s, err := archive.OpenStorage(a, archive.WithBlobOpener(reg), archive.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountFuse(t, a, s)

	for p, want := range map[string]string{"/etc/a.txt": "alpha\n", "/etc/b.txt": "bravo bravo\n", "/etc/b-link": "bravo bravo\n", "/etc/rel": "alpha\n", "/empty": ""} {
		if got, err := os.ReadFile(filepath.Join(mnt, p)); err != nil || string(got) != want {
			t.Errorf("ReadFile(%s) = %q, %v, want %q", p, got, err, want)
		}
	}
	var b1, b2, fifo, empty unix.Stat_t
	for p, st := range map[string]*unix.Stat_t{"/etc/b.txt": &b1, "/etc/b-link": &b2, "/fifo": &fifo, "/empty": &empty} {
		if err := unix.Lstat(filepath.Join(mnt, p), st); err != nil {
			t.Fatal(err)
		}
	}
	if b1.Ino != inoB || b2.Ino != inoB || b1.Nlink != 2 {
		t.Errorf("hard links: inodes %d, %d with nlink %d, want %d twice with nlink 2", b1.Ino, b2.Ino, b1.Nlink, inoB)
	}
	if b1.Mode != syscall.S_IFREG|0o4750 || b1.Uid != 7 || b1.Gid != 8 {
		t.Errorf("/etc/b.txt: mode %#o owner %d:%d, want %#o 7:8", b1.Mode, b1.Uid, b1.Gid, syscall.S_IFREG|0o4750)
	}
	if fifo.Mode != syscall.S_IFIFO|0o600 || empty.Mode != syscall.S_IFREG {
		t.Errorf("modes of /fifo, /empty = %#o, %#o, want %#o, %#o", fifo.Mode, empty.Mode, syscall.S_IFIFO|0o600, syscall.S_IFREG)
	}
	if got, err := getxattr(filepath.Join(mnt, "/etc/a.txt"), "user.mime"); err != nil || string(got) != "text/plain" {
		t.Errorf("user.mime of /etc/a.txt = %q, %v, want %q", got, err, "text/plain")
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "gone.txt")); !errors.Is(err, syscall.EIO) {
		t.Errorf("reading a file of a layer the registry cannot serve = %v, want EIO", err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			f, err := os.Open(filepath.Join(mnt, "big"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			off := int64(i) * 131071
			buf := make([]byte, 200000)
			n, err := f.ReadAt(buf, off)
			if err != nil && err != io.EOF {
				errs <- err
				return
			}
			if want := big[off:min(off+int64(len(buf)), int64(len(big)))]; !bytes.Equal(buf[:n], want) {
				errs <- fmt.Errorf("read %d bytes at %d: not the file's", n, off)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent read of /big: %v", err)
	}
}

// TestClipMountArchiveReadsOurArchive mounts a v1 archive of ours with
// clip's own runtime (clip.MountArchive): every entry must be there with
// its type and contents. clip's filesystem does not keep our modes or
// xattrs (it shows mode 0000 as 0644 and has no xattrs), so those are not
// compared.
func TestClipMountArchiveReadsOurArchive(t *testing.T) {
	requireRoot(t)
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	archive.RouteClipLogs(l)
	src := buildFuseTree(t)
	a := writeFuseArchive(t, src)
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
	want, err := archive.TreeFromDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
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
		t.Errorf("clip's mount differs from the source in types or contents (-source +clip):\n%s", d)
	}
}
