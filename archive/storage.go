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
	f    *os.File
}

// newLocalStorage opens a's file for reading its data blocks.
func newLocalStorage(a *Archive) (*localStorage, error) {
	f, err := os.Open(a.Path)
	if err != nil {
		return nil, err
	}
	return &localStorage{meta: a.Metadata, f: f}, nil
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
	n, err := s.f.ReadAt(dest, node.DataPos+off)
	if err == io.EOF && n == len(dest) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("reading %s: %w", node.Path, err)
	}
	return n, nil
}

func (s *localStorage) Metadata() *common.ClipArchiveMetadata { return s.meta }
func (s *localStorage) CachedLocally() bool                   { return true }
func (s *localStorage) Cleanup() error                        { return s.f.Close() }

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
