package hostile

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/clipbuild/clipbuild/archive"
)

// Entry is one member of a layer's tar stream.
type Entry struct {
	Name     string
	Type     byte
	Mode     int64
	Body     string
	Linkname string
	// Size, when non-zero, is the size the header declares instead of
	// len(Body): the body is then shorter than its header says, and the
	// stream ends right after it.
	Size         int64
	Major, Minor int64
	// Owned says UID and GID are set; otherwise the entry belongs to the
	// current user, so the layer applies without root.
	Owned    bool
	UID, GID int
}

// Layer is one layer of a hostile image.
type Layer struct {
	Entries []Entry
	// Raw, when set, is the uncompressed stream, used instead of a tar of
	// Entries.
	Raw []byte
	// Gzip compresses the stream.
	Gzip bool
	// MediaType overrides the media type the manifest gives the layer (by
	// default the one matching Gzip).
	MediaType string
	// Damage, when set, changes the stored blob after compression; the
	// config's diff ID stays that of the intact stream.
	Damage func(blob []byte) []byte
}

// Case is one hostile image and what handling it correctly means.
type Case struct {
	Name   string // also the repository name it is pushed under
	About  string
	Layers []Layer
	// NeedsRoot marks cases that create device nodes or foreign owners.
	NeedsRoot bool
	// Want is the correct tree, or nil when no tree is correct and only an
	// error is. Owners are 0 (a test running without root compares owners
	// as 0 throughout).
	Want archive.Tree
	// Reject matches the errors that are clear rejections of this case;
	// nil when the image is valid and an error is a failure.
	Reject *regexp.Regexp
	// RejectV2, when set, is v2's only correct outcome (an error matching
	// it) while v1 must make Want: an image v1 holds exactly and v2 cannot
	// serve, such as one with sparse files.
	RejectV2 *regexp.Regexp
}

// ForV2 is the case as v2 must handle it.
func (c Case) ForV2() Case {
	if c.RejectV2 != nil {
		c.Want, c.Reject = nil, c.RejectV2
	}
	return c
}

// Blob is one blob of a written image.
type Blob struct {
	Digest    digest.Digest
	MediaType string
	Data      []byte
}

// Image is a hostile image as written into an OCI layout.
type Image struct {
	Config   Blob
	Layers   []Blob
	Manifest Blob
	// Plain holds each layer's intact uncompressed stream.
	Plain [][]byte
}

var modTime = time.Unix(1700000000, 0)

