package pipeline

import (
	"context"
	"errors"

	"github.com/clipbuild/clipbuild/registry"
	"github.com/clipbuild/clipbuild/stages"
)

// BuildOption configures Build.
type BuildOption func(*buildOptions)

type buildOptions struct {
	removeImage bool
}

// RemoveImage makes Build remove the image it built from containers-storage
// when the run ends, after the archive is written or the run failed: for an
// image clipbuild named itself, which nobody asked to keep. Only that name
// goes; an image that has other names keeps them. The default keeps the
// image.
func RemoveImage() BuildOption {
	return func(o *buildOptions) { o.removeImage = true }
}

// Build runs `buildah bud` and records the image for the stages after it.
func Build(b *stages.Buildah, bud stages.BudOptions, opts ...BuildOption) Stage {
	var o buildOptions
	for _, opt := range opts {
		opt(&o)
	}
	return Step("build", func(ctx context.Context, j *Job) error {
		dir, err := j.ScratchDir("build")
		if err != nil {
			return err
		}
		img, err := b.Bud(ctx, bud, dir)
		if err != nil {
			return err
		}
		if o.removeImage {
			j.Defer(func(ctx context.Context) error {
				if err := b.RemoveImage(ctx, img.Name); err != nil {
					// An image left behind does not change the run's outcome.
					j.Log.Warnf("removing image %s: %v", img.Name, err)
					return nil
				}
				j.Log.Debugf("removed image %s (%s)", img.Name, img.ID)
				return nil
			})
		}
		j.Image = img
		j.Result.Image = img.Name
		return nil
	})
}

// ArchiveFromStore writes the self-contained archive of the built image
// straight from its layers in containers-storage: nothing is exported or
// unpacked, and nothing but the archive is written.
func ArchiveFromStore(a stages.StoreArchiver) Stage {
	return Step("archive", func(ctx context.Context, j *Job) error {
		w, err := a.Archive(ctx, j.Image.StoreRef(), j.Result.Image, j.Output)
		if err != nil {
			return err
		}
		j.setV1(w)
		return nil
	})
}

// ArchiveFromLayout writes the self-contained archive of the fetched image
// straight from the layout's blobs, without unpacking them.
func ArchiveFromLayout() Stage {
	return Step("archive", func(ctx context.Context, j *Job) error {
		w, err := stages.ArchiveLayout(ctx, j.Layout, j.Result.Image, j.Output)
		if err != nil {
			return err
		}
		j.setV1(w)
		return nil
	})
}

// setV1 records the v1 archive w as the run's result.
func (j *Job) setV1(w stages.ArchivedV1) {
	j.Log.Infof("v1 archive created: %s (%d bytes, %d files, %d dirs)", w.Path, w.Bytes, w.Stats.Files, w.Stats.Dirs)
	j.Result.Archive = w.Path
	j.Result.ArchiveBytes = w.Bytes
	j.Result.ClipVersion = 1
	j.Result.ImageRef = ""
	j.Result.ManifestDigest = w.ManifestDigest
	j.Result.ImageBytes = w.ImageBytes
	j.Result.UncompressedBytes = w.UncompressedBytes
}

// V1 is the self-contained chain of a build: the archive, from the store.
func V1(a stages.StoreArchiver) Stage {
	return Sequence("v1", ArchiveFromStore(a))
}

// Publish pushes the built image to the scratch registry and writes its
// metadata-only archive in the same pass over each layer: nothing is read
// back from the registry. Uploads are retried per layer, inside.
func Publish(p *stages.Publisher) Stage {
	return Step("publish", func(ctx context.Context, j *Job) error {
		j.Log.Infof("Creating index-only archive of %s as it is pushed", j.Image.Name)
		out, err := p.Publish(ctx, j.Image, j.Output)
		if err != nil {
			return err
		}
		j.Ref = out.ImageRef
		j.setV2(out)
		return nil
	})
}

// Index writes the metadata-only archive of the registry image j.Ref.
func Index(x stages.Indexer) Stage {
	return Step("index", func(ctx context.Context, j *Job) error {
		j.Log.Infof("Creating index-only archive of %s", j.Ref)
		var out stages.Indexed
		err := registry.Retry(ctx, registry.DefaultBackoff, j.Log.Warnf, "indexing", func() (err error) {
			out, err = x.Index(ctx, stages.IndexRequest{Ref: j.Ref, Image: j.Result.Image, Output: j.Output, Tag: j.Tag})
			return err
		})
		if errors.Is(err, stages.ErrPlatformMismatch) || errors.Is(err, stages.ErrSignaturePolicy) {
			return NoFallback(err) // a local copy would be the same image, under the same policy
		}
		if err != nil {
			return err
		}
		j.setV2(out)
		return nil
	})
}

// setV2 records a written v2 archive in the result.
func (j *Job) setV2(out stages.Indexed) {
	j.Log.Infof("v2 archive created: %s (%d bytes for %d bytes of layers)", out.Path, out.Bytes, out.ImageBytes)
	j.Result.Archive = out.Path
	j.Result.ArchiveBytes = out.Bytes
	j.Result.ClipVersion = 2
	j.Result.ImageRef = out.ImageRef
	j.Result.ManifestDigest = out.ManifestDigest
	j.Result.ImageBytes = out.ImageBytes
	j.Result.UncompressedBytes = out.UncompressedBytes
}

// Fetch copies the registry image j.Ref into a scratch OCI layout.
func Fetch(f stages.Fetcher) Stage {
	return Step("fetch", func(ctx context.Context, j *Job) error {
		dir, err := j.ScratchDir("layout")
		if err != nil {
			return err
		}
		l, err := f.Fetch(ctx, j.Ref, dir)
		if err != nil {
			return err
		}
		j.Layout = l
		j.Result.ManifestDigest = l.ManifestDigest.String()
		j.Result.ImageBytes = l.LayerBytes()
		return nil
	})
}

// BuildV2 is the registry chain of a build: one publish stage.
func BuildV2(p *stages.Publisher) Stage {
	return Sequence("v2", Publish(p))
}

// PullV2 indexes a registry image where it sits.
func PullV2(x stages.Indexer) Stage {
	return Sequence("v2", Index(x))
}

// PullV1 copies a registry image locally and archives it from its blobs.
func PullV1(f stages.Fetcher) Stage {
	return Sequence("v1", Fetch(f), ArchiveFromLayout())
}
