package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clipbuild/clipbuild/archive"
)

// sparseLayer reads one of the GNU tar sparse layers of the hostile corpus
// (test/hostile/testdata/mksparse.sh).
func sparseLayer(t testing.TB, format string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "test", "hostile", "testdata", "sparse-"+format+".tar"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var sparseFormats = []string{"gnu", "pax-0.0", "pax-0.1", "pax-1.0"}

// TestIndexerRefusesSparse checks that every GNU sparse encoding is refused
// with ErrSparse and the file's name, never indexed as if its stored bytes
// were the file.
func TestIndexerRefusesSparse(t *testing.T) {
	for _, format := range sparseFormats {
		t.Run(format, func(t *testing.T) {
			ix := archive.NewIndexer()
			err := ix.AddLayer(context.Background(), "sha256:sparse", bytes.NewReader(sparseLayer(t, format)))
			if !errors.Is(err, archive.ErrSparse) {
				t.Fatalf("AddLayer(%s) = %v, want ErrSparse", format, err)
			}
			if !strings.Contains(err.Error(), `"sparse/hole-start"`) {
				t.Errorf("AddLayer(%s) = %v, want the file's name in it", format, err)
			}
		})
	}
}

func TestIsSparse(t *testing.T) {
	tests := []struct {
		name string
		hdr  tar.Header
		want bool
	}{
		{"plain file", tar.Header{Typeflag: tar.TypeReg}, false},
		{"xattrs", tar.Header{Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.user.a": "1"}}, false},
		{"old GNU", tar.Header{Typeflag: tar.TypeGNUSparse}, true},
		{"PAX 0.1", tar.Header{Typeflag: tar.TypeReg, PAXRecords: map[string]string{"GNU.sparse.map": "0,1"}}, true},
		{"PAX 1.0", tar.Header{Typeflag: tar.TypeReg, PAXRecords: map[string]string{"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}}, true},
		// archive/tar does not expand a version it does not know, and
		// serves the stored bytes: still refused.
		{"unknown version", tar.Header{Typeflag: tar.TypeReg, PAXRecords: map[string]string{"GNU.sparse.major": "9"}}, true},
	}
	for _, tt := range tests {
		if got := archive.IsSparse(&tt.hdr); got != tt.want {
			t.Errorf("IsSparse(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestIndexerRefusesSparseGlobalRecord checks the refusal of a layer whose
// only sparse mark is a GNU.sparse.* record, here in a global header (the
// one kind tar.Writer writes such records in).
func TestIndexerRefusesSparseGlobalRecord(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"GNU.sparse.major": "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	ix := archive.NewIndexer()
	if err := ix.AddLayer(context.Background(), "sha256:g", &buf); !errors.Is(err, archive.ErrSparse) {
		t.Errorf("AddLayer(global GNU.sparse record) = %v, want ErrSparse", err)
	}
}
