package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"testing"
)

// BenchmarkZranIndexPass is the pull's index pass over one gzip layer:
// zlib inflate with restart points, the diff ID's SHA-256 and the tar
// index with each file's SHA-256. CLIPBUILD_ZRAN_BLOB names a .tar.gz to measure; the default is a
// generated gzip -6 tar-like sample (not a tar: the tar index is left out).
// It reports the restart points' JSON size as a share of the blob.
func BenchmarkZranIndexPass(b *testing.B) {
	blob, isTar := benchBlob(b)
	for _, span := range []int64{1 << 20, 2 << 20, 3 << 20, DefaultZranSpan} {
		b.Run(byteSize(span), func(b *testing.B) {
			b.SetBytes(int64(len(blob)))
			var ix *ZranIndex
			for range b.N {
				zr, err := NewZranReader(bytes.NewReader(blob), WithZranSpan(span))
				if err != nil {
					b.Fatal(err)
				}
				h := sha256.New()
				r := io.TeeReader(zr, h)
				if isTar {
					if err := NewIndexer().AddLayer(context.Background(), "sha256:l", r, WithContentHashes()); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					b.Fatal(err)
				}
				if ix, err = zr.Index(); err != nil {
					b.Fatal(err)
				}
				zr.Close()
			}
			j, _ := json.Marshal(ix)
			b.ReportMetric(float64(len(ix.Points)), "points")
			b.ReportMetric(100*float64(len(j))/float64(len(blob)), "%index")
		})
	}
}

func benchBlob(b *testing.B) ([]byte, bool) {
	if p := os.Getenv("CLIPBUILD_ZRAN_BLOB"); p != "" {
		blob, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		return blob, true
	}
	t := &testing.T{}
	blob := gzipGo(t, zranSample(9, 32<<20), 6)
	return blob, false
}

func byteSize(n int64) string {
	return string(rune('0'+n>>20)) + "MiB"
}