// TarStream makes a layer's uncompressed stream from its entries. An entry
// whose declared Size exceeds its body ends the stream, unterminated.
func TarStream(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:     e.Name,
			Typeflag: e.Type,
			Mode:     e.Mode,
			Linkname: e.Linkname,
			Size:     int64(len(e.Body)),
			Uid:      os.Getuid(),
			Gid:      os.Getgid(),
			Devmajor: e.Major,
			Devminor: e.Minor,
			ModTime:  modTime,
			Format:   tar.FormatPAX,
		}
		if e.Owned {
			h.Uid, h.Gid = e.UID, e.GID
		}
		if e.Type != tar.TypeReg {
			h.Size = 0
		}
		if e.Size != 0 {
			h.Size = e.Size
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name, err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name, err)
		}
		if h.Size > int64(len(e.Body)) {
			return buf.Bytes(), nil // a short body: the stream stops here
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func blob(mediaType string, data []byte) Blob {
	return Blob{Digest: digest.FromBytes(data), MediaType: mediaType, Data: data}
}

// Build makes the image's blobs: layers as the case says, a config whose
// diff IDs are those of the intact streams, and an OCI manifest.
func Build(c Case) (*Image, error) {
	img := &Image{}
	var diffIDs []digest.Digest
	for i, l := range c.Layers {
		plain := l.Raw
		if plain == nil {
			var err error
			if plain, err = TarStream(l.Entries); err != nil {
				return nil, fmt.Errorf("layer %d: %w", i+1, err)
			}
		}
		data, mt := plain, imgspecv1.MediaTypeImageLayer
		if l.Gzip {
			data, mt = gzipped(plain), imgspecv1.MediaTypeImageLayerGzip
		}
		if l.Damage != nil {
			data = l.Damage(bytes.Clone(data))
		}
		if l.MediaType != "" {
			mt = l.MediaType
		}
		img.Plain = append(img.Plain, plain)
		img.Layers = append(img.Layers, blob(mt, data))
		diffIDs = append(diffIDs, digest.FromBytes(plain))
	}
	config := imgspecv1.Image{
		Created:  &modTime,
		Platform: imgspecv1.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   imgspecv1.ImageConfig{Cmd: []string{"/bin/sh"}},
		RootFS:   imgspecv1.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cb, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	img.Config = blob(imgspecv1.MediaTypeImageConfig, cb)
	m := imgspecv1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: imgspecv1.MediaTypeImageManifest,
		Config:    descriptor(img.Config),
	}
	for _, l := range img.Layers {
		m.Layers = append(m.Layers, descriptor(l))
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img.Manifest = blob(imgspecv1.MediaTypeImageManifest, mb)
	return img, nil
}

func descriptor(b Blob) imgspecv1.Descriptor {
	return imgspecv1.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: int64(len(b.Data))}
}

// WriteLayout writes img as an OCI layout at dir.
func WriteLayout(dir string, img *Image) error {
	for _, b := range append([]Blob{img.Config, img.Manifest}, img.Layers...) {
		p := filepath.Join(dir, "blobs", b.Digest.Algorithm().String(), b.Digest.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b.Data, 0o644); err != nil {
			return err
		}
	}
	index := imgspecv1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: imgspecv1.MediaTypeImageIndex,
		Manifests: []imgspecv1.Descriptor{descriptor(img.Manifest)}}
	ib, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// Entry constructors.

func dirE(name string, mode int64) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: mode} }
func fileE(name, body string) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: 0o644, Body: body}
}
func symlinkE(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
}
func linkE(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Linkname: target}
}
func layer(entries ...Entry) Layer   { return Layer{Entries: entries} }
func gzLayer(entries ...Entry) Layer { return Layer{Entries: entries, Gzip: true} }

// Expected-tree constructors. Owners are 0; link counts of hard-link groups
// are filled in by tree.

func dirT(perm uint32) archive.Entry { return archive.Entry{Type: "dir", Perm: perm} }
func fileT(perm uint32, body string) archive.Entry {
	sum := sha256.Sum256([]byte(body))
	return archive.Entry{Type: "file", Perm: perm, Size: int64(len(body)), Digest: "sha256:" + hex.EncodeToString(sum[:]), Nlink: 1}
}
func symlinkT(target string) archive.Entry {
	return archive.Entry{Type: "symlink", Perm: 0o777, Target: target, Nlink: 1}
}
func devT(typ string, perm uint32, major, minor uint32) archive.Entry {
	e := archive.Entry{Type: typ, Perm: perm, Nlink: 1}
	if typ != "fifo" {
		e.Rdev = unix.Mkdev(major, minor)
	}
	return e
}
func linked(e archive.Entry, first string) archive.Entry { e.Link = first; return e }

// tree completes an expected tree: the root (0555, the default for a root
// no layer describes, unless given), every missing parent directory as the
// 0755 directory an unpack creates, and the link count of each hard-link
// group.
func tree(entries map[string]archive.Entry) archive.Tree {
	t := archive.Tree{"/": dirT(0o555)}
	groups := map[string]uint32{}
	for p, e := range entries {
		t[p] = e
		if e.Link != "" {
			groups[e.Link]++
		}
	}
	for p := range entries {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := t[d]; !ok {
				t[d] = dirT(0o755)
			}
		}
	}
	for p, e := range t {
		if e.Link != "" {
			e.Nlink = groups[e.Link]
			t[p] = e
		}
	}
	return t
}

