package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/beam-cloud/clip/pkg/common"
)

// LayerStream is one layer of an image as WriteV1FromLayers reads it.
type LayerStream struct {
	// Digest names the layer in errors.
	Digest string
	// Open starts a new read of the layer's uncompressed tar stream. It is
	// called once or twice, never while another stream of the image is
	// open; each stream is read to its end (so a stream that checks its
	// digest at EOF checks every read) and closed before the next is
	// opened.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// dataKey names one regular file's data in the layer streams: the layer's
// position in the image and the entry's DataOffset, which no other entry of
// that layer has.
type dataKey struct {
	layer  int
	offset int64
}

// WriteV1FromLayers writes a self-contained archive of the image whose
// layers are given bottom-up into out, which must be an empty file open for
// writing, without unpacking anything: the tree is built from the layer
// streams by the Indexer (whiteouts, opaque directories, hard links, full
// modes, FIFOs, device nodes, extended attributes, sparse files expanded),
// and each surviving regular file's bytes are copied from its stream into
// the data section, once per inode. Nothing of a file that a later layer
// deleted or replaced is written, and nothing but out is written at all.
// The extended attributes go into t.Xattrs, replacing any the caller set.
//
// It reads the layers in two passes. The first builds the tree, which is
// known only once the last layer is read: a file of layer 1 may be deleted
// by layer 5. The second re-opens only the layers that still hold a
// surviving file and copies those files' bodies. The alternative, one pass
// that copies every file body as it goes, would have to keep dead bytes
// (in the archive, or in a spill file on disk) or buffer whole layers in
// memory; a second read of an uncompressed stream costs far less than
// either. Memory holds the tree and one copy buffer, never a file.
func WriteV1FromLayers(ctx context.Context, layers []LayerStream, out *os.File, t Trailer) (Stats, error) {
	var st Stats
	ix := NewIndexer(WithSparseFiles())
	for i, l := range layers {
		err := readLayer(ctx, l, func(r io.Reader) error {
			return ix.AddLayer(ctx, strconv.Itoa(i), r)
		})
		if err != nil {
			return st, fmt.Errorf("reading layer %d (%s): %w", i+1, shortDigest(l.Digest), err)
		}
	}
	nodes := ix.Nodes()
	t.Xattrs = ix.Xattrs()
	st.XattrInodes = len(t.Xattrs)

	// The regular files whose data the archive holds, by where the data
	// sits; hard links share their inode's reference, so one key stands
	// for all the paths of an inode.
	want := map[dataKey][]*common.ClipNode{}
	perLayer := make([]int, len(layers))
	for _, n := range nodes {
		if !isRegular(n) {
			continue
		}
		if n.Remote == nil {
			return st, fmt.Errorf("archiving %s: no data reference", n.Path)
		}
		i, err := strconv.Atoi(n.Remote.LayerDigest)
		if err != nil || i < 0 || i >= len(layers) {
			return st, fmt.Errorf("archiving %s: bad layer reference %q", n.Path, n.Remote.LayerDigest)
		}
		k := dataKey{i, n.Remote.UOffset}
		if len(want[k]) == 0 {
			perLayer[i]++
		}
		want[k] = append(want[k], n)
	}

	if _, err := out.Write(make([]byte, common.ClipHeaderLength)); err != nil {
		return st, err
	}
	dw := &dataWriter{ctx: ctx, f: out, w: bufio.NewWriterSize(out, 1<<20), pos: common.ClipHeaderLength, buf: make([]byte, copyChunk)}
	for i, l := range layers {
		if perLayer[i] == 0 {
			continue // every file it holds is gone, or it holds none
		}
		found := 0
		err := readLayer(ctx, l, func(r io.Reader) error {
			_, err := scanLayer(ctx, r, []ScanOption{WithEntryBodies(func(e *LayerEntry, body io.Reader) error {
				paths, ok := want[dataKey{i, e.DataOffset}]
				if !ok {
					return nil
				}
				found++
				return dw.copy(paths, e, body)
			})}, func(*LayerEntry) error { return nil })
			return err
		})
		if err == nil && found != perLayer[i] {
			err = fmt.Errorf("the stream holds %d of the %d files the first read found: it changed between the reads", found, perLayer[i])
		}
		if err != nil {
			return st, fmt.Errorf("copying files of layer %d (%s): %w", i+1, shortDigest(l.Digest), err)
		}
	}
	if err := dw.w.Flush(); err != nil {
		return st, err
	}
	st.DataBytes = dw.bytes
	seen := map[uint64]bool{}
	for _, n := range nodes {
		n.Remote = nil // a v1 node's data is in the archive
		st.add(n, !seen[n.Attr.Ino])
		seen[n.Attr.Ino] = true
	}
	return st, finish(out, dw.pos, nodes, nil, t)
}

// shortDigest is the first 12 hex digits of a digest, for messages.
func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok {
		d = hex
	}
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// isRegular says whether n is a regular file, whose data the archive holds.
func isRegular(n *common.ClipNode) bool {
	return n.NodeType == common.FileNode && n.Attr.Mode&syscall.S_IFMT == syscall.S_IFREG
}

// readLayer opens l, hands the stream to read, and closes it, reporting the
// first error of the three.
func readLayer(ctx context.Context, l LayerStream, read func(io.Reader) error) error {
	rc, err := l.Open(ctx)
	if err != nil {
		return err
	}
	err = read(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return err
}

// dataWriter appends file blocks to a v1 archive's data section in clip's
// format: a BlockTypeFile byte, the bytes, and their CRC-64 (ISO). A chunk
// of the copy (a MiB of a file, or its last part) that is all zeros and at
// least holeMin long is not written but skipped, leaving a hole in f that
// reads back as the same zeros: a sparse file (or any run of zeros) costs
// the archive's filesystem about its data, as it would unpacked by GNU tar,
// not a block for every byte it declares.
type dataWriter struct {
	ctx   context.Context // stops a copy between chunks
	f     *os.File        // where w writes, seeked over holes
	w     *bufio.Writer
	pos   int64 // the archive offset of the next byte written
	bytes int64 // file bytes written
	buf   []byte
}

// holeMin is the shortest chunk of zeros the archive leaves as a hole:
// below a few filesystem blocks a hole saves nothing.
const holeMin = 64 << 10

// copyChunk is the most of a file a dataWriter copies at once.
const copyChunk = 1 << 20

// zeros is a chunk of zero bytes to compare chunks with.
var zeros [copyChunk]byte

// isoTable is the CRC-64 table of clip's data blocks (the trailer's is ECMA).
var isoTable = crc64.MakeTable(crc64.ISO)

// copy writes the body of entry e as the data of paths, the paths of one
// inode, and records where it went in each of them.
func (d *dataWriter) copy(paths []*common.ClipNode, e *LayerEntry, body io.Reader) error {
	n := paths[0]
	regular := e.Header.Typeflag == tar.TypeReg || e.Header.Typeflag == tar.TypeRegA || IsSparse(&e.Header)
	if !regular || e.Header.Size != n.DataLen {
		return fmt.Errorf("archiving %s: the entry at offset %d is a %d-byte %q entry, the first read found a %d-byte file there: the stream changed between the reads",
			n.Path, e.DataOffset, e.Header.Size, e.Header.Typeflag, n.DataLen)
	}
	if err := d.w.WriteByte(byte(common.BlockTypeFile)); err != nil {
		return err
	}
	d.pos++
	crc, sum := crc64.New(isoTable), sha256.New()
	// A chunk at a time, so that a cancelled run stops within a file of
	// many gigabytes (a sparse file declares its size in a few bytes of
	// tar), and its zero chunks are left as holes.
	copied, err := copyChunks(d.ctx, io.MultiWriter(d, crc, sum), io.LimitReader(body, n.DataLen), d.buf)
	if err == nil && copied != n.DataLen {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("archiving %s: %d of its %d bytes in the layer: %w", n.Path, copied, n.DataLen, err)
		}
		return fmt.Errorf("archiving %s: %w", n.Path, err)
	}
	if _, err := d.w.Write(crc.Sum(nil)); err != nil {
		return err
	}
	hash := hex.EncodeToString(sum.Sum(nil))
	for _, p := range paths {
		p.DataPos, p.DataLen, p.ContentHash = d.pos, copied, hash
	}
	d.pos += copied + common.ClipChecksumLength
	d.bytes += copied
	return nil
}

// Write appends file bytes p to the data section: a chunk of the copy
// (see copyChunks) that is all zeros and at least holeMin long is skipped
// in f instead of written.
func (d *dataWriter) Write(p []byte) (int, error) {
	if len(p) < holeMin || !bytes.Equal(p, zeros[:len(p)]) {
		return d.w.Write(p)
	}
	if err := d.w.Flush(); err != nil {
		return 0, err
	}
	if _, err := d.f.Seek(int64(len(p)), io.SeekCurrent); err != nil {
		return 0, err
	}
	return len(p), nil
}
