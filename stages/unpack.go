package stages

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	digest "github.com/opencontainers/go-digest"
	storarchive "go.podman.io/storage/pkg/archive"

	"github.com/clipbuild/clipbuild/archive"
	"go.podman.io/storage/pkg/unshare"
)

// ctxReader stops a long copy when its context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Unpack applies the layout's layers in order onto a new rootfs at dir,
// honouring whiteouts and opaque directories. It is the reference unpack
// the tests compare v1 and v2 archives with; no run unpacks anything.
// containers/storage's layer applier resolves every path inside dir
// (securejoin), so a hostile layer cannot write outside it. GNU sparse files are written out whole, holes as
// zeros (see entryGate). Each blob is checked against its digest.
func Unpack(ctx context.Context, l *Layout, dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	rootSet := false
	for i, d := range l.Manifest.Layers {
		set, err := applyLayer(ctx, l.BlobPath(d.Digest), d.Digest, dir)
		if err != nil {
			return fmt.Errorf("unpacking layer %d (%s): %w", i+1, d.Digest.Encoded()[:12], err)
		}
		rootSet = rootSet || set
	}
	if !rootSet {
		return os.Chmod(dir, archive.RootDirDefaultMode)
	}
	return nil
}

// applyLayer applies one layer blob and reports whether it set the root
// directory's attributes.
func applyLayer(ctx context.Context, blob string, want digest.Digest, dir string) (bool, error) {
	f, err := os.Open(blob)
	if err != nil {
		return false, err
	}
	defer f.Close()
	verifier := want.Verifier()
	plain, err := storarchive.DecompressStream(io.TeeReader(ctxReader{ctx, f}, verifier))
	if err != nil {
		return false, fmt.Errorf("decompressing: %w", err)
	}
	defer plain.Close()
	stream := newEntryGate(plain, dir)
	_, err = storarchive.ApplyUncompressedLayer(dir, stream, &storarchive.TarOptions{InUserNS: unshare.IsRootless()})
	if err == nil {
		// Drain what the tar reader left (padding, trailing blocks) so the
		// digest covers the whole blob.
		_, err = io.Copy(io.Discard, stream)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return false, cerr
		}
		return false, err
	}
	if _, err := io.Copy(io.Discard, io.TeeReader(f, verifier)); err != nil {
		return false, err
	}
	if !verifier.Verified() {
		return false, fmt.Errorf("layer content does not match digest %s", want)
	}
	return stream.rootSet, nil
}

// entryGate passes a layer's tar stream to the layer applier unchanged, one
// entry at a time, and checks each entry against the rootfs as the applier
// left it before letting the applier read it. The applier reads past an
// entry's body only once it has finished with that entry, so the check sees
// the effect of every entry before it.
//
// It exists for one hole in containers/storage: a whiteout under a path that
// is not a directory ("fifo/.wh.x", where an earlier entry made fifo a FIFO
// or a device node) makes its os.RemoveAll open that path for reading. On a
// FIFO that blocks forever, hanging the unpack; on a device node the layer
// chose, it opens a host device as root. The gate refuses such an entry
// with an error instead.
//
// Since it reads every header anyway, it also notes whether the layer has an
// entry for the root directory itself ("./"), which Unpack needs to know.
//
// And it rewrites GNU sparse files, which the applier cannot take: it fails
// on type 'S' ("unhandled tar header type 83"), and leaves PAX sparse files
// to its tar reader. The gate hands such an entry on as a plain regular file
// (a PAX header made from the one archive/tar read, GNU.sparse.* records
// dropped) whose body is the file as archive/tar expands it, holes read as
// zeros; every other entry passes byte for byte.
type entryGate struct {
	dir  string
	src  io.Reader
	rec  *recordingReader // what tr has read from src and the applier has not
	tr   *tar.Reader
	buf  []byte
	body bool // tr is in an entry's body
	pass bool // past the end of the archive or an unparsable stream: pass bytes on as they are
	err  error
	// rootSet records an entry for the root directory.
	rootSet bool
	// sparse marks a body being handed on expanded; name and size are
	// its entry's. skipPad drops the stream's padding after such a body,
	// whose own padding the gate has sent.
	sparse  bool
	name    string
	size    int64
	skipPad bool
}

// recordingReader keeps what is read through it until it is handed on
// (buf[off:]), and counts it.
type recordingReader struct {
	r   io.Reader
	buf []byte
	off int
	n   int64
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	r.n += int64(n)
	return n, err
}

func newEntryGate(r io.Reader, dir string) *entryGate {
	rec := &recordingReader{r: r}
	return &entryGate{dir: filepath.Clean(dir), src: r, rec: rec, tr: tar.NewReader(rec), buf: make([]byte, 32<<10)}
}

