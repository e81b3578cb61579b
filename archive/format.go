package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"os"
	"path"
	"strings"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/beam-cloud/clip/pkg/common"
	"github.com/tidwall/btree"
)

// ErrCorrupt is returned (wrapped) when a file is not a readable clip archive.
var ErrCorrupt = errors.New("not a valid clip archive")

// trailerMagic ends every archive clipbuild writes. The footer before it
// holds the CRC-64 of the JSON trailer and then the trailer's length:
// [trailer JSON][crc64 LE][length LE][magic].
var trailerMagic = [8]byte{'C', 'L', 'I', 'P', 'B', 'L', 'D', '2'}

const trailerFooterLen = 24

var crcTable = crc64.MakeTable(crc64.ECMA)

// maxIndexBytes bounds how much index we are willing to decode; a header that
// claims more is corrupt rather than merely large.
const maxIndexBytes = 4 << 30

// Trailer is clipbuild's own metadata, appended after clip's sections.
type Trailer struct {
	// Image describes the image the archive was made from.
	Image *common.ImageMetadata `json:"image,omitempty"`
	// ImageRef is where a v2 archive's layers are read from, pinned by digest.
	ImageRef string `json:"imageRef,omitempty"`
	// ManifestDigest is the digest of the image manifest.
	ManifestDigest string `json:"manifestDigest,omitempty"`
	// PlainHTTP records that the registry was reached over plain HTTP when
	// the archive was made. It is a record only, kept readable for old
	// archives: mount and verify never take it as leave to use plain HTTP
	// (an archive is not trusted to lower how credentials travel); only
	// --tls-verify=false or a loopback registry allows that.
	PlainHTTP bool `json:"plainHTTP,omitempty"`
	// Tool names the program that wrote the archive.
	Tool string `json:"tool,omitempty"`
	// MetadataSHA256 is the SHA-256 of the index and storage-info sections
	// together, so any change to them is caught on open.
	MetadataSHA256 string `json:"metadataSHA256,omitempty"`
	// Xattrs holds the extended attributes of the archive's inodes, keyed
	// by inode number (hard links share an inode and so their attributes):
	// attribute name ("security.capability", "user.mime") to raw value.
	// clip's node type has no field for them, so they live here, where
	// clip's reader does not look.
	Xattrs map[uint64]map[string][]byte `json:"xattrs,omitempty"`
	// Members lists, by layer blob digest, the independent gzip members of
	// each seekable layer a v2 build pushed, in blob order: where each lies
	// in the blob and in the uncompressed layer, and the SHA-256 of its
	// uncompressed bytes. A range read fetches and inflates only the members
	// it needs and checks each against its digest. clip's GzipIdxByLayer
	// holds the same member starts as checkpoints, but no lengths or
	// digests. Absent for layers that are not seekable (pull).
	Members map[string][]Member `json:"members,omitempty"`
	// Zran holds, by layer blob digest, the restart points a pull recorded
	// inside each gzip layer it indexed (one stream, not seekable): a
	// range read inflates from the point before its bytes with that
	// point's window, and checks each span against its SHA-256. Absent for
	// layers with Members, and in archives from before pulls recorded them.
	Zran map[string]*ZranIndex `json:"zran,omitempty"`
}

// Archive is an opened, validated clip archive.
type Archive struct {
	Path     string
	Size     int64
	Header   common.ClipArchiveHeader
	Metadata *common.ClipArchiveMetadata
	// OCI is the v2 storage info; nil for a v1 archive.
	OCI     *common.OCIStorageInfo
	Trailer Trailer

	// data reads the archive when it is not the file at Path (see
	// OpenReaderAt).
	data io.ReaderAt
}

// Version is 2 for a metadata-only archive whose data lives in a registry and
// 1 for a self-contained one.
func (a *Archive) Version() int {
	if a.OCI != nil {
		return 2
	}
	return 1
}

// Nodes returns every node in path order.
func (a *Archive) Nodes() []*common.ClipNode {
	var nodes []*common.ClipNode
	a.Metadata.Index.Ascend(a.Metadata.Index.Min(), func(item interface{}) bool {
		nodes = append(nodes, item.(*common.ClipNode))
		return true
	})
	return nodes
}

// XattrsOf returns the extended attributes of inode ino, or nil when it has
// none. The map is the archive's own: callers must not change it.
func (a *Archive) XattrsOf(ino uint64) map[string][]byte {
	return a.Trailer.Xattrs[ino]
}

// Image returns the image metadata, from clip's storage info for v2 archives
// or from clipbuild's trailer.
func (a *Archive) Image() *common.ImageMetadata {
	if a.OCI != nil && a.OCI.ImageMetadata != nil {
		return a.OCI.ImageMetadata
	}
	return a.Trailer.Image
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// newIndex makes the path-ordered tree clip's filesystem expects.
func newIndex() *btree.BTree {
	return btree.New(func(a, b interface{}) bool {
		return a.(*common.ClipNode).Path < b.(*common.ClipNode).Path
	})
}

// Open reads and validates the archive at p. Every offset and length in the
// file is checked against the file's size before it is used, so a truncated or
// corrupted archive gives an error wrapping ErrCorrupt, never a panic or a
// huge allocation.
func Open(p string) (*Archive, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, corrupt("%s is not a regular file", p)
	}
	return openReaderAt(f, st.Size(), p)
}

