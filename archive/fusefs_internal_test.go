package archive

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"
)

// lookupFS answers every lookup with status, the way go-fuse's bridge
// answers a name that is not in the tree (ENOENT) or one that is (OK).
type lookupFS struct {
	fuse.RawFileSystem
	status fuse.Status
}

func (l lookupFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if l.status.Ok() {
		out.NodeId, out.Ino = 42, 7
	}
	return l.status
}

func (l lookupFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	out.Fh = 3
	return l.status
}

// TestKernelCacheNegativeLookups checks that a missing name is answered as
// a cacheable negative entry (node 0 with a timeout), which the kernel
// keeps, rather than ENOENT, which it does not.
func TestKernelCacheNegativeLookups(t *testing.T) {
	k := &kernelCache{RawFileSystem: lookupFS{fuse.NewDefaultRawFileSystem(), fuse.ENOENT}}
	var out fuse.EntryOut
	out.NodeId = 99
	if st := k.Lookup(nil, &fuse.InHeader{}, "missing", &out); st != fuse.OK {
		t.Fatalf("Lookup(missing) = %v, want OK (a negative entry)", st)
	}
	if out.NodeId != 0 || out.EntryTimeout() != cacheTimeout {
		t.Errorf("Lookup(missing) = node %d, entry timeout %v, want node 0 for %v", out.NodeId, out.EntryTimeout(), cacheTimeout)
	}

	k = &kernelCache{RawFileSystem: lookupFS{fuse.NewDefaultRawFileSystem(), fuse.OK}}
	out = fuse.EntryOut{}
	if st := k.Lookup(nil, &fuse.InHeader{}, "present", &out); st != fuse.OK || out.NodeId != 42 || out.Ino != 7 {
		t.Errorf("Lookup(present) = %v, node %d, ino %d, want OK, 42, 7 as the bridge answered", st, out.NodeId, out.Ino)
	}
}

func TestKernelCacheKeepsDirectoryListings(t *testing.T) {
	k := &kernelCache{RawFileSystem: lookupFS{fuse.NewDefaultRawFileSystem(), fuse.OK}}
	var out fuse.OpenOut
	if st := k.OpenDir(nil, &fuse.OpenIn{}, &out); st != fuse.OK {
		t.Fatalf("OpenDir() = %v", st)
	}
	if want := uint32(fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR); out.OpenFlags != want || out.Fh != 3 {
		t.Errorf("OpenDir() flags %#x, handle %d, want %#x and the bridge's handle 3", out.OpenFlags, out.Fh, want)
	}
}

// memArchive makes an archive in memory from nodes.
func memArchive(nodes ...*common.ClipNode) *Archive {
	index := newIndex()
	for _, n := range nodes {
		index.Set(n)
	}
	return &Archive{Metadata: &common.ClipArchiveMetadata{Index: index}}
}

func dirNode(p string, ino uint64) *common.ClipNode {
	return &common.ClipNode{Path: p, NodeType: common.DirNode, Attr: fuse.Attr{Ino: ino, Mode: syscall.S_IFDIR | 0o755}}
}

func fileNode(p string, ino uint64) *common.ClipNode {
	return &common.ClipNode{Path: p, NodeType: common.FileNode, Attr: fuse.Attr{Ino: ino, Mode: syscall.S_IFREG | 0o644, Nlink: 1}}
}

