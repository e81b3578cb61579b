package archive

import (
	"context"
	"os"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"
)

// cacheTimeout is how long the kernel may trust what the filesystem told
// it: entries, attributes and negative lookups. An archive never changes
// while it is mounted, so this is only bounded to keep the numbers sane.
const cacheTimeout = 24 * time.Hour

// spliceHeader is the size of the header of a reply to a read.
const spliceHeader = 16

// archiveFS is the read-only tree of one archive, built once at mount: one
// node per inode (hard links share theirs), children sorted by name, and
// file data read through a Storage. Nothing here changes after newArchiveFS
// returns but the prefill's marks (atomic), so every method may run
// concurrently without locks.
type archiveFS struct {
	storage Storage
	ranges  fileRanger // the storage, if its bytes lie in files
	root    *fsNode
	// files and blocks are what statfs reports: the number of inodes and
	// the data size in 4 KiB blocks.
	files, blocks uint64
}

// fsNode is one inode of the archive.
type fsNode struct {
	fs.Inode
	afs  *archiveFS
	clip *common.ClipNode // the first path of the inode, in path order
	attr fuse.Attr
	// xattrs are the inode's extended attributes, and xattrList their
	// names, sorted and NUL-terminated, as listxattr returns them.
	xattrs    map[string][]byte
	xattrList []byte
	// target is a symlink's target.
	target []byte
	// entries is a directory's listing, "." and ".." first.
	entries []fuse.DirEntry
	// children are a directory's entries, added to the go-fuse tree at
	// mount (OnAdd), sorted by name.
	children []fsChild

	// read is set once the kernel has asked to read the file, for the
	// prefill (prefill.go).
	read atomic.Bool
}

type fsChild struct {
	name string
	node *fsNode
}

// newArchiveFS builds the tree of a. Every non-directory path with the same
// inode number and file type is one inode, as the archive records hard
// links; a directory is always an inode of its own.
func newArchiveFS(a *Archive, s Storage) (*archiveFS, error) {
	afs := &archiveFS{storage: s}
	afs.ranges, _ = s.(fileRanger)
	type linkKey struct {
		ino  uint64
		kind uint32
	}
	links := map[linkKey]*fsNode{}
	dirs := map[string]*fsNode{}
	usedDirIno := map[uint64]bool{}
	var dataBytes uint64
	inodes := 0 // of other types than directories
	nodes := a.Nodes()
	for _, n := range nodes {
		kind := n.Attr.Mode & syscall.S_IFMT
		var node *fsNode
		if kind == syscall.S_IFDIR {
			node = afs.newNode(a, n)
			if usedDirIno[n.Attr.Ino] {
				// Two directories with one inode number cannot both be
				// served under it: go-fuse would take them for one.
				node.attr.Ino = 0
			}
			usedDirIno[n.Attr.Ino] = true
			dirs[n.Path] = node
		} else {
			key := linkKey{n.Attr.Ino, kind}
			node = links[key]
			if node == nil || n.Attr.Ino == 0 {
				node = afs.newNode(a, n)
				links[key] = node
				dataBytes += n.Attr.Size
				inodes++
			}
		}
		if n.Path == "/" {
			if kind != syscall.S_IFDIR {
				return nil, corrupt("the root is not a directory")
			}
			afs.root = node
			continue
		}
		parent := dirs[path.Dir(n.Path)]
		if parent == nil {
			return nil, corrupt("%s has no parent directory", n.Path)
		}
		parent.children = append(parent.children, fsChild{name: path.Base(n.Path), node: node})
	}
	if afs.root == nil {
		return nil, corrupt("no root directory")
	}
	for p, d := range dirs {
		slices.SortFunc(d.children, func(x, y fsChild) int { return strings.Compare(x.name, y.name) })
		parent := d
		if p != "/" {
			parent = dirs[path.Dir(p)]
		}
		d.entries = make([]fuse.DirEntry, 0, len(d.children)+2)
		d.entries = append(d.entries,
			fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.attr.Ino},
			fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parent.attr.Ino})
		for _, c := range d.children {
			d.entries = append(d.entries, fuse.DirEntry{Name: c.name, Mode: c.node.attr.Mode & syscall.S_IFMT, Ino: c.node.attr.Ino})
		}
	}
	afs.files = uint64(len(dirs) + inodes)
	afs.blocks = (dataBytes + 4095) / 4096
	return afs, nil
}

