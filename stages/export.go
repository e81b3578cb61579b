package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	is "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
	storarchive "go.podman.io/storage/pkg/archive"
)

// Layout is an image in a local OCI layout directory.
type Layout struct {
	Dir            string
	ManifestDigest digest.Digest
	Manifest       imgspecv1.Manifest
	Config         imgspecv1.Image
}

// BlobPath is where the layout keeps the blob with digest d.
func (l *Layout) BlobPath(d digest.Digest) string {
	return filepath.Join(l.Dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// LayerBytes is the sum of the layer sizes as stored.
func (l *Layout) LayerBytes() int64 {
	var n int64
	for _, d := range l.Manifest.Layers {
		n += d.Size
	}
	return n
}

// UncompressedLayerBytes is the sum of the layers' uncompressed sizes. A
// layer stored uncompressed counts as stored; a compressed one is
// decompressed to count it.
func (l *Layout) UncompressedLayerBytes(ctx context.Context) (int64, error) {
	var n int64
	for i, d := range l.Manifest.Layers {
		if d.MediaType == imgspecv1.MediaTypeImageLayer || d.MediaType == dockerUncompressedLayer {
			n += d.Size
			continue
		}
		size, err := uncompressedSize(ctx, l.BlobPath(d.Digest))
		if err != nil {
			return 0, fmt.Errorf("layer %d (%s): %w", i+1, d.Digest.Encoded()[:12], err)
		}
		n += size
	}
	return n, nil
}

// dockerUncompressedLayer is the Docker media type of an uncompressed layer.
const dockerUncompressedLayer = "application/vnd.docker.image.rootfs.diff.tar"

func uncompressedSize(ctx context.Context, blob string) (int64, error) {
	f, err := os.Open(blob)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	plain, err := storarchive.DecompressStream(ctxReader{ctx, f})
	if err != nil {
		return 0, fmt.Errorf("decompressing: %w", err)
	}
	defer plain.Close()
	n, err := io.Copy(io.Discard, plain)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return 0, cerr
		}
		return 0, fmt.Errorf("decompressing: %w", err)
	}
	return n, nil
}

// Exporter copies images out of containers-storage (where buildah keeps
// them) into OCI layouts, in process, with containers/image.
type Exporter struct {
	// StoreOptions selects the store; the default is the one buildah uses
	// (storage.conf, or the rootless equivalent).
	StoreOptions *storage.StoreOptions
}

// insecureAcceptAnything is the signature policy for copying an image we
// just built ourselves: there is nothing to verify.
func insecureAcceptAnything() (*signature.PolicyContext, error) {
	return signature.NewPolicyContext(&signature.Policy{
		Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()},
	})
}

// Export copies the local image into a new OCI layout at dir, keeping layers
// uncompressed: they are unpacked next, so compressing them would be wasted
// work.
func (e Exporter) Export(ctx context.Context, image, dir string) (*Layout, error) {
	var storeOpts []StoreOption
	if e.StoreOptions != nil {
		storeOpts = append(storeOpts, WithStoreOptions(*e.StoreOptions))
	}
	store, release, err := OpenStore(ctx, storeOpts...)
	if err != nil {
		return nil, err
	}
	defer release()
	src, err := is.Transport.ParseStoreReference(store, image)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", image, err)
	}
	dst, err := layout.NewReference(dir, "latest")
	if err != nil {
		return nil, fmt.Errorf("opening layout %s: %w", dir, err)
	}
	policy, err := insecureAcceptAnything()
	if err != nil {
		return nil, err
	}
	defer policy.Destroy()
	if _, err := copy.Image(ctx, policy, dst, src, &copy.Options{
		DestinationCtx: &types.SystemContext{OCIAcceptUncompressedLayers: true},
		ReportWriter:   io.Discard,
	}); err != nil {
		return nil, fmt.Errorf("copying %s to %s: %w", image, dir, err)
	}
	return ReadLayout(dir)
}

// ReadLayout reads the single image in the OCI layout at dir.
func ReadLayout(dir string) (*Layout, error) {
	var index imgspecv1.Index
	if err := readJSON(filepath.Join(dir, "index.json"), &index); err != nil {
		return nil, fmt.Errorf("reading layout index: %w", err)
	}
	if len(index.Manifests) != 1 {
		return nil, fmt.Errorf("layout %s holds %d manifests, want 1", dir, len(index.Manifests))
	}
	l := &Layout{Dir: dir, ManifestDigest: index.Manifests[0].Digest}
	if err := l.ManifestDigest.Validate(); err != nil {
		return nil, fmt.Errorf("layout manifest digest: %w", err)
	}
	if err := readJSON(l.BlobPath(l.ManifestDigest), &l.Manifest); err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	if err := l.Manifest.Config.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("config digest: %w", err)
	}
	for _, d := range l.Manifest.Layers {
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("layer digest: %w", err)
		}
	}
	if err := readJSON(l.BlobPath(l.Manifest.Config.Digest), &l.Config); err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	return l, nil
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s is missing", filepath.Base(p))
		}
		return err
	}
	return json.Unmarshal(b, v)
}
