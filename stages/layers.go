package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/manifest"
	is "go.podman.io/image/v5/storage"
	"go.podman.io/storage"
	storarchive "go.podman.io/storage/pkg/archive"
)

// ErrDiffIDMismatch is returned when a layer's uncompressed diff does not
// match the diff ID the image config records for it.
var ErrDiffIDMismatch = errors.New("diff ID mismatch")

// LayerSource reads images' layers straight from the containers-storage
// store buildah built them in: no OCI layout, no temporary copy.
type LayerSource struct {
	store storage.Store
}

// NewLayerSource reads from store, which the caller keeps open (OpenStore)
// for as long as any layer of what Layers returns is read.
func NewLayerSource(store storage.Store) *LayerSource {
	return &LayerSource{store: store}
}

// StoreImage is an image in containers-storage, its layers bottom-up.
type StoreImage struct {
	ID    string
	Names []string

	// ConfigBlob is the image config exactly as stored; Config is it parsed.
	ConfigBlob   []byte
	ConfigDigest digest.Digest
	Config       imgspecv1.Image

	// Manifest is the manifest buildah stored with the image, nil if none
	// is stored. Its layer digests are whatever buildah committed (for a
	// local build, the uncompressed digests), not what a push would make.
	Manifest         []byte
	ManifestMIMEType string
	ManifestDigest   digest.Digest

	Layers []StoreLayer
}

// UncompressedBytes is the sum of the layers' uncompressed sizes.
func (i *StoreImage) UncompressedBytes() int64 {
	var n int64
	for _, l := range i.Layers {
		n += max(l.Size, 0)
	}
	return n
}

// StoreLayer is one layer of a StoreImage.
type StoreLayer struct {
	ID     string        // the store's layer ID
	DiffID digest.Digest // digest of the uncompressed tar (config rootfs.diff_ids)
	Size   int64         // uncompressed size in bytes, -1 if the store does not know it

	store storage.Store
}

// Layers resolves image (an ID, an ID prefix, "@ID", or a name spelled as
// buildah stores it, localhost/name:tag; a short name means what it means to
// containers/image, docker.io/library/name) and reads
// its config, manifest and layer list. The config is read from the image's
// big data, the same item the storage transport's GetBlob returns for the
// config digest; going through the transport would add nothing for the
// config, and for layers its GetBlob copies each diff to a temporary file
// first, which is the intermediate copy Open avoids.
func (s *LayerSource) Layers(ctx context.Context, image string) (*StoreImage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	img, err := s.resolve(image)
	if err != nil {
		return nil, err
	}
	si := &StoreImage{ID: img.ID, Names: slices.Clone(img.Names)}
	if err := s.readConfig(img, si); err != nil {
		return nil, fmt.Errorf("image %s: %w", shortID(img.ID), err)
	}
	for id := img.TopLayer; id != ""; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		layer, err := s.store.Layer(id)
		if err != nil {
			return nil, fmt.Errorf("image %s: reading layer %s: %w", shortID(img.ID), shortID(id), err)
		}
		sl, err := s.storeLayer(layer)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", shortID(img.ID), err)
		}
		si.Layers = append(si.Layers, sl)
		id = layer.Parent
	}
	slices.Reverse(si.Layers)
	if err := checkDiffIDs(si.Config.RootFS.DiffIDs, si.Layers); err != nil {
		return nil, fmt.Errorf("image %s: %w", shortID(img.ID), err)
	}
	return si, nil
}

// resolve finds image the way the storage transport does, so names mean
// what they mean to export and push.
func (s *LayerSource) resolve(image string) (*storage.Image, error) {
	ref, err := is.Transport.ParseStoreReference(s.store, image)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", image, err)
	}
	_, img, err := is.ResolveReference(ref)
	if err != nil {
		return nil, fmt.Errorf("finding %s in containers-storage: %w", image, err)
	}
	return img, nil
}

// readConfig reads the stored manifest, if any, and the config it names;
// without a manifest the config is the big data item named by the image
// ID, which containers/image makes the config's digest.
func (s *LayerSource) readConfig(img *storage.Image, si *StoreImage) error {
	si.ConfigDigest = digest.NewDigestFromEncoded(digest.SHA256, img.ID)
	if slices.Contains(img.BigDataNames, storage.ImageDigestBigDataKey) {
		m, err := s.store.ImageBigData(img.ID, storage.ImageDigestBigDataKey)
		if err != nil {
			return fmt.Errorf("reading manifest: %w", err)
		}
		si.Manifest, si.ManifestMIMEType = m, manifest.GuessMIMEType(m)
		if si.ManifestDigest, err = manifest.Digest(m); err != nil {
			return fmt.Errorf("digesting manifest: %w", err)
		}
		parsed, err := manifest.FromBlob(m, si.ManifestMIMEType)
		if err != nil {
			return fmt.Errorf("parsing manifest: %w", err)
		}
		si.ConfigDigest = parsed.ConfigInfo().Digest
	}
	if err := si.ConfigDigest.Validate(); err != nil {
		return fmt.Errorf("config digest: %w", err)
	}
	blob, err := s.store.ImageBigData(img.ID, si.ConfigDigest.String())
	if err != nil {
		return fmt.Errorf("reading config %s: %w", si.ConfigDigest, err)
	}
	if got := si.ConfigDigest.Algorithm().FromBytes(blob); got != si.ConfigDigest {
		return fmt.Errorf("config digest is %s, want %s", got, si.ConfigDigest)
	}
	if err := json.Unmarshal(blob, &si.Config); err != nil {
		return fmt.Errorf("parsing config: %w", err)
	}
	si.ConfigBlob = blob
	return nil
}