// TestNewArchiveFSTree checks the tree built at mount: children sorted by
// name, "." and ".." first, every name of a hard-linked inode the same node,
// and files that only share a number across types kept apart.
func TestNewArchiveFSTree(t *testing.T) {
	link := &common.ClipNode{Path: "/d/sym", NodeType: common.SymLinkNode, Target: "x", Attr: fuse.Attr{Ino: 5, Mode: syscall.S_IFLNK | 0o777}}
	a := memArchive(dirNode("/", 1), dirNode("/d", 2), fileNode("/d/x", 5), fileNode("/d/a", 6), link,
		fileNode("/y", 5), fileNode("/b", 7), dirNode("/d/e", 2))
	a.Trailer.Xattrs = map[uint64]map[string][]byte{5: {"user.b": []byte("1"), "user.a": []byte("22")}}
	afs, err := newArchiveFS(a, nil)
	if err != nil {
		t.Fatalf("newArchiveFS() = %v", err)
	}
	names := func(n *fsNode) []string {
		var out []string
		for _, e := range n.entries {
			out = append(out, e.Name)
		}
		return out
	}
	if got, want := names(afs.root), []string{".", "..", "b", "d", "y"}; !cmp.Equal(got, want) {
		t.Errorf("entries of / = %q, want %q", got, want)
	}
	child := func(d *fsNode, name string) *fsNode {
		for _, c := range d.children {
			if c.name == name {
				return c.node
			}
		}
		t.Fatalf("no %s in %s", name, d.clip.Path)
		return nil
	}
	d := child(afs.root, "d")
	if got, want := names(d), []string{".", "..", "a", "e", "sym", "x"}; !cmp.Equal(got, want) {
		t.Errorf("entries of /d = %q, want %q", got, want)
	}
	if x, y := child(d, "x"), child(afs.root, "y"); x != y {
		t.Errorf("/d/x and /y (inode 5) are two nodes, want one")
	}
	if sym := child(d, "sym"); sym == child(d, "x") || string(sym.target) != "x" {
		t.Errorf("/d/sym shares the node of file inode 5 or lost its target %q", sym.target)
	}
	if e := child(d, "e"); e.attr.Ino != 0 {
		t.Errorf("/d/e reuses directory inode 2 of /d: ino %d, want 0 (one picked by go-fuse)", e.attr.Ino)
	}
	if got := string(child(d, "x").xattrList); got != "user.a\x00user.b\x00" {
		t.Errorf("xattr list of inode 5 = %q, want sorted and NUL-terminated", got)
	}
	if afs.files != 7 { // the three names of inode 5 are two inodes: a file and a symlink
		t.Errorf("statfs files = %d, want 7", afs.files)
	}
}

func TestNewArchiveFSCorrupt(t *testing.T) {
	for name, a := range map[string]*Archive{
		"orphan":      memArchive(dirNode("/", 1), fileNode("/no/such/dir", 2)),
		"no root":     memArchive(fileNode("/x", 2)),
		"file root":   memArchive(fileNode("/", 1)),
		"file parent": memArchive(dirNode("/", 1), fileNode("/f", 2), fileNode("/f/g", 3)),
	} {
		if _, err := newArchiveFS(a, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("newArchiveFS(%s) = %v, want ErrCorrupt", name, err)
		}
	}
}

// Both storages serve their bytes from files, so mounts splice them.
var (
	_ fileRanger = (*localStorage)(nil)
	_ fileRanger = (*remoteStorage)(nil)
)

// TestSpliceFits checks which reads go to go-fuse as spliceable: those
// whose pipe holds the header's page and every page the bytes touch.
func TestSpliceFits(t *testing.T) {
	page := os.Getpagesize()
	for _, tc := range []struct {
		name string
		pos  int64
		size int
		want bool
	}{
		{"empty", 0, 0, false},
		{"one byte", 5, 1, true},
		{"one aligned page", int64(page), page, true},
		{"three pages less 20, aligned", 0, 3*page - 20, true},
		// 16+3p-20+p bytes round up to 4 pages: the header and 4 touched
		// pages do not fit.
		{"three pages less 20, touching four", 100, 3*page - 20, false},
		{"three pages less 20, touching four at the end", int64(page) - 1, 3*page - 20, false},
		{"three pages, unaligned: 8 pages of pipe", 100, 3 * page, true},
		// Whenever the largest read fits the pipe limit at all, it fits
		// touching one page more than its own.
		{"the largest read, unaligned", 100, spliceMaxRead(), spliceMaxRead()+spliceHeader+page <= splice.MaxPipeSize()},
		{"the pipe size", 0, splice.MaxPipeSize(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := spliceFits(tc.pos, tc.size); got != tc.want {
				t.Errorf("spliceFits(%d, %d) = %v, want %v", tc.pos, tc.size, got, tc.want)
			}
		})
	}
}

func TestSpliceMaxRead(t *testing.T) {
	got := spliceMaxRead()
	page := os.Getpagesize()
	if got%page != 0 || got < 128<<10 || got > fuse.MAX_KERNEL_WRITE {
		t.Fatalf("spliceMaxRead() = %d, want a multiple of %d between 128 KiB and %d", got, page, fuse.MAX_KERNEL_WRITE)
	}
	if splice.Resizable() && splice.MaxPipeSize() <= fuse.MAX_KERNEL_WRITE {
		if want := (splice.MaxPipeSize() - spliceHeader - page) / page * page; got != want {
			t.Errorf("spliceMaxRead() = %d, want %d: the pipe limit %d less the header and a page", got, want, splice.MaxPipeSize())
		}
	}
}