// OpenReaderAt reads and validates the archive of size bytes that r reads,
// as Open does; name is what it is called (its Path). A v1 archive's data
// is then read through r, which must stay readable for as long as the
// archive's storage is used.
func OpenReaderAt(r io.ReaderAt, size int64, name string) (*Archive, error) {
	a, err := openReaderAt(r, size, name)
	if err != nil {
		return nil, err
	}
	a.data = r
	return a, nil
}

func openReaderAt(f io.ReaderAt, size int64, p string) (*Archive, error) {
	a := &Archive{Path: p, Size: size}
	if a.Size < common.ClipHeaderLength {
		return nil, corrupt("file is %d bytes, shorter than the %d-byte header", a.Size, common.ClipHeaderLength)
	}
	hb := make([]byte, common.ClipHeaderLength)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, common.ClipHeaderLength), hb); err != nil {
		return nil, corrupt("reading header: %v", err)
	}
	h, err := clip.NewClipArchiver().DecodeHeader(hb)
	if err != nil {
		return nil, corrupt("decoding header: %v", err)
	}
	if !bytes.Equal(h.StartBytes[:], common.ClipFileStartBytes) {
		return nil, corrupt("bad magic bytes")
	}
	if h.ClipFileFormatVersion != common.ClipFileFormatVersion {
		return nil, corrupt("unsupported format version %d", h.ClipFileFormatVersion)
	}
	a.Header = *h
	if err := checkSection(a.Size, "index", h.IndexPos, h.IndexLength); err != nil {
		return nil, err
	}
	if h.IndexLength == 0 || h.IndexLength > maxIndexBytes {
		return nil, corrupt("index length %d out of range", h.IndexLength)
	}
	nodes, err := decodeIndex(io.NewSectionReader(f, h.IndexPos, h.IndexLength))
	if err != nil {
		return nil, err
	}
	var storageInfo common.ClipStorageInfo
	if h.StorageInfoLength > 0 {
		if err := checkSection(a.Size, "storage info", h.StorageInfoPos, h.StorageInfoLength); err != nil {
			return nil, err
		}
		oci, err := decodeStorageInfo(io.NewSectionReader(f, h.StorageInfoPos, h.StorageInfoLength))
		if err != nil {
			return nil, err
		}
		a.OCI = oci
		storageInfo = *oci
	}
	trailer, trailerStart, err := readTrailer(f, a.Size)
	if err != nil {
		return nil, err
	}
	if trailerStart == a.Size {
		// No trailer, as clip writes them: then nothing may follow the last
		// section, or a damaged footer would pass for a missing one.
		end := h.IndexPos + h.IndexLength
		if h.StorageInfoLength > 0 && h.StorageInfoPos+h.StorageInfoLength > end {
			end = h.StorageInfoPos + h.StorageInfoLength
		}
		if end != a.Size {
			return nil, corrupt("%d bytes after the last section and no valid trailer", a.Size-end)
		}
	}
	a.Trailer = trailer
	if trailer.MetadataSHA256 != "" {
		got, err := metadataDigest(f, h)
		if err != nil {
			return nil, err
		}
		if got != trailer.MetadataSHA256 {
			return nil, corrupt("index checksum mismatch")
		}
	}
	dataEnd := h.IndexPos
	if trailerStart < h.IndexPos+h.IndexLength {
		return nil, corrupt("trailer overlaps the index")
	}
	index := newIndex()
	for _, n := range nodes {
		// Archives list their nodes in path order, which Load appends
		// without a search; out of order it inserts (or replaces) as Set.
		if n != nil {
			index.Load(n)
		}
	}
	a.Metadata = &common.ClipArchiveMetadata{Header: *h, Index: index, StorageInfo: storageInfo}
	if err := validateNodes(a, nodes, dataEnd); err != nil {
		return nil, err
	}
	return a, nil
}

