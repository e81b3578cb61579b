package archive

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"syscall"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/beam-cloud/clip/pkg/common"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Stats summarises what an archive holds.
type Stats struct {
	Files     int   `json:"files"`
	Dirs      int   `json:"dirs"`
	Symlinks  int   `json:"symlinks"`
	Special   int   `json:"special"`
	Hardlinks int   `json:"hardlinks"`
	DataBytes int64 `json:"dataBytes"`
	// XattrInodes counts the inodes that have extended attributes.
	XattrInodes int `json:"xattrInodes,omitempty"`
}

func (s *Stats) add(n *common.ClipNode, firstOfInode bool) {
	switch {
	case n.NodeType == common.DirNode:
		s.Dirs++
	case n.NodeType == common.SymLinkNode:
		s.Symlinks++
	case n.Attr.Mode&syscall.S_IFMT != syscall.S_IFREG:
		s.Special++
	default:
		s.Files++
		if !firstOfInode {
			s.Hardlinks++
		}
	}
}

// inodeKey identifies a file on the source filesystem.
type inodeKey struct{ dev, ino uint64 }

// WriteV1 writes a self-contained archive of the tree at root into out, which
// must be an empty file open for writing. Unlike clip's archiver it keeps the
// whole mode (setuid, setgid, sticky), FIFOs, sockets and device nodes, and
// writes hard-linked files once with a shared inode number and link count.
// The extended attributes of the tree's files that belong to the image (see
// imageXattr) go into t.Xattrs, replacing any the caller set.
func WriteV1(ctx context.Context, root string, out *os.File, t Trailer) (Stats, error) {
	var st Stats
	nodes, sources, xattrs, err := scanTree(ctx, root)
	if err != nil {
		return st, err
	}
	t.Xattrs = xattrs
	st.XattrInodes = len(xattrs)
	if _, err := out.Write(make([]byte, common.ClipHeaderLength)); err != nil {
		return st, err
	}
	w := bufio.NewWriterSize(out, 1<<20)
	pos := int64(common.ClipHeaderLength)
	written := map[uint64]*common.ClipNode{}
	table := crc64.MakeTable(crc64.ISO)
	buf := make([]byte, 1<<20)
	for _, n := range nodes {
		first := true
		if n.NodeType == common.FileNode && n.Attr.Mode&syscall.S_IFMT == syscall.S_IFREG {
			if prev, ok := written[n.Attr.Ino]; ok {
				n.DataPos, n.DataLen, n.ContentHash = prev.DataPos, prev.DataLen, prev.ContentHash
				first = false
			} else {
				if err := ctx.Err(); err != nil {
					return st, err
				}
				if err := w.WriteByte(byte(common.BlockTypeFile)); err != nil {
					return st, err
				}
				pos++
				crc, sum := crc64.New(table), sha256.New()
				copied, err := copyFile(io.MultiWriter(w, crc, sum), sources[n.Path], buf)
				if err != nil {
					return st, fmt.Errorf("archiving %s: %w", n.Path, err)
				}
				if uint64(copied) != n.Attr.Size {
					return st, fmt.Errorf("archiving %s: size changed while reading (%d bytes, expected %d)", n.Path, copied, n.Attr.Size)
				}
				if _, err := w.Write(crc.Sum(nil)); err != nil {
					return st, err
				}
				n.DataPos, n.DataLen, n.ContentHash = pos, copied, hex.EncodeToString(sum.Sum(nil))
				pos += copied + common.ClipChecksumLength
				written[n.Attr.Ino] = n
				st.DataBytes += copied
			}
		}
		st.add(n, first)
	}
	if err := w.Flush(); err != nil {
		return st, err
	}
	return st, finish(out, pos, nodes, nil, t)
}

func copyFile(w io.Writer, p string, buf []byte) (int64, error) {
	f, err := openReadable(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.CopyBuffer(w, f, buf)
}

// openReadable opens p for reading. A file without read permission that we
// own (mode 0000 files are common in images, and a rootless run owns its
// unpacked rootfs) is opened by adding owner read for the moment of the
// open; its mode is restored at once.
func openReadable(p string) (*os.File, error) {
	f, err := os.Open(p)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return f, err
	}
	st, serr := os.Lstat(p)
	if serr != nil || !st.Mode().IsRegular() {
		return nil, err
	}
	if cerr := os.Chmod(p, st.Mode().Perm()|0o400); cerr != nil {
		return nil, err
	}
	f, err = os.Open(p)
	if rerr := os.Chmod(p, st.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); rerr != nil && err == nil {
		f.Close()
		return nil, fmt.Errorf("restoring the mode of %s: %w", p, rerr)
	}
	return f, err
}

