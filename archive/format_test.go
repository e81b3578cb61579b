package archive_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/clipbuild/clipbuild/archive"
)

// Offsets of the header fields (clip's ClipArchiveHeader, little endian).
const (
	offIndexLength = 10
	offIndexPos    = 18
)

// openWithDeadline runs archive.Open, failing the test if it panics or does
// not return within a few seconds.
func openWithDeadline(t *testing.T, p string) (*archive.Archive, error) {
	t.Helper()
	type result struct {
		a     *archive.Archive
		err   error
		panic any
	}
	ch := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				ch <- result{panic: r}
			}
		}()
		a, err := archive.Open(p)
		ch <- result{a: a, err: err}
	}()
	select {
	case r := <-ch:
		if r.panic != nil {
			t.Fatalf("Open(%s) panicked: %v", filepath.Base(p), r.panic)
		}
		return r.a, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("Open(%s) did not return within 5s", filepath.Base(p))
		return nil, nil
	}
}

// smallArchive returns the bytes of a valid archive of a small tree, which
// keeps the corruption tests fast.
func smallArchive(t *testing.T) []byte {
	t.Helper()
	b := treeBuilder{t: t, root: t.TempDir()}
	b.chmod("/", 0o755)
	b.file("/a.txt", []byte("alpha\n"), 0o644)
	b.dir("/d", 0o755)
	b.file("/d/b.txt", []byte("bravo bravo\n"), 0o600)
	b.link("/d/b.txt", "/d/c.txt")
	b.symlink("../a.txt", "/d/link")
	clip := filepath.Join(t.TempDir(), "small.clip")
	writeArchive(t, b.root, clip, archive.Trailer{Image: &common.ImageMetadata{Name: "localhost/small:latest"}, Tool: "clipbuild"})
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.clip")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func flipBit(data []byte, byteOff, bit int) []byte {
	out := append([]byte(nil), data...)
	out[byteOff] ^= 1 << bit
	return out
}

func TestOpenValidSmallArchive(t *testing.T) {
	data := smallArchive(t)
	a, err := openWithDeadline(t, writeTemp(t, data))
	if err != nil {
		t.Fatalf("Open(valid) = %v", err)
	}
	if got, want := len(a.Nodes()), 6; got != want {
		t.Errorf("len(Nodes()) = %d, want %d", got, want)
	}
	if got, want := a.Size, int64(len(data)); got != want {
		t.Errorf("Size = %d, want %d", got, want)
	}
}

func TestOpenCorrupt(t *testing.T) {
	valid := smallArchive(t)
	indexPos := int64(binary.LittleEndian.Uint64(valid[offIndexPos:]))
	indexLen := int64(binary.LittleEndian.Uint64(valid[offIndexLength:]))
	if indexPos < common.ClipHeaderLength || indexPos+indexLen > int64(len(valid)) {
		t.Fatalf("fixture header has index at %d+%d in %d bytes", indexPos, indexLen, len(valid))
	}
	random := fixtureBytes(4096, 7)
	withMagic := append(append([]byte(nil), valid[:common.ClipHeaderLength]...), fixtureBytes(4096, 8)...)
	binary.LittleEndian.PutUint64(withMagic[offIndexPos:], common.ClipHeaderLength+100)
	binary.LittleEndian.PutUint64(withMagic[offIndexLength:], 1000)

	tests := []struct {
		name string
		data []byte
	}{
		{"zero length", nil},
		{"one byte", []byte{0x89}},
		{"random bytes", random},
		{"valid header, random body", withMagic},
		{"truncated to header", valid[:common.ClipHeaderLength]},
		{"truncated to header plus one", valid[:common.ClipHeaderLength+1]},
		{"truncated to half", valid[:len(valid)/2]},
		{"truncated inside index", valid[:indexPos+indexLen/2]},
		{"bad magic", flipBit(valid, 0, 0)},
		{"bad format version", flipBit(valid, 9, 1)},
		{"IndexPos high bit", flipBit(valid, offIndexPos+7, 7)},
		{"IndexPos bit 40", flipBit(valid, offIndexPos+5, 0)},
		{"IndexPos bit 0", flipBit(valid, offIndexPos, 0)},
		{"IndexPos bit 3", flipBit(valid, offIndexPos, 3)},
		{"IndexLength high bit", flipBit(valid, offIndexLength+7, 7)},
		{"IndexLength bit 40", flipBit(valid, offIndexLength+5, 0)},
		{"IndexLength bit 0", flipBit(valid, offIndexLength, 0)},
		{"IndexLength bit 4", flipBit(valid, offIndexLength, 4)},
		{"index first byte", flipBit(valid, int(indexPos), 6)},
		{"index last byte", flipBit(valid, int(indexPos+indexLen-1), 0)},
		{"trailer length", flipBit(valid, len(valid)-16, 2)},
		{"trailer checksum", flipBit(valid, len(valid)-24, 5)},
		{"trailer JSON", flipBit(valid, int(indexPos+indexLen), 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := openWithDeadline(t, writeTemp(t, tt.data))
			if err == nil {
				t.Fatalf("Open(%s) = %d nodes, nil; want an error", tt.name, len(a.Nodes()))
			}
			if !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("Open(%s) = %v, want an error wrapping ErrCorrupt", tt.name, err)
			}
		})
	}
}

