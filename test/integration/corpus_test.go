package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// corpusCase is one image of testdata/corpus and what must be true of it.
type corpusCase struct {
	name  string   // test, image and container name
	dir   string   // directory under testdata/corpus
	flags []string // extra `clipbuild build` flags
	// minLayers is the least number of layers the image must have, so
	// that whiteouts and opaque directories really cross layers.
	minLayers int
	check     func(r tree)
}

// longName is the 200-byte file name of the names case.
var longName = strings.Repeat("long", 50)

var corpus = []corpusCase{
	{
		name: "whiteouts", dir: "whiteouts", flags: []string{"--layers"}, minLayers: 5,
		check: func(r tree) {
			r.entries("data", "deleted-then-recreated", "file-becomes-dir", "keep")
			r.entries("data/keep", "kept.txt")
			r.file("data/keep/kept.txt", "keep\n")
			r.absent("data/keep/deleted.txt")
			r.absent("data/gone")
			r.file("data/deleted-then-recreated", "reborn\n")
			r.mode("data/file-becomes-dir", "dir", 0o755)
			r.file("data/file-becomes-dir/inner.txt", "inside\n")
		},
	},
	{
		name: "opaque", dir: "opaque", flags: []string{"--layers"}, minLayers: 4,
		check: func(r tree) {
			r.entries("opq", "new.txt", "sub")
			r.entries("opq/sub", "new.txt")
			r.file("opq/new.txt", "new\n")
			r.file("opq/sub/new.txt", "new\n")
			r.absent("opq/old.txt")
			r.absent("opq/sub/deeper")
			r.file("sibling.txt", "untouched\n")
		},
	},
	{
		name: "hardlinks", dir: "hardlinks", flags: []string{"--layers"}, minLayers: 4,
		check: func(r tree) {
			group := []string{"links/a/original", "links/a/second", "links/b/third"}
			r.hardlinked(3, group...)
			for _, p := range group {
				r.file(p, "shared-content\n")
				r.owner(p, 1000, 1000)
				r.mode(p, "file", 0o640)
			}
			r.hardlinked(2, "links/pair-1", "links/b/pair-2")
			r.hardlinked(1, "links/alone")
			if a, b := r.lstat("links/alone"), r.lstat("links/pair-1"); a != nil && b != nil && a.Ino == b.Ino {
				r.errorf("links/alone and links/pair-1 share inode %d, want distinct inodes", a.Ino)
			}
		},
	},
	{
		name: "symlinks", dir: "symlinks",
		check: func(r tree) {
			links := map[string]string{
				"sl/absolute":          "/sl/dir/file.txt",
				"sl/relative":          "dir/file.txt",
				"sl/other/dotdot":      "../dir/file.txt",
				"sl/dangling-absolute": "/does/not/exist",
				"sl/dangling-relative": "missing.txt",
				"sl/dir-link":          "dir",
				"sl/dir-link-absolute": "/sl/dir",
				"sl/chain-1":           "relative",
				"sl/chain-2":           "chain-1",
				"sl/chain-3":           "chain-2",
			}
			for p, target := range links {
				r.mode(p, "symlink", 0o777)
				r.symlink(p, target)
			}
			// Relative links resolve inside the mounted tree.
			r.readsAs("sl/relative", "target\n")
			r.readsAs("sl/other/dotdot", "target\n")
			r.readsAs("sl/chain-3", "target\n")
			r.readsAs("sl/dir-link/file.txt", "target\n")
			if _, err := os.Stat(r.path("sl/dangling-relative")); !os.IsNotExist(err) {
				r.errorf("sl/dangling-relative: following it got %v, want does not exist", err)
			}
		},
	},
	{
		name: "fifo", dir: "fifo",
		check: func(r tree) {
			r.mode("fifo/private", "fifo", 0o600)
			r.mode("fifo/public", "fifo", 0o644)
		},
	},
	{
		name: "modes", dir: "modes",
		check: func(r tree) {
			r.mode("modes/setuid", "file", 0o4755)
			r.mode("modes/setgid", "file", 0o2755)
			r.mode("modes/setgid-dir", "dir", 0o2755)
			r.mode("modes/sticky-dir", "dir", 0o1777)
			r.mode("modes/private-dir", "dir", 0o700)
			r.mode("modes/no-perms", "file", 0o000)
			r.mode("modes/read-only", "file", 0o444)
			r.file("modes/setuid", "u\n")
			r.file("modes/no-perms", "none\n") // root reads it regardless
			r.file("modes/private-dir/inside", "secret\n")
		},
	},
	{
		name: "owners", dir: "owners",
		check: func(r tree) {
			for _, o := range []struct {
				path     string
				uid, gid uint32
			}{
				{"own/user", 1000, 1000},
				{"own/user/file", 1000, 1000},
				{"own/nobody", 65534, 65534},
				{"own/nobody/file", 65534, 65534},
				{"own/mixed", 123, 456},
				{"own/mixed/file", 123, 456},
				{"own/link", 1000, 1000},
				{"own", 0, 0},
			} {
				r.owner(o.path, o.uid, o.gid)
			}
			r.symlink("own/link", "user/file")
		},
	},
	{
		name: "empty", dir: "empty", flags: []string{"--layers"}, minLayers: 4,
		check: func(r tree) {
			r.entries("empty", "dir", "file", "later", "nested", "truncated")
			r.entries("empty/dir")
			r.entries("empty/nested/a/b/c")
			for _, p := range []string{"empty/file", "empty/truncated", "empty/later", "empty/nested/a/file"} {
				r.file(p, "")
			}
		},
	},
	{
		name: "names", dir: "names",
		check: func(r tree) {
			r.entries("names", "-dash-dir", "-leading-dash", "café", longName, "with space", "日本語")
			r.file("names/with space/file name.txt", "spaced\n")
			r.file("names/café", "accent\n")
			r.file("names/日本語/ファイル.txt", "nihongo\n")
			r.file("names/-leading-dash", "dash\n")
			r.mode("names/-dash-dir", "dir", 0o755)
			r.file("names/"+longName, "long\n")
		},
	},
	{
		name: "many-small", dir: "many-small",
		check: func(r tree) {
			var dirs []string
			for d := range 10 {
				dirs = append(dirs, fmt.Sprintf("d%d", d))
				var files []string
				for i := d * 500; i < (d+1)*500; i++ {
					files = append(files, fmt.Sprintf("f%d", i))
				}
				r.entries(fmt.Sprintf("many/d%d", d), files...)
			}
			r.entries("many", dirs...)
			r.file("many/d0/f0", "file 0\n")
			r.file("many/d2/f1234", "file 1234\n")
			r.file("many/d9/f4999", "file 4999\n")
		},
	},
	{
		name: "large", dir: "large",
		check: func(r tree) {
			r.mode("large/random.bin", "file", 0o644)
			if st := r.lstat("large/random.bin"); st != nil && st.Size != 20_000_000 {
				r.errorf("large/random.bin: size: got %d, want 20000000", st.Size)
			}
		},
	},
	{
		name: "multistage", dir: "multistage", flags: []string{"--build-arg", "GREETING=overridden"},
		check: func(r tree) {
			r.file("out/greeting.txt", "overridden\n")
			r.file("out/artifact.txt", "built-in-a\n")
			r.file("final-only.txt", "only-in-final\n")
			r.absent("stage-a-only.txt")
		},
	},
	{
		name: "multistage-target", dir: "multistage", flags: []string{"--target", "a"},
		check: func(r tree) {
			r.file("stage-a-only.txt", "only-in-a\n")
			r.file("out/greeting.txt", "hello\n")
			r.absent("final-only.txt")
		},
	},
}

