package archive

import (
	"archive/tar"
	"context"
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
}

type indexNode struct {
	*common.ClipNode
	layer int // the layer that last wrote this node
}

// NewIndexer starts an empty tree: a root directory with containers-storage's
// default mode for a root no layer describes (0555).
func NewIndexer() *Indexer {
	ix := &Indexer{nodes: map[string]*indexNode{}, nextIno: 2}
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

// AddLayer applies one layer, read as an uncompressed tar stream. digest
// names the layer in the data references (the compressed blob's digest).
func (ix *Indexer) AddLayer(ctx context.Context, digest string, r io.Reader) error {
	ix.layer++
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading layer tar: %w", err)
		}
		if err := ix.addEntry(hdr, digest, cr.n); err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
	}
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
	return "/" + rel, nil
}

func (ix *Indexer) addEntry(hdr *tar.Header, digest string, dataOff int64) error {
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
	}
	if strings.HasPrefix(base, whiteoutMeta) && base != whiteoutOpaque {
		return nil // AUFS metadata (.wh..wh.plnk and friends): not part of the tree
	}
	if base == whiteoutOpaque {
		ix.removeChildren(path.Clean(dir), func(n *indexNode) bool { return n.layer < ix.layer })
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		target := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
		if target == "/" || strings.TrimPrefix(base, whiteoutPrefix) == "" {
			return errors.New("whiteout of the root")
		}
		ix.remove(target)
		return nil
	}
	if p == "/" {
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("non-directory entry for the image root")
		}
		root := ix.nodes["/"]
		root.Attr = ix.attr(hdr, root.Attr.Ino)
		root.Attr.Mode = syscall.S_IFDIR | uint32(hdr.Mode&07777)
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
			return nil
		}
		node.NodeType = common.DirNode
		node.Attr = ix.attr(hdr, ix.ino())
		node.Attr.Mode = syscall.S_IFDIR | uint32(hdr.Mode&07777)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if hdr.Typeflag == tar.TypeGNUSparse || hdr.Format == tar.FormatGNU && len(hdr.PAXRecords) > 0 && hdr.PAXRecords["GNU.sparse.map"] != "" {
			return errors.New("sparse files are not supported in v2 archives")
		}
		node.NodeType = common.FileNode
		node.Attr = ix.attr(hdr, ix.ino())
		node.Attr.Mode = syscall.S_IFREG | uint32(hdr.Mode&07777)
		node.Attr.Size = uint64(hdr.Size)
		node.Attr.Blocks = (uint64(hdr.Size) + 511) / 512
		node.Remote = &common.RemoteRef{LayerDigest: digest, UOffset: dataOff, ULength: hdr.Size}
		node.DataLen = hdr.Size
	case tar.TypeSymlink:
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
		src := ix.nodes[path.Join(rdir, tbase)]
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
	ix.nodes[p] = &indexNode{ClipNode: node, layer: ix.layer}
	return nil
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
// within the root (like securejoin). With create, missing directories are
// made (mode 0755, owned by root), as an unpack does for entries whose
// parents a layer does not list; a non-directory in the way is an error.
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
		n := ix.nodes[next]
		switch {
		case n == nil:
			if !create {
				return "", fmt.Errorf("%s does not exist", next)
			}
			ix.nodes[next] = &indexNode{layer: ix.layer, ClipNode: &common.ClipNode{Path: next, NodeType: common.DirNode,
				Attr: fuse.Attr{Ino: ix.ino(), Mode: syscall.S_IFDIR | 0o755}}}
			cur = next
		case n.IsDir():
			cur = next
		case n.IsSymlink():
			hops++
			if hops > maxSymlinkHops {
				return "", errors.New("too many levels of symbolic links")
			}
			t := n.Target
			if path.IsAbs(t) {
				cur = "/"
			}
			parts = append(strings.Split(strings.Trim(t, "/"), "/"), parts...)
		default:
			return "", fmt.Errorf("%s is not a directory", next)
		}
	}
	return cur, nil
}

// remove deletes p and everything under it.
func (ix *Indexer) remove(p string) {
	delete(ix.nodes, p)
	ix.removeChildren(p, func(*indexNode) bool { return true })
}

func (ix *Indexer) removeChildren(dir string, match func(*indexNode) bool) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for q, n := range ix.nodes {
		if strings.HasPrefix(q, prefix) && match(n) {
			delete(ix.nodes, q)
		}
	}
	// A child kept (written by this layer) keeps its parents too.
	for q := range ix.nodes {
		if strings.HasPrefix(q, prefix) {
			for d := path.Dir(q); d != dir && d != "/"; d = path.Dir(d) {
				if _, ok := ix.nodes[d]; !ok {
					ix.nodes[d] = &indexNode{layer: ix.layer, ClipNode: &common.ClipNode{Path: d, NodeType: common.DirNode,
						Attr: fuse.Attr{Ino: ix.ino(), Mode: syscall.S_IFDIR | 0o755}}}
				}
			}
		}
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
		switch {
		case n.IsDir():
			n.Attr.Nlink = 2 + subdirs[n.Path]
		case n.IsSymlink():
			n.Attr.Nlink = 1
		default:
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
