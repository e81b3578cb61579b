package registry

import (
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Blobs reads blobs of one repository by digest. Reading by digest, never by
// tag, is what keeps an archive reading its own bytes after its tag moves.
type Blobs struct {
	repo name.Repository
	opts Options
}

// NewBlobs reads from repository repo ("host/path") on its registry.
func NewBlobs(repo string, opts Options) (*Blobs, error) {
	ref, err := opts.ParseReference(repo + ":latest")
	if err != nil {
		return nil, err
	}
	return &Blobs{repo: ref.Context(), opts: opts}, nil
}

// Open streams the blob with digest dg, verified against it as it is read.
func (b *Blobs) Open(ctx context.Context, dg string) (io.ReadCloser, error) {
	ref, err := name.NewDigest(b.repo.String()+"@"+dg, b.nameOpts()...)
	if err != nil {
		return nil, fmt.Errorf("blob reference: %w", err)
	}
	ropts, err := b.opts.RemoteOptions(ctx, ref)
	if err != nil {
		return nil, err
	}
	l, err := remote.Layer(ref, ropts...)
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s: %w", dg, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s from %s: %w", dg, b.repo, err)
	}
	return rc, nil
}

func (b *Blobs) nameOpts() []name.Option {
	if b.opts.PlainHTTP(b.repo.RegistryStr()) {
		return []name.Option{name.Insecure}
	}
	return nil
}
