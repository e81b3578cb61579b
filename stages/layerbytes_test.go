package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/clipbuild/clipbuild/archive"
)

func TestUncompressedLayerBytes(t *testing.T) {
	small := tarLayer(t, fileEntry("a", "x"))
	big := tarLayer(t, fileEntry("big", string(bytes.Repeat([]byte("0123456789abcdef"), 10000))))
	tests := []struct {
		name   string
		layers [][]byte
		want   int64
	}{
		{"uncompressed", [][]byte{small, big}, int64(len(small) + len(big))},
		{"gzip", [][]byte{gzipped(t, big)}, int64(len(big))},
		{"mixed", [][]byte{small, gzipped(t, big), gzipped(t, small)}, int64(2*len(small) + len(big))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := writeLayout(t, tt.layers...)
			got, err := l.UncompressedLayerBytes(context.Background())
			if err != nil || got != tt.want {
				t.Errorf("UncompressedLayerBytes() = %d, %v; want %d, nil", got, err, tt.want)
			}
		})
	}
}

func TestUncompressedLayerBytesCorrupt(t *testing.T) {
	gz := gzipped(t, tarLayer(t, fileEntry("a", "x")))
	l := writeLayout(t, gz)
	// A gzip stream cut short: the size cannot be known.
	if err := os.WriteFile(l.BlobPath(l.Manifest.Layers[0].Digest), gz[:len(gz)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := l.UncompressedLayerBytes(context.Background()); err == nil {
		t.Errorf("UncompressedLayerBytes() of a truncated gzip layer = %d, nil; want an error", got)
	}
}

// TestIndexLayerCountsUncompressedBytes: indexLayer reports the size of the
// uncompressed stream it indexed, whatever the blob's compression.
func TestIndexLayerCountsUncompressedBytes(t *testing.T) {
	plain := tarLayer(t, fileEntry("etc/hostname", "box\n"), fileEntry("big", string(bytes.Repeat([]byte("z"), 100000))))
	sum := sha256.Sum256(plain)
	diffID := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	tests := []struct {
		name string
		blob []byte
		mt   types.MediaType
	}{
		{"uncompressed", plain, types.OCIUncompressedLayer},
		{"gzip", gzipped(t, plain), types.OCILayer},
		{"docker gzip", gzipped(t, plain), types.DockerLayer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			layer := static.NewLayer(tt.blob, tt.mt)
			d, err := layer.Digest()
			if err != nil {
				t.Fatal(err)
			}
			desc := v1.Descriptor{MediaType: tt.mt, Digest: d, Size: int64(len(tt.blob))}
			got, err := indexLayer(context.Background(), archive.NewIndexer(), layer, desc, diffID)
			if err != nil || got != int64(len(plain)) {
				t.Errorf("indexLayer() = %d, %v; want %d, nil", got, err, len(plain))
			}
		})
	}
}
