package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Whiteout names, as in the OCI image spec.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	whiteoutMeta   = ".wh..wh."
)

// maxSymlinkHops bounds symlink resolution in layer paths, as the kernel does.
const maxSymlinkHops = 255

// Linux's limits on a path (PATH_MAX, 4096 with its NUL) and on one name in
// it (NAME_MAX). An unpack fails with ENAMETOOLONG past them, and a mount
// could not look such a path up, so the indexer refuses them too; without
// the bound a single 10,000-deep name made 10,000 directory nodes holding
// 100 MB of path strings.
const (
	maxPathLen = 4095
	maxNameLen = 255
)

// Indexer builds the tree of an image from its layers' tar streams, applied in
// order with whiteouts and opaque directories, without writing anything but
// the index: each regular file records where its bytes sit in its layer's
// uncompressed stream. Modes are kept whole (setuid, setgid, sticky), FIFOs
// and device nodes are kept, and hard links share an inode number.
//
// Paths are resolved the way containers/storage unpacks them: a symlink met
// in a parent directory is followed inside the image root, so the tree is the
// one a safe unpack would produce, and nothing can point outside the root.
type Indexer struct {
	nodes   map[string]*indexNode
	nextIno uint64
	layer   int
	rootSet bool
	// inodes holds the attributes a hard-link entry gave an inode shared
	// by several paths; Nodes applies them to every path of the inode.
	inodes map[uint64]fuse.Attr
	// xattrs holds the extended attributes by inode number, as the entries
	// set them (see tarXattrs); Xattrs leaves out inodes no path has any more.
	xattrs map[uint64]map[string][]byte
	// sparse accepts GNU sparse files as regular files (WithSparseFiles).
	sparse bool
}

// IndexerOption configures NewIndexer.
type IndexerOption func(*Indexer)

// WithSparseFiles makes the indexer take a GNU sparse file as the regular
// file it expands to, of its logical size, for a v1 archive, which copies
// the expanded bytes (holes as zeros) into its data section. Its data
// reference is then only a key (the entry's DataOffset), not a run of
// bytes a v2 archive could serve. The default refuses sparse files with
// ErrSparse.
func WithSparseFiles() IndexerOption {
	return func(ix *Indexer) { ix.sparse = true }
}

type indexNode struct {
	*common.ClipNode
	layer int // the layer that last wrote this node
	// implicit marks a directory made up for an entry whose parents the
	// layer does not list. An opaque whiteout removes it, as the unpack
	// does: it only keeps what the layer itself wrote before the marker.
	implicit bool
	// kids holds a directory's entries by name, so that removing a path
	// or making a directory opaque visits only what lies under it.
	kids map[string]*indexNode
}

// NewIndexer starts an empty tree: a root directory with containers-storage's
// default mode for a root no layer describes (0555).
func NewIndexer(opts ...IndexerOption) *Indexer {
	ix := &Indexer{nodes: map[string]*indexNode{}, nextIno: 2, inodes: map[uint64]fuse.Attr{}}
	for _, opt := range opts {
		opt(ix)
	}
	ix.nodes["/"] = &indexNode{ClipNode: &common.ClipNode{Path: "/", NodeType: common.DirNode,
		Attr: fuse.Attr{Ino: 1, Mode: syscall.S_IFDIR | RootDirDefaultMode}}}
	return ix
}

// RootDirDefaultMode is the mode containers-storage gives an image's root
// directory when no layer has an entry for it; archives match it so they show
// what buildah and a runtime show.
const RootDirDefaultMode = 0o555

// countingReader counts the bytes read through it: the offset of a file's
// data in the uncompressed layer is the count right after its header.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// cleanName turns a tar name into a clean absolute path, refusing names that
// climb out of the root.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("name contains a NUL byte")
	}
	rel := path.Clean(strings.TrimPrefix(name, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", errors.New("path escapes the image root")
	}
	if rel == "." {
		return "/", nil
	}
	if err := checkLen("/" + rel); err != nil {
		return "", err
	}
	return "/" + rel, nil
}

// checkLen refuses a path the kernel would refuse (ENAMETOOLONG). A
// whiteout's name is its target's with ".wh." in front, so the limits apply
// to the target: a 255-byte name can be whited out.
func checkLen(p string) error {
	if dir, base := path.Split(p); strings.HasPrefix(base, whiteoutPrefix) {
		p = dir + strings.TrimPrefix(base, whiteoutPrefix)
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("path too long: %d bytes, more than the %d a path may have", len(p), maxPathLen)
	}
	for _, name := range strings.Split(p, "/") {
		if len(name) > maxNameLen {
			return fmt.Errorf("file name too long: %d bytes, more than the %d a name may have", len(name), maxNameLen)
		}
	}
	return nil
}

