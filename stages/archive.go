package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/storage"
	storarchive "go.podman.io/storage/pkg/archive"

	"github.com/clipbuild/clipbuild/archive"
)

// Written is an archive on disk.
type Written struct {
	Path  string
	Bytes int64
	Stats archive.Stats
}

// ArchivedV1 is a self-contained archive and what it was made of.
type ArchivedV1 struct {
	Written
	ManifestDigest string
	// ImageBytes is the sum of the layer sizes as stored: uncompressed in
	// containers-storage, as the registry served them in a fetched layout.
	ImageBytes        int64
	UncompressedBytes int64
}

// StoreArchiver writes self-contained archives of images in
// containers-storage straight from their layer diffs (LayerSource): no OCI
// layout, no unpacked rootfs, nothing on disk but the archive.
type StoreArchiver struct {
	// StoreOptions selects the store; the default is the one buildah uses
	// (DefaultStoreOptions).
	StoreOptions *storage.StoreOptions
	// Progress is told how many of the layers' uncompressed bytes the
	// first read (the one that builds the tree) has read. The default
	// reports nothing.
	Progress ProgressFunc
}

// Archive writes the archive of image (a store reference, see
// LayerSource.Layers) to output, atomically, recording name as the
// image's name. The store is open for the whole write and released after
// the last layer stream is closed.
func (a StoreArchiver) Archive(ctx context.Context, image, name, output string) (ArchivedV1, error) {
	var opts []StoreOption
	if a.StoreOptions != nil {
		opts = append(opts, WithStoreOptions(*a.StoreOptions))
	}
	store, release, err := OpenStore(ctx, opts...)
	if err != nil {
		return ArchivedV1{}, err
	}
	defer release()
	img, err := NewLayerSource(store).Layers(ctx, image)
	if err != nil {
		return ArchivedV1{}, err
	}
	m, err := img.OCIManifest()
	if err != nil {
		return ArchivedV1{}, fmt.Errorf("image %s: %w", shortID(img.ID), err)
	}
	progress := newProgressCounter(a.Progress, img.UncompressedBytes())
	streams := make([]archive.LayerStream, len(img.Layers))
	for i, l := range img.Layers {
		streams[i] = archive.LayerStream{Digest: l.DiffID.String(), Open: firstReadCounted(l.Open, progress)}
	}
	w, err := writeV1(ctx, streams, output, v1Trailer(name, img.ManifestDigest.String(), m, img.Config))
	if err != nil {
		return ArchivedV1{}, err
	}
	n := img.UncompressedBytes()
	return ArchivedV1{Written: w, ManifestDigest: img.ManifestDigest.String(), ImageBytes: n, UncompressedBytes: n}, nil
}

// firstReadCounted counts the bytes of the first stream open returns: the
// archive writer reads a layer a second time only for the file bodies that
// survive, which is not known up front, so only the first read is progress.
func firstReadCounted(open func(context.Context) (io.ReadCloser, error), progress *progressCounter) func(context.Context) (io.ReadCloser, error) {
	var once sync.Once
	return func(ctx context.Context) (io.ReadCloser, error) {
		rc, err := open(ctx)
		if err != nil {
			return nil, err
		}
		counted := rc
		once.Do(func() { counted = progress.reader(rc) })
		return counted, nil
	}
}

// OCIManifest is the image's stored manifest (OCI or Docker schema 2) as
// an OCI manifest, as far as an archive records it: its layers. An image
// stored without a manifest gets one listing its uncompressed layers.
func (i *StoreImage) OCIManifest() (imgspecv1.Manifest, error) {
	out := imgspecv1.Manifest{MediaType: imgspecv1.MediaTypeImageManifest,
		Config: imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageConfig, Digest: i.ConfigDigest, Size: int64(len(i.ConfigBlob))}}
	if i.Manifest == nil {
		for _, l := range i.Layers {
			out.Layers = append(out.Layers, imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageLayer, Digest: l.DiffID, Size: l.Size})
		}
		return out, nil
	}
	m, err := manifest.FromBlob(i.Manifest, i.ManifestMIMEType)
	if err != nil {
		return imgspecv1.Manifest{}, fmt.Errorf("parsing manifest: %w", err)
	}
	for _, l := range m.LayerInfos() {
		out.Layers = append(out.Layers, imgspecv1.Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size, Annotations: l.Annotations})
	}
	return out, nil
}

// ArchiveLayout writes the archive of the image in the OCI layout l (what
// Fetch made) to output, atomically, recording name as the image's name.
// Each blob is decompressed as it is read (gzip, zstd or none, whatever its
// media type says) and checked against its digest and the config's diff
// ID; nothing is unpacked.
func ArchiveLayout(ctx context.Context, l *Layout, name, output string) (ArchivedV1, error) {
	diffIDs := l.Config.RootFS.DiffIDs
	if len(diffIDs) != len(l.Manifest.Layers) {
		return ArchivedV1{}, fmt.Errorf("image config lists %d diff IDs, manifest %d layers: %w", len(diffIDs), len(l.Manifest.Layers), ErrDiffIDMismatch)
	}
	sizes := make([]int64, len(diffIDs))
	streams := make([]archive.LayerStream, len(diffIDs))
	for i, d := range l.Manifest.Layers {
		b := layoutBlob{path: l.BlobPath(d.Digest), blob: d.Digest, diffID: diffIDs[i], size: &sizes[i]}
		streams[i] = archive.LayerStream{Digest: d.Digest.String(), Open: b.open}
	}
	w, err := writeV1(ctx, streams, output, v1Trailer(name, l.ManifestDigest.String(), l.Manifest, l.Config))
	if err != nil {
		return ArchivedV1{}, err
	}
	out := ArchivedV1{Written: w, ManifestDigest: l.ManifestDigest.String(), ImageBytes: l.LayerBytes()}
	for _, n := range sizes {
		out.UncompressedBytes += n
	}
	return out, nil
}

