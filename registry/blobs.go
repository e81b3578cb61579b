package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrBlobMissing is a blob the registry answers 404 for (BLOB_UNKNOWN): the
// image that held it was deleted, or collected by `clipbuild registry gc`,
// after the archive was made.
var ErrBlobMissing = errors.New("missing from the registry (404 BLOB_UNKNOWN: was its image removed by `clipbuild registry gc`?)")

// missingBlob marks a 404 answer to a blob read with ErrBlobMissing.
func missingBlob(err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", ErrBlobMissing, err)
	}
	return err
}

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
		return nil, fmt.Errorf("fetching blob %s from %s: %w", dg, b.repo, missingBlob(err))
	}
	return rc, nil
}

func (b *Blobs) nameOpts() []name.Option {
	if b.opts.PlainHTTP(b.repo.RegistryStr()) {
		return []name.Option{name.Insecure}
	}
	return nil
}
