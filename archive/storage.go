package archive

import (
	"fmt"
	"io"
	"os"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/beam-cloud/clip/pkg/storage"
)

// Storage is how a mount or a verify reads file contents. It is clip's
// storage interface, so clip's FUSE filesystem can serve any of ours.
type Storage = storage.ClipStorageInterface

// localStorage reads the data blocks of a self-contained (v1) archive.
type localStorage struct {
	meta *common.ClipArchiveMetadata
	r    io.ReaderAt
	// f is the archive file when it is one (nil when read through another
	// io.ReaderAt, such as an S3 object): then its bytes can be spliced.
	f *os.File
}

// newLocalStorage opens a's file, or its reader, for reading its data
// blocks.
func newLocalStorage(a *Archive) (*localStorage, error) {
	if a.data != nil {
		return &localStorage{meta: a.Metadata, r: a.data}, nil
	}
	f, err := os.Open(a.Path)
	if err != nil {
		return nil, err
	}
	return &localStorage{meta: a.Metadata, r: f, f: f}, nil
}

// ReadFile fills dest from node's data at off. A short read at the end of the
// file is not an error.
func (s *localStorage) ReadFile(node *common.ClipNode, dest []byte, off int64) (int, error) {
	if off >= node.DataLen {
		return 0, nil
	}
	if rem := node.DataLen - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	n, err := s.r.ReadAt(dest, node.DataPos+off)
	if err == io.EOF && n == len(dest) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("reading %s: %w", node.Path, err)
	}
	return n, nil
}

// fileRange returns where node's bytes lie in the archive file.
func (s *localStorage) fileRange(node *common.ClipNode, off int64, size int) (*os.File, int64, int, error) {
	if s.f == nil {
		return nil, 0, 0, nil
	}
	pos, n := clampRange(node.DataPos, node.DataLen, off, size)
	return s.f, pos, n, nil
}

func (s *localStorage) Metadata() *common.ClipArchiveMetadata { return s.meta }
func (s *localStorage) CachedLocally() bool                   { return true }

func (s *localStorage) Cleanup() error {
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

// fileRanger is implemented by a Storage whose file contents lie as they
// are in a file on disk, so that a mount can splice them from that file's
// page cache to the kernel instead of copying them through a buffer. It is
// optional: without it, reads go through ReadFile.
type fileRanger interface {
	// fileRange returns where the bytes that a read of size bytes at off
	// of node gets lie: n bytes at pos in f, n 0 past the node's end. A nil
	// f means they are not in a file: read them with ReadFile.
	fileRange(node *common.ClipNode, off int64, size int) (f *os.File, pos int64, n int, err error)
}

// clampRange returns where a read of size bytes at off gets its bytes from
// data of the given length at start of a file: n bytes at pos.
func clampRange(start, length, off int64, size int) (pos int64, n int) {
	if off >= length {
		return start + length, 0
	}
	return start + off, int(min(int64(size), length-off))
}

// nodeReader reads a node's contents sequentially through a Storage.
type nodeReader struct {
	s    Storage
	n    *common.ClipNode
	off  int64
	size int64
}

func newNodeReader(s Storage, n *common.ClipNode) *nodeReader {
	size := n.DataLen
	if n.Remote != nil {
		size = n.Remote.ULength
	}
	return &nodeReader{s: s, n: n, size: size}
}

func (r *nodeReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := r.s.ReadFile(r.n, p, r.off)
	r.off += int64(n)
	if err != nil {
		return n, err
	}
	if n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	return n, nil
}
