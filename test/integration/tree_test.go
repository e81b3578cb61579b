package integration

import (
	"bytes"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// tree makes direct assertions about a root filesystem, independent of the
// snapshot comparison. name says which tree failed ("clipbuild mount",
// "buildah mount").
type tree struct {
	t    *testing.T
	name string
	root string
}

func (r tree) path(rel string) string { return filepath.Join(r.root, filepath.FromSlash(rel)) }

func (r tree) errorf(format string, args ...any) {
	r.t.Helper()
	r.t.Errorf(r.name+": "+format, args...)
}

// lstat returns the entry's stat data, or nil after reporting an error.
func (r tree) lstat(rel string) *syscall.Stat_t {
	r.t.Helper()
	fi, err := os.Lstat(r.path(rel))
	if err != nil {
		r.errorf("%s: %v", rel, err)
		return nil
	}
	return fi.Sys().(*syscall.Stat_t)
}

// mode checks the entry's type and its permission bits (mode & 07777).
func (r tree) mode(rel, typ string, perm uint32) {
	r.t.Helper()
	if st := r.lstat(rel); st != nil {
		if got := fileType(st.Mode); got != typ {
			r.errorf("%s: type: got %s, want %s", rel, got, typ)
		}
		if got := st.Mode & 0o7777; got != perm {
			r.errorf("%s: mode: got %04o, want %04o", rel, got, perm)
		}
	}
}

func (r tree) owner(rel string, uid, gid uint32) {
	r.t.Helper()
	if st := r.lstat(rel); st != nil && (st.Uid != uid || st.Gid != gid) {
		r.errorf("%s: owner: got %d:%d, want %d:%d", rel, st.Uid, st.Gid, uid, gid)
	}
}

// file checks that rel is a regular file with exactly this content.
func (r tree) file(rel, content string) {
	r.t.Helper()
	if st := r.lstat(rel); st == nil {
		return
	} else if got := fileType(st.Mode); got != "file" {
		r.errorf("%s: type: got %s, want file", rel, got)
		return
	}
	got, err := os.ReadFile(r.path(rel))
	if err != nil {
		r.errorf("%s: %v", rel, err)
		return
	}
	if string(got) != content {
		r.errorf("%s: content: got %q, want %q", rel, truncate(got), content)
	}
}

// readsAs checks the content read through rel, following symlinks.
func (r tree) readsAs(rel, content string) {
	r.t.Helper()
	got, err := os.ReadFile(r.path(rel))
	if err != nil {
		r.errorf("reading through %s: %v", rel, err)
		return
	}
	if string(got) != content {
		r.errorf("reading through %s: got %q, want %q", rel, truncate(got), content)
	}
}

func (r tree) symlink(rel, target string) {
	r.t.Helper()
	got, err := os.Readlink(r.path(rel))
	if err != nil {
		r.errorf("%s: %v", rel, err)
		return
	}
	if got != target {
		r.errorf("%s: symlink target: got %q, want %q", rel, got, target)
	}
}

func (r tree) absent(rel string) {
	r.t.Helper()
	if _, err := os.Lstat(r.path(rel)); err == nil {
		r.errorf("%s: exists, want absent", rel)
	} else if !os.IsNotExist(err) {
		r.errorf("%s: got %v, want it not to exist", rel, err)
	}
}

// entries checks the exact list of names in directory rel.
func (r tree) entries(rel string, want ...string) {
	r.t.Helper()
	des, err := os.ReadDir(r.path(rel))
	if err != nil {
		r.errorf("%s: %v", rel, err)
		return
	}
	var got []string
	for _, de := range des {
		got = append(got, de.Name())
	}
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		r.errorf("%s: entries: got %q, want %q", rel, got, want)
	}
}

// hardlinked checks that all paths are one inode with the given link count.
func (r tree) hardlinked(nlink uint64, rels ...string) {
	r.t.Helper()
	first := r.lstat(rels[0])
	for _, rel := range rels {
		st := r.lstat(rel)
		if st == nil || first == nil {
			continue
		}
		if st.Dev != first.Dev || st.Ino != first.Ino {
			r.errorf("%s: inode: got %d:%d, want %d:%d (the inode of %s)", rel, st.Dev, st.Ino, first.Dev, first.Ino, rels[0])
		}
		if uint64(st.Nlink) != nlink {
			r.errorf("%s: nlink: got %d, want %d", rel, st.Nlink, nlink)
		}
	}
}

// xattrs checks the exact set of extended attributes of rel (not following
// a symlink), as readXattrs lists them; none when want is empty.
func (r tree) xattrs(rel string, want map[string][]byte) {
	r.t.Helper()
	got, err := readXattrs(r.path(rel))
	if err != nil {
		r.errorf("%s: %v", rel, err)
		return
	}
	var w []string
	for name, v := range want {
		w = append(w, name+"=0x"+hex.EncodeToString(v))
	}
	w = slices.Sorted(slices.Values(w))
	if !slices.Equal(got, w) {
		r.errorf("%s: xattrs: got %q, want %q", rel, got, w)
	}
}

// noWhiteoutNames checks that no whiteout marker leaked into the tree.
func (r tree) noWhiteoutNames() {
	r.t.Helper()
	err := filepath.WalkDir(r.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".wh.") {
			r.errorf("%s: whiteout marker visible in the tree", path)
		}
		return nil
	})
	if err != nil {
		r.errorf("walking: %v", err)
	}
}

var hostBusybox = sync.OnceValues(func() ([]byte, error) { return os.ReadFile(busyboxPath) })

// common checks what every corpus image has: busybox installed in /bin.
func (r tree) common() {
	r.t.Helper()
	want, err := hostBusybox()
	if err != nil {
		r.t.Fatal(err)
	}
	r.mode("bin/busybox", "file", 0o755)
	if got, err := os.ReadFile(r.path("bin/busybox")); err != nil {
		r.errorf("bin/busybox: %v", err)
	} else if !bytes.Equal(got, want) {
		r.errorf("bin/busybox: content differs from %s (got %d bytes, want %d)", busyboxPath, len(got), len(want))
	}
	r.symlink("bin/sh", "/bin/busybox")
	r.noWhiteoutNames()
}

func truncate(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
