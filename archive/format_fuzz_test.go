package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/opencontainers/go-digest"

	"github.com/clipbuild/clipbuild/archive"
)

// fuzzArchive is a seed archive for FuzzOpen.
type fuzzArchive struct {
	name string
	data []byte
}

// fuzzOpenSeeds writes a small v1 archive (WriteV1) and a small v2 archive
// (WriteV2 of an indexed layer), and derives damaged variants of each: the
// trailer stripped (as clip writes archives, so the index is not covered by
// a checksum and mutations reach the decoder), truncated, and bit-flipped in
// the header and the index.
func fuzzOpenSeeds() ([]fuzzArchive, error) {
	dir, err := os.MkdirTemp("", "clipbuild-fuzz-open-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	steps := []func() error{
		func() error { return os.MkdirAll(filepath.Join(root, "d", "e"), 0o755) },
		func() error { return os.WriteFile(filepath.Join(root, "a.txt"), []byte("alpha\n"), 0o644) },
		func() error { return os.WriteFile(filepath.Join(root, "d", "b.txt"), []byte("bravo bravo\n"), 0o600) },
		func() error { return os.Link(filepath.Join(root, "d", "b.txt"), filepath.Join(root, "d", "c.txt")) },
		func() error { return os.Symlink("../a.txt", filepath.Join(root, "d", "link")) },
		func() error { return syscall.Mkfifo(filepath.Join(root, "fifo"), 0o620) },
		func() error { return os.WriteFile(filepath.Join(root, "d", "e", "empty"), nil, 0o4755) },
		func() error { return os.Chmod(filepath.Join(root, "d", "e", "empty"), 0o4755) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	v1 := filepath.Join(dir, "v1.clip")
	err = archive.WriteFileAtomic(v1, func(f *os.File) error {
		_, err := archive.WriteV1(context.Background(), root, f, archive.Trailer{Tool: "clipbuild"})
		return err
	})
	if err != nil {
		return nil, err
	}

	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, h := range []*tar.Header{
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5},
		{Name: "etc/p2", Typeflag: tar.TypeLink, Linkname: "etc/passwd"},
		{Name: "bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin"},
		{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
	} {
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
	}
	tw.Close()
	dg := digest.FromBytes(layer.Bytes()).String()
	ix := archive.NewIndexer()
	if err := ix.AddLayer(context.Background(), dg, bytes.NewReader(layer.Bytes())); err != nil {
		return nil, err
	}
	v2 := filepath.Join(dir, "v2.clip")
	oci := &common.OCIStorageInfo{RegistryURL: "127.0.0.1:5000", Repository: "fuzz/img", Reference: "1", Layers: []string{dg},
		DecompressedHashByLayer: map[string]string{dg: digest.FromBytes(layer.Bytes()).Encoded()}}
	err = archive.WriteFileAtomic(v2, func(f *os.File) error {
		return archive.WriteV2(f, ix.Nodes(), oci, archive.Trailer{Tool: "clipbuild", ImageRef: "127.0.0.1:5000/fuzz/img@" + dg})
	})
	if err != nil {
		return nil, err
	}

	var seeds []fuzzArchive
	for _, a := range []struct{ name, path string }{{"v1", v1}, {"v2", v2}} {
		data, err := os.ReadFile(a.path)
		if err != nil {
			return nil, err
		}
		stripped := stripTrailer(data)
		indexPos := int(binary.LittleEndian.Uint64(data[18:26]))
		seeds = append(seeds,
			fuzzArchive{a.name, data},
			fuzzArchive{a.name + "-no-trailer", stripped},
			fuzzArchive{a.name + "-truncated-half", data[:len(data)/2]},
			fuzzArchive{a.name + "-truncated-footer", data[:len(data)-1]},
			fuzzArchive{a.name + "-header-flip", flipped(data, 20)},
			fuzzArchive{a.name + "-no-trailer-index-flip", flipped(stripped, indexPos+len(stripped[indexPos:])/2)},
		)
	}
	return seeds, nil
}

// stripTrailer cuts clipbuild's trailer off an archive, leaving what clip
// itself writes: everything up to the end of the last section the header
// names (clip's header: index length and position at 10 and 18, storage
// info length and position at 26 and 34, little-endian).
func stripTrailer(data []byte) []byte {
	at := func(i int) int { return int(binary.LittleEndian.Uint64(data[i : i+8])) }
	end := at(18) + at(10)
	if si := at(34) + at(26); at(26) > 0 && si > end {
		end = si
	}
	return bytes.Clone(data[:end])
}

func flipped(data []byte, i int) []byte {
	b := bytes.Clone(data)
	if i < len(b) {
		b[i] ^= 0x40
	}
	return b
}

// checkOpened fails t unless a is what Open promises: a root directory,
// clean absolute paths whose parents are directories, and data references
// that stay inside the file (v1) or name one of the image's layers (v2); a
// v1 archive's data must then read back in full.
func checkOpened(t *testing.T, a *archive.Archive) {
	t.Helper()
	nodes := a.Nodes()
	byPath := map[string]*common.ClipNode{}
	for _, n := range nodes {
		byPath[n.Path] = n
	}
	if r := byPath["/"]; r == nil || !r.IsDir() {
		t.Fatal("Open accepted an archive without a root directory")
	}
	layers := map[string]bool{}
	if a.OCI != nil {
		for _, l := range a.OCI.Layers {
			layers[l] = true
		}
	}
	for _, n := range nodes {
		if !strings.HasPrefix(n.Path, "/") || path.Clean(n.Path) != n.Path {
			t.Fatalf("Open accepted the unclean path %q", n.Path)
		}
		if n.Path != "/" {
			if p := byPath[path.Dir(n.Path)]; p == nil || !p.IsDir() {
				t.Fatalf("Open accepted %q without a parent directory", n.Path)
			}
		}
		if n.Remote != nil && !layers[n.Remote.LayerDigest] {
			t.Fatalf("Open accepted %q reading from unknown layer %q", n.Path, n.Remote.LayerDigest)
		}
		if a.Version() == 1 && n.DataLen > 0 && (n.DataPos < common.ClipHeaderLength || n.DataPos+n.DataLen > a.Header.IndexPos) {
			t.Fatalf("Open accepted %q with data at %d+%d", n.Path, n.DataPos, n.DataLen)
		}
	}
	archive.Summarize(a)
	if a.Version() != 1 {
		return
	}
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatalf("OpenStorage() = %v", err)
	}
	defer s.Cleanup()
	if _, err := archive.TreeFromArchive(context.Background(), a, s); err != nil {
		t.Fatalf("reading the data of an archive Open accepted: %v", err)
	}
}

// FuzzOpen opens arbitrary bytes as an archive: Open must return an error
// or an archive that is what it promises (checkOpened), quickly, and never
// panic.
func FuzzOpen(f *testing.F) {
	seeds, err := fuzzOpenSeeds()
	if err != nil {
		f.Fatalf("making seed archives: %v", err)
	}
	for _, s := range seeds {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "fuzz.clip")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		a, err := archive.Open(p)
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Open took %v on %d bytes", d, len(data))
		}
		if err != nil {
			if !errors.Is(err, archive.ErrCorrupt) && !strings.Contains(err.Error(), "not supported") {
				t.Fatalf("Open() = %v, want an error wrapping ErrCorrupt", err)
			}
			return
		}
		checkOpened(t, a)
	})
}

// TestWriteFuzzOpenSeeds rewrites the checked-in seed corpus of FuzzOpen
// (testdata/fuzz/FuzzOpen/seed-*) from fuzzOpenSeeds when
// CLIPBUILD_WRITE_FUZZ_SEEDS=1, for after a format change.
func TestWriteFuzzOpenSeeds(t *testing.T) {
	if os.Getenv("CLIPBUILD_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set CLIPBUILD_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzOpen/seed-*")
	}
	seeds, err := fuzzOpenSeeds()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s.data)))
		if err := os.WriteFile(filepath.Join(dir, "seed-"+s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
