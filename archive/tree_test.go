package archive_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clipbuild/clipbuild/archive"
)

// baseTree is a small image tree the Diff tests change one field at a time.
func baseTree() archive.Tree {
	return archive.Tree{
		"/":            {Type: "dir", Perm: 0o755},
		"/etc":         {Type: "dir", Perm: 0o755},
		"/etc/passwd":  {Type: "file", Perm: 0o644, Size: 10, Digest: "sha256:aaaa", Nlink: 1},
		"/bin":         {Type: "dir", Perm: 0o755},
		"/bin/busybox": {Type: "file", Perm: 0o755, Size: 5, Digest: "sha256:bbbb", Nlink: 2, Link: "/bin/busybox"},
		"/bin/sh":      {Type: "file", Perm: 0o755, Size: 5, Digest: "sha256:bbbb", Nlink: 2, Link: "/bin/busybox"},
		"/lib":         {Type: "symlink", Perm: 0o777, Target: "usr/lib"},
		"/null":        {Type: "char", Perm: 0o666, Nlink: 1, Rdev: 259},
	}
}

func TestDiffFields(t *testing.T) {
	tests := []struct {
		name   string
		change func(got archive.Tree)
		want   []string
	}{
		{"identical", func(archive.Tree) {}, nil},
		{"mode", func(g archive.Tree) { e := g["/etc/passwd"]; e.Perm = 0o4644; g["/etc/passwd"] = e },
			[]string{"/etc/passwd: mode is 4644, want 0644"}},
		{"uid", func(g archive.Tree) { e := g["/etc/passwd"]; e.UID = 1000; g["/etc/passwd"] = e },
			[]string{"/etc/passwd: uid is 1000, want 0"}},
		{"gid", func(g archive.Tree) { e := g["/etc"]; e.GID = 42; g["/etc"] = e },
			[]string{"/etc: gid is 42, want 0"}},
		{"content", func(g archive.Tree) { e := g["/etc/passwd"]; e.Digest = "sha256:cccc"; g["/etc/passwd"] = e },
			[]string{"/etc/passwd: content is sha256:cccc, want sha256:aaaa"}},
		{"size", func(g archive.Tree) { e := g["/etc/passwd"]; e.Size = 11; g["/etc/passwd"] = e },
			[]string{"/etc/passwd: size is 11, want 10"}},
		{"missing", func(g archive.Tree) { delete(g, "/etc/passwd") },
			[]string{"/etc/passwd: missing from archive (file)"}},
		{"extra", func(g archive.Tree) { g["/etc/shadow"] = archive.Entry{Type: "file", Perm: 0o600} },
			[]string{"/etc/shadow: not in image (file)"}},
		{"link", func(g archive.Tree) {
			for _, p := range []string{"/bin/busybox", "/bin/sh"} {
				e := g[p]
				e.Link, e.Nlink = "", 1
				g[p] = e
			}
		}, []string{
			"/bin/busybox: link count is 1, want 2",
			"/bin/busybox: hard link to is , want /bin/busybox",
			"/bin/sh: link count is 1, want 2",
			"/bin/sh: hard link to is , want /bin/busybox",
		}},
		{"symlink target", func(g archive.Tree) { e := g["/lib"]; e.Target = "/usr/lib"; g["/lib"] = e },
			[]string{"/lib: symlink target is /usr/lib, want usr/lib"}},
		{"type", func(g archive.Tree) { e := g["/lib"]; e.Type = "file"; g["/lib"] = e },
			[]string{"/lib: type is file, want symlink"}},
		{"device", func(g archive.Tree) { e := g["/null"]; e.Rdev = 260; g["/null"] = e },
			[]string{"/null: device is 260, want 259"}},
		{"several, in path order", func(g archive.Tree) {
			delete(g, "/lib")
			e := g["/bin"]
			e.Perm = 0o700
			g["/bin"] = e
			g["/aaa"] = archive.Entry{Type: "dir", Perm: 0o755}
		}, []string{
			"/aaa: not in image (dir)",
			"/bin: mode is 0700, want 0755",
			"/lib: missing from archive (symlink)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := baseTree()
			got := baseTree()
			tt.change(got)
			if d := cmp.Diff(tt.want, archive.Diff(want, got)); d != "" {
				t.Errorf("Diff() (-want +got):\n%s", d)
			}
		})
	}
}