// TestCorpus builds every corpus image into a .clip archive, mounts it and
// compares the mount with buildah's view of the image.
func TestCorpus(t *testing.T) {
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			heavy(t)
			ctx := prepareContext(t, filepath.Join("corpus", tc.dir))
			image := imageName(tc.name)
			archive := buildArchive(t, ctx, image, tc.flags...)
			if tc.minLayers > 0 {
				checkLayerCount(t, image, tc.minLayers)
			}
			reference := buildahRootfs(t, image, namePrefix+"-"+tc.name+"-ref")
			m := mountArchive(t, archive)

			compareTrees(t, "buildah mount", reference, "clipbuild mount", m.dir)
			for _, r := range []tree{{t, "clipbuild mount", m.dir}, {t, "buildah mount", reference}} {
				r.common()
				tc.check(r)
			}

			checkInspect(t, archive)
			checkVerify(t, archive, image, reference)

			code, err := m.stop(syscall.SIGTERM)
			if err != nil {
				t.Error(err)
			}
			if code != 0 {
				t.Errorf("clipbuild mount exit code after SIGTERM: got %d, want 0", code)
			}
		})
	}
}

// checkLayerCount checks that the image has at least atLeast layers.
func checkLayerCount(t *testing.T, image string, atLeast int) {
	t.Helper()
	out := buildahCmd(t, "inspect", "--type", "image", "--format", "{{len .OCIv1.RootFS.DiffIDs}}", image)
	if n, err := strconv.Atoi(out); err != nil || n < atLeast {
		t.Errorf("%s: layers: got %q, want at least %d", image, out, atLeast)
	}
}

// checkInspect runs `clipbuild inspect` on a valid archive.
func checkInspect(t *testing.T, archive string) {
	t.Helper()
	res := clipbuild(t, "inspect", archive)
	if res.exitCode != 0 || strings.TrimSpace(res.stdout) == "" {
		t.Errorf("inspect: want exit 0 and some output, got %v", res)
	}
	res = clipbuild(t, "inspect", archive, "--json")
	var obj map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &obj); res.exitCode != 0 || err != nil {
		t.Errorf("inspect --json: want exit 0 and one JSON object (%v), got %v", err, res)
	}
}

// checkVerify runs `clipbuild verify` against buildah's tree and image
// (no difference: exit 0) and against a copy of the tree with one byte
// changed (difference: exit 1).
func checkVerify(t *testing.T, archive, image, reference string) {
	t.Helper()
	verify := func(what string, want int, args ...string) {
		t.Helper()
		res := clipbuild(t, append([]string{"verify", archive}, args...)...)
		if res.exitCode != want {
			t.Errorf("verify against %s: exit code: got %d, want %d\n%v", what, res.exitCode, want, res)
		}
	}
	verify("buildah's mount", 0, "--rootfs", reference)
	verify("the image", 0, "--image", image)

	copyDir := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(copyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, run(t, "", commandTimeout, "cp", "-a", reference+"/.", copyDir+"/"))
	verify("an unchanged copy of buildah's mount", 0, "--rootfs", copyDir)
	flipByte(t, filepath.Join(copyDir, "bin", "busybox"))
	verify("a copy of buildah's mount with one byte changed", 1, "--rootfs", copyDir)
}

// flipByte inverts the byte in the middle of a file, keeping its size.
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
