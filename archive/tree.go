package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/beam-cloud/clip/pkg/common"
)

// Entry is what verify compares for one path: everything a container sees of
// a file except its timestamps.
type Entry struct {
	Type   string // dir, file, symlink, fifo, char, block, socket
	Perm   uint32 // mode & 07777: permission bits with setuid, setgid and sticky
	UID    uint32
	GID    uint32
	Size   int64  // regular files only
	Digest string // sha256 of a regular file's contents
	Target string // symlink target
	Nlink  uint32 // non-directories only (symlinks too: they can be hard-linked)
	Rdev   uint64 // device nodes only
	// Link names the first path (in path order) of this entry's hard-link
	// group; empty when the file has a single link.
	Link string
	// Xattrs holds the extended attributes that belong to the image (see
	// imageXattr for the rule) in a canonical form, so entries compare with
	// ==: name=hex(value) pairs sorted by name, separated by NUL bytes. Use
	// XattrString to make one.
	Xattrs string
}

// XattrString is the canonical form of a set of extended attributes that
// Entry.Xattrs holds; "" for none.
func XattrString(x map[string][]byte) string { return xattrString(x) }

// Tree maps clean absolute paths ("/", "/etc/passwd") to entries.
type Tree map[string]Entry

// RuntimeDirs are top-level directories a runtime mounts over; their contents
// may legitimately differ between an image and an archive of it.
var RuntimeDirs = []string{"/dev", "/proc", "/sys", "/run"}

func typeName(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFCHR:
		return "char"
	case syscall.S_IFBLK:
		return "block"
	case syscall.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("unknown(%o)", mode&syscall.S_IFMT)
}

// linkGroups fills in Link for every entry that shares its inode with another.
func linkGroups(t Tree, ids map[string]uint64) {
	byID := map[uint64][]string{}
	for p, id := range ids {
		byID[id] = append(byID[id], p)
	}
	for _, paths := range byID {
		if len(paths) < 2 {
			continue
		}
		sort.Strings(paths)
		for _, p := range paths {
			e := t[p]
			e.Link = paths[0]
			t[p] = e
		}
	}
}

// walkTree calls fn for every entry under root, in lexical order, with its
// clean absolute name inside the tree ("/", "/etc"), its host path and its
// lstat.
func walkTree(ctx context.Context, root string, fn func(name, p string, s *syscall.Stat_t) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var s syscall.Stat_t
		if err := syscall.Lstat(p, &s); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		return fn(path.Clean("/"+filepath.ToSlash(rel)), p, &s)
	})
}

