package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"

	"github.com/clipbuild/clipbuild/registry"
)

// s3Output is where a run whose output is an s3:// URL puts its archive:
// the stages write it to a scratch file, which is uploaded when they are
// done, with the result beside it.
type s3Output struct {
	archive registry.S3Storage // KEY.clip
	result  registry.S3Storage // KEY.clip.json
}

// prepareOutput points j.Output at a scratch file when the output is an
// s3:// URL, and says where it will be uploaded; nil for a local output.
func (j *Job) prepareOutput() (*s3Output, error) {
	if !registry.IsS3URL(j.Output) {
		return nil, nil
	}
	o, err := registry.ParseS3Object(j.Output)
	if err != nil {
		return nil, err
	}
	dir, err := j.ScratchDir("output")
	if err != nil {
		return nil, err
	}
	res := o
	res.Prefix += ".json"
	j.Output = filepath.Join(dir, path.Base(o.Prefix))
	return &s3Output{archive: o, result: res}, nil
}

// upload is the stage that uploads the written archive, atomically: a run
// that fails or is interrupted before the upload completes leaves nothing
// at the archive's key.
func (o *s3Output) upload() Stage {
	return Step("upload", func(ctx context.Context, j *Job) error {
		j.Log.Infof("uploading %s to %s", j.Output, o.archive)
		if err := registry.UploadS3(ctx, o.archive, j.Output); err != nil {
			return err
		}
		j.Result.Archive = o.archive.String()
		return nil
	})
}

// putResult stores the run's result beside the uploaded archive. When it
// cannot, the archive is removed again: a failed run leaves no output.
func (o *s3Output) putResult(ctx context.Context, j *Job) error {
	b, err := json.Marshal(j.Result)
	if err != nil {
		return fmt.Errorf("encoding the result: %w", err)
	}
	if err := registry.PutS3(ctx, o.result, append(b, '\n'), "application/json"); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := registry.DeleteS3(cctx, o.archive); derr != nil {
			j.Log.Warnf("removing %s after the failed run: %v", o.archive, derr)
		}
		return err
	}
	return nil
}
