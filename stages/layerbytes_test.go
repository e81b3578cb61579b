package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/clipbuild/clipbuild/archive"
)

// TestArchiveLayoutCountsUncompressedBytes: ArchiveLayout reports the
// size of the uncompressed streams it read, whatever the blobs'
// compression, and the blobs' stored size.
func TestArchiveLayoutCountsUncompressedBytes(t *testing.T) {
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
			w, err := ArchiveLayout(context.Background(), l, "x", filepath.Join(t.TempDir(), "out.clip"))
			if err != nil || w.UncompressedBytes != tt.want {
				t.Errorf("ArchiveLayout() UncompressedBytes = %d, %v; want %d, nil", w.UncompressedBytes, err, tt.want)
			}
			if w.ImageBytes != l.LayerBytes() {
				t.Errorf("ArchiveLayout() ImageBytes = %d, want %d", w.ImageBytes, l.LayerBytes())
			}
		})
	}
}

// TestArchiveLayoutCorrupt: a blob that is not what the layout says is
// refused, and no archive is left.
func TestArchiveLayoutCorrupt(t *testing.T) {
	plain := tarLayer(t, fileEntry("a", "x"), fileEntry("b", string(bytes.Repeat([]byte("y"), 5000))))
	gz := gzipped(t, plain)
	tests := []struct {
		name   string
		layer  []byte
		change func(blob []byte) []byte
		want   string
	}{
		// A gzip stream cut short: the layer cannot be read (Go's gzip
		// says so, or pigz where containers-storage finds it on PATH).
		{"truncated gzip", gz, func(b []byte) []byte { return b[:len(b)/2] }, "unexpected EOF|incomplete deflate data"},
		// Same length, other bytes: the digest catches it.
		{"flipped byte", plain, func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-2000] ^= 1; return b }, "does not match digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := writeLayout(t, tt.layer)
			p := l.BlobPath(l.Manifest.Layers[0].Digest)
			if err := os.WriteFile(p, tt.change(tt.layer), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out.clip")
			if _, err := ArchiveLayout(context.Background(), l, "x", out); err == nil || !regexp.MustCompile(tt.want).MatchString(err.Error()) {
				t.Errorf("ArchiveLayout() = %v, want an error matching %q", err, tt.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Stat(output) = %v, want it absent", err)
			}
		})
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
			var done, total int64
			progress := newProgressCounter(func(d, tot int64) { done, total = d, tot }, desc.Size)
			got, _, err := indexLayer(context.Background(), archive.NewIndexer(), layer, desc, diffID, progress)
			if err != nil || got != int64(len(plain)) {
				t.Errorf("indexLayer() = %d, %v; want %d, nil", got, err, len(plain))
			}
			// Pull's index progress counts the blob's bytes as read.
			if done != desc.Size || total != desc.Size {
				t.Errorf("progress = %d of %d, want %d of %d", done, total, desc.Size, desc.Size)
			}
		})
	}
}