func (afs *archiveFS) newNode(a *Archive, n *common.ClipNode) *fsNode {
	node := &fsNode{afs: afs, clip: n, attr: n.Attr}
	// The recorded block count is kept: setting Blksize stops go-fuse from
	// recomputing Blocks from the size.
	node.attr.Blksize = 4096
	if node.attr.Blocks == 0 && node.attr.Size > 0 {
		node.attr.Blocks = (node.attr.Size + 511) / 512
	}
	if n.NodeType == common.SymLinkNode {
		node.target = []byte(n.Target)
	}
	if x := a.XattrsOf(n.Attr.Ino); len(x) > 0 && n.Attr.Ino != 0 {
		node.xattrs = x
		names := make([]string, 0, len(x))
		for k := range x {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			node.xattrList = append(append(node.xattrList, k...), 0)
		}
	}
	return node
}

// stable is the node's go-fuse identity: its file type and inode number
// (0 lets go-fuse pick a free one).
func (n *fsNode) stable() fs.StableAttr {
	return fs.StableAttr{Mode: n.attr.Mode & syscall.S_IFMT, Ino: n.attr.Ino}
}

// OnAdd links the whole tree under the root once the root is mounted.
// Inodes are persistent: the kernel forgetting one does not drop it, and a
// hard-linked inode is the same go-fuse Inode under each of its names.
func (n *fsNode) OnAdd(ctx context.Context) {
	if n != n.afs.root {
		return
	}
	var link func(d *fsNode)
	link = func(d *fsNode) {
		for _, c := range d.children {
			// For the second name of a hard link this returns the
			// Inode the first one made.
			ch := d.NewPersistentInode(ctx, c.node, c.node.stable())
			d.AddChild(c.name, ch, false)
			if c.node.entries != nil {
				link(c.node) // directories have one name each
			}
		}
	}
	link(n)
}

var (
	_ fs.NodeOnAdder        = (*fsNode)(nil)
	_ fs.NodeGetattrer      = (*fsNode)(nil)
	_ fs.NodeSetattrer      = (*fsNode)(nil)
	_ fs.NodeReaddirer      = (*fsNode)(nil)
	_ fs.NodeOpener         = (*fsNode)(nil)
	_ fs.NodeReader         = (*fsNode)(nil)
	_ fs.NodeReadlinker     = (*fsNode)(nil)
	_ fs.NodeGetxattrer     = (*fsNode)(nil)
	_ fs.NodeListxattrer    = (*fsNode)(nil)
	_ fs.NodeSetxattrer     = (*fsNode)(nil)
	_ fs.NodeRemovexattrer  = (*fsNode)(nil)
	_ fs.NodeStatfser       = (*fsNode)(nil)
	_ fs.NodeCreater        = (*fsNode)(nil)
	_ fs.NodeMkdirer        = (*fsNode)(nil)
	_ fs.NodeMknoder        = (*fsNode)(nil)
	_ fs.NodeLinker         = (*fsNode)(nil)
	_ fs.NodeSymlinker      = (*fsNode)(nil)
	_ fs.NodeUnlinker       = (*fsNode)(nil)
	_ fs.NodeRmdirer        = (*fsNode)(nil)
	_ fs.NodeRenamer        = (*fsNode)(nil)
	_ fs.NodeCopyFileRanger = (*fsNode)(nil)
)

// Getattr returns the attributes as recorded, full mode included (mode
// 0000 stays 0000: the bridge runs with NullPermissions).
func (n *fsNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Attr = n.attr
	return 0
}

// Readdir lists a directory from the listing made at mount.
func (n *fsNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if n.entries == nil {
		return nil, syscall.ENOTDIR
	}
	return fs.NewListDirStream(n.entries), 0
}

