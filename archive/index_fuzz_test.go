package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"

	"github.com/clipbuild/clipbuild/archive"
)

// fuzzScriptLayers turns a small text script into layer tar streams, so the
// fuzzer can reach path handling (symlinks, hard links, whiteouts, type
// changes) without first having to forge tar checksums. One entry per line:
//
//	f NAME [BODY]    regular file        d NAME [MODE]   directory
//	s NAME TARGET    symlink             h NAME TARGET   hard link
//	c NAME | b NAME  char/block device   p NAME          FIFO
//	X NAME [LINK]    any other type flag X (the first byte of the word)
//
// A line "--" starts the next layer. Entries tar cannot write are skipped.
func fuzzScriptLayers(script string) [][]byte {
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
		if len(f) < 2 || f[0] == "" {
			continue
		}
		arg := ""
		if len(f) == 3 {
			arg = f[2]
		}
		h := &tar.Header{Name: f[1], Mode: 0o644, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		var body string
		switch f[0] {
		case "f":
			h.Typeflag, body = tar.TypeReg, arg
		case "d":
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if m, err := strconv.ParseInt(arg, 8, 64); err == nil {
				h.Mode = m & 07777
			}
		case "s":
			h.Typeflag, h.Linkname = tar.TypeSymlink, arg
		case "h":
			h.Typeflag, h.Linkname = tar.TypeLink, arg
		case "c":
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, 1, 3
		case "b":
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeBlock, 7, 0
		case "p":
			h.Typeflag = tar.TypeFifo
		default:
			h.Typeflag, h.Linkname = f[0][0], arg
		}
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size, body = 0, ""
		}
		if err := tw.WriteHeader(h); err != nil {
			continue
		}
		tw.Write([]byte(body))
	}
	flush()
	return layers
}

// checkIndexerNodes fails t unless nodes form a well-formed tree: a root
// directory, unique clean absolute paths within the kernel's limits, every
// parent a directory, data references inside the layer they name (when
// that layer was read without error: a stream cut short inside a file's
// body is only noticed after the file's node is made, and the error then
// aborts the index), and the paths of one inode agreeing on everything.
// layerLen holds each layer's length, -1 for a layer that failed.
func checkIndexerNodes(t *testing.T, nodes []*common.ClipNode, layerLen map[string]int64) {
	t.Helper()
	byPath := map[string]*common.ClipNode{}
	byIno := map[uint64]*common.ClipNode{}
	for _, n := range nodes {
		if n == nil {
			t.Fatal("nil node")
		}
		if _, dup := byPath[n.Path]; dup {
			t.Fatalf("duplicate path %q", n.Path)
		}
		byPath[n.Path] = n
	}
	root := byPath["/"]
	if root == nil || !root.IsDir() {
		t.Fatal("no root directory")
	}
	for _, n := range nodes {
		if !strings.HasPrefix(n.Path, "/") || path.Clean(n.Path) != n.Path || strings.ContainsRune(n.Path, 0) {
			t.Fatalf("unclean path %q", n.Path)
		}
		if len(n.Path) > 4095 {
			t.Fatalf("path of %d bytes", len(n.Path))
		}
		if n.Path != "/" {
			if parent := byPath[path.Dir(n.Path)]; parent == nil || !parent.IsDir() {
				t.Fatalf("%q has no parent directory", n.Path)
			}
		}
		switch n.NodeType {
		case common.DirNode, common.SymLinkNode, common.FileNode:
		default:
			t.Fatalf("%q has node type %q", n.Path, n.NodeType)
		}
		if r := n.Remote; r != nil {
			size, ok := layerLen[r.LayerDigest]
			if !ok {
				t.Fatalf("%q reads from unknown layer %q", n.Path, r.LayerDigest)
			}
			if r.UOffset < 0 || r.ULength < 0 || size >= 0 && r.UOffset+r.ULength > size {
				t.Fatalf("%q reads %d+%d from a %d-byte layer", n.Path, r.UOffset, r.ULength, size)
			}
		}
		if n.IsDir() {
			if _, ok := byIno[n.Attr.Ino]; ok {
				t.Fatalf("directory %q shares inode %d", n.Path, n.Attr.Ino)
			}
			byIno[n.Attr.Ino] = n
			continue
		}
		if o, ok := byIno[n.Attr.Ino]; ok {
			if o.IsDir() || o.NodeType != n.NodeType || o.Attr != n.Attr || o.Target != n.Target {
				t.Fatalf("%q and %q share inode %d but differ: %+v vs %+v", o.Path, n.Path, n.Attr.Ino, o.Attr, n.Attr)
			}
		}
		byIno[n.Attr.Ino] = n
		if n.Attr.Nlink < 1 {
			t.Fatalf("%q has link count %d", n.Path, n.Attr.Nlink)
		}
	}
}

// FuzzIndexerAddLayer feeds the v2 indexer layers made from a script (see
// fuzzScriptLayers) followed by one layer of raw bytes. Any error is fine; a
// panic, or a tree that is not well formed, is not.
func FuzzIndexerAddLayer(f *testing.F) {
	f.Add("f a/b/c x\ns l a/b\nf l/d y\nh e l/d\n--\nf a/.wh.b\nd x/ 700\nf x/.wh..wh..opq", []byte(nil))
	f.Add("s up ../../..\nf up/escape x\ns abs /etc\nf abs/passwd x\n--\nh h abs/passwd\nf .wh..wh..opq\nf new n", []byte(nil))
	f.Add("d a/\nf a/f 1\nf a 2\nf b 3\nd b/\nc dev\nb blk\np fifo\n--\nf a/.wh..\nf .wh...", []byte(nil))
	f.Add("s l1 l2\ns l2 l1\nf l1/f x\nf ../x y\nh h ../x\nS sparse\n1 link", []byte(nil))
	f.Add("f ./ x\nd ./ 700\nf .wh..wh.plnk/1 z\nh y .wh..wh.plnk/1\nf f 1\nh h f\nf f 2\nh f f", []byte(nil))
	for _, raw := range fuzzScriptLayers("d etc/\nf etc/passwd root\ns bin usr/bin\nh etc/p2 etc/passwd\nf big " + strings.Repeat("z", 1500)) {
		f.Add("", raw)
		f.Add("", raw[:len(raw)/2])
	}
	for _, format := range sparseFormats {
		layer := sparseLayer(f, format)
		f.Add("", layer)
		f.Add("d sparse/\nf sparse/hole-end old\n--\nf sparse/.wh.after", layer[:len(layer)/2])
	}
	f.Fuzz(func(t *testing.T, script string, raw []byte) {
		ctx := context.Background()
		ix := archive.NewIndexer()
		layerLen := map[string]int64{}
		for i, l := range fuzzScriptLayers(script) {
			d := fmt.Sprintf("sha256:script%d", i)
			layerLen[d] = int64(len(l))
			if err := ix.AddLayer(ctx, d, bytes.NewReader(l)); err != nil {
				layerLen[d] = -1
				break
			}
		}
		layerLen["sha256:raw"] = int64(len(raw))
		if err := ix.AddLayer(ctx, "sha256:raw", bytes.NewReader(raw)); err != nil {
			layerLen["sha256:raw"] = -1
		}
		checkIndexerNodes(t, ix.Nodes(), layerLen)
	})
}