// Clear rejections, by kind.
var (
	rejectEscape   = regexp.MustCompile(`is outside of|escapes the image root|invalid hardlink`)
	rejectNoTarget = regexp.MustCompile(`no such file or directory|not in the image|does not exist|the link itself replaces`)
	rejectWhiteout = regexp.MustCompile(`invalid whiteout|whiteout of`)
	// A stream cut short, as Go's gzip says it, or pigz, which
	// containers-storage runs to decompress where it finds it on PATH.
	rejectShort   = regexp.MustCompile(`unexpected EOF|pigz: .*(incomplete deflate data|missing trailer|unexpected end of file)`)
	rejectNotGzip = regexp.MustCompile(`not gzip|gzip: invalid header`)
	rejectNotTar  = regexp.MustCompile(`invalid tar header|is compressed .* says uncompressed`)
	rejectTooLong = regexp.MustCompile(`file name too long|too long`)
	rejectLoop    = regexp.MustCompile(`too many levels of symbolic links|too many (symbolic )?links`)
	rejectNotDir  = regexp.MustCompile(`is (a (FIFO|device node), )?not a directory`)
	rejectRoot    = regexp.MustCompile(`non-directory entry as the archive root|non-directory entry for the image root`)
	rejectSparse  = regexp.MustCompile(`"sparse/hole-start": sparse file: a v2 archive cannot serve it`)
)