// Open allows reading only. The kernel may keep a file's pages across opens
// and need not flush on close: the data never changes. Kernels with
// zero-message opens never ask for reading (see kernelCache.Open).
func (n *fsNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

// Read reads straight from the storage, which clamps to the file's end.
// Bytes that lie in a file on disk are spliced from its page cache to the
// kernel when go-fuse can splice them whole (spliceFits).
func (n *fsNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.noteRead()
	if n.afs.ranges != nil {
		file, pos, size, err := n.afs.ranges.fileRange(n.clip, off, len(dest))
		if err != nil {
			return nil, syscall.EIO
		}
		if file != nil && size == 0 {
			return fuse.ReadResultData(nil), 0
		}
		if file != nil && spliceFits(pos, size) {
			return fuse.ReadResultFd(file.Fd(), pos, size), 0
		}
	}
	got, err := n.afs.storage.ReadFile(n.clip, dest, off)
	if err != nil {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// spliceFits reports whether go-fuse can splice the size bytes at pos of a
// file to the kernel in one go. It moves them through a pipe that it sizes
// to the reply header, the bytes and one page, which the kernel rounds up to
// a power of two pages, and the pipe must also hold the header's page and
// one page for each page of the file the bytes touch. A splice that does
// not fit fails (go-fuse then logs it and copies) or, in later go-fuse
// versions, comes back short and is sent as a short read: the end of file.
func spliceFits(pos int64, size int) bool {
	page := int64(os.Getpagesize())
	want := int64(spliceHeader) + int64(size) + page
	if size <= 0 || want > int64(splice.MaxPipeSize()) {
		return false
	}
	slots := int64(1)
	for slots*page < want {
		slots *= 2
	}
	touched := (pos+int64(size)-1)/page - pos/page + 1
	return 1+touched <= slots
}

func (n *fsNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.clip.NodeType != common.SymLinkNode {
		return nil, syscall.EINVAL
	}
	return n.target, 0
}

// Getxattr answers with the inode's recorded attribute. Asked with an empty
// buffer, it returns the size (the bridge turns ERANGE into that answer).
// Absent attributes, security.selinux and ACLs included, are ENODATA.
func (n *fsNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := n.xattrs[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *fsNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if len(dest) < len(n.xattrList) {
		return uint32(len(n.xattrList)), syscall.ERANGE
	}
	return uint32(copy(dest, n.xattrList)), 0
}

func (n *fsNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{Blocks: n.afs.blocks, Files: n.afs.files, Bsize: 4096, Frsize: 4096, NameLen: 255}
	return 0
}

// The archive is read-only: every change is refused.

func (n *fsNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *fsNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *fsNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.EROFS
}

func (n *fsNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *fsNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *fsNode) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *fsNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *fsNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *fsNode) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *fsNode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *fsNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *fsNode) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut, length, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

// kernelCache wraps the go-fuse bridge with the caching its options cannot
// ask for:
//   - negative lookups are answered as cacheable entries (node 0 with a
//     timeout; the bridge answers ENOENT, which the kernel does not cache);
//   - directory listings may be kept by the kernel;
//   - opening a file for reading costs no request at all where the kernel
//     supports it (FUSE_NO_OPEN_SUPPORT): answered ENOSYS once, it stops
//     sending OPEN and RELEASE and keeps file pages across opens, as if
//     every open returned FOPEN_KEEP_CACHE;
//   - FLUSH is answered ENOSYS, so the kernel stops sending it on close.
type kernelCache struct {
	fuse.RawFileSystem
	server atomic.Pointer[fuse.Server]
}

func (k *kernelCache) Init(s *fuse.Server) {
	k.server.Store(s)
	k.RawFileSystem.Init(s)
}

func (k *kernelCache) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	st := k.RawFileSystem.Lookup(cancel, header, name, out)
	if st == fuse.ENOENT {
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(cacheTimeout)
		return fuse.OK
	}
	return st
}

func (k *kernelCache) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.OpenDir(cancel, input, out)
	if st.Ok() {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR
	}
	return st
}

func (k *kernelCache) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if input.Flags&syscall.O_ACCMODE == syscall.O_RDONLY && k.zeroMessageOpen() {
		return fuse.ENOSYS
	}
	return k.RawFileSystem.Open(cancel, input, out)
}

// zeroMessageOpen reports whether the kernel takes ENOSYS from OPEN as
// "no open needed" rather than as an error.
func (k *kernelCache) zeroMessageOpen() bool {
	s := k.server.Load()
	return s != nil && s.KernelSettings().Flags&fuse.CAP_NO_OPEN_SUPPORT != 0
}

func (k *kernelCache) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}
