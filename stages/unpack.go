package stages

import (
	"archive/tar"
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
// honouring whiteouts and opaque directories. containers/storage's layer
// applier resolves every path inside dir (securejoin), so a hostile layer
// cannot write outside it. Each blob is checked against its digest.
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
}

// recordingReader keeps what is read through it until it is handed on
// (buf[off:]).
type recordingReader struct {
	r   io.Reader
	buf []byte
	off int
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func newEntryGate(r io.Reader, dir string) *entryGate {
	rec := &recordingReader{r: r}
	return &entryGate{dir: filepath.Clean(dir), src: r, rec: rec, tr: tar.NewReader(rec), buf: make([]byte, 32<<10)}
}

func (g *entryGate) Read(p []byte) (int, error) {
	for g.rec.off == len(g.rec.buf) {
		g.rec.buf, g.rec.off = g.rec.buf[:0], 0
		switch {
		case g.err != nil:
			return 0, g.err
		case g.pass:
			return g.src.Read(p)
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
			hdr, err := g.tr.Next()
			if err != nil {
				g.pass = true // the end of the archive, or an error the applier will report
				continue
			}
			if err := g.check(hdr); err != nil {
				g.err = err
				return 0, err
			}
			if path.Clean("/"+hdr.Name) == "/" {
				g.rootSet = true
			}
			g.body = true
		}
	}
	n := copy(p, g.rec.buf[g.rec.off:])
	g.rec.off += n
	return n, nil
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
