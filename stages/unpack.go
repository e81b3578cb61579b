package stages

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"

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

// rootEntryWatcher reads a copy of a layer's tar stream and notes whether it
// has an entry for the root directory itself ("./").
type rootEntryWatcher struct {
	pw   *io.PipeWriter
	done chan bool
}

func watchRootEntry() *rootEntryWatcher {
	pr, pw := io.Pipe()
	w := &rootEntryWatcher{pw: pw, done: make(chan bool, 1)}
	go func() {
		seen := false
		tr := tar.NewReader(pr)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if n := path.Clean("/" + h.Name); n == "/" {
				seen = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		w.done <- seen
	}()
	return w
}

func (w *rootEntryWatcher) Write(p []byte) (int, error) { return w.pw.Write(p) }

// seen waits for the copy to be read and reports whether the root was set.
func (w *rootEntryWatcher) seen() bool {
	w.pw.Close()
	return <-w.done
}

// applyLayer applies one layer blob and reports whether it set the root
// directory's attributes.
func applyLayer(ctx context.Context, blob string, want digest.Digest, dir string) (rootSet bool, err error) {
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
	watch := watchRootEntry()
	stream := io.TeeReader(plain, watch)
	_, err = storarchive.ApplyUncompressedLayer(dir, stream, &storarchive.TarOptions{InUserNS: unshare.IsRootless()})
	if err == nil {
		// Drain what the tar reader left (padding, trailing blocks) so the
		// digest covers the whole blob.
		_, err = io.Copy(io.Discard, stream)
	}
	rootSet = watch.seen()
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
	return rootSet, nil
}