func (g *entryGate) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // reading no bytes of a body would never reach its end
	}
	for g.rec.off == len(g.rec.buf) {
		g.rec.buf, g.rec.off = g.rec.buf[:0], 0
		switch {
		case g.err != nil:
			return 0, g.err
		case g.pass:
			return g.src.Read(p)
		case g.body && g.sparse:
			// Hand on the expanded bytes instead of the stored ones.
			n, err := g.tr.Read(g.buf[:min(len(p), len(g.buf))])
			g.rec.buf = append(g.rec.buf[:0], g.buf[:n]...)
			if err == io.EOF {
				g.rec.buf = append(g.rec.buf, make([]byte, blockPadding(g.size))...)
				g.body, g.sparse, g.skipPad = false, false, true
			} else if err != nil {
				g.err = fmt.Errorf("reading sparse file %q: %w", g.name, err)
			}
		case g.body:
			// The applier is reading (or skipping) the current entry's body.
			_, err := g.tr.Read(g.buf[:min(len(p), len(g.buf))])
			if err == io.EOF {
				g.body = false
			} else if err != nil {
				g.pass = true // the applier meets the same error in the same bytes
			}
		default:
			// The applier wants the next header: it is done with the last entry.
			if err := g.next(); err != nil {
				g.err = err
				return 0, err
			}
		}
	}
	n := copy(p, g.rec.buf[g.rec.off:])
	g.rec.off += n
	return n, nil
}

// next reads the next header into rec, checks it, and rewrites a sparse
// file's.
func (g *entryGate) next() error {
	// Each header starts on a 512-byte block: what tr reads before it is
	// the padding after the last entry's body.
	start := g.rec.n
	hdr, err := g.tr.Next()
	pad := min(int(blockPadding(start)), len(g.rec.buf))
	if g.skipPad {
		g.rec.off, g.skipPad = pad, false
	}
	if err != nil {
		g.pass = true // the end of the archive, or an error the applier will report
		return nil
	}
	if err := g.check(hdr); err != nil {
		return err
	}
	if path.Clean("/"+hdr.Name) == "/" {
		g.rootSet = true
	}
	g.body = true
	if !archive.IsSparse(hdr) || hdr.Typeflag != tar.TypeGNUSparse && hdr.Typeflag != tar.TypeReg {
		// Only a file's body is expanded: archive/tar refuses a sparse
		// map on a header-only type, and any other entry with GNU.sparse.*
		// records reaches the applier as it is.
		return nil
	}
	h, err := regularHeader(hdr)
	if err != nil {
		return fmt.Errorf("rewriting sparse file %q as a regular file: %w", hdr.Name, err)
	}
	g.rec.buf = append(g.rec.buf[:pad], h...)
	g.sparse, g.name, g.size = true, hdr.Name, hdr.Size
	return nil
}

// regularHeader encodes hdr, a sparse file's header as archive/tar read it
// (hdr.Size the real size), as a regular file's PAX header: PAX keeps every
// field the applier uses, including sub-second times and xattr records.
func regularHeader(hdr *tar.Header) ([]byte, error) {
	h := *hdr
	h.Typeflag = tar.TypeReg
	h.Format = tar.FormatPAX
	h.Xattrs = nil // they are in PAXRecords too
	h.PAXRecords = map[string]string{}
	for k, v := range hdr.PAXRecords {
		if !strings.HasPrefix(k, "GNU.sparse.") {
			h.PAXRecords[k] = v
		}
	}
	var buf bytes.Buffer
	// WriteHeader writes the header blocks at once; the body follows from
	// the gate, so the writer is never closed.
	if err := tar.NewWriter(&buf).WriteHeader(&h); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blockPadding is the number of zero bytes that pad n bytes to a whole
// number of 512-byte tar blocks.
func blockPadding(n int64) int64 {
	return -n & 511
}

// check refuses a whiteout whose directory resolves (as the applier resolves
// it, with securejoin) to an existing path that is not a directory.
func (g *entryGate) check(hdr *tar.Header) error {
	name := filepath.Clean(hdr.Name)
	if strings.HasPrefix(name, storarchive.WhiteoutMetaPrefix) {
		return nil // AUFS metadata: the applier skips it
	}
	dir, base := filepath.Split(filepath.Clean("/" + name))
	if !strings.HasPrefix(base, storarchive.WhiteoutPrefix) || base == storarchive.WhiteoutOpaqueDir {
		return nil
	}
	parent, err := securejoin.SecureJoin(g.dir, dir)
	if err != nil {
		return nil // the applier reports it
	}
	if fi, err := os.Lstat(parent); err == nil && !fi.IsDir() {
		rel, _ := filepath.Rel(g.dir, parent)
		return fmt.Errorf("whiteout %q: %s is a %s, not a directory", hdr.Name, path.Clean("/"+filepath.ToSlash(rel)), fileKind(fi.Mode()))
	}
	return nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeDevice != 0:
		return "device node"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeSymlink != 0:
		return "symlink"
	}
	return "file"
}
