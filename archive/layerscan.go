package archive

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// LayerEntry is one tar entry of a layer as the tree builder needs it: its
// header, and where its data starts in the layer's uncompressed stream (the
// offset a v2 data reference records).
type LayerEntry struct {
	Header     tar.Header
	DataOffset int64
	// ContentHash is the hex sha256 of a regular file's contents (sparse
	// files expanded) when the scan was made WithContentHashes, else empty.
	ContentHash string
}

// LayerScan is what one pass over a layer's uncompressed tar stream yields:
// every entry in order, and the stream's length. Applying it to an Indexer
// (Indexer.Apply) is the same as AddLayer on the stream, so a scan can be
// kept (a rebuild's unchanged layer) and applied later without the stream.
type LayerScan struct {
	Entries []LayerEntry
	// Size is the number of uncompressed bytes read, end-of-archive blocks
	// and anything after them included.
	Size int64
}

type scanOptions struct {
	boundary func(off int64)
	body     func(e *LayerEntry, body io.Reader) error
	hashes   bool
}

// ScanOption configures ScanLayer.
type ScanOption func(*scanOptions)

// WithBoundaries calls fn with the uncompressed offset at which each entry's
// first header block starts, in increasing order, once that header has been
// read: a place where a seekable compressor can cut a member so that the
// entry is not split needlessly. The default is no callback.
func WithBoundaries(fn func(off int64)) ScanOption {
	return func(o *scanOptions) { o.boundary = fn }
}

// WithEntryBodies calls fn for each entry with a reader of its contents
// (sparse files expanded, as archive/tar reads them); what fn leaves unread
// is skipped. The default reads no contents.
func WithEntryBodies(fn func(e *LayerEntry, body io.Reader) error) ScanOption {
	return func(o *scanOptions) { o.body = fn }
}

// WithContentHashes fills each regular file's LayerEntry.ContentHash (and
// so the archive node's ContentHash) with the sha256 of its contents, read
// as the scan passes them anyway. It does not combine with
// WithEntryBodies, whose callback reads the contents itself. The default
// hashes nothing.
func WithContentHashes() ScanOption {
	return func(o *scanOptions) { o.hashes = true }
}

// ScanLayer reads one layer's uncompressed tar stream to its end, once,
// and returns its entries.
func ScanLayer(ctx context.Context, r io.Reader, opts ...ScanOption) (*LayerScan, error) {
	s := &LayerScan{}
	size, err := scanLayer(ctx, r, opts, func(e *LayerEntry) error {
		s.Entries = append(s.Entries, *e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.Size = size
	return s, nil
}

// scanLayer calls each for every entry of the tar stream r, in order, and
// returns how many bytes the stream held.
func scanLayer(ctx context.Context, r io.Reader, opts []ScanOption, each func(*LayerEntry) error) (int64, error) {
	var o scanOptions
	for _, opt := range opts {
		opt(&o)
	}
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	var h hash.Hash
	if o.hashes && o.body == nil {
		h = sha256.New()
	}
	buf := make([]byte, 64<<10) // for the hashes and the drains
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// The previous entry's data has been read to its end, so the next
		// header starts at the next 512-byte block.
		start := (cr.n + 511) &^ 511
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("reading layer tar: %w", err)
		}
		if o.boundary != nil {
			o.boundary(start)
		}
		e := &LayerEntry{Header: *hdr, DataOffset: cr.n}
		if h != nil && isRegularEntry(hdr.Typeflag) && !IsSparse(hdr) {
			// The hash needs the contents before the entry is applied; the
			// tar reader gives them once, so they are read here. A sparse
			// file is not hashed: its logical size may be far beyond its
			// bytes, and the indexers that hash refuse it anyway.
			h.Reset()
			if _, err := copyChunks(ctx, h, tr, buf); err != nil {
				return 0, fmt.Errorf("reading layer tar: %w", err)
			}
			e.ContentHash = hex.EncodeToString(h.Sum(nil))
		}
		if err := each(e); err != nil {
			return 0, err
		}
		if o.body != nil {
			if err := o.body(e, tr); err != nil {
				return 0, err
			}
		}
		// The rest of the entry is read here, a chunk at a time, rather
		// than skipped by Next in one read that no cancel stops; and a
		// boundary needs it read, to take the next header's offset. A
		// sparse file's rest would be read expanded, every hole as zeros,
		// to whatever size its header claims: Next skips its stored bytes
		// instead, unless there is a boundary to take.
		if IsSparse(hdr) && o.boundary == nil {
			continue
		}
		if _, err := copyChunks(ctx, io.Discard, tr, buf); err != nil {
			return 0, fmt.Errorf("reading layer tar: %w", err)
		}
	}
	// Drain the end-of-archive blocks and whatever follows them, so that a
	// digest taken over the stream covers all of it.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return 0, fmt.Errorf("reading layer tar: %w", err)
	}
	return cr.n, nil
}

// AddLayer applies one layer, read as an uncompressed tar stream, entry by
// entry as it is read (nothing of the layer is kept but the tree). digest
// names the layer in the data references (the compressed blob's digest).
func (ix *Indexer) AddLayer(ctx context.Context, digest string, r io.Reader, opts ...ScanOption) error {
	ix.layer++
	_, err := scanLayer(ctx, r, opts, func(e *LayerEntry) error { return ix.applyEntry(digest, e) })
	return err
}

// Apply applies a scanned layer on top of the layers applied so far, as
// AddLayer does. digest names the layer in the data references.
func (ix *Indexer) Apply(digest string, s *LayerScan) error {
	ix.layer++
	for i := range s.Entries {
		if err := ix.applyEntry(digest, &s.Entries[i]); err != nil {
			return err
		}
	}
	return nil
}

// isRegularEntry reports whether a tar entry of type flag is a regular file
// (sparse ones included), whose contents a node serves.
func isRegularEntry(flag byte) bool {
	return flag == tar.TypeReg || flag == tar.TypeRegA || flag == tar.TypeGNUSparse
}

func (ix *Indexer) applyEntry(digest string, e *LayerEntry) error {
	if err := ix.addEntry(&e.Header, digest, e.DataOffset, e.ContentHash); err != nil {
		name := e.Header.Name
		if len(name) > 200 { // a hostile name can be megabytes long
			name = name[:200] + "..."
		}
		return fmt.Errorf("%q: %w", name, err)
	}
	return nil
}

// copyChunks copies r to w through buf until r's EOF, in chunks that fill
// buf but for the last, checking ctx before each: a file in a layer may be
// many gigabytes, of which a cancelled run must not read to the end, and a
// writer sees whole chunks (dataWriter leaves those of zeros as holes).
func copyChunks(ctx context.Context, w io.Writer, r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m := 0
		var err error
		for m < len(buf) && err == nil {
			var k int
			k, err = r.Read(buf[m:])
			m += k
		}
		if m > 0 {
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
