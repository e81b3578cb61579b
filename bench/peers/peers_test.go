package peers

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// writeLayer writes a small gzip tar with n text files.
func writeLayer(t *testing.T, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer.tar.gz")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	for i := 0; i < n; i++ {
		body := []byte(fmt.Sprintf("file %d\n", i))
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d/f%d.txt", i), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []interface{ Close() error }{tw, zw, f} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestZtoc(t *testing.T) {
	p := writeLayer(t, 50)
	out, err := Ztoc([]string{p, p})
	if err != nil {
		t.Fatal(err)
	}
	if out.Layers != 2 || out.InBytes <= 0 || out.OutBytes <= 0 {
		t.Fatalf("unexpected output %+v", out)
	}
}

func TestEstargz(t *testing.T) {
	p := writeLayer(t, 50)
	out, err := Estargz([]string{p})
	if err != nil {
		t.Fatal(err)
	}
	if out.Layers != 1 || out.OutBytes <= 0 {
		t.Fatalf("unexpected output %+v", out)
	}
}
