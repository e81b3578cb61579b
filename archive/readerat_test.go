package archive_test

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clipbuild/clipbuild/archive"
)

// TestOpenReaderAt checks that an archive opened through an io.ReaderAt
// (as one on S3 is) has the tree and file contents of the same archive
// opened as a file, and that its data is read through the reader.
func TestOpenReaderAt(t *testing.T) {
	_, clip := fixtureArchive(t)
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	treeOf := func(a *archive.Archive) archive.Tree {
		t.Helper()
		s, err := archive.OpenStorage(a)
		if err != nil {
			t.Fatalf("OpenStorage() = %v", err)
		}
		defer s.Cleanup()
		tr, err := archive.TreeFromArchive(context.Background(), a, s)
		if err != nil {
			t.Fatalf("TreeFromArchive() = %v", err)
		}
		return tr
	}
	fromFile, err := archive.Open(clip)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	r := &countingReaderAt{r: bytes.NewReader(data)}
	fromReader, err := archive.OpenReaderAt(r, int64(len(data)), "s3://bucket/fixture.clip")
	if err != nil {
		t.Fatalf("OpenReaderAt() = %v", err)
	}
	if got, want := fromReader.Path, "s3://bucket/fixture.clip"; got != want {
		t.Errorf("Path = %q, want %q", got, want)
	}
	metaReads := r.n
	if diff := cmp.Diff(treeOf(fromFile), treeOf(fromReader)); diff != "" {
		t.Errorf("tree through a ReaderAt differs from the file's (-file +reader):\n%s", diff)
	}
	if r.n == metaReads {
		t.Errorf("file contents were not read through the ReaderAt")
	}

	if _, err := archive.OpenReaderAt(bytes.NewReader(data[:len(data)/2]), int64(len(data)/2), "half"); err == nil {
		t.Errorf("OpenReaderAt(half an archive) = nil error, want one")
	}
}

type countingReaderAt struct {
	r *bytes.Reader
	n int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.n++
	return c.r.ReadAt(p, off)
}
