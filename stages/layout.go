package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
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
