package pipeline

import (
	"context"
	"path/filepath"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/stages"
)

// Build runs `buildah bud` and records the image for the stages after it.
func Build(b *stages.Buildah, opts stages.BudOptions) Stage {
	return Step("build", func(ctx context.Context, j *Job) error {
		img, err := b.Bud(ctx, opts)
		if err != nil {
			return err
		}
		j.Image = img
		j.Result.Image = img.Name
		return nil
	})
}

// Export copies the built image from containers-storage to an OCI layout.
func Export(e stages.Exporter) Stage {
	return Step("export", func(ctx context.Context, j *Job) error {
		dir, err := j.ScratchDir("layout")
		if err != nil {
			return err
		}
		l, err := e.Export(ctx, j.Image.Name, dir)
		if err != nil {
			return err
		}
		j.Layout = l
		j.Result.ManifestDigest = l.ManifestDigest.String()
		j.Result.ImageBytes = l.LayerBytes()
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
