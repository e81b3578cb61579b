package stages

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"

	"github.com/clipbuild/clipbuild/archive"
)

// scriptLayers turns a small text script into layer tar streams owned by
// the current user (so they unpack without root), one entry per line:
//
//	f NAME [BODY]   regular file     d NAME [MODE]   directory
//	s NAME TARGET   symlink          h NAME TARGET   hard link
//	p NAME          FIFO             S FORMAT        GNU tar's sparse files
//
// "S gnu" (or pax-0.0, pax-0.1, pax-1.0) adds the entries of that sparse
// layer of the hostile corpus (a directory sparse/ and files with holes, see
// test/hostile/testdata/mksparse.sh), which Go's tar writer cannot make. A
// line "--" starts the next layer; other lines, and entries tar cannot
// write, are skipped.
func scriptLayers(script string) [][]byte {
	var layers [][]byte
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	flush := func() {
		tw.Close()
		layers = append(layers, bytes.Clone(buf.Bytes()))
		buf.Reset()
		tw = tar.NewWriter(&buf)
	}
	for _, line := range strings.Split(script, "\n") {
		if line == "--" {
			flush()
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			continue
		}
		arg := ""
		if len(f) == 3 {
			arg = f[2]
		}
		h := &tar.Header{Name: f[1], Mode: 0o644, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX,
			Uid: os.Getuid(), Gid: os.Getgid()}
		var body string
		switch f[0] {
		case "f":
			h.Typeflag, body = tar.TypeReg, arg
		case "d":
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if m, err := strconv.ParseInt(arg, 8, 64); err == nil {
				h.Mode = m&0o777 | 0o700 // keep it writable, so the unpack can fill it
			}
		case "s":
			h.Typeflag, h.Linkname = tar.TypeSymlink, arg
		case "h":
			h.Typeflag, h.Linkname = tar.TypeLink, arg
		case "p":
			h.Typeflag = tar.TypeFifo
		case "S":
			if entries := sparseEntries(f[1]); entries != nil && tw.Flush() == nil {
				buf.Write(entries)
			}
			continue
		default:
			continue
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			continue
		}
		tw.Write([]byte(body))
	}
	flush()
	return layers
}

// sparseEntries returns the entries of the sparse layer in the given
// format, without the blocks that end the archive; nil for an unknown
// format.
var sparseEntries = func() func(format string) []byte {
	layers := map[string][]byte{}
	for _, format := range sparseFormats {
		b, err := os.ReadFile(filepath.Join("..", "test", "hostile", "testdata", "sparse-"+format+".tar"))
		if err != nil {
			panic(err)
		}
		cr := &countingReader{r: bytes.NewReader(b)}
		tr := tar.NewReader(cr)
		end := int64(0)
		for {
			if _, err := tr.Next(); err != nil {
				break
			}
			if _, err := io.Copy(io.Discard, tr); err != nil {
				panic(err)
			}
			end = cr.n + blockPadding(cr.n)
		}
		layers[format] = b[:end]
	}
	return func(format string) []byte { return layers[format] }
}()

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// expandSparse rewrites layers with every sparse file stored as a plain
// regular file of its expanded bytes, and tells whether there was any.
func expandSparse(layers [][]byte) ([][]byte, bool, error) {
	var out [][]byte
	found := false
	for _, l := range layers {
		var buf bytes.Buffer
		tr := tar.NewReader(bytes.NewReader(l))
		tw := tar.NewWriter(&buf)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, false, err
			}
			if archive.IsSparse(hdr) {
				found = true
				hdr.Typeflag = tar.TypeReg
				for k := range hdr.PAXRecords {
					if strings.HasPrefix(k, "GNU.sparse.") {
						delete(hdr.PAXRecords, k)
					}
				}
			}
			hdr.Format = tar.FormatPAX
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, false, err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return nil, false, err
			}
		}
		if err := tw.Close(); err != nil {
			return nil, false, err
		}
		out = append(out, buf.Bytes())
	}
	return out, found, nil
}

// indexLayout indexes layers, the uncompressed streams of l's layers.
func indexLayout(ctx context.Context, l *Layout, layers [][]byte) (*archive.Indexer, []string, error) {
	ix := archive.NewIndexer()
	var digests []string
	for i, d := range l.Manifest.Layers {
		digests = append(digests, d.Digest.String())
		if err := ix.AddLayer(ctx, d.Digest.String(), bytes.NewReader(layers[i])); err != nil {
			return ix, digests, err
		}
	}
	return ix, digests, nil
}