// TreeFromDir describes the tree rooted at root, reading every regular file.
func TreeFromDir(ctx context.Context, root string) (Tree, error) {
	t := Tree{}
	ids := map[string]uint64{}
	inodes := map[inodeKey]uint64{}
	err := walkTree(ctx, root, func(name, p string, s *syscall.Stat_t) (err error) {
		e := Entry{Type: typeName(s.Mode), Perm: s.Mode & 07777, UID: s.Uid, GID: s.Gid}
		x, err := ReadXattrs(p)
		if err != nil {
			return err
		}
		e.Xattrs = xattrString(x)
		switch e.Type {
		case "dir":
		default:
			e.Nlink = uint32(s.Nlink)
			key := inodeKey{uint64(s.Dev), s.Ino}
			if _, ok := inodes[key]; !ok {
				inodes[key] = uint64(len(inodes) + 1)
			}
			ids[name] = inodes[key]
			if e.Type == "symlink" {
				if e.Target, err = os.Readlink(p); err != nil {
					return err
				}
			}
			if e.Type == "char" || e.Type == "block" {
				e.Rdev = uint64(s.Rdev)
			}
			if e.Type == "file" {
				e.Size = s.Size
				if e.Digest, err = digestFile(p); err != nil {
					return err
				}
			}
		}
		t[name] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	linkGroups(t, ids)
	return t, nil
}

func digestFile(p string) (string, error) {
	f, err := openReadable(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return digest(f)
}

func digest(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// TreeFromArchive describes the archive's tree, reading every regular file's
// contents through s.
func TreeFromArchive(ctx context.Context, a *Archive, s Storage) (Tree, error) {
	t := Tree{}
	ids := map[string]uint64{}
	digests := map[uint64]string{}
	for _, n := range a.Nodes() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := Entry{Type: typeName(n.Attr.Mode), Perm: n.Attr.Mode & 07777, UID: n.Attr.Owner.Uid, GID: n.Attr.Owner.Gid,
			Xattrs: xattrString(a.XattrsOf(n.Attr.Ino))}
		switch n.NodeType {
		case common.DirNode:
			e.Type = "dir"
		default:
			e.Nlink = n.Attr.Nlink
			ids[n.Path] = n.Attr.Ino
			if n.NodeType == common.SymLinkNode {
				e.Type, e.Target = "symlink", n.Target
			}
			if e.Type == "char" || e.Type == "block" {
				e.Rdev = uint64(n.Attr.Rdev)
			}
			if e.Type == "file" {
				e.Size = int64(n.Attr.Size)
				d, ok := digests[n.Attr.Ino]
				if !ok {
					var err error
					if d, err = digest(newNodeReader(s, n)); err != nil {
						return nil, fmt.Errorf("reading %s: %w", n.Path, err)
					}
					// The hash recorded when the archive was made must be
					// what its data reads as.
					if n.ContentHash != "" && d != "sha256:"+n.ContentHash {
						return nil, fmt.Errorf("reading %s: its data reads as %s, not the sha256:%s the archive records: %w", n.Path, d, n.ContentHash, ErrCorrupt)
					}
					digests[n.Attr.Ino] = d
				}
				e.Digest = d
			}
		}
		t[n.Path] = e
	}
	linkGroups(t, ids)
	return t, nil
}

func underRuntimeDir(p string) bool {
	for _, d := range RuntimeDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// Diff lists every difference between want (the image) and got (the
// archive), one line per path and field, in path order. Runtime directories
// are skipped.
func Diff(want, got Tree) []string {
	paths := map[string]bool{}
	for p := range want {
		paths[p] = true
	}
	for p := range got {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		if !underRuntimeDir(p) {
			sorted = append(sorted, p)
		}
	}
	sort.Strings(sorted)
	var out []string
	for _, p := range sorted {
		w, inWant := want[p]
		g, inGot := got[p]
		switch {
		case !inGot:
			out = append(out, fmt.Sprintf("%s: missing from archive (%s)", p, w.Type))
			continue
		case !inWant:
			out = append(out, fmt.Sprintf("%s: not in image (%s)", p, g.Type))
			continue
		}
		add := func(field string, w, g any) {
			if w != g {
				out = append(out, fmt.Sprintf("%s: %s is %v, want %v", p, field, g, w))
			}
		}
		add("type", w.Type, g.Type)
		add("mode", fmt.Sprintf("%04o", w.Perm), fmt.Sprintf("%04o", g.Perm))
		add("uid", w.UID, g.UID)
		add("gid", w.GID, g.GID)
		add("size", w.Size, g.Size)
		add("content", w.Digest, g.Digest)
		add("symlink target", w.Target, g.Target)
		add("link count", w.Nlink, g.Nlink)
		add("hard link to", w.Link, g.Link)
		add("device", w.Rdev, g.Rdev)
		if w.Xattrs != g.Xattrs {
			out = append(out, diffXattrs(p, w.Xattrs, g.Xattrs)...)
		}
	}
	return out
}

// diffXattrs lists the attributes in which two canonical sets differ, in
// name order: "/bin/ping: xattr security.capability missing from archive".
func diffXattrs(p, want, got string) []string {
	w, g := parseXattrString(want), parseXattrString(got)
	names := map[string]bool{}
	for name := range w {
		names[name] = true
	}
	for name := range g {
		names[name] = true
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(names)) {
		wv, inWant := w[name]
		gv, inGot := g[name]
		switch {
		case !inGot:
			out = append(out, fmt.Sprintf("%s: xattr %s missing from archive", p, name))
		case !inWant:
			out = append(out, fmt.Sprintf("%s: xattr %s not in image", p, name))
		case wv != gv:
			out = append(out, fmt.Sprintf("%s: xattr %s is %s, want %s", p, name, hexOrEmpty(gv), hexOrEmpty(wv)))
		}
	}
	return out
}

func hexOrEmpty(h string) string {
	if h == "" {
		return "empty"
	}
	return "0x" + h
}
