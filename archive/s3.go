package archive

import (
	"context"

	"github.com/clipbuild/clipbuild/registry"
)

// OpenAny opens the archive name: a file path as Open does, or an
// s3://BUCKET/KEY object, whose metadata is read once on open and whose
// data (v1) is then read by byte range as the archive's storage needs it.
func OpenAny(ctx context.Context, name string) (*Archive, error) {
	if !registry.IsS3URL(name) {
		return Open(name)
	}
	o, err := registry.ParseS3Object(name)
	if err != nil {
		return nil, err
	}
	r, err := registry.OpenS3Object(ctx, o)
	if err != nil {
		return nil, err
	}
	return OpenReaderAt(r, r.Size(), name)
}
