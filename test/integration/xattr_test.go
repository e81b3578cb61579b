package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	storarchive "go.podman.io/storage/pkg/archive"
	"golang.org/x/sys/unix"
)

// File capabilities as `setcap cap_net_raw+ep` writes them: revision 2
// (magic 0x02000001: revision and the effective flag), then permitted and
// inheritable for capabilities 0-31 and 32-63; cap_net_raw is bit 13. The
// revision 3 form adds a namespace root id; with root id 0 the kernel
// stores it as revision 2.
var (
	capNetRaw        = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	capNetRawV3Root0 = []byte{0x01, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
)

// tarEntry is one entry of a layer the test writes itself.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	xattrs     map[string]string
}

// layerTar writes entries as a tar stream with the attributes in PAX
// SCHILY.xattr records, as containers-storage writes them.
func layerTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)),
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// xattrImageLayers is an image whose files carry attributes: a file with a
// capability and user attributes, a hard link to it adding one, a revision
// 3 capability, a directory's (to which a later layer adds one), a
// symlink's (trusted.*: user.* is refused on symlinks), one dropped by a
// later layer's overwrite and one on a file a later layer whites out.
func xattrImageLayers(t *testing.T) [][]byte {
	return [][]byte{
		layerTar(t,
			tarEntry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
			tarEntry{name: "bin/ping", typ: tar.TypeReg, mode: 0o755, body: "ping\n",
				xattrs: map[string]string{"security.capability": string(capNetRaw), "user.foo": "bar"}},
			tarEntry{name: "bin/ping6", typ: tar.TypeLink, link: "bin/ping", mode: 0o755, xattrs: map[string]string{"user.bar": "from the link"}},
			tarEntry{name: "bin/v3", typ: tar.TypeReg, mode: 0o755, body: "v3\n", xattrs: map[string]string{"security.capability": string(capNetRawV3Root0)}},
			tarEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"user.dir": "etc"}},
			tarEntry{name: "etc/motd", typ: tar.TypeReg, mode: 0o644, body: "hello\n", xattrs: map[string]string{"user.mime": "text/plain"}},
			tarEntry{name: "etc/old", typ: tar.TypeReg, mode: 0o644, body: "old\n", xattrs: map[string]string{"user.old": "1"}},
			tarEntry{name: "etc/gone", typ: tar.TypeReg, mode: 0o644, body: "gone\n", xattrs: map[string]string{"user.gone": "1"}},
			tarEntry{name: "lib", typ: tar.TypeSymlink, link: "bin", mode: 0o777, xattrs: map[string]string{"trusted.sym": "1"}},
		),
		// As a layer that buildah commits lists the directories it
		// changes, with all their attributes (overlayfs copies them up).
		layerTar(t,
			tarEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"user.dir": "etc", "user.dir2": "added"}},
			tarEntry{name: "etc/old", typ: tar.TypeReg, mode: 0o644, body: "new\n"},
			tarEntry{name: "etc/.wh.gone", typ: tar.TypeReg},
		),
	}
}

// checkXattrImage checks the attributes every tree of xattrImageLayers
// must show (an unpacked rootfs, buildah's mount, clipbuild's mount).
func checkXattrImage(r tree) {
	r.t.Helper()
	ping := map[string][]byte{"security.capability": capNetRaw, "user.foo": []byte("bar"), "user.bar": []byte("from the link")}
	r.xattrs("bin/ping", ping)
	r.xattrs("bin/ping6", ping)
	r.hardlinked(2, "bin/ping", "bin/ping6")
	r.xattrs("bin/v3", map[string][]byte{"security.capability": capNetRaw})
	r.xattrs("etc", map[string][]byte{"user.dir": []byte("etc"), "user.dir2": []byte("added")})
	r.xattrs("etc/motd", map[string][]byte{"user.mime": []byte("text/plain")})
	r.xattrs("etc/old", nil)
	r.file("etc/old", "new\n")
	r.absent("etc/gone")
	r.xattrs("lib", map[string][]byte{"trusted.sym": []byte("1")})
	r.xattrs("bin", nil)
}

