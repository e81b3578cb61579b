package stages

import (
	"archive/tar"
	"bytes"
	"context"
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
//	p NAME          FIFO
//
// A line "--" starts the next layer; other lines, and entries tar cannot
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

// FuzzIndexerMatchesUnpack applies the same layers with Unpack (v1, onto
// disk) and with archive.Indexer (v2), from a script (see scriptLayers).
// Either may refuse the layers (each has refusals the other lacks: the
// unpack fails when a directory it made is replaced in the same layer, the
// indexer refuses an opaque marker inside a file); but nothing may appear
// beside the rootfs, and when both succeed their trees must be equal.
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
		ix := archive.NewIndexer()
		var errV2 error
		var digests []string
		for i, d := range l.Manifest.Layers {
			digests = append(digests, d.Digest.String())
			if errV2 = ix.AddLayer(ctx, d.Digest.String(), bytes.NewReader(layers[i])); errV2 != nil {
				break
			}
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
