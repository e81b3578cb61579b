package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// ScratchTagPrefix starts the tags clipbuild's builds push (id-<image ID>);
// GC removes only these.
const ScratchTagPrefix = "id-"

// DefaultKeep is how long GC keeps a scratch tag after it was last pushed.
const DefaultKeep = 720 * time.Hour

// CollectedTag is a scratch tag that GC removed (or, dry, would remove).
type CollectedTag struct {
	Repository string
	Tag        string
	// Pushed is when the tag was last pushed: the modification time of its
	// current link in the registry's storage.
	Pushed time.Time
}

// GCResult is what GC did.
type GCResult struct {
	// Removed are the scratch tags removed, by repository then tag.
	Removed []CollectedTag
	// Kept counts the scratch tags young enough to stay.
	Kept int
	// BlobsRemoved counts the blobs the mark-and-sweep deleted; zero when
	// dry.
	BlobsRemoved int
}

type gcOptions struct {
	keep   time.Duration
	dryRun bool
	s3     *S3Storage
	now    func() time.Time
}

// GCOption configures GC.
type GCOption func(*gcOptions) error

// WithKeep keeps scratch tags pushed less than keep ago. The default is
// DefaultKeep (30 days).
func WithKeep(keep time.Duration) GCOption {
	return func(o *gcOptions) error {
		if keep < 0 {
			return fmt.Errorf("keep %s: must not be negative", keep)
		}
		o.keep = keep
		return nil
	}
}

// WithDryRun lists the scratch tags that would go and changes nothing. The
// default is false.
func WithDryRun(dry bool) GCOption {
	return func(o *gcOptions) error { o.dryRun = dry; return nil }
}

// WithGCStorage collects the registry stored in S3 (resolved from the
// environment with S3Storage.Resolve) instead of under root, which is then
// ignored. The default is filesystem storage under root.
func WithGCStorage(s S3Storage) GCOption {
	return func(o *gcOptions) error { o.s3 = &s; return nil }
}

// GC removes the scratch tags (ScratchTagPrefix) of the registry stored
// under root (or in S3, WithGCStorage) last pushed longer ago than the keep
// duration, then runs distribution's mark-and-sweep garbage collector, which
// deletes the manifests no tag names any more and the blobs nothing
// references. Other tags, and what they reference, stay; manifests that no
// tag names (pushed by digest alone) go too, as distribution's
// --delete-untagged does.
//
// As distribution requires, no registry may write to the storage while GC
// runs (stop them, or make them read-only): a blob uploaded during the
// sweep can be deleted before its manifest lands.
func GC(ctx context.Context, root string, opts ...GCOption) (GCResult, error) {
	o := gcOptions{keep: DefaultKeep, now: time.Now}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return GCResult{}, err
		}
	}
	if o.s3 == nil {
		if _, err := os.Stat(root); err != nil {
			return GCResult{}, fmt.Errorf("registry root: %w", err)
		}
	}
	driver, _, err := storageDriver(ctx, root, o.s3)
	if err != nil {
		return GCResult{}, err
	}
	var notFound storagedriver.PathNotFoundError
	if _, err := driver.Stat(ctx, repositoriesPath); errors.As(err, &notFound) {
		return GCResult{}, nil // nothing was ever pushed
	} else if err != nil {
		return GCResult{}, fmt.Errorf("reading registry storage: %w", err)
	}
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		return GCResult{}, fmt.Errorf("opening registry storage: %w", err)
	}
	res, err := collectTags(ctx, driver, ns, o)
	if err != nil || o.dryRun {
		return res, err
	}
	before, err := countBlobs(ctx, ns)
	if err != nil {
		return res, err
	}
	// RemoveUntagged: the manifests of the tags just removed are named by
	// nothing else, so only this lets mark-and-sweep release their blobs.
	if err := storage.MarkAndSweep(ctx, driver, ns, storage.GCOpts{RemoveUntagged: true, Quiet: true}); err != nil {
		return res, fmt.Errorf("collecting garbage: %w", err)
	}
	after, err := countBlobs(ctx, ns)
	if err != nil {
		return res, err
	}
	res.BlobsRemoved = before - after
	return res, nil
}

// storageDriver is the storage driver of Start's registry under root (or in
// s3 when it is not nil); where names it for logs.
func storageDriver(ctx context.Context, root string, s3 *S3Storage) (storagedriver.StorageDriver, string, error) {
	cfg, where, err := storageConfig(ctx, root, s3)
	if err != nil {
		return nil, "", err
	}
	d, err := factory.Create(ctx, cfg.Type(), cfg.Parameters())
	if err != nil {
		return nil, "", fmt.Errorf("opening storage %s: %w", where, err)
	}
	return d, where, nil
}

// collectTags removes (unless dry) the scratch tags older than the keep
// duration in every repository.
func collectTags(ctx context.Context, driver storagedriver.StorageDriver, ns distribution.Namespace, o gcOptions) (GCResult, error) {
	var res GCResult
	enum, ok := ns.(distribution.RepositoryEnumerator)
	if !ok {
		return res, errors.New("registry storage cannot list its repositories")
	}
	cutoff := o.now().Add(-o.keep)
	err := enum.Enumerate(ctx, func(name string) error {
		named, err := reference.WithName(name)
		if err != nil {
			return fmt.Errorf("repository %q: %w", name, err)
		}
		repo, err := ns.Repository(ctx, named)
		if err != nil {
			return fmt.Errorf("opening repository %s: %w", name, err)
		}
		tags, err := repo.Tags(ctx).All(ctx)
		if err != nil {
			var unknown distribution.ErrRepositoryUnknown
			if errors.As(err, &unknown) {
				return nil // no tags at all
			}
			return fmt.Errorf("listing tags of %s: %w", name, err)
		}
		sort.Strings(tags)
		for _, tag := range tags {
			if !strings.HasPrefix(tag, ScratchTagPrefix) {
				continue
			}
			fi, err := driver.Stat(ctx, tagLinkPath(name, tag))
			var notFound storagedriver.PathNotFoundError
			if errors.As(err, &notFound) {
				continue // a tag directory without a link points at nothing
			}
			if err != nil {
				return fmt.Errorf("reading when %s:%s was pushed: %w", name, tag, err)
			}
			if !fi.ModTime().Before(cutoff) {
				res.Kept++
				continue
			}
			if !o.dryRun {
				if err := repo.Tags(ctx).Untag(ctx, tag); err != nil {
					return fmt.Errorf("removing tag %s:%s: %w", name, tag, err)
				}
			}
			res.Removed = append(res.Removed, CollectedTag{Repository: name, Tag: tag, Pushed: fi.ModTime()})
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("removing old scratch tags: %w", err)
	}
	return res, nil
}

// repositoriesPath is where distribution's storage keeps its repositories.
const repositoriesPath = "/docker/registry/v2/repositories"

// tagLinkPath is where distribution's storage keeps the digest tag points
// at; pushing the tag rewrites it.
func tagLinkPath(repo, tag string) string {
	return path.Join(repositoriesPath, repo, "_manifests/tags", tag, "current/link")
}

// countBlobs counts the registry's blobs.
func countBlobs(ctx context.Context, ns distribution.Namespace) (int, error) {
	n := 0
	err := ns.Blobs().Enumerate(ctx, func(digest.Digest) error { n++; return nil })
	var notFound storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		return 0, fmt.Errorf("counting blobs: %w", err)
	}
	return n, nil
}