func TestDiffIgnoresRuntimeDirs(t *testing.T) {
	want := baseTree()
	want["/proc"] = archive.Entry{Type: "dir", Perm: 0o555}
	want["/sys/kernel"] = archive.Entry{Type: "dir", Perm: 0o755}
	want["/dev/null"] = archive.Entry{Type: "char", Perm: 0o666, Rdev: 259}
	want["/run/lock"] = archive.Entry{Type: "dir", Perm: 0o1777}

	got := baseTree()
	got["/proc"] = archive.Entry{Type: "dir", Perm: 0o755} // different mode
	got["/proc/1/status"] = archive.Entry{Type: "file"}    // extra
	// /sys/kernel missing
	got["/dev/null"] = archive.Entry{Type: "file", Perm: 0o644} // different type
	got["/run"] = archive.Entry{Type: "dir", Perm: 0o755}       // extra
	got["/run/lock"] = archive.Entry{Type: "dir", Perm: 0o755}  // different mode

	if d := archive.Diff(want, got); len(d) != 0 {
		t.Errorf("Diff() = %q, want nothing under /proc, /sys, /dev, /run", d)
	}
}

func TestDiffRuntimeDirsAreTopLevelOnly(t *testing.T) {
	want := baseTree()
	got := baseTree()
	// Names that only look like runtime directories are compared.
	got["/devices"] = archive.Entry{Type: "dir", Perm: 0o755}
	got["/var/run"] = archive.Entry{Type: "symlink", Perm: 0o777, Target: "/run"}
	got["/procfs.txt"] = archive.Entry{Type: "file", Perm: 0o644}
	wantDiff := []string{
		"/devices: not in image (dir)",
		"/procfs.txt: not in image (file)",
		"/var/run: not in image (symlink)",
	}
	if d := cmp.Diff(wantDiff, archive.Diff(want, got)); d != "" {
		t.Errorf("Diff() (-want +got):\n%s", d)
	}
}

func TestTreeFromDirDetectsChangedFile(t *testing.T) {
	root := buildFixture(t)
	before, err := archive.TreeFromDir(context.Background(), root)
	if err != nil {
		t.Fatalf("TreeFromDir() = %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, pathSmall), []byte("HELLO, clip\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, pathSpaces), 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := archive.TreeFromDir(context.Background(), root)
	if err != nil {
		t.Fatalf("TreeFromDir() = %v", err)
	}
	want := []string{
		pathSmall + ": content is " + sha([]byte("HELLO, clip\n")) + ", want " + sha(smallData),
		pathSpaces + ": mode is 0600, want 0644",
	}
	if d := cmp.Diff(want, archive.Diff(before, after)); d != "" {
		t.Errorf("Diff(before, after) (-want +got):\n%s", d)
	}
}

// TestVerifyDetectsArchiveCorruption changes a data byte of an archive: the
// tree still opens, but its content no longer matches the source.
func TestVerifyDetectsArchiveCorruption(t *testing.T) {
	root, clip := fixtureArchive(t)
	a, err := archive.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	n := nodesByPath(a)[pathSmall]
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	data[n.DataPos] ^= 0x20 // "hello" -> "Hello"
	if err := os.WriteFile(clip, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// The archive records each file's content hash, so the flipped byte
	// is found as corruption of the archive itself.
	a, err = archive.Open(clip)
	if err != nil {
		t.Fatal(err)
	}
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cleanup()
	if _, err := archive.TreeFromArchive(context.Background(), a, s); !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), pathSmall) {
		t.Errorf("TreeFromArchive() of a corrupted archive = %v, want ErrCorrupt naming %s", err, pathSmall)
	}

	// Without recorded hashes (archives of other writers), the difference
	// from the image is what shows it.
	for _, n := range a.Nodes() {
		n.ContentHash = ""
	}
	want, err := archive.TreeFromDir(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := archive.TreeFromArchive(context.Background(), a, s)
	if err != nil {
		t.Fatalf("TreeFromArchive() without content hashes = %v", err)
	}
	wantDiff := []string{pathSmall + ": content is " + sha([]byte("Hello, clip\n")) + ", want " + sha(smallData)}
	if d := cmp.Diff(wantDiff, archive.Diff(want, got)); d != "" {
		t.Errorf("Diff() (-want +got):\n%s", d)
	}
}

func TestTreeFromDirCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := archive.TreeFromDir(ctx, buildFixture(t)); !errors.Is(err, context.Canceled) {
		t.Errorf("TreeFromDir(cancelled) = %v, want context.Canceled", err)
	}
}
