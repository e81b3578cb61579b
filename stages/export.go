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
	opts := e.StoreOptions
	if opts == nil {
		o, err := storage.DefaultStoreOptions()
		if err != nil {
			return nil, fmt.Errorf("reading storage configuration: %w", err)
		}
		opts = &o
	}
	store, err := storage.GetStore(*opts)
	if err != nil {
		return nil, fmt.Errorf("opening containers-storage: %w", err)
	}
	defer func() { _, _ = store.Shutdown(false) }()
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
