package archive_test

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"

	"github.com/clipbuild/clipbuild/archive"
)

// requireRoot skips t when not running as root, or fails it under CI=true,
// where every test is expected to run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI=true")
	}
	t.Skip("this test needs root")
}

// runUnprivileged runs the test named name again in a copy of this test
// binary as the user nobody, with a private TMPDIR that user owns, and
// fails t if it fails. It is for tests of what a non-root run must manage,
// run by root.
func runUnprivileged(t *testing.T, name string) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("looking up the user nobody to run %s unprivileged: %v", name, err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	// t.TempDir's parents are 0700 and root's: nobody could not reach it.
	dir, err := os.MkdirTemp("", "clipbuild-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "archive.test")
	copyExecutable(t, self, bin)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, tmp} {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run", "^"+name+"$", "-test.count=1", "-test.v")
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "HOME="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s as uid %d: %v\n%s", name, uid, err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("%s as uid %d did not run:\n%s", name, uid, out)
	}
	t.Logf("%s as uid %d:\n%s", name, uid, out)
}

// copyExecutable copies src to a new executable file dst.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// bigSize is the size of the large file in the fixture: more than the 1 MiB
// copy buffer and not a multiple of it.
const bigSize = 3<<20 + 12345

// fixtureBytes returns n deterministic pseudo-random bytes.
func fixtureBytes(n int, seed byte) []byte {
	var s [32]byte
	s[0] = seed
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// treeBuilder makes files under root with exact modes (chmod after
// creation, so the umask does not matter).
type treeBuilder struct {
	t    *testing.T
	root string
}

func (b treeBuilder) path(rel string) string { return filepath.Join(b.root, rel) }

func (b treeBuilder) chmod(rel string, mode uint32) {
	b.t.Helper()
	if err := syscall.Chmod(b.path(rel), mode); err != nil {
		b.t.Fatal(err)
	}
}

func (b treeBuilder) dir(rel string, mode uint32) {
	b.t.Helper()
	if err := os.MkdirAll(b.path(rel), 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(rel, mode)
}

func (b treeBuilder) file(rel string, data []byte, mode uint32) {
	b.t.Helper()
	if err := os.WriteFile(b.path(rel), data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(rel, mode)
}

func (b treeBuilder) symlink(target, rel string) {
	b.t.Helper()
	if err := os.Symlink(target, b.path(rel)); err != nil {
		b.t.Fatal(err)
	}
}

func (b treeBuilder) link(oldRel, newRel string) {
	b.t.Helper()
	if err := os.Link(b.path(oldRel), b.path(newRel)); err != nil {
		b.t.Fatal(err)
	}
}

func (b treeBuilder) fifo(rel string, mode uint32) {
	b.t.Helper()
	if err := syscall.Mkfifo(b.path(rel), mode); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(rel, mode)
}

// Paths of the fixture tree that tests look at directly.
const (
	pathEmpty    = "/empty"
	pathSmall    = "/small.txt"
	pathBig      = "/big.bin"
	pathNoPerm   = "/noperm"
	pathSetuid   = "/bin/setuid"
	pathSetgid   = "/bin/setgid"
	pathSticky   = "/tmp"
	pathPrivate  = "/private"
	pathFIFO     = "/run-fifo"
	pathHL1      = "/hl/a"
	pathHL2      = "/hl/b"
	pathHL3      = "/hl/sub/c"
	pathAbsLink  = "/abs-link"
	pathRelLink  = "/rel-link"
	pathDangling = "/dangling"
	pathSpaces   = "/with space/file name.txt"
	pathUnicode  = "/ünïcödé/日本語.txt"
	pathNested   = "/a/b/c/d/deep.txt"
)

// smallData is the content of the small file and of the hard-link group.
var (
	smallData = []byte("hello, clip\n")
	linkData  = []byte("shared by three names\n")
)

// withNoPerm reports whether the fixture has a mode-0000 file: only root
// can read one (TestWriteV1UnreadableFile covers it for everyone).
func withNoPerm() bool { return os.Geteuid() == 0 }

// fixtureEntries is the number of paths in the fixture tree.
func fixtureEntries() int {
	if withNoPerm() {
		return 29
	}
	return 28
}

// fixtureStats is what WriteV1 and Summarize count for the fixture tree.
func fixtureStats() archive.Stats {
	st := archive.Stats{
		// empty, small, big, setuid, setgid, hl/a, hl/b, hl/sub/c,
		// "file name.txt", 日本語.txt, deep.txt, private/secret
		Files: 12,
		// /, bin, tmp, private, hl, hl/sub, "with space", ünïcödé, a, a/b,
		// a/b/c, a/b/c/d
		Dirs:      12,
		Symlinks:  3,
		Special:   1,
		Hardlinks: 2,
		DataBytes: int64(len(smallData)) + bigSize + int64(len("#!/bin/sh\n"))*2 + int64(len(linkData)) +
			int64(len("spaces\n")) + int64(len("unicode\n")) + int64(len("deep\n")) + int64(len("secret\n")),
	}
	if withNoPerm() {
		st.Files++
		st.DataBytes += int64(len(noPermData))
	}
	return st
}

var noPermData = []byte("no permissions\n")

// buildFixture makes the tree every round-trip test archives, and returns
// its root.
func buildFixture(t *testing.T) string {
	t.Helper()
	b := treeBuilder{t: t, root: filepath.Join(t.TempDir(), "rootfs")}
	b.dir("/", 0o755)
	b.file(pathEmpty, nil, 0o644)
	b.file(pathSmall, smallData, 0o644)
	b.file(pathBig, fixtureBytes(bigSize, 1), 0o600)
	if withNoPerm() {
		b.file(pathNoPerm, noPermData, 0o000)
	}
	b.dir("/bin", 0o755)
	b.file(pathSetuid, []byte("#!/bin/sh\n"), 0o4755)
	b.file(pathSetgid, []byte("#!/bin/sh\n"), 0o2755)
	b.dir(pathSticky, 0o1777)
	b.dir(pathPrivate, 0o755)
	b.file(pathPrivate+"/secret", []byte("secret\n"), 0o600)
	b.chmod(pathPrivate, 0o700)
	b.fifo(pathFIFO, 0o620)
	b.dir("/hl/sub", 0o755)
	b.file(pathHL1, linkData, 0o640)
	b.link(pathHL1, pathHL2)
	b.link(pathHL1, pathHL3)
	b.symlink("/etc/passwd", pathAbsLink)
	b.symlink("small.txt", pathRelLink)
	b.symlink("does/not/exist", pathDangling)
	b.dir("/with space", 0o755)
	b.file(pathSpaces, []byte("spaces\n"), 0o644)
	b.dir("/ünïcödé", 0o755)
	b.file(pathUnicode, []byte("unicode\n"), 0o644)
	b.dir("/a/b/c/d", 0o755)
	b.file(pathNested, []byte("deep\n"), 0o444)
	return b.root
}

// testTrailer is the trailer the round-trip tests write.
func testTrailer() archive.Trailer {
	return archive.Trailer{
		Image: &common.ImageMetadata{
			Name:         "localhost/fixture:latest",
			Digest:       "sha256:2222222222222222222222222222222222222222222222222222222222222222",
			Created:      time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
			Architecture: "amd64",
			Os:           "linux",
			Env:          []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"},
			Cmd:          []string{"/bin/sh", "-c", "echo hi"},
			Entrypoint:   []string{"/entry"},
			User:         "1000:1000",
			WorkingDir:   "/work",
			Labels:       map[string]string{"org.example": "yes"},
			Layers:       []string{"sha256:1111111111111111111111111111111111111111111111111111111111111111"},
			LayersData: []common.LayerMetadata{{
				MIMEType: "application/vnd.oci.image.layer.v1.tar",
				Digest:   "sha256:1111111111111111111111111111111111111111111111111111111111111111",
				Size:     4242,
			}},
		},
		ManifestDigest: "sha256:2222222222222222222222222222222222222222222222222222222222222222",
		Tool:           "clipbuild",
	}
}

// writeArchive archives root into dir/name.clip with WriteFileAtomic and
// WriteV1, and returns the path and WriteV1's stats.
func writeArchive(t *testing.T, root, out string, tr archive.Trailer) archive.Stats {
	t.Helper()
	var st archive.Stats
	err := archive.WriteFileAtomic(out, func(f *os.File) error {
		var err error
		st, err = archive.WriteV1(context.Background(), root, f, tr)
		return err
	})
	if err != nil {
		t.Fatalf("writing %s: %v", out, err)
	}
	return st
}

// fixtureArchive builds the fixture tree and archives it.
func fixtureArchive(t *testing.T) (root, clip string) {
	t.Helper()
	root = buildFixture(t)
	clip = filepath.Join(t.TempDir(), "fixture.clip")
	writeArchive(t, root, clip, testTrailer())
	return root, clip
}