// TestOpenHeaderBitFlips flips every bit of IndexPos and IndexLength in turn:
// none may give a readable archive.
func TestOpenHeaderBitFlips(t *testing.T) {
	valid := smallArchive(t)
	dir := t.TempDir()
	for _, field := range []struct {
		name string
		off  int
	}{{"IndexPos", offIndexPos}, {"IndexLength", offIndexLength}} {
		for bit := 0; bit < 64; bit++ {
			p := filepath.Join(dir, fmt.Sprintf("%s-%d.clip", field.name, bit))
			if err := os.WriteFile(p, flipBit(valid, field.off+bit/8, bit%8), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := openWithDeadline(t, p)
			if !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("Open(%s bit %d flipped) = %v, want an error wrapping ErrCorrupt", field.name, bit, err)
			}
		}
	}
}

// TestOpenDamagedTrailerFooter damages the last bytes of a valid archive,
// where the trailer's footer (and its magic) sits. The file is then neither
// a clipbuild archive with a trailer nor a plain clip one (which ends with
// its last section), so it must not open, and in particular the index
// checksum kept in the trailer must not be bypassed.
func TestOpenDamagedTrailerFooter(t *testing.T) {
	valid := smallArchive(t)
	last := len(valid) - 1
	modeByte := indexOf(t, valid, "\xfe\x81\xa4\x01\x01") + 1
	tests := []struct {
		name string
		data []byte
	}{
		{"truncated by one byte", valid[:last]},
		{"magic bit flipped", flipBit(valid, last, 0)},
		// The index now says /a.txt is setuid, and its checksum is never read.
		{"magic and index bits flipped", flipBit(flipBit(valid, last, 0), modeByte, 3)},
	}
	for _, tt := range tests {
		_, err := openWithDeadline(t, writeTemp(t, tt.data))
		if !errors.Is(err, archive.ErrCorrupt) {
			t.Errorf("Open(%s) = %v, want an error wrapping ErrCorrupt", tt.name, err)
		}
	}
}

func TestOpenNotRegularFile(t *testing.T) {
	_, err := openWithDeadline(t, t.TempDir())
	if !errors.Is(err, archive.ErrCorrupt) {
		t.Errorf("Open(directory) = %v, want an error wrapping ErrCorrupt", err)
	}
}

func TestOpenMissingFile(t *testing.T) {
	_, err := openWithDeadline(t, filepath.Join(t.TempDir(), "missing.clip"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want an error wrapping os.ErrNotExist", err)
	}
}

// indexOf returns the offset in data of needle, which must occur once
// inside the archive's index.
func indexOf(t *testing.T, data []byte, needle string) int {
	t.Helper()
	pos := int(binary.LittleEndian.Uint64(data[offIndexPos:]))
	n := int(binary.LittleEndian.Uint64(data[offIndexLength:]))
	index := data[pos : pos+n]
	i := bytes.Index(index, []byte(needle))
	if i < 0 || bytes.Count(index, []byte(needle)) != 1 {
		t.Fatalf("%q occurs %d times in the index, want once", needle, bytes.Count(index, []byte(needle)))
	}
	return pos + i
}

// TestOpenIndexStructureCorrupt flips bits that break the index's structure:
// its gob framing, the root's path, a directory's node type.
func TestOpenIndexStructureCorrupt(t *testing.T) {
	valid := smallArchive(t)
	indexPos := int(binary.LittleEndian.Uint64(valid[offIndexPos:]))
	tests := []struct {
		name string
		off  int
		bit  int
	}{
		{"gob message length", indexPos, 2},
		{"gob type id", indexPos + 1, 0},
		{"field name NodeType", indexOf(t, valid, "NodeType") + 7, 0},
		{"root path", indexOf(t, valid, "\x03dir\x01\x01/") + 6, 0}, // "/" -> "."
		{"directory node type", indexOf(t, valid, "\x03dir\x01\x02/d") + 3, 0},
		{"index end", indexPos + int(binary.LittleEndian.Uint64(valid[offIndexLength:])) - 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := openWithDeadline(t, writeTemp(t, flipBit(valid, tt.off, tt.bit)))
			if !errors.Is(err, archive.ErrCorrupt) {
				t.Errorf("Open(%s flipped) = %v, want an error wrapping ErrCorrupt", tt.name, err)
			}
		})
	}
}