func (ix *Indexer) addEntry(hdr *tar.Header, digest string, dataOff int64, contentHash string) error {
	if IsSparse(hdr) && !ix.sparse {
		return ErrSparse // whatever the entry is: a v1 archive expands it
	}
	p, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Split(p)
	if p != "/" {
		resolved, err := ix.resolveDir(dir, true)
		if err != nil {
			return err
		}
		p = path.Join(resolved, base)
		dir = resolved
		// Through symlinks the resolved path can outgrow the name.
		if err := checkLen(p); err != nil {
			return err
		}
	}
	if strings.HasPrefix(base, whiteoutMeta) && base != whiteoutOpaque {
		return nil // AUFS metadata (.wh..wh.plnk and friends): not part of the tree
	}
	// Entries under a top-level AUFS metadata directory (.wh..wh.plnk/1234)
	// are skipped too, as the unpack skips them (it tests the name as
	// written, after cleaning); their parent is made above, as it is there.
	if rel := path.Clean(hdr.Name); strings.HasPrefix(rel, whiteoutMeta) && rel != whiteoutOpaque {
		return nil
	}
	if base == whiteoutOpaque {
		ix.opaque(path.Clean(dir))
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		// ".wh.." and ".wh..." would white out the directory holding them
		// or its parent; the unpack refuses them, and so do we.
		name := strings.TrimPrefix(base, whiteoutPrefix)
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("invalid whiteout %q", base)
		}
		ix.remove(path.Join(dir, name))
		return nil
	}
	if p == "/" {
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("non-directory entry for the image root")
		}
		root := ix.nodes["/"]
		root.Attr = ix.attr(hdr, root.Attr.Ino)
		root.Attr.Mode = syscall.S_IFDIR | uint32(hdr.Mode&07777)
		if err := ix.addXattrs(hdr, root.Attr); err != nil {
			return err
		}
		ix.rootSet = true
		return nil
	}

	node := &common.ClipNode{Path: p}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if old := ix.nodes[p]; old != nil && old.IsDir() {
			old.Attr = ix.attr(hdr, old.Attr.Ino)
			old.Attr.Mode = syscall.S_IFDIR | uint32(hdr.Mode&07777)
			old.layer = ix.layer
			old.implicit = false
			// The unpack merges a directory into the one it finds: the old
			// attributes stay, the entry's are added over them.
			return ix.addXattrs(hdr, old.Attr)
		}
		node.NodeType = common.DirNode
		node.Attr = ix.attr(hdr, ix.ino())
		node.Attr.Mode = syscall.S_IFDIR | uint32(hdr.Mode&07777)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		// A sparse entry ('S') gets here only WithSparseFiles; archive/tar
		// reports its logical size and reads it expanded.
		node.NodeType = common.FileNode
		node.Attr = ix.attr(hdr, ix.ino())
		node.Attr.Mode = syscall.S_IFREG | uint32(hdr.Mode&07777)
		node.Attr.Size = uint64(hdr.Size)
		node.Attr.Blocks = (uint64(hdr.Size) + 511) / 512
		node.Remote = &common.RemoteRef{LayerDigest: digest, UOffset: dataOff, ULength: hdr.Size}
		node.DataLen = hdr.Size
		node.ContentHash = contentHash
	case tar.TypeSymlink:
		// The kernel refuses both (ENOENT, ENAMETOOLONG), so an unpack does.
		if hdr.Linkname == "" {
			return errors.New("symlink with an empty target")
		}
		if len(hdr.Linkname) > maxPathLen {
			return fmt.Errorf("symlink target too long: %d bytes, more than the %d a path may have", len(hdr.Linkname), maxPathLen)
		}
		node.NodeType = common.SymLinkNode
		node.Target = hdr.Linkname
		node.Attr = ix.attr(hdr, ix.ino())
		node.Attr.Mode = syscall.S_IFLNK | 0o777
		node.Attr.Size = uint64(len(hdr.Linkname))
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		tdir, tbase := path.Split(target)
		rdir, err := ix.resolveDir(tdir, false)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		tpath := path.Join(rdir, tbase)
		// The unpack removes what is at p before linking, so a link to p
		// itself or to something under it finds no target.
		if tpath == p || strings.HasPrefix(tpath, p+"/") {
			return fmt.Errorf("hard link to %q, which the link itself replaces", hdr.Linkname)
		}
		src := ix.nodes[tpath]
		if src == nil {
			return fmt.Errorf("hard link to %q, which is not in the image", hdr.Linkname)
		}
		if src.IsDir() {
			return errors.New("hard link to a directory")
		}
		c := *src.ClipNode
		c.Path = p
		if src.Remote != nil {
			r := *src.Remote
			c.Remote = &r
		}
		// The unpack applies the link entry's owner to the shared inode, and
		// its mode and times unless the target is a symlink; every path of
		// the inode shows them (see Nodes).
		if a, ok := ix.inodes[c.Attr.Ino]; ok {
			c.Attr = a
		}
		if !src.IsSymlink() {
			a := ix.attr(hdr, c.Attr.Ino)
			c.Attr.Atime, c.Attr.Atimensec, c.Attr.Mtime, c.Attr.Mtimensec = a.Atime, a.Atimensec, a.Mtime, a.Mtimensec
			c.Attr.Ctime, c.Attr.Ctimensec = a.Ctime, a.Ctimensec
			c.Attr.Mode = c.Attr.Mode&syscall.S_IFMT | uint32(hdr.Mode&07777)
		}
		c.Attr.Owner = fuse.Owner{Uid: uint32(hdr.Uid), Gid: uint32(hdr.Gid)}
		ix.inodes[c.Attr.Ino] = c.Attr
		node = &c
	case tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
		node.NodeType = common.FileNode
		node.Attr = ix.attr(hdr, ix.ino())
		kind := map[byte]uint32{tar.TypeFifo: syscall.S_IFIFO, tar.TypeChar: syscall.S_IFCHR, tar.TypeBlock: syscall.S_IFBLK}[hdr.Typeflag]
		node.Attr.Mode = kind | uint32(hdr.Mode&07777)
		if hdr.Typeflag != tar.TypeFifo {
			node.Attr.Rdev = uint32(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		}
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	if old := ix.nodes[p]; old != nil {
		ix.remove(p)
	}
	// A new inode starts with the entry's attributes alone; a hard link's
	// are added to those its inode already has, as the unpack sets them on
	// the shared inode.
	if err := ix.addXattrs(hdr, node.Attr); err != nil {
		return err
	}
	ix.put(&indexNode{ClipNode: node, layer: ix.layer})
	return nil
}

