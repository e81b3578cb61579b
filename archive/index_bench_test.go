package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clipbuild/clipbuild/archive"
)

// benchLayer is a tar stream of the given entries (names ending in "/" are
// directories, the rest one-byte files, whiteouts included).
func benchLayer(b *testing.B, names []string) []byte {
	b.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		h := &tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, ModTime: time.Unix(1700000000, 0)}
		if n[len(n)-1] == '/' {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			b.Fatal(err)
		}
		tw.Write([]byte("x")[:h.Size])
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// benchTree names files files in dirs directories: d0000/f0000 ...
func benchTree(dirs, files int) (dirNames, fileNames []string) {
	for d := range dirs {
		dirNames = append(dirNames, fmt.Sprintf("d%04d/", d))
		for f := range files / dirs {
			fileNames = append(fileNames, fmt.Sprintf("d%04d/f%04d", d, f))
		}
	}
	return dirNames, fileNames
}

// benchIndex indexes layers b.N times and checks the node count.
func benchIndex(b *testing.B, layers [][]byte, wantNodes int) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ix := archive.NewIndexer()
		for i, l := range layers {
			if err := ix.AddLayer(ctx, fmt.Sprintf("sha256:layer%d", i), bytes.NewReader(l)); err != nil {
				b.Fatal(err)
			}
		}
		if got := len(ix.Nodes()); got != wantNodes {
			b.Fatalf("len(Nodes()) = %d, want %d", got, wantNodes)
		}
	}
}

// BenchmarkIndexOverwrite40k indexes 40,000 files in 200 directories, all
// overwritten by a second layer: each overwrite removes the old node.
func BenchmarkIndexOverwrite40k(b *testing.B) {
	dirs, files := benchTree(200, 40000)
	base := benchLayer(b, append(dirs, files...))
	over := benchLayer(b, files)
	benchIndex(b, [][]byte{base, over}, 1+len(dirs)+len(files))
}

// BenchmarkIndexWhiteouts40k indexes 40,000 files in 200 directories, then
// a layer that whites out half the files one by one, whites out 50 whole
// directories, and makes 50 others opaque with one new file each.
func BenchmarkIndexWhiteouts40k(b *testing.B) {
	dirs, files := benchTree(200, 40000)
	base := benchLayer(b, append(dirs, files...))
	var second []string
	for d := range 200 {
		switch {
		case d < 100: // half its files whited out
			for f := 0; f < 200; f += 2 {
				second = append(second, fmt.Sprintf("d%04d/.wh.f%04d", d, f))
			}
		case d < 150:
			second = append(second, fmt.Sprintf(".wh.d%04d", d))
		default:
			second = append(second, fmt.Sprintf("d%04d/new", d), fmt.Sprintf("d%04d/.wh..wh..opq", d))
		}
	}
	want := 1 + 100 + 100*100 + 50*2 // root, dirs 0-99 with 100 files left, dirs 150-199 with one file
	benchIndex(b, [][]byte{base, benchLayer(b, second)}, want)
}
