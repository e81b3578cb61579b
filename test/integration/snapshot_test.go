package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runtimeDirs are top-level directories that container runtimes populate or
// mount over; they are left out of snapshots, with everything below them.
var runtimeDirs = map[string]bool{"dev": true, "proc": true, "sys": true, "run": true}

// entry is what a snapshot records about one file. Timestamps are ignored.
type entry struct {
	Type   string // "file", "dir", "symlink", "fifo", "socket", "char", "block"
	Perm   uint32 // mode & 07777, including setuid, setgid and sticky
	UID    uint32
	GID    uint32
	Size   int64  // regular files only
	SHA256 string // regular files only
	Target string // symlinks only
	Rdev   uint64 // device nodes only
	Nlink  uint64 // non-directories only
	// Links lists the other paths of the tree that share this entry's
	// inode (same st_dev and st_ino); non-directories only.
	Links []string
	// Xattrs lists the extended attributes as name=0xVALUE, sorted.
	Xattrs []string
}

// snapshot maps slash-separated paths, relative to the tree root, to
// entries. The root itself is not recorded: its attributes come from
// whatever holds the tree, not from the image.
type snapshot map[string]*entry

// takeSnapshot walks root without following symlinks and records every
// entry below it.
func takeSnapshot(root string) (snapshot, error) {
	snap := snapshot{}
	type inode struct{ dev, ino uint64 }
	groups := map[inode][]string{}

	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if runtimeDirs[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat data", path)
		}
		e := &entry{
			Type: fileType(st.Mode),
			Perm: st.Mode & 0o7777,
			UID:  st.Uid,
			GID:  st.Gid,
		}
		switch e.Type {
		case "file":
			e.Size = st.Size
			if e.SHA256, err = hashFile(path); err != nil {
				// Record the failure so it shows up as a difference.
				e.SHA256 = "unreadable: " + err.Error()
			}
		case "symlink":
			if e.Target, err = os.Readlink(path); err != nil {
				return err
			}
		case "char", "block":
			e.Rdev = uint64(st.Rdev)
		}
		if e.Type != "dir" {
			e.Nlink = uint64(st.Nlink)
			id := inode{uint64(st.Dev), uint64(st.Ino)}
			groups[id] = append(groups[id], rel)
		}
		if e.Xattrs, err = readXattrs(path); err != nil {
			return err
		}
		snap[rel] = e
		return nil
	})
	if err != nil {
		return nil, err
	}

	for _, paths := range groups {
		if len(paths) < 2 {
			continue
		}
		sort.Strings(paths)
		for _, p := range paths {
			for _, other := range paths {
				if other != p {
					snap[p].Links = append(snap[p].Links, other)
				}
			}
		}
	}
	return snap, nil
}

func fileType(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	case syscall.S_IFCHR:
		return "char"
	case syscall.S_IFBLK:
		return "block"
	}
	return fmt.Sprintf("unknown(%#o)", mode&syscall.S_IFMT)
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// field is one compared attribute of an entry.
type field struct {
	name   string
	format func(*entry) string
}

var fields = []field{
	{"type", func(e *entry) string { return e.Type }},
	{"mode", func(e *entry) string { return fmt.Sprintf("%04o", e.Perm) }},
	{"uid", func(e *entry) string { return fmt.Sprint(e.UID) }},
	{"gid", func(e *entry) string { return fmt.Sprint(e.GID) }},
	{"size", func(e *entry) string { return fmt.Sprint(e.Size) }},
	{"sha256", func(e *entry) string { return e.SHA256 }},
	{"symlink target", func(e *entry) string { return e.Target }},
	{"rdev", func(e *entry) string { return fmt.Sprint(e.Rdev) }},
	{"nlink", func(e *entry) string { return fmt.Sprint(e.Nlink) }},
	{"hard links", func(e *entry) string { return "[" + strings.Join(e.Links, ", ") + "]" }},
	{"xattrs", func(e *entry) string { return "[" + strings.Join(e.Xattrs, ", ") + "]" }},
}

// readXattrs lists the extended attributes of path, not following a
// symlink, as sorted name=0xVALUE strings. security.selinux is left out: an
// SELinux host labels every file it creates, in an unpacked tree as in a
// container's, so the label says nothing about the image (containers-storage
// never copies it from a layer either). A filesystem without extended
// attributes (ENOTSUP) has none.
func readXattrs(path string) ([]string, error) {
	size, err := unix.Llistxattr(path, nil)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing extended attributes of %s: %w", path, err)
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("listing extended attributes of %s: %w", path, err)
	}
	var out []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || name == "security.selinux" {
			continue
		}
		v, err := getXattr(path, name)
		if err != nil {
			return nil, fmt.Errorf("reading extended attribute %s of %s: %w", name, path, err)
		}
		out = append(out, name+"=0x"+hex.EncodeToString(v))
	}
	sort.Strings(out)
	return out, nil
}