// Cases are the hostile images. outside is an absolute path outside any
// target root that the test watches: every absolute name, symlink target
// and hard-link target that tries to escape names it (or a path in it,
// such as outside/secret, which the test creates there).
func Cases(outside string) []Case {
	o := strings.TrimPrefix(path.Clean(filepath.ToSlash(outside)), "/")
	O := "/" + o
	// climb leaves any root, however deep it sits: from the real rootfs it
	// reaches the host's /, so climb+o names the outside directory itself.
	climb := strings.Repeat("../", 64)
	deep := strings.Repeat("d/", 10000) + "f"
	return append([]Case{
		{
			Name:   "dotdot-file",
			About:  "a file named ../escape",
			Layers: []Layer{layer(fileE("../escape", "x"))},
			Reject: rejectEscape,
		},
		{
			Name:   "dotdot-nested",
			About:  "a/b/../../../escape: climbs out after descending",
			Layers: []Layer{layer(dirE("a/", 0o755), dirE("a/b/", 0o755), fileE("a/b/../../../escape", "x"))},
			Reject: rejectEscape,
		},
		{
			Name:   "dotdot-hardlink",
			About:  "a hard link to ../../escape",
			Layers: []Layer{layer(fileE("f", "x"), linkE("h", "../../escape"))},
			Reject: rejectEscape,
		},
		{
			Name:  "absolute-paths",
			About: "absolute names (one the outside directory's own path) land inside the root",
			Layers: []Layer{layer(fileE(O+"/abs-file", "abs"), dirE("/abs-dir/", 0o700), fileE("/abs-dir/f", "f"),
				symlinkE("/abs-link", O+"/secret"))},
			Want: tree(map[string]archive.Entry{
				O + "/abs-file": fileT(0o644, "abs"),
				"/abs-dir":      dirT(0o700),
				"/abs-dir/f":    fileT(0o644, "f"),
				"/abs-link":     symlinkT(O + "/secret"),
			}),
		},
		{
			Name:  "symlink-escape-same-layer",
			About: "esc -> the outside directory (absolute), then esc/written and esc/newdir/ in the same layer",
			Layers: []Layer{layer(symlinkE("esc", O), fileE("esc/written", "w"), dirE("esc/newdir/", 0o750),
				fileE("esc/newdir/deeper", "d"))},
			Want: tree(map[string]archive.Entry{
				"/esc":               symlinkT(O),
				O + "/written":       fileT(0o644, "w"),
				O + "/newdir":        dirT(0o750),
				O + "/newdir/deeper": fileT(0o644, "d"),
			}),
		},
		{
			Name:  "symlink-escape-relative",
			About: "up -> ../../.. (enough to reach the host's /) + the outside path, and top -> ../../.., then writes through both",
			Layers: []Layer{layer(symlinkE("up", climb+o), fileE("up/written", "w"),
				dirE("sub/", 0o755), symlinkE("sub/top", "../../../../.."), fileE("sub/top/at-root", "r"))},
			Want: tree(map[string]archive.Entry{
				"/up":          symlinkT(climb + o),
				O + "/written": fileT(0o644, "w"),
				"/sub":         dirT(0o755),
				"/sub/top":     symlinkT("../../../../.."),
				"/at-root":     fileT(0o644, "r"),
			}),
		},
		{
			Name:  "symlink-escape-later-layer",
			About: "esc -> outside (absolute) and up -> outside (relative) in layer 1, written through in layer 2",
			Layers: []Layer{
				layer(symlinkE("esc", O), symlinkE("up", climb+o)),
				gzLayer(fileE("esc/written", "w"), dirE("up/sub/", 0o700), fileE("up/sub/second", "s")),
			},
			Want: tree(map[string]archive.Entry{
				"/esc":            symlinkT(O),
				"/up":             symlinkT(climb + o),
				O + "/written":    fileT(0o644, "w"),
				O + "/sub":        dirT(0o700),
				O + "/sub/second": fileT(0o644, "s"),
			}),
		},
		{
			Name:   "hardlink-outside-direct",
			About:  "a hard link to outside/secret by absolute name",
			Layers: []Layer{layer(linkE("h", O+"/secret"))},
			Reject: rejectNoTarget,
		},
		{
			Name:   "hardlink-through-symlink",
			About:  "esc -> outside, then a hard link to esc/secret",
			Layers: []Layer{layer(symlinkE("esc", O), linkE("h", "esc/secret"))},
			Reject: rejectNoTarget,
		},
		{
			Name:   "hardlink-through-symlink-later-layer",
			About:  "up -> outside (relative, climbing) in layer 1, a hard link to up/secret in layer 2",
			Layers: []Layer{layer(symlinkE("up", climb+o)), layer(linkE("h", "up/secret"))},
			Reject: rejectNoTarget,
		},
		{
			Name:   "hardlink-to-escaping-symlink",
			About:  "esc -> outside/secret, then a hard link to esc itself: a second link to the symlink, not to its target",
			Layers: []Layer{layer(symlinkE("esc", O+"/secret"), linkE("h", "esc"))},
			Want: tree(map[string]archive.Entry{
				"/esc": linked(symlinkT(O+"/secret"), "/esc"),
				"/h":   linked(symlinkT(O+"/secret"), "/esc"),
			}),
		},
		{
			Name:  "whiteout-through-symlink",
			About: "in -> d and esc -> outside; layer 2 whites out in/gone, esc/secret and makes esc opaque; layer 3 whites out the symlink in",
			Layers: []Layer{
				layer(dirE("d/", 0o755), fileE("d/keep", "k"), fileE("d/gone", "g"), symlinkE("in", "d"), symlinkE("esc", O),
					symlinkE("up", climb+o)),
				layer(fileE("in/.wh.gone", ""), fileE("esc/.wh.secret", ""), fileE("up/.wh..wh..opq", "")),
				layer(fileE(".wh.in", "")),
			},
			Want: tree(map[string]archive.Entry{
				"/d":      dirT(0o755),
				"/d/keep": fileT(0o644, "k"),
				"/esc":    symlinkT(O),
				"/up":     symlinkT(climb + o),
				O:         dirT(0o755),
			}),
		},
		{
			Name:   "whiteout-dotdot",
			About:  "a/b/.wh... : a whiteout whose target is .., the parent directory",
			Layers: []Layer{layer(dirE("a/", 0o755), dirE("a/b/", 0o755), fileE("a/b/f", "f")), layer(fileE("a/b/.wh...", ""))},
			Reject: rejectWhiteout,
		},
		{
			Name:   "whiteout-dot",
			About:  "a/b/.wh.. : a whiteout whose target is ., the directory itself",
			Layers: []Layer{layer(dirE("a/", 0o755), dirE("a/b/", 0o755), fileE("a/b/f", "f")), layer(fileE("a/b/.wh..", ""))},
			Reject: rejectWhiteout,
		},
		{
			Name:  "whiteout-under-fifo",
			About: "a whiteout inside a FIFO (p/.wh.x, and through s -> q in one layer): removing it must not open the FIFO",
			Layers: []Layer{
				layer(Entry{Name: "p", Type: tar.TypeFifo, Mode: 0o600}),
				layer(fileE("p/.wh.x", "")),
			},
			Reject: rejectNotDir,
		},
		{
			Name:   "whiteout-under-fifo-same-layer",
			About:  "q a FIFO, s -> q, then s/.wh.x in the same layer",
			Layers: []Layer{layer(Entry{Name: "q", Type: tar.TypeFifo, Mode: 0o600}, symlinkE("s", "q"), fileE("s/.wh.x", ""))},
			Reject: rejectNotDir,
		},
		{
			Name:      "whiteout-under-device",
			About:     "a whiteout inside a character device the layer made: removing it must not open the device",
			NeedsRoot: true,
			Layers: []Layer{
				layer(Entry{Name: "null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3, Owned: true}),
				layer(fileE("null/.wh.x", "")),
			},
			Reject: rejectNotDir,
		},
		{
			Name:   "opaque-root",
			About:  "an opaque whiteout of the root directory itself",
			Layers: []Layer{layer(fileE("old", "o"), dirE("d/", 0o755), fileE("d/f", "f")), layer(fileE(".wh..wh..opq", ""), fileE("new", "n"))},
			Want:   tree(map[string]archive.Entry{"/new": fileT(0o644, "n")}),
		},
		{
			Name:  "opaque-after-entries",
			About: "an opaque marker after entries of its own layer: what the layer listed stays, the rest (implicit parents included) goes",
			Layers: []Layer{
				layer(dirE("d/", 0o755), fileE("d/old", "o"), dirE("d/sub/", 0o755), fileE("d/sub/older", "o")),
				layer(fileE("d/kept", "k"), fileE("d/sub/new", "n"), fileE("d/implicit/f", "f"), dirE("d/listed/", 0o700),
					fileE("d/listed/g", "g"), fileE("d/.wh..wh..opq", "")),
			},
			Want: tree(map[string]archive.Entry{
				"/d":          dirT(0o755),
				"/d/kept":     fileT(0o644, "k"),
				"/d/listed":   dirT(0o700),
				"/d/listed/g": fileT(0o644, "g"),
			}),
		},
		{
			Name:      "device-nodes",
			About:     "character and block devices and a FIFO, one created through esc -> outside",
			NeedsRoot: true,
			Layers: []Layer{layer(
				Entry{Name: "null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3, Owned: true},
				Entry{Name: "loop", Type: tar.TypeBlock, Mode: 0o660, Major: 7, Minor: 0, Owned: true, GID: 6},
				Entry{Name: "pipe", Type: tar.TypeFifo, Mode: 0o600, Owned: true, UID: 1234, GID: 5678},
				symlinkE("esc", O),
				Entry{Name: "esc/null", Type: tar.TypeChar, Mode: 0o600, Major: 1, Minor: 3, Owned: true},
			)},
			Want: tree(map[string]archive.Entry{
				"/null":     devT("char", 0o666, 1, 3),
				"/loop":     withOwner(devT("block", 0o660, 7, 0), 0, 6),
				"/pipe":     withOwner(devT("fifo", 0o600, 0, 0), 1234, 5678),
				"/esc":      symlinkT(O),
				O + "/null": devT("char", 0o600, 1, 3),
			}),
		},
		{
			Name:  "file-replaces-dir",
			About: "a directory with contents in layer 1 becomes a file in layer 2",
			Layers: []Layer{
				layer(dirE("a/", 0o755), fileE("a/f", "f"), dirE("a/sub/", 0o755), fileE("a/sub/g", "g")),
				layer(fileE("a", "now a file")),
			},
			Want: tree(map[string]archive.Entry{"/a": fileT(0o644, "now a file")}),
		},
		{
			Name:  "dir-replaces-file",
			About: "a file and a symlink to outside in layer 1 become directories in layer 2",
			Layers: []Layer{
				layer(fileE("a", "a file"), symlinkE("s", O)),
				layer(dirE("a/", 0o710), fileE("a/g", "g"), dirE("s/", 0o755), fileE("s/h", "h")),
			},
			Want: tree(map[string]archive.Entry{
				"/a":   dirT(0o710),
				"/a/g": fileT(0o644, "g"),
				"/s":   dirT(0o755),
				"/s/h": fileT(0o644, "h"),
			}),
		},
		{
			Name:  "type-changes-same-layer",
			About: "within one layer: a directory replaced by a file, a file by a directory, a symlink to outside by a directory",
			Layers: []Layer{layer(
				dirE("a/", 0o755), fileE("a/f", "f"), fileE("a", "file a"),
				fileE("b", "file b"), dirE("b/", 0o700), fileE("b/c", "c"),
				symlinkE("s", O), dirE("s/", 0o755), fileE("s/inside", "i"),
			)},
			Want: tree(map[string]archive.Entry{
				"/a":        fileT(0o644, "file a"),
				"/b":        dirT(0o700),
				"/b/c":      fileT(0o644, "c"),
				"/s":        dirT(0o755),
				"/s/inside": fileT(0o644, "i"),
			}),
		},
		{
			Name:  "duplicate-entries",
			About: "the same names twice in one layer: the last wins, and a hard link made in between keeps the first file",
			Layers: []Layer{layer(
				fileE("f", "one"), linkE("h", "f"), fileE("f", "two"),
				dirE("d/", 0o700), dirE("d/", 0o755), fileE("d/x", "1"), fileE("d/x", "2"),
				symlinkE("s", "one"), symlinkE("s", "two"),
			)},
			Want: tree(map[string]archive.Entry{
				"/f":   fileT(0o644, "two"),
				"/h":   fileT(0o644, "one"),
				"/d":   dirT(0o755),
				"/d/x": fileT(0o644, "2"),
				"/s":   symlinkT("two"),
			}),
		},
		{
			Name:   "hardlink-header-mode",
			About:  "a hard link whose header has another mode than its target: the shared inode takes the link's",
			Layers: []Layer{layer(fileE("f", "x"), Entry{Name: "h", Type: tar.TypeLink, Mode: 0o600, Linkname: "f"})},
			Want: tree(map[string]archive.Entry{
				"/f": linked(fileT(0o600, "x"), "/f"),
				"/h": linked(fileT(0o600, "x"), "/f"),
			}),
		},
		{
			Name:   "hardlink-replaces-target",
			About:  "a hard link a -> a/f: replacing a removes the target first",
			Layers: []Layer{layer(dirE("a/", 0o755), fileE("a/f", "f"), linkE("a", "a/f"))},
			Reject: rejectNoTarget,
		},
		{
			Name:  "aufs-hardlink-dir",
			About: "AUFS hard-link metadata: .wh..wh.plnk/ is not part of the tree",
			Layers: []Layer{layer(dirE(".wh..wh.plnk/", 0o700), fileE(".wh..wh.plnk/1234", "linked"),
				fileE("a/.wh..wh.meta", ""), fileE("kept", "k"))},
			Want: tree(map[string]archive.Entry{
				"/.wh..wh.plnk": dirT(0o755), // the parent an unpack makes for the skipped entry
				"/a":            dirT(0o755),
				"/kept":         fileT(0o644, "k"),
			}),
		},
		{
			Name:   "huge-size-short-body",
			About:  "a header declaring 1 TiB followed by 16 bytes and the end of the stream",
			Layers: []Layer{layer(fileE("ok", "fine"), Entry{Name: "big", Type: tar.TypeReg, Mode: 0o644, Body: "only sixteen b..", Size: 1 << 40})},
			Reject: rejectShort,
		},
		{
			Name:   "plain-blob-gzip-type",
			About:  "an uncompressed tar labelled tar+gzip",
			Layers: []Layer{{Entries: []Entry{fileE("f", "plain")}, MediaType: imgspecv1.MediaTypeImageLayerGzip}},
			Want:   tree(map[string]archive.Entry{"/f": fileT(0o644, "plain")}),
			Reject: rejectNotGzip,
		},
		{
			Name:   "gzip-blob-plain-type",
			About:  "a gzip blob labelled as an uncompressed tar",
			Layers: []Layer{{Entries: []Entry{fileE("f", "zipped")}, Gzip: true, MediaType: imgspecv1.MediaTypeImageLayer}},
			Want:   tree(map[string]archive.Entry{"/f": fileT(0o644, "zipped")}),
			Reject: rejectNotTar,
		},
		{
			Name:  "truncated-gzip",
			About: "a gzip stream cut in half",
			Layers: []Layer{{Entries: []Entry{fileE("a", strings.Repeat("payload ", 4096)), fileE("b", "b")}, Gzip: true,
				Damage: func(b []byte) []byte { return b[:len(b)/2] }}},
			Reject: rejectShort,
		},
		{
			Name:  "truncated-gzip-trailer",
			About: "a gzip stream missing only its last 4 bytes: the tar inside is whole",
			Layers: []Layer{{Entries: []Entry{fileE("a", "a")}, Gzip: true,
				Damage: func(b []byte) []byte { return b[:len(b)-4] }}},
			Reject: rejectShort,
		},
		{
			Name:   "deep-path-10k",
			About:  "a file 10,000 directories deep (20 kB name)",
			Layers: []Layer{layer(fileE(deep, "deep"))},
			Reject: rejectTooLong,
		},
		{
			Name:   "long-name",
			About:  "a 300-byte file name",
			Layers: []Layer{layer(fileE(strings.Repeat("n", 300), "x"))},
			Reject: rejectTooLong,
		},
		{
			Name:  "whiteout-of-255-byte-name",
			About: "a 255-byte file name (the longest allowed) whited out in layer 2, whose whiteout name is 259 bytes",
			Layers: []Layer{
				layer(fileE(strings.Repeat("w", 255), "x"), fileE("kept", "k")),
				layer(fileE(".wh."+strings.Repeat("w", 255), "")),
			},
			Want: tree(map[string]archive.Entry{"/kept": fileT(0o644, "k")}),
		},
		{
			Name:   "symlink-loop",
			About:  "l1 -> l2 -> l1, then l1/f",
			Layers: []Layer{layer(symlinkE("l1", "l2"), symlinkE("l2", "l1"), fileE("l1/f", "x"))},
			Reject: rejectLoop,
		},
		{
			Name:   "root-as-symlink",
			About:  "an entry ./ that is a symlink to outside",
			Layers: []Layer{layer(symlinkE("./", O))},
			Reject: rejectRoot,
		},
	}, sparseCases()...)
}

// sparseCases are GNU tar's sparse files in each of its encodings: v1 must
// hold them exactly, v2 must refuse them (a v2 node's data is one run of
// its layer's bytes), never serve the stored bytes as the file's.
func sparseCases() []Case {
	files := func(dirs ...string) map[string]archive.Entry {
		t := map[string]archive.Entry{}
		for _, d := range dirs {
			t[d] = dirT(0o755)
			for p, b := range SparseFiles(d) {
				t[p] = fileT(0o644, string(b))
			}
		}
		return t
	}
	want := files("/sparse")
	var cases []Case
	for _, format := range SparseFormats {
		cases = append(cases, Case{
			Name: "sparse-" + format,
			About: "GNU tar --sparse (" + format + "): holes at the start, in the middle, at the end, " +
				"a file all hole, then a plain file",
			Layers:   []Layer{{Raw: mustSparseLayer(format), Gzip: format == "pax-1.0"}},
			Want:     tree(want),
			RejectV2: rejectSparse,
		})
	}
	cases = append(cases, Case{
		Name:     "sparse-mixed",
		About:    "one layer: sparse files in GNU format, then the same in PAX format 1.0 in another directory",
		Layers:   []Layer{{Raw: mustSparseLayer("mixed")}},
		Want:     tree(files("/mixed/gnu", "/mixed/pax")), // and /mixed, 0755, as tree adds it
		RejectV2: regexp.MustCompile(`"mixed/gnu/hole-start": sparse file: a v2 archive cannot serve it`),
	})
	after := files("/sparse")
	delete(after, "/sparse/hole-middle")
	after["/sparse/hole-end"] = fileT(0o644, "plain now")
	cases = append(cases, Case{
		Name:  "sparse-layers-then-changes",
		About: "the GNU and PAX 0.0 sparse layers, then a layer whiting out one sparse file and replacing another",
		Layers: []Layer{{Raw: mustSparseLayer("gnu")}, {Raw: mustSparseLayer("pax-0.0"), Gzip: true},
			layer(fileE("sparse/.wh.hole-middle", ""), fileE("sparse/hole-end", "plain now"))},
		Want:     tree(after),
		RejectV2: rejectSparse,
	})
	return cases
}

func mustSparseLayer(format string) []byte {
	b, err := SparseLayer(format)
	if err != nil {
		panic(err) // embedded: only a wrong format name gets here
	}
	return b
}

func withOwner(e archive.Entry, uid, gid uint32) archive.Entry {
	e.UID, e.GID = uid, gid
	return e
}
