package pipeline_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/pipeline"
)

// TestRunS3Output checks that a run whose output is an s3:// URL gives its
// stages a scratch file named as the key, fails when the upload does (an
// S3 endpoint that refuses connections), and removes the scratch file.
func TestRunS3Output(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for k, v := range map[string]string{"AWS_ENDPOINT_URL": "http://" + closed, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_CONFIG_FILE": os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull, "AWS_MAX_ATTEMPTS": "1"} {
		t.Setenv(k, v)
	}
	l := logrus.New()
	l.SetOutput(&strings.Builder{})
	for _, tc := range []struct {
		output    string
		wantStage bool
		wantErr   string
	}{
		{"s3://bucket/x/app.clip", true, "uploading to s3://bucket/x/app.clip"},
		{"s3://bucket", false, "no key"},
	} {
		j := pipeline.NewJob(logrus.NewEntry(l), tc.output)
		var written string
		_, err := pipeline.Run(context.Background(), j, pipeline.Step("archive", func(_ context.Context, j *pipeline.Job) error {
			written = j.Output
			return os.WriteFile(j.Output, []byte("archive"), 0o644)
		}))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Run(output %s) = %v, want an error with %q", tc.output, err, tc.wantErr)
		}
		if got := written != ""; got != tc.wantStage {
			t.Errorf("Run(output %s): stage ran = %t, want %t", tc.output, got, tc.wantStage)
		}
		if written == "" {
			continue
		}
		if filepath.Base(written) != "app.clip" || strings.HasPrefix(written, "s3:") {
			t.Errorf("stage's output = %q, want a scratch file app.clip", written)
		}
		if _, err := os.Stat(written); !os.IsNotExist(err) {
			t.Errorf("scratch output %s after the run: %v, want it gone", written, err)
		}
	}
}
