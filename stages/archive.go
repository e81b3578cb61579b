package stages

import (
	"context"
	"os"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/clipbuild/clipbuild/archive"
)

// Written is an archive on disk.
type Written struct {
	Path  string
	Bytes int64
	Stats archive.Stats
}

// ArchiveV1 writes a self-contained archive of rootfs to output, atomically.
func ArchiveV1(ctx context.Context, rootfs, output string, t archive.Trailer) (Written, error) {
	var w Written
	err := archive.WriteFileAtomic(output, func(f *os.File) error {
		st, err := archive.WriteV1(ctx, rootfs, f, t)
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