// metadataDigest hashes the index and storage-info sections.
func metadataDigest(f io.ReaderAt, h *common.ClipArchiveHeader) (string, error) {
	sum := sha256.New()
	if _, err := io.Copy(sum, io.NewSectionReader(f, h.IndexPos, h.IndexLength)); err != nil {
		return "", corrupt("reading index: %v", err)
	}
	if h.StorageInfoLength > 0 {
		if _, err := io.Copy(sum, io.NewSectionReader(f, h.StorageInfoPos, h.StorageInfoLength)); err != nil {
			return "", corrupt("reading storage info: %v", err)
		}
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

func checkSection(size int64, name string, pos, length int64) error {
	if pos < common.ClipHeaderLength || length < 0 || pos > size || length > size-pos {
		return corrupt("%s at %d+%d lies outside the %d-byte file", name, pos, length, size)
	}
	return nil
}

// decodeIndex decodes clip's gob index. gob recovers from its own panics, but
// we guard anyway: a corrupt archive must never take the process down.
func decodeIndex(r io.Reader) (nodes []*common.ClipNode, err error) {
	defer func() {
		if p := recover(); p != nil {
			nodes, err = nil, corrupt("decoding index: %v", p)
		}
	}()
	if err := gob.NewDecoder(r).Decode(&nodes); err != nil {
		return nil, corrupt("decoding index: %v", err)
	}
	return nodes, nil
}

func decodeStorageInfo(r io.Reader) (info *common.OCIStorageInfo, err error) {
	defer func() {
		if p := recover(); p != nil {
			info, err = nil, corrupt("decoding storage info: %v", p)
		}
	}()
	var w common.StorageInfoWrapper
	if err := gob.NewDecoder(r).Decode(&w); err != nil {
		return nil, corrupt("decoding storage info: %v", err)
	}
	if w.Type != string(common.StorageModeOCI) {
		return nil, fmt.Errorf("storage type %q is not supported (only local and oci archives are)", w.Type)
	}
	var oci common.OCIStorageInfo
	if err := gob.NewDecoder(bytes.NewReader(w.Data)).Decode(&oci); err != nil {
		return nil, corrupt("decoding oci storage info: %v", err)
	}
	return &oci, nil
}

// readTrailer returns clipbuild's trailer and where it starts, or a zero
// trailer starting at size when the archive has none (one written by clip).
func readTrailer(f io.ReaderAt, size int64) (Trailer, int64, error) {
	var t Trailer
	if size < common.ClipHeaderLength+trailerFooterLen {
		return t, size, nil
	}
	var foot [trailerFooterLen]byte
	if _, err := f.ReadAt(foot[:], size-trailerFooterLen); err != nil {
		return t, 0, corrupt("reading trailer: %v", err)
	}
	if !bytes.Equal(foot[16:], trailerMagic[:]) {
		return t, size, nil
	}
	n := int64(binary.LittleEndian.Uint64(foot[8:16]))
	if n < 0 || n > size {
		return t, 0, corrupt("trailer length %d out of range", n)
	}
	start := size - trailerFooterLen - n
	if start < common.ClipHeaderLength {
		return t, 0, corrupt("trailer length %d out of range", n)
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, start); err != nil {
		return t, 0, corrupt("reading trailer: %v", err)
	}
	if crc64.Checksum(buf, crcTable) != binary.LittleEndian.Uint64(foot[:8]) {
		return t, 0, corrupt("trailer checksum mismatch")
	}
	if err := json.Unmarshal(buf, &t); err != nil {
		return t, 0, corrupt("decoding trailer: %v", err)
	}
	return t, start, nil
}

// validateNodes checks the tree is well formed: a root directory, clean
// absolute paths, every parent a directory, and every data reference inside
// the archive (v1) or naming one of the image's layers (v2).
func validateNodes(a *Archive, nodes []*common.ClipNode, dataEnd int64) error {
	root := a.Metadata.Get("/")
	if root == nil || !root.IsDir() {
		return corrupt("no root directory")
	}
	layers := map[string]bool{}
	if a.OCI != nil {
		for _, l := range a.OCI.Layers {
			layers[l] = true
		}
	}
	// The directories of the index, by path: where a path is listed more
	// than once, the index keeps the last node, as here.
	dirs := map[string]bool{}
	for _, n := range nodes {
		if n == nil {
			return corrupt("empty index entry")
		}
		if n.IsDir() {
			dirs[n.Path] = true
		} else {
			delete(dirs, n.Path)
		}
	}
	for _, n := range nodes {
		if n.Path != "/" {
			if !strings.HasPrefix(n.Path, "/") || path.Clean(n.Path) != n.Path {
				return corrupt("unclean path %q", n.Path)
			}
			if !dirs[path.Dir(n.Path)] {
				return corrupt("%q has no parent directory", n.Path)
			}
		}
		switch n.NodeType {
		case common.DirNode, common.SymLinkNode:
		case common.FileNode:
			if n.Remote != nil {
				if !layers[n.Remote.LayerDigest] {
					return corrupt("%q refers to unknown layer %q", n.Path, n.Remote.LayerDigest)
				}
				if n.Remote.UOffset < 0 || n.Remote.ULength < 0 {
					return corrupt("%q has a negative data range", n.Path)
				}
				continue
			}
			if a.OCI != nil && n.DataLen > 0 {
				return corrupt("%q has no data reference", n.Path)
			}
			if n.DataLen < 0 || n.DataPos < 0 || (n.DataLen > 0 && (n.DataPos < common.ClipHeaderLength || n.DataPos > dataEnd || n.DataLen > dataEnd-n.DataPos)) {
				return corrupt("%q has data at %d+%d outside the data section", n.Path, n.DataPos, n.DataLen)
			}
		default:
			return corrupt("%q has unknown node type %q", n.Path, n.NodeType)
		}
	}
	return nil
}
