package pipeline

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/clipbuild/clipbuild/archive"
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

// Export copies the built image from containers-storage to an OCI layout.
func Export(e stages.Exporter) Stage {
	return layoutStep("export", func(ctx context.Context, j *Job, dir string) (*stages.Layout, error) {
		return e.Export(ctx, j.Image.StoreRef(), dir)
	})
}

// layoutStep is a stage that makes the job's OCI layout in a scratch
// directory with get.
func layoutStep(name string, get func(ctx context.Context, j *Job, dir string) (*stages.Layout, error)) Stage {
	return Step(name, func(ctx context.Context, j *Job) error {
		dir, err := j.ScratchDir("layout")
		if err != nil {
			return err
		}
		l, err := get(ctx, j, dir)
		if err != nil {
			return err
		}
		uncompressed, err := l.UncompressedLayerBytes(ctx)
		if err != nil {
			return err
		}
		j.Layout = l
		j.Result.ManifestDigest = l.ManifestDigest.String()
		j.Result.ImageBytes = l.LayerBytes()
		j.Result.UncompressedBytes = uncompressed
		return nil
	})
}

// Unpack unpacks the layout into a scratch rootfs.
func Unpack() Stage {
	return Step("unpack", func(ctx context.Context, j *Job) error {
		dir, err := j.ScratchDir("rootfs")
		if err != nil {
			return err
		}
		j.Rootfs = filepath.Join(dir, "rootfs")
		return stages.Unpack(ctx, j.Layout, j.Rootfs)
	})
}

// ArchiveV1 writes the self-contained archive of the rootfs.
func ArchiveV1() Stage {
	return Step("archive", func(ctx context.Context, j *Job) error {
		l := j.Layout
		t := archive.Trailer{
			Image:          stages.ImageMetadata(j.Result.Image, l.ManifestDigest.String(), l.Manifest, l.Config),
			ManifestDigest: l.ManifestDigest.String(),
			Tool:           "clipbuild",
		}
		w, err := stages.ArchiveV1(ctx, j.Rootfs, j.Output, t)
		if err != nil {
			return err
		}
		j.Log.Infof("v1 archive created: %s (%d bytes, %d files, %d dirs)", w.Path, w.Bytes, w.Stats.Files, w.Stats.Dirs)
		j.Result.Archive = w.Path
		j.Result.ArchiveBytes = w.Bytes
		j.Result.ClipVersion = 1
		j.Result.ImageRef = ""
		return nil
	})
}

// V1 is the self-contained chain: export, unpack, archive.
func V1(e stages.Exporter) Stage {
	return Sequence("v1", Export(e), Unpack(), ArchiveV1())
}

// Push pushes the built image to the scratch registry; indexing reads it
// back by digest.
func Push(p stages.Pusher) Stage {
	return Step("push", func(ctx context.Context, j *Job) error {
		var pushed stages.Pushed
		err := registry.Retry(ctx, registry.DefaultBackoff, j.Log.Warnf, "pushing", func() (err error) {
			pushed, err = p.Push(ctx, j.Image)
			return err
		})
		if err != nil {
			return err
		}
		j.Log.Debugf("pushed %s as %s", j.Image.Name, pushed.Pinned())
		j.Ref = pushed.Pinned()
		j.Tag = pushed.Tag
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
		j.Log.Infof("v2 archive created: %s (%d bytes for %d bytes of layers)", out.Path, out.Bytes, out.ImageBytes)
		j.Result.Archive = out.Path
		j.Result.ArchiveBytes = out.Bytes
		j.Result.ClipVersion = 2
		j.Result.ImageRef = out.ImageRef
		j.Result.ManifestDigest = out.ManifestDigest
		j.Result.ImageBytes = out.ImageBytes
		j.Result.UncompressedBytes = out.UncompressedBytes
		return nil
	})
}

// Fetch copies the registry image j.Ref into a scratch OCI layout.
func Fetch(f stages.Fetcher) Stage {
	return layoutStep("fetch", func(ctx context.Context, j *Job, dir string) (*stages.Layout, error) {
		return f.Fetch(ctx, j.Ref, dir)
	})
}

// BuildV2 is the registry chain of a build: push, then index.
func BuildV2(p stages.Pusher, x stages.Indexer) Stage {
	return Sequence("v2", Push(p), Index(x))
}

// PullV2 indexes a registry image where it sits.
func PullV2(x stages.Indexer) Stage {
	return Sequence("v2", Index(x))
}

// PullV1 copies a registry image locally, unpacks and archives it.
func PullV1(f stages.Fetcher) Stage {
	return Sequence("v1", Fetch(f), Unpack(), ArchiveV1())
}