// xattrImageInodes is how many inodes of xattrImageLayers have attributes.
const xattrImageInodes = 5

// pushLayers pushes an image made of the layers (gzip-compressed) to ref.
func pushLayers(t *testing.T, ref string, layers [][]byte) {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH,
		RootFS: v1.RootFS{Type: "layers"}, Config: v1.Config{Cmd: []string{"/bin/ping"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

// unpackRootfs applies the layers with containers-storage's applier, as
// buildah and the v1 path unpack them. The layers do not describe the root,
// which then has containers-storage's default mode, 0555.
func unpackRootfs(t *testing.T, layers [][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	mustDo(t, os.Mkdir(dir, 0o755))
	for i, l := range layers {
		if _, err := storarchive.ApplyUncompressedLayer(dir, bytes.NewReader(l), &storarchive.TarOptions{}); err != nil {
			t.Fatalf("unpacking layer %d: %v", i+1, err)
		}
	}
	mustDo(t, os.Chmod(dir, 0o555))
	return dir
}

// checkInspectXattrs checks that `inspect` counts the inodes with
// attributes, in JSON and in text.
func checkInspectXattrs(t *testing.T, archive string, want int) {
	t.Helper()
	res := clipbuild(t, "inspect", "--json", archive)
	mustSucceed(t, res)
	var s struct {
		Counts struct {
			XattrInodes int `json:"xattrInodes"`
		} `json:"counts"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &s); err != nil {
		t.Fatalf("inspect --json: %v\n%v", err, res)
	}
	if s.Counts.XattrInodes != want {
		t.Errorf("inspect --json: counts.xattrInodes = %d, want %d", s.Counts.XattrInodes, want)
	}
	res = clipbuild(t, "inspect", archive)
	mustSucceed(t, res)
	if line := "Xattrs:          " + strconv.Itoa(want) + " inodes with extended attributes"; !strings.Contains(res.stdout, line) {
		t.Errorf("inspect: stdout lacks %q\n%v", line, res)
	}
}

// verifyMatches runs `clipbuild verify` and checks it found no difference.
func verifyMatches(t *testing.T, archive string, against ...string) {
	t.Helper()
	res := clipbuild(t, append([]string{"verify", archive, "--cache-dir", t.TempDir()}, against...)...)
	mustSucceed(t, res)
	if !strings.Contains(res.stdout, " matches ") {
		t.Errorf("verify: stdout lacks \"matches\"\n%v", res)
	}
}

// TestXattrsPull pushes an image whose layers carry extended attributes
// (a file capability and user attributes) and pulls it as v2 and v1: each
// archive must hold the attributes (inspect), verify against the unpacked
// rootfs and against buildah's pull of the image, and serve them through
// its mount; verify must name an attribute the rootfs has and the archive
// lacks.
func TestXattrsPull(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	layers := xattrImageLayers(t)
	ref := reg.addr + "/xattrs/img:1"
	pushLayers(t, ref, layers)

	rootfs := unpackRootfs(t, layers)
	checkXattrImage(tree{t, "unpacked rootfs", rootfs})

	image := ref
	removeImageLater(t, image)
	mustSucceed(t, run(t, "", commandTimeout, "buildah", "pull", "--tls-verify=false", "docker://"+ref))
	reference := buildahRootfs(t, image, namePrefix+"-xattr-pull-ref")
	checkXattrImage(tree{t, "buildah mount", reference})

	archives := map[string]string{}
	for _, version := range []string{"2", "1"} {
		archive := filepath.Join(t.TempDir(), "pulled.clip")
		archives[version] = archive
		res := clipbuild(t, "pull", ref, "--clip-version", version, "-o", archive, "--json")
		mustSucceed(t, res)
		var out buildOutput
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("pull --json: %v\n%v", err, res)
		}
		if got := strconv.Itoa(out.ClipVersion); got != version {
			t.Errorf("pull --clip-version %s: clipVersion %s", version, got)
		}
		checkInspectXattrs(t, archive, xattrImageInodes)
		verifyMatches(t, archive, "--rootfs", rootfs)
		verifyMatches(t, archive, "--image", image)

		m := mountArchive(t, archive, "--cache-dir", t.TempDir())
		checkXattrImage(tree{t, "clipbuild mount (pull v" + version + ")", m.dir})
		compareTrees(t, "buildah mount", reference, "clipbuild mount (pull v"+version+")", m.dir)
	}

	// A rootfs with one attribute more than the image: verify must fail
	// and name it, for both hard-linked paths.
	mustDo(t, unix.Lsetxattr(filepath.Join(rootfs, "bin/ping"), "user.extra", []byte("x"), 0))
	mustDo(t, unix.Lremovexattr(filepath.Join(rootfs, "etc/motd"), "user.mime"))
	for version, archive := range archives {
		res := clipbuild(t, "verify", archive, "--rootfs", rootfs, "--cache-dir", t.TempDir())
		if res.exitCode != 1 {
			t.Errorf("verify v%s of a changed rootfs: exit %d, want 1\n%v", version, res.exitCode, res)
		}
		want := []string{
			"/bin/ping: xattr user.extra missing from archive",
			"/bin/ping6: xattr user.extra missing from archive",
			"/etc/motd: xattr user.mime not in image",
		}
		if got := strings.Split(strings.TrimSpace(res.stdout), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("verify v%s of a changed rootfs: stdout\n%s\nwant\n%s", version, res.stdout, strings.Join(want, "\n"))
		}
	}
}

// TestXattrsBuild builds a Dockerfile whose COPY sources carry a file
// capability and user attributes, which buildah's COPY keeps, as v1 and as
// v2: the archives must verify against the image and their mounts must
// show the attributes as `buildah mount` does.
func TestXattrsBuild(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	ctx := inlineContext(t, busyboxBase+"COPY ping /bin/ping\nCOPY note.txt /etc/note.txt\n")
	mustDo(t, os.WriteFile(filepath.Join(ctx, "ping"), []byte("ping\n"), 0o755))
	mustDo(t, os.WriteFile(filepath.Join(ctx, "note.txt"), []byte("note\n"), 0o644))
	mustDo(t, unix.Setxattr(filepath.Join(ctx, "ping"), "security.capability", capNetRaw, 0))
	mustDo(t, unix.Setxattr(filepath.Join(ctx, "ping"), "user.foo", []byte("bar"), 0))
	mustDo(t, unix.Setxattr(filepath.Join(ctx, "note.txt"), "user.mime", []byte("text/plain"), 0))
	check := func(r tree) {
		r.t.Helper()
		r.xattrs("bin/ping", map[string][]byte{"security.capability": capNetRaw, "user.foo": []byte("bar")})
		r.xattrs("etc/note.txt", map[string][]byte{"user.mime": []byte("text/plain")})
		r.xattrs("bin/busybox", nil)
	}

	for _, version := range []string{"1", "2"} {
		image := imageName("xattr-build-v" + version)
		flags := []string{"--clip-version", version}
		if version == "2" {
			flags = append(flags, "--registry", reg.addr+"/xattrs")
		}
		out, _ := buildV2(t, ctx, image, flags...)
		if got := strconv.Itoa(out.ClipVersion); got != version {
			t.Errorf("build --clip-version %s: clipVersion %s", version, got)
		}
		reference := buildahRootfs(t, image, namePrefix+"-xattr-build-ref-v"+version)
		check(tree{t, "buildah mount (v" + version + ")", reference})
		checkInspectXattrs(t, out.Archive, 2)
		verifyMatches(t, out.Archive, "--image", image)
		m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir())
		check(tree{t, "clipbuild mount (build v" + version + ")", m.dir})
		compareTrees(t, "buildah mount", reference, "clipbuild mount (build v"+version+")", m.dir)
	}
}
