package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
)

// scanTestLayer is a layer with entries of every size class: empty, under a
// block, over several blocks, a PAX header (long name) and a directory.
func scanTestLayer(t *testing.T) ([]byte, map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := map[string]string{
		"etc/empty":                       "",
		"etc/small":                       "hello\n",
		"usr/big":                         strings.Repeat("0123456789abcdef", 200),
		"usr/" + strings.Repeat("n", 150): "long name\n",
	}
	mt := time.Unix(1700000000, 0)
	for _, d := range []string{"etc/", "usr/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"etc/empty", "etc/small", "usr/big", "usr/" + strings.Repeat("n", 150)} {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mt}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), files
}

func TestScanLayerOffsets(t *testing.T) {
	raw, files := scanTestLayer(t)
	var bounds []int64
	bodies := map[string]string{}
	s, err := ScanLayer(context.Background(), bytes.NewReader(raw),
		WithBoundaries(func(off int64) { bounds = append(bounds, off) }),
		WithEntryBodies(func(e *LayerEntry, body io.Reader) error {
			b, err := io.ReadAll(body)
			bodies[e.Header.Name] = string(b)
			return err
		}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != int64(len(raw)) {
		t.Errorf("Size = %d, want %d", s.Size, len(raw))
	}
	if len(bounds) != len(s.Entries) {
		t.Fatalf("%d boundaries for %d entries", len(bounds), len(s.Entries))
	}
	for i, e := range s.Entries {
		// A boundary is where the entry's headers start: reading a tar from
		// there yields this very entry first.
		hdr, err := tar.NewReader(bytes.NewReader(raw[bounds[i]:])).Next()
		if err != nil || hdr.Name != e.Header.Name {
			t.Errorf("entry %d (%s): tar at boundary %d gives %v, %v", i, e.Header.Name, bounds[i], hdr, err)
		}
		if i > 0 && bounds[i] <= bounds[i-1] {
			t.Errorf("boundaries not increasing: %v", bounds)
		}
		if want, ok := files[e.Header.Name]; ok {
			if got := string(raw[e.DataOffset : e.DataOffset+e.Header.Size]); got != want {
				t.Errorf("%s: bytes at DataOffset %d = %q, want %q", e.Header.Name, e.DataOffset, got, want)
			}
			if bodies[e.Header.Name] != want {
				t.Errorf("%s: body = %q, want %q", e.Header.Name, bodies[e.Header.Name], want)
			}
		}
	}
}

func TestApplyMatchesAddLayer(t *testing.T) {
	raw, _ := scanTestLayer(t)
	ctx := context.Background()
	direct := NewIndexer()
	if err := direct.AddLayer(ctx, "sha256:aa", bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	s, err := ScanLayer(ctx, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	applied := NewIndexer()
	if err := applied.Apply("sha256:aa", s); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(direct.Nodes(), applied.Nodes()); diff != "" {
		t.Errorf("Apply(ScanLayer) differs from AddLayer (-AddLayer +Apply):\n%s", diff)
	}
}

// TestContentHashes: WithContentHashes gives every regular file the sha256
// of its contents, in the scan and in the nodes of the tree built from it,
// hard links included, and nothing else a hash; without it nothing is hashed.
func TestContentHashes(t *testing.T) {
	raw, files := scanTestLayer(t)
	var buf bytes.Buffer
	buf.Write(raw[:len(raw)-1024]) // drop the end-of-archive blocks
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "etc/link", Typeflag: tar.TypeLink, Linkname: "etc/small", Mode: 0o644},
		{Name: "etc/sym", Typeflag: tar.TypeSymlink, Linkname: "small", Mode: 0o777},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	files["etc/link"] = files["etc/small"]
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

	s, err := ScanLayer(context.Background(), bytes.NewReader(buf.Bytes()), WithContentHashes())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range s.Entries {
		want := ""
		if e.Header.Typeflag == tar.TypeReg {
			want = sum(files[e.Header.Name])
		}
		if e.ContentHash != want {
			t.Errorf("ScanLayer(WithContentHashes) %s: ContentHash = %q, want %q", e.Header.Name, e.ContentHash, want)
		}
	}
	ix := NewIndexer()
	if err := ix.Apply("sha256:layer", s); err != nil {
		t.Fatal(err)
	}
	for _, n := range ix.Nodes() {
		want := ""
		if n.NodeType == common.FileNode {
			want = sum(files[strings.TrimPrefix(n.Path, "/")])
		}
		if n.ContentHash != want {
			t.Errorf("node %s: ContentHash = %q, want %q", n.Path, n.ContentHash, want)
		}
	}

	plain, err := ScanLayer(context.Background(), bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range plain.Entries {
		if e.ContentHash != "" {
			t.Errorf("ScanLayer() %s: ContentHash = %q, want none without WithContentHashes", e.Header.Name, e.ContentHash)
		}
	}
}

// rawTarHeader is a ustar header block for name, of type flag and size,
// written by hand: archive/tar writes no GNU.sparse.* records.
func rawTarHeader(name string, flag byte, size int) []byte {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = flag
	copy(b[257:], "ustar\x0000")
	copy(b[148:], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// paxRecord is one "LEN key=value\n" record, LEN counting itself.
func paxRecord(k, v string) string {
	rest := len(k) + len(v) + 3 // the space, "=" and "\n"
	digits := 1
	for len(fmt.Sprint(rest+digits)) > digits {
		digits++
	}
	return fmt.Sprintf("%d %s=%s\n", rest+digits, k, v)
}

// blocks pads b to whole 512-byte blocks.
func blocks(b []byte) []byte {
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

// TestScanLayerSkipsTheHolesOfSparseFiles: a sparse file (PAX format 1.0)
// declaring an exabyte in a few blocks of tar is passed over by its stored
// bytes, not read expanded, even when the scan's body callback leaves the
// entry unread; a scan that read its holes would never end, and is stopped
// by the deadline.
func TestScanLayerSkipsTheHolesOfSparseFiles(t *testing.T) {
	const real = 1 << 60
	data := "five\n"
	sparseMap := fmt.Sprintf("1\n%d\n%d\n", real-int64(len(data)), len(data))
	body := append(blocks([]byte(sparseMap)), data...)
	pax := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", "huge") + paxRecord("GNU.sparse.realsize", fmt.Sprint(real))
	var layer []byte
	layer = append(layer, rawTarHeader("PaxHeaders/huge", tar.TypeXHeader, len(pax))...)
	layer = append(layer, blocks([]byte(pax))...)
	layer = append(layer, rawTarHeader("GNUSparseFile.0/huge", tar.TypeReg, len(body))...)
	layer = append(layer, blocks(body)...)
	layer = append(layer, rawTarHeader("after", tar.TypeReg, 6)...)
	layer = append(layer, blocks([]byte("after\n"))...)
	layer = append(layer, make([]byte, 1024)...)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var names []string
	var sizes []int64
	ix := NewIndexer(WithSparseFiles())
	err := ix.AddLayer(ctx, "x", bytes.NewReader(layer), WithEntryBodies(func(e *LayerEntry, body io.Reader) error {
		names, sizes = append(names, e.Header.Name), append(sizes, e.Header.Size)
		return nil
	}))
	if err != nil {
		t.Fatalf("AddLayer() = %v", err)
	}
	if want := []string{"huge", "after"}; !cmp.Equal(names, want) || sizes[0] != real {
		t.Errorf("entries %q of sizes %d, want %q, the first of %d", names, sizes, want, int64(real))
	}
}