// FuzzIndexerMatchesUnpack applies the same layers with Unpack (v1, onto
// disk) and with archive.Indexer (v2), from a script (see scriptLayers).
// Either may refuse the layers (each has refusals the other lacks: the
// unpack fails when a directory it made is replaced in the same layer, the
// indexer refuses an opaque marker inside a file); but nothing may appear
// beside the rootfs, and when both succeed their trees must be equal.
//
// The indexer must refuse sparse files (archive.ErrSparse), which the
// unpack expands: its tree must then equal the index of the same layers
// with each sparse file stored plainly.
func FuzzIndexerMatchesUnpack(f *testing.F) {
	f.Add("f a/b/c x\ns l a/b\nf l/d y\nh e l/d\n--\nf a/.wh.b\nd x/ 700\nf x/.wh..wh..opq")
	f.Add("s up ../../..\nf up/escape x\ns abs /etc\nf abs/passwd x\n--\nh h abs/passwd\nf .wh..wh..opq\nf new n")
	f.Add("d a/\nf a/f 1\nf a 2\nf b 3\nd b/\np fifo\n--\nf a/.wh.a\nd a/ 700")
	f.Add("f f 1\nh h f\nf f 2\nh f f\n--\nd d/\ns d/s ..\nf d/s/z 1\ns m .../..\nf m/n 1")
	f.Add("p q\ns s q\n--\nf s/.wh.x\nf q/.wh..wh..opq\nd o/\nf o/old 1\n--\nf o/new/f 2\nf o/.wh..wh..opq")
	f.Fuzz(func(t *testing.T, script string) {
		ctx := context.Background()
		layers := scriptLayers(script)
		l := writeLayout(t, layers...)
		parent := t.TempDir()
		dir := filepath.Join(parent, "rootfs")
		errV1 := Unpack(ctx, l, dir)
		t.Cleanup(func() {
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					os.Chmod(p, 0o755)
				}
				return nil
			})
		})
		if names, _ := os.ReadDir(parent); len(names) > 1 {
			t.Fatalf("the unpack wrote beside its rootfs: %v", names)
		}
		plain, sparse, err := expandSparse(layers)
		if err != nil {
			sparse = false // not a layer archive/tar reads through: no sparse file reached
		}
		ix, digests, errV2 := indexLayout(ctx, l, layers)
		switch {
		case errors.Is(errV2, archive.ErrSparse):
			if !sparse {
				t.Fatalf("the indexer refused a sparse file in layers without one: %v", errV2)
			}
			l = writeLayout(t, plain...)
			ix, digests, errV2 = indexLayout(ctx, l, plain)
		case sparse && errV2 == nil:
			t.Fatal("the indexer took a sparse file")
		}
		if errV1 != nil || errV2 != nil {
			return
		}
		want, err := archive.TreeFromDir(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		clip := filepath.Join(t.TempDir(), "v2.clip")
		oci := &common.OCIStorageInfo{RegistryURL: "127.0.0.1:1", Repository: "fuzz/img", Reference: "1", Layers: digests}
		err = archive.WriteFileAtomic(clip, func(f *os.File) error {
			return archive.WriteV2(f, ix.Nodes(), oci, archive.Trailer{})
		})
		if err != nil {
			t.Fatal(err)
		}
		a, err := archive.Open(clip)
		if err != nil {
			t.Fatalf("Open(v2) = %v", err)
		}
		s, err := archive.OpenStorage(a, archive.WithBlobOpener(layoutBlobs{l}), archive.WithCacheDir(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Cleanup()
		got, err := archive.TreeFromArchive(ctx, a, s)
		if err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() != 0 {
			// The directories the indexer makes up are root's; the
			// unpack's are the current user's.
			for _, tr := range []archive.Tree{want, got} {
				for p, e := range tr {
					e.UID, e.GID = 0, 0
					tr[p] = e
				}
			}
		}
		if d := archive.Diff(want, got); len(d) > 0 {
			t.Fatalf("v1 and v2 trees differ:\n  %s", strings.Join(d, "\n  "))
		}
	})
}