// v1Trailer is the trailer of a self-contained archive of an image.
func v1Trailer(name, manifestDigest string, m imgspecv1.Manifest, c imgspecv1.Image) archive.Trailer {
	return archive.Trailer{Image: ImageMetadata(name, manifestDigest, m, c), ManifestDigest: manifestDigest, Tool: "clipbuild"}
}

// writeV1 writes the archive of layers to output, atomically.
func writeV1(ctx context.Context, layers []archive.LayerStream, output string, t archive.Trailer) (Written, error) {
	var w Written
	err := archive.WriteFileAtomic(output, func(f *os.File) error {
		st, err := archive.WriteV1FromLayers(ctx, layers, f, t)
		if err != nil {
			return err
		}
		w.Stats = st
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		w.Bytes = fi.Size()
		return nil
	})
	if err != nil {
		return Written{}, err
	}
	w.Path = output
	return w, nil
}

// layoutBlob is one layer blob of an OCI layout, read as its uncompressed
// tar stream.
type layoutBlob struct {
	path   string
	blob   digest.Digest // of the file
	diffID digest.Digest // of the uncompressed stream
	size   *int64        // set to the uncompressed size by each read to the end
}

// open starts a read of the blob. Reading to the end checks the file
// against its digest and the stream against the diff ID: the last Read
// returns an error wrapping ErrDiffIDMismatch (or naming the blob digest)
// instead of io.EOF when they differ. Both reads of a v1 write are checked,
// so the archive holds only bytes the digests vouch for.
func (b layoutBlob) open(ctx context.Context) (io.ReadCloser, error) {
	if err := b.blob.Validate(); err != nil {
		return nil, fmt.Errorf("layer digest: %w", err)
	}
	if err := b.diffID.Validate(); err != nil {
		return nil, fmt.Errorf("diff ID: %w", err)
	}
	f, err := os.Open(b.path)
	if err != nil {
		return nil, err
	}
	r := &blobReader{b: b, f: f, blobHash: b.blob.Verifier(), diffHash: b.diffID.Algorithm().Digester()}
	r.compressed = io.TeeReader(ctxReader{ctx, f}, r.blobHash)
	r.plain, err = storarchive.DecompressStream(r.compressed)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	return r, nil
}

type blobReader struct {
	b          layoutBlob
	f          *os.File
	compressed io.Reader
	plain      io.ReadCloser
	blobHash   digest.Verifier
	diffHash   digest.Digester
	n          int64
}

func (r *blobReader) Read(p []byte) (int, error) {
	n, err := r.plain.Read(p)
	r.n += int64(n)
	_, _ = r.diffHash.Hash().Write(p[:n]) // a hash does not fail
	if !errors.Is(err, io.EOF) {
		if err != nil {
			err = fmt.Errorf("decompressing: %w", err)
		}
		return n, err
	}
	// Whatever follows the compressed stream in the file (padding) is
	// part of the blob its digest covers.
	if _, err := io.Copy(io.Discard, r.compressed); err != nil {
		return n, err
	}
	if !r.blobHash.Verified() {
		return n, fmt.Errorf("layer content does not match digest %s", r.b.blob)
	}
	if got := r.diffHash.Digest(); got != r.b.diffID {
		return n, fmt.Errorf("uncompressed content %s does not match the config's diff ID %s: %w", got, r.b.diffID, ErrDiffIDMismatch)
	}
	*r.b.size = r.n
	return n, io.EOF
}

func (r *blobReader) Close() error {
	err := r.plain.Close()
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ImageMetadata describes an image in clip's terms, for the archive.
func ImageMetadata(name string, manifestDigest string, m imgspecv1.Manifest, c imgspecv1.Image) *common.ImageMetadata {
	md := &common.ImageMetadata{
		Name:         name,
		Digest:       manifestDigest,
		Architecture: c.Architecture,
		Os:           c.OS,
		Variant:      c.Variant,
		Author:       c.Author,
		Env:          c.Config.Env,
		Cmd:          c.Config.Cmd,
		Entrypoint:   c.Config.Entrypoint,
		User:         c.Config.User,
		WorkingDir:   c.Config.WorkingDir,
		ExposedPorts: c.Config.ExposedPorts,
		Volumes:      c.Config.Volumes,
		StopSignal:   c.Config.StopSignal,
		Labels:       c.Config.Labels,
		Layers:       []string{},
		LayersData:   []common.LayerMetadata{},
	}
	if c.Created != nil {
		md.Created = c.Created.UTC()
	} else {
		md.Created = time.Time{}
	}
	for _, l := range m.Layers {
		md.Layers = append(md.Layers, l.Digest.String())
		md.LayersData = append(md.LayersData, common.LayerMetadata{MIMEType: l.MediaType, Digest: l.Digest.String(), Size: l.Size, Annotations: l.Annotations})
	}
	return md
}

// writeV2 writes a metadata-only archive to output, atomically, and returns
// its size.
func writeV2(output string, nodes []*common.ClipNode, oci *common.OCIStorageInfo, t archive.Trailer) (int64, error) {
	var size int64
	err := archive.WriteFileAtomic(output, func(f *os.File) error {
		if err := archive.WriteV2(f, nodes, oci, t); err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		size = fi.Size()
		return nil
	})
	return size, err
}