// TestOpenIndexValueCorrupt flips bits inside node values. The gob still
// decodes and the tree is still well formed, but the archive now says
// something else: only a checksum over the index can tell.
func TestOpenIndexValueCorrupt(t *testing.T) {
	valid := smallArchive(t)
	sum := sha256.Sum256([]byte("alpha\n"))
	hash := hex.EncodeToString(sum[:])
	tests := []struct {
		name string
		off  int
		bit  int
	}{
		// /a.txt's mode 0100644 is gob "\xfe\x81\xa4"; bit 3 of 0x81 is S_ISUID.
		{"mode gains setuid", indexOf(t, valid, "\xfe\x81\xa4\x01\x01") + 1, 3},
		// The DataPos that follows /a.txt's content hash.
		{"data position", indexOf(t, valid, hash) + len(hash) + 1, 1},
		// "/a.txt" becomes "/a.tzt".
		{"path", indexOf(t, valid, "\x06/a.txt") + 5, 1},
	}
	for _, tt := range tests {
		_, err := openWithDeadline(t, writeTemp(t, flipBit(valid, tt.off, tt.bit)))
		if !errors.Is(err, archive.ErrCorrupt) {
			t.Errorf("Open(%s flipped) = %v, want an error wrapping ErrCorrupt", tt.name, err)
		}
	}
}

// TestOpenIndexOrderAndDuplicates opens indexes that are not in path order
// or list a path twice: the index keeps a path's last node, and a node
// whose parent's last node is not a directory is refused.
func TestOpenIndexOrderAndDuplicates(t *testing.T) {
	dir := func(p string, ino uint64) *common.ClipNode {
		return &common.ClipNode{Path: p, NodeType: common.DirNode, Attr: fuse.Attr{Ino: ino, Mode: syscall.S_IFDIR | 0o755}}
	}
	file := func(p string, ino uint64) *common.ClipNode {
		return &common.ClipNode{Path: p, NodeType: common.FileNode, Attr: fuse.Attr{Ino: ino, Mode: syscall.S_IFREG | 0o644, Nlink: 1}}
	}
	write := func(t *testing.T, nodes ...*common.ClipNode) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "a.clip")
		err := archive.WriteFileAtomic(p, func(f *os.File) error {
			oci := &common.OCIStorageInfo{RegistryURL: "127.0.0.1:5000", Repository: "test/img", Reference: "1", Layers: []string{}}
			return archive.WriteV2(f, nodes, oci, archive.Trailer{Tool: "clipbuild"})
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("out of order", func(t *testing.T) {
		a, err := archive.Open(write(t, file("/z/f", 4), dir("/", 1), dir("/z", 3), dir("/a", 2)))
		if err != nil {
			t.Fatalf("Open = %v", err)
		}
		var got []string
		for _, n := range a.Nodes() {
			got = append(got, n.Path)
		}
		if want := []string{"/", "/a", "/z", "/z/f"}; !slices.Equal(got, want) {
			t.Errorf("Nodes() = %q, want %q", got, want)
		}
	})
	t.Run("a directory listed again as a file", func(t *testing.T) {
		_, err := archive.Open(write(t, dir("/", 1), dir("/d", 2), file("/d/x", 3), file("/d", 4)))
		if !errors.Is(err, archive.ErrCorrupt) {
			t.Errorf("Open = %v, want ErrCorrupt (/d/x's parent is a file)", err)
		}
	})
	t.Run("a file listed again as a directory", func(t *testing.T) {
		a, err := archive.Open(write(t, dir("/", 1), file("/d", 2), dir("/d", 3), file("/d/x", 4)))
		if err != nil {
			t.Fatalf("Open = %v", err)
		}
		if n := a.Metadata.Get("/d"); n == nil || !n.IsDir() {
			t.Errorf("/d = %+v, want the directory listed last", n)
		}
	})
}