// getXattr reads one extended attribute of path, not following a symlink.
func getXattr(path, name string) ([]byte, error) {
	size, err := unix.Lgetxattr(path, name, nil)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := unix.Lgetxattr(path, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// diffSnapshots lists every difference between two snapshots, one line per
// path and field, in path order.
func diffSnapshots(want, got snapshot) []string {
	paths := make([]string, 0, len(want)+len(got))
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)

	var diffs []string
	for _, p := range paths {
		w, g := want[p], got[p]
		switch {
		case g == nil:
			diffs = append(diffs, fmt.Sprintf("%s: missing (want %s)", p, w.Type))
		case w == nil:
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %s", p, g.Type))
		default:
			for _, f := range fields {
				if gv, wv := f.format(g), f.format(w); gv != wv {
					diffs = append(diffs, fmt.Sprintf("%s: %s: got %s, want %s", p, f.name, gv, wv))
				}
			}
		}
	}
	return diffs
}

// compareTrees snapshots both trees and fails the test on any difference.
func compareTrees(t *testing.T, wantName, wantRoot, gotName, gotRoot string) {
	t.Helper()
	want, err := takeSnapshot(wantRoot)
	if err != nil {
		t.Fatalf("snapshot of %s: %v", wantName, err)
	}
	got, err := takeSnapshot(gotRoot)
	if err != nil {
		t.Fatalf("snapshot of %s: %v", gotName, err)
	}
	if diffs := diffSnapshots(want, got); len(diffs) > 0 {
		t.Errorf("%s (got) differs from %s (want) in %d places:\n  %s",
			gotName, wantName, len(diffs), strings.Join(diffs, "\n  "))
	}
	if len(want) == 0 {
		t.Errorf("%s: snapshot is empty", wantName)
	}
	t.Logf("compared %d entries of %s with %d of %s", len(got), gotName, len(want), wantName)
}

// TestSnapshotDiff checks the comparison itself on small local trees, so a
// blind spot in it cannot hide a difference in the real tests. It needs no
// prerequisites.
func TestSnapshotDiff(t *testing.T) {
	makeTree := func(t *testing.T) string {
		t.Helper()
		root := t.TempDir()
		mustDo(t, os.MkdirAll(filepath.Join(root, "d/sub"), 0o755))
		mustDo(t, os.WriteFile(filepath.Join(root, "d/file"), []byte("hello"), 0o644))
		mustDo(t, os.Link(filepath.Join(root, "d/file"), filepath.Join(root, "d/sub/link")))
		mustDo(t, os.WriteFile(filepath.Join(root, "other"), []byte("other"), 0o644))
		mustDo(t, os.Symlink("d/file", filepath.Join(root, "sym")))
		mustDo(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))
		mustDo(t, os.Chmod(filepath.Join(root, "d/sub"), 0o755|os.ModeSetgid))
		mustDo(t, os.MkdirAll(filepath.Join(root, "proc/self"), 0o755))
		mustDo(t, os.WriteFile(filepath.Join(root, "xfile"), nil, 0o644))
		mustDo(t, unix.Setxattr(filepath.Join(root, "xfile"), "user.mime", []byte("text/plain"), 0))
		mustDo(t, unix.Setxattr(filepath.Join(root, "d"), "user.dir", []byte("1"), 0))
		return root
	}

	tests := []struct {
		name   string
		change func(t *testing.T, root string)
		want   []string
	}{
		{
			name:   "identical",
			change: func(*testing.T, string) {},
		},
		{
			name: "runtime dirs and timestamps are ignored",
			change: func(t *testing.T, root string) {
				mustDo(t, os.WriteFile(filepath.Join(root, "proc/self/status"), nil, 0o644))
				mustDo(t, os.MkdirAll(filepath.Join(root, "run/lock"), 0o755))
				mustDo(t, os.Chtimes(filepath.Join(root, "other"), epoch, epoch))
			},
		},
		{
			name: "content with the same size",
			change: func(t *testing.T, root string) {
				mustDo(t, os.WriteFile(filepath.Join(root, "other"), []byte("OTHER"), 0o644))
			},
			want: []string{"other: sha256: "},
		},
		{
			name: "setgid bit",
			change: func(t *testing.T, root string) {
				mustDo(t, os.Chmod(filepath.Join(root, "d/sub"), 0o755))
			},
			want: []string{"d/sub: mode: got 0755, want 2755"},
		},
		{
			name: "symlink target",
			change: func(t *testing.T, root string) {
				mustDo(t, os.Remove(filepath.Join(root, "sym")))
				mustDo(t, os.Symlink("/d/file", filepath.Join(root, "sym")))
			},
			want: []string{"sym: symlink target: got /d/file, want d/file"},
		},
		{
			name: "fifo replaced by a file",
			change: func(t *testing.T, root string) {
				mustDo(t, os.Remove(filepath.Join(root, "fifo")))
				mustDo(t, os.WriteFile(filepath.Join(root, "fifo"), nil, 0o600))
			},
			want: []string{"fifo: type: got file, want fifo", "fifo: sha256: "},
		},
		{
			name: "hard link broken into a copy",
			change: func(t *testing.T, root string) {
				mustDo(t, os.Remove(filepath.Join(root, "d/sub/link")))
				mustDo(t, os.WriteFile(filepath.Join(root, "d/sub/link"), []byte("hello"), 0o644))
			},
			want: []string{
				"d/file: nlink: got 1, want 2",
				"d/file: hard links: got [], want [d/sub/link]",
				"d/sub/link: nlink: got 1, want 2",
				"d/sub/link: hard links: got [], want [d/file]",
			},
		},
		{
			name: "hard link to another file",
			change: func(t *testing.T, root string) {
				mustDo(t, os.Remove(filepath.Join(root, "d/sub/link")))
				mustDo(t, os.WriteFile(filepath.Join(root, "other"), []byte("hello"), 0o644))
				mustDo(t, os.Link(filepath.Join(root, "other"), filepath.Join(root, "d/sub/link")))
			},
			want: []string{
				"d/file: nlink: got 1, want 2",
				"d/file: hard links: got [], want [d/sub/link]",
				"d/sub/link: hard links: got [other], want [d/file]",
				"other: sha256: ",
				"other: nlink: got 2, want 1",
				"other: hard links: got [d/sub/link], want []",
			},
		},
		{
			name: "extended attribute added, changed and removed",
			change: func(t *testing.T, root string) {
				mustDo(t, unix.Setxattr(filepath.Join(root, "d/file"), "user.new", []byte("n"), 0))
				mustDo(t, unix.Setxattr(filepath.Join(root, "d"), "user.dir", []byte("2"), 0))
				mustDo(t, unix.Removexattr(filepath.Join(root, "xfile"), "user.mime"))
			},
			want: []string{
				"d: xattrs: got [user.dir=0x32], want [user.dir=0x31]",
				"d/file: xattrs: got [user.new=0x6e], want []",
				"d/sub/link: xattrs: got [user.new=0x6e], want []",
				"xfile: xattrs: got [], want [user.mime=0x746578742f706c61696e]",
			},
		},
		{
			name: "missing and unexpected entries",
			change: func(t *testing.T, root string) {
				mustDo(t, os.Remove(filepath.Join(root, "other")))
				mustDo(t, os.Mkdir(filepath.Join(root, "extra"), 0o755))
			},
			want: []string{"extra: unexpected dir", "other: missing (want file)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, got := makeTree(t), makeTree(t)
			tt.change(t, got)
			wantSnap, err := takeSnapshot(want)
			mustDo(t, err)
			gotSnap, err := takeSnapshot(got)
			mustDo(t, err)
			diffs := diffSnapshots(wantSnap, gotSnap)
			if len(diffs) != len(tt.want) {
				t.Fatalf("got %d differences, want %d:\n  got:  %q\n  want: %q", len(diffs), len(tt.want), diffs, tt.want)
			}
			for i := range diffs {
				if !strings.HasPrefix(diffs[i], tt.want[i]) {
					t.Errorf("difference %d: got %q, want prefix %q", i, diffs[i], tt.want[i])
				}
			}
		})
	}

	t.Run("owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatal("needs root to chown, and CI=true")
			}
			t.Skip("needs root to chown")
		}
		want, got := makeTree(t), makeTree(t)
		mustDo(t, os.Lchown(filepath.Join(got, "sym"), 123, 456))
		wantSnap, err := takeSnapshot(want)
		mustDo(t, err)
		gotSnap, err := takeSnapshot(got)
		mustDo(t, err)
		diffs := diffSnapshots(wantSnap, gotSnap)
		wantDiffs := []string{"sym: uid: got 123, want 0", "sym: gid: got 456, want 0"}
		if strings.Join(diffs, "\n") != strings.Join(wantDiffs, "\n") {
			t.Errorf("got %q, want %q", diffs, wantDiffs)
		}
	})
}

var epoch = time.Unix(0, 0)

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