// scanTree lists the tree at root as clip nodes in path order, with inode
// numbers shared by hard links and link counts taken from the tree itself
// (not from the host, where unrelated links may exist), the host path of
// each regular file, and the extended attributes by inode number.
func scanTree(ctx context.Context, root string) ([]*common.ClipNode, map[string]string, map[uint64]map[string][]byte, error) {
	var nodes []*common.ClipNode
	sources := map[string]string{}
	var xattrs map[uint64]map[string][]byte
	inodes := map[inodeKey]uint64{}
	links := map[uint64]uint32{}
	subdirs := map[string]uint32{}
	next := uint64(1)
	inodeOf := func(s *syscall.Stat_t) uint64 {
		key := inodeKey{uint64(s.Dev), s.Ino}
		ino, ok := inodes[key]
		if !ok {
			ino = next
			next++
			inodes[key] = ino
		}
		return ino
	}
	err := walkTree(ctx, root, func(name, p string, s *syscall.Stat_t) (err error) {
		n := &common.ClipNode{Path: name, Attr: attrFromStat(s)}
		switch s.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			n.NodeType = common.DirNode
			n.Attr.Ino = next
			next++
			if name != "/" {
				subdirs[path.Dir(name)]++
			}
		case syscall.S_IFLNK:
			// Symlinks can be hard-linked too; they share inodes like files.
			n.NodeType = common.SymLinkNode
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
			n.Attr.Ino = inodeOf(s)
			links[n.Attr.Ino]++
		default:
			n.NodeType = common.FileNode
			n.Attr.Ino = inodeOf(s)
			links[n.Attr.Ino]++
			if s.Mode&syscall.S_IFMT == syscall.S_IFREG {
				sources[name] = p
			} else {
				n.Attr.Size = 0
			}
		}
		if n.IsDir() || links[n.Attr.Ino] == 1 { // an inode's attributes are read once
			x, err := ReadXattrs(p)
			if err != nil {
				return err
			}
			if len(x) > 0 {
				if xattrs == nil {
					xattrs = map[uint64]map[string][]byte{}
				}
				xattrs[n.Attr.Ino] = x
			}
		}
		nodes = append(nodes, n)
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("scanning %s: %w", root, err)
	}
	for _, n := range nodes {
		if n.IsDir() {
			n.Attr.Nlink = 2 + subdirs[n.Path]
		} else {
			n.Attr.Nlink = links[n.Attr.Ino]
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Path < nodes[j].Path })
	return nodes, sources, xattrs, nil
}

func attrFromStat(s *syscall.Stat_t) fuse.Attr {
	size := uint64(s.Size)
	return fuse.Attr{
		Size:      size,
		Blocks:    (size + 511) / 512,
		Atime:     uint64(s.Mtim.Sec),
		Atimensec: uint32(s.Mtim.Nsec),
		Mtime:     uint64(s.Mtim.Sec),
		Mtimensec: uint32(s.Mtim.Nsec),
		Ctime:     uint64(s.Mtim.Sec),
		Ctimensec: uint32(s.Mtim.Nsec),
		Mode:      s.Mode,
		Rdev:      uint32(s.Rdev),
		Owner:     fuse.Owner{Uid: s.Uid, Gid: s.Gid},
	}
}

// finish writes the index, the storage info (v2 only) and clipbuild's trailer
// after the data, which ends at dataEnd, and then the header at the start.
func finish(out *os.File, dataEnd int64, nodes []*common.ClipNode, oci *common.OCIStorageInfo, t Trailer) error {
	ca := clip.NewClipArchiver()
	var index bytes.Buffer
	if err := gob.NewEncoder(&index).Encode(nodes); err != nil {
		return fmt.Errorf("encoding index: %w", err)
	}
	h := common.ClipArchiveHeader{
		ClipFileFormatVersion: common.ClipFileFormatVersion,
		IndexPos:              dataEnd,
		IndexLength:           int64(index.Len()),
	}
	copy(h.StartBytes[:], common.ClipFileStartBytes)
	if _, err := out.WriteAt(index.Bytes(), dataEnd); err != nil {
		return err
	}
	end := dataEnd + int64(index.Len())
	var storageInfo []byte
	if oci != nil {
		data, err := oci.Encode()
		if err != nil {
			return fmt.Errorf("encoding storage info: %w", err)
		}
		var wrapped bytes.Buffer
		if err := gob.NewEncoder(&wrapped).Encode(common.StorageInfoWrapper{Type: oci.Type(), Data: data}); err != nil {
			return fmt.Errorf("encoding storage info: %w", err)
		}
		copy(h.StorageInfoType[:], oci.Type())
		h.StorageInfoPos, h.StorageInfoLength = end, int64(wrapped.Len())
		if _, err := out.WriteAt(wrapped.Bytes(), end); err != nil {
			return err
		}
		storageInfo = wrapped.Bytes()
		end += int64(wrapped.Len())
	}
	meta := sha256.New()
	meta.Write(index.Bytes())
	meta.Write(storageInfo)
	t.MetadataSHA256 = hex.EncodeToString(meta.Sum(nil))
	tb, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encoding trailer: %w", err)
	}
	var foot [trailerFooterLen]byte
	binary.LittleEndian.PutUint64(foot[:8], crc64.Checksum(tb, crcTable))
	binary.LittleEndian.PutUint64(foot[8:16], uint64(len(tb)))
	copy(foot[16:], trailerMagic[:])
	if _, err := out.WriteAt(append(tb, foot[:]...), end); err != nil {
		return err
	}
	hb, err := ca.EncodeHeader(&h)
	if err != nil {
		return fmt.Errorf("encoding header: %w", err)
	}
	if _, err := out.WriteAt(hb, 0); err != nil {
		return err
	}
	return out.Sync()
}