// put adds n at n.Path, in place of what was there, and in its parent's
// kids; the parent is a directory already in the tree.
func (ix *Indexer) put(n *indexNode) {
	ix.nodes[n.Path] = n
	if n.Path == "/" {
		return
	}
	parent := ix.nodes[path.Dir(n.Path)]
	if parent.kids == nil {
		parent.kids = map[string]*indexNode{}
	}
	parent.kids[path.Base(n.Path)] = n
}

func (ix *Indexer) ino() uint64 {
	ix.nextIno++
	return ix.nextIno - 1
}

func (ix *Indexer) attr(hdr *tar.Header, ino uint64) fuse.Attr {
	mt := hdr.ModTime
	return fuse.Attr{
		Ino:       ino,
		Atime:     uint64(mt.Unix()),
		Atimensec: uint32(mt.Nanosecond()),
		Mtime:     uint64(mt.Unix()),
		Mtimensec: uint32(mt.Nanosecond()),
		Ctime:     uint64(mt.Unix()),
		Ctimensec: uint32(mt.Nanosecond()),
		Owner:     fuse.Owner{Uid: uint32(hdr.Uid), Gid: uint32(hdr.Gid)},
	}
}

// resolveDir resolves a directory path inside the tree, following symlinks
// within the root the way securejoin does for the unpack: a component that
// is missing, or is not a directory, is taken as it is and the rest of the
// path is resolved lexically from there (so "missing/.." is the directory
// itself). Only then, with create, are the missing directories of the
// result made (mode 0755, owned by root), as an unpack does for entries
// whose parents a layer does not list; without create they are an error, as
// is a non-directory among the result's parents. Making directories while
// still resolving (the earlier way) left spurious ones behind for a symlink
// target such as ".../..".
func (ix *Indexer) resolveDir(dir string, create bool) (string, error) {
	cur := "/"
	parts := strings.Split(strings.Trim(path.Clean("/"+dir), "/"), "/")
	hops := 0
	for len(parts) > 0 {
		part := parts[0]
		parts = parts[1:]
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, part)
		if n := ix.nodes[next]; n != nil && n.IsSymlink() {
			hops++
			if hops > maxSymlinkHops {
				return "", errors.New("too many levels of symbolic links")
			}
			t := n.Target
			if path.IsAbs(t) {
				cur = "/"
			}
			parts = append(strings.Split(strings.Trim(t, "/"), "/"), parts...)
			continue
		}
		// Missing, a directory or another file: taken as it is.
		cur = next
		if len(cur) > 16*maxPathLen { // bounds the work a symlink chain can cause
			return "", fmt.Errorf("path too long: more than %d bytes while resolving", 16*maxPathLen)
		}
	}
	var missing []string
	d := cur
	for ; d != "/"; d = path.Dir(d) {
		if _, ok := ix.nodes[d]; ok {
			break
		}
		missing = append(missing, d)
	}
	if n := ix.nodes[d]; !n.IsDir() {
		return "", fmt.Errorf("%s is not a directory", d)
	}
	if len(missing) > 0 && !create {
		return "", fmt.Errorf("%s does not exist", missing[len(missing)-1])
	}
	if err := checkLen(cur); err != nil {
		return "", err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		ix.put(&indexNode{layer: ix.layer, implicit: true, ClipNode: &common.ClipNode{Path: missing[i], NodeType: common.DirNode,
			Attr: fuse.Attr{Ino: ix.ino(), Mode: syscall.S_IFDIR | 0o755}}})
	}
	return cur, nil
}