// expectedDiffIDFlag is the layer flag containers/image sets on a layer
// pulled by its TOC (zstd:chunked), whose UncompressedDigest is unset.
const expectedDiffIDFlag = "expected-layer-diffid"

func (s *LayerSource) storeLayer(l *storage.Layer) (StoreLayer, error) {
	diffID, size := l.UncompressedDigest, l.UncompressedSize
	if diffID == "" {
		if v, ok := l.Flags[expectedDiffIDFlag].(string); ok {
			diffID = digest.Digest(v)
		}
		if size <= 0 {
			size = -1
		}
	}
	if err := diffID.Validate(); err != nil {
		return StoreLayer{}, fmt.Errorf("layer %s has no valid uncompressed digest: %w", shortID(l.ID), err)
	}
	return StoreLayer{ID: l.ID, DiffID: diffID, Size: size, store: s.store}, nil
}

func checkDiffIDs(config []digest.Digest, layers []StoreLayer) error {
	if len(config) != len(layers) {
		return fmt.Errorf("config lists %d diff IDs, the store holds %d layers: %w", len(config), len(layers), ErrDiffIDMismatch)
	}
	for i, l := range layers {
		if config[i] != l.DiffID {
			return fmt.Errorf("layer %d: config diff ID %s, stored layer %s has %s: %w",
				i+1, config[i], shortID(l.ID), l.DiffID, ErrDiffIDMismatch)
		}
	}
	return nil
}

// Open streams the layer's uncompressed tar from the store, once. Reading
// to EOF checks the stream against DiffID and Size: the last Read returns
// an error wrapping ErrDiffIDMismatch instead of io.EOF when they differ,
// so a caller that reads to the end need not hash the stream again.
//
// While the stream is open the store's layer lock is held: other users of
// the store, buildah included, wait for it, and a second Open (or any call
// on the store) from the same goroutine blocks for good. Read promptly,
// close as soon as done. Cancelling ctx closes the stream and releases the
// lock; later Reads return ctx's error. Close must still be called.
func (l StoreLayer) Open(ctx context.Context) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	uncompressed := storarchive.Uncompressed
	rc, err := l.store.Diff("", l.ID, &storage.DiffOptions{Compression: &uncompressed})
	if err != nil {
		return nil, fmt.Errorf("reading layer %s from containers-storage: %w", shortID(l.ID), err)
	}
	d := &diffReader{ctx: ctx, rc: newReadAhead(rc), layer: l, digester: l.DiffID.Algorithm().Digester()}
	d.stop = context.AfterFunc(ctx, func() { _ = d.closeOnce() })
	return d, nil
}

// diffReader is a layer diff from the store, checked against its diff ID
// and closed when its context is done. Read and the close both take mu:
// the store's diff reader is not safe for a Close during a Read.
type diffReader struct {
	ctx      context.Context
	layer    StoreLayer
	stop     func() bool
	digester digest.Digester

	mu       sync.Mutex
	rc       io.ReadCloser
	n        int64
	closed   bool
	closeErr error
}

func (d *diffReader) Read(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ctx.Err(); err != nil {
		return 0, err
	}
	if d.closed {
		return 0, fmt.Errorf("reading layer %s: %w", shortID(d.layer.ID), io.ErrClosedPipe)
	}
	n, err := d.rc.Read(p)
	d.n += int64(n)
	_, _ = d.digester.Hash().Write(p[:n]) // a hash does not fail
	if errors.Is(err, io.EOF) {
		if verr := d.verify(); verr != nil {
			return n, verr
		}
		return n, io.EOF
	}
	if err != nil {
		return n, fmt.Errorf("reading layer %s: %w", shortID(d.layer.ID), err)
	}
	return n, nil
}

func (d *diffReader) verify() error {
	if got := d.digester.Digest(); got != d.layer.DiffID {
		return fmt.Errorf("layer %s: stream digest %s, want %s: %w", shortID(d.layer.ID), got, d.layer.DiffID, ErrDiffIDMismatch)
	}
	if d.layer.Size >= 0 && d.n != d.layer.Size {
		return fmt.Errorf("layer %s: stream is %d bytes, want %d: %w", shortID(d.layer.ID), d.n, d.layer.Size, ErrDiffIDMismatch)
	}
	return nil
}

// Close releases the stream and the store's layer lock.
func (d *diffReader) Close() error {
	d.stop()
	return d.closeOnce()
}

func (d *diffReader) closeOnce() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		if err := d.rc.Close(); err != nil {
			d.closeErr = fmt.Errorf("closing layer %s: %w", shortID(d.layer.ID), err)
		}
	}
	return d.closeErr
}

// shortID is the first 12 characters of a store ID, for messages.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