// remove deletes p and everything under it, visiting only those.
func (ix *Indexer) remove(p string) {
	n := ix.nodes[p]
	if n == nil || p == "/" {
		return
	}
	if parent := ix.nodes[path.Dir(p)]; parent != nil {
		delete(parent.kids, path.Base(p))
	}
	ix.drop(n)
}

// drop deletes n and everything under it from the index; its parent's kids
// are the caller's to update.
func (ix *Indexer) drop(n *indexNode) {
	delete(ix.nodes, n.Path)
	for _, k := range n.kids {
		ix.drop(k)
	}
}

// opaque applies an opaque whiteout of dir the way the unpack does: walking
// dir's tree, it removes (with all beneath) each path that this layer did
// not itself write before the marker, so an entry survives only if it and
// every directory between it and dir were written by this layer. dir itself
// stays; for dir "/" the old code matched the root as its own child and
// removed it, which left an archive without a root.
//
// It walks dir's tree only, and below a removed path not at all.
func (ix *Indexer) opaque(dir string) {
	if n := ix.nodes[dir]; n != nil {
		ix.keepOwn(n)
	}
}

// keepOwn removes, under n, each path this layer did not write (see opaque).
func (ix *Indexer) keepOwn(n *indexNode) {
	for name, k := range n.kids {
		if k.layer < ix.layer || k.implicit {
			delete(n.kids, name)
			ix.drop(k)
			continue
		}
		ix.keepOwn(k)
	}
}

// Nodes returns the finished tree in path order, with link counts set:
// directories 2 plus their subdirectories, other files the number of paths
// sharing their inode.
func (ix *Indexer) Nodes() []*common.ClipNode {
	links := map[uint64]uint32{}
	subdirs := map[string]uint32{}
	nodes := make([]*common.ClipNode, 0, len(ix.nodes))
	for p, n := range ix.nodes {
		nodes = append(nodes, n.ClipNode)
		if n.IsDir() {
			if p != "/" {
				subdirs[path.Dir(p)]++
			}
		} else {
			links[n.Attr.Ino]++
		}
	}
	for _, n := range nodes {
		if a, ok := ix.inodes[n.Attr.Ino]; ok && !n.IsDir() {
			n.Attr = a
		}
		switch {
		case n.IsDir():
			n.Attr.Nlink = 2 + subdirs[n.Path]
		default: // files, special files and symlinks, which can be hard-linked too
			n.Attr.Nlink = links[n.Attr.Ino]
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Path < nodes[j].Path })
	return nodes
}

// WriteV2 writes a metadata-only archive: the index, clip's OCI storage info
// and clipbuild's trailer, with no data section.
func WriteV2(out *os.File, nodes []*common.ClipNode, oci *common.OCIStorageInfo, t Trailer) error {
	if _, err := out.Write(make([]byte, common.ClipHeaderLength)); err != nil {
		return err
	}
	return finish(out, common.ClipHeaderLength, nodes, oci, t)
}
