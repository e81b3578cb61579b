package archive

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// paxXattr prefixes the PAX records that carry extended attributes, as
// containers-storage, buildah and GNU tar write them.
const paxXattr = "SCHILY.xattr."

// Linux's bounds on an extended attribute (XATTR_NAME_MAX, XATTR_SIZE_MAX):
// setting a longer name or a bigger value fails, and so does the unpack.
const (
	maxXattrName  = 255
	maxXattrValue = 65536
)

// The security.capability value layouts (linux/capability.h): revision 2 is
// 20 bytes, revision 3 adds the namespace root id and is 24.
const (
	capRevisionMask = 0xff000000
	capRevision2    = 0x02000000
	capRevision3    = 0x03000000
	capSizeV2       = 20
	capSizeV3       = 24
)

// imageXattr says whether the attribute name belongs to the image, and so to
// the archive, rather than to the host that holds a copy of it. The one rule
// serves the v2 indexer (what a layer's tar sets), the v1 writer (what the
// unpacked rootfs holds) and verify (what an image or a mount shows), so all
// three agree:
//
//   - user.* and trusted.*, except the user.overlay.* and trusted.overlay.*
//     that overlayfs keeps for itself: it hides them from the merged view
//     (`buildah mount` with the overlay driver) and acts on them (an opaque
//     directory) instead, so an image cannot meaningfully carry them.
//   - security.capability (file capabilities: what `setcap` sets) and
//     security.ima (IMA signatures), the security.* attributes
//     containers-storage records when it makes a layer.
//   - Not the other security.* attributes: they are the labels a host's LSM
//     gives every file it creates (security.selinux, which the unpack also
//     refuses to copy from a layer, security.SMACK64, security.apparmor, and
//     security.evm, an HMAC under the host's key), so a rootfs on an
//     SELinux host carries labels the image does not.
//   - Not system.*: POSIX ACLs and the like are filesystem features, not
//     plain attributes; containers-storage never writes them and a
//     filesystem without ACL support refuses them (the unpack then drops
//     them with a warning). Their effect on the mode is in the mode itself.
//   - Not names in any other namespace: the kernel refuses them
//     (EOPNOTSUPP), and the unpack drops them.
func imageXattr(name string) bool {
	switch {
	case strings.HasPrefix(name, "user.overlay."), strings.HasPrefix(name, "trusted.overlay."):
		return false
	case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "trusted."):
		return true
	case name == "security.capability", name == "security.ima":
		return true
	}
	return false
}

// tarXattrs returns the extended attributes a layer's tar entry gives the
// file it makes, whose mode (with its type) is mode, as containers-storage's
// unpack sets them as root: every SCHILY.xattr record is set with
// lsetxattr, and what the kernel refuses fails the unpack, so it is an
// error here too. That is a user.* attribute on anything but a regular
// file or a directory (EPERM), a security.capability value that is not a
// revision 2 or 3 capability (EINVAL), an empty name or a bare namespace
// ("user.", EINVAL), or one past the kernel's size limits (ERANGE, E2BIG).
// security.selinux is never set, as the unpack never sets it. A revision 3
// capability whose root id is 0 is stored as revision 2, as the kernel
// stores it. Only the attributes imageXattr keeps are returned; nil when
// there are none.
func tarXattrs(hdr *tar.Header, mode uint32) (map[string][]byte, error) {
	var x map[string][]byte
	for key, value := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(key, paxXattr)
		if !ok {
			continue
		}
		if name == "security.selinux" {
			continue // the unpack never sets it (containers-storage's xattrsToIgnore)
		}
		v := []byte(value)
		if err := checkXattr(name, v, mode); err != nil {
			return nil, err
		}
		if !imageXattr(name) {
			continue
		}
		if name == "security.capability" {
			v = canonicalCapability(v)
		}
		if x == nil {
			x = map[string][]byte{}
		}
		x[name] = v
	}
	return x, nil
}

// checkXattr refuses what lsetxattr(2) refuses for a root unpack.
func checkXattr(name string, value []byte, mode uint32) error {
	quoted := name
	if len(quoted) > 64 {
		quoted = quoted[:64] + "..."
	}
	switch {
	case name == "", len(name) > maxXattrName:
		return fmt.Errorf("extended attribute name %q: empty or longer than %d bytes", quoted, maxXattrName)
	case name == "user." || name == "trusted." || name == "security.":
		return fmt.Errorf("extended attribute name %q has no name after its namespace", name)
	case len(value) > maxXattrValue:
		return fmt.Errorf("extended attribute %s: value of %d bytes, more than the %d allowed", quoted, len(value), maxXattrValue)
	}
	if strings.HasPrefix(name, "user.") {
		if t := mode & syscall.S_IFMT; t != syscall.S_IFREG && t != syscall.S_IFDIR {
			return fmt.Errorf("extended attribute %s on a %s: user attributes are allowed on regular files and directories only", quoted, typeName(mode))
		}
	}
	if name == "security.capability" && !validCapability(value) {
		return fmt.Errorf("extended attribute security.capability: %d bytes that are not a revision 2 or 3 file capability", len(value))
	}
	return nil
}

func validCapability(v []byte) bool {
	if len(v) < 4 {
		return false
	}
	rev := binary.LittleEndian.Uint32(v) & capRevisionMask
	return rev == capRevision2 && len(v) == capSizeV2 || rev == capRevision3 && len(v) == capSizeV3
}

// canonicalCapability turns a valid revision 3 capability with root id 0
// into the revision 2 value the kernel stores for it when root in the
// initial user namespace sets it; any other value is returned as it is.
func canonicalCapability(v []byte) []byte {
	if len(v) != capSizeV3 || binary.LittleEndian.Uint32(v[capSizeV2:]) != 0 {
		return v
	}
	magic := binary.LittleEndian.Uint32(v)
	if magic&capRevisionMask != capRevision3 {
		return v
	}
	out := bytes.Clone(v[:capSizeV2])
	binary.LittleEndian.PutUint32(out, magic&^capRevisionMask|capRevision2)
	return out
}

// ReadXattrs returns the extended attributes of the file at p, not following
// a symlink, that belong to the image (see imageXattr for the rule); nil when
// it has none or its filesystem has no extended attributes.
func ReadXattrs(p string) (map[string][]byte, error) {
	names, err := listXattrs(p)
	if err != nil {
		return nil, err
	}
	var x map[string][]byte
	for _, name := range names {
		if !imageXattr(name) {
			continue
		}
		v, err := getXattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("reading extended attribute %s of %s: %w", name, p, err)
		}
		if x == nil {
			x = map[string][]byte{}
		}
		x[name] = v
	}
	return x, nil
}

func listXattrs(p string) ([]string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		switch {
		case errors.Is(err, unix.ERANGE) && size < 1<<20:
			continue
		case errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.ENOSYS):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("listing extended attributes of %s: %w", p, err)
		}
		var names []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" {
				names = append(names, name)
			}
		}
		return names, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) && size <= maxXattrValue {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// xattrString is the canonical, comparable form of a set of attributes that
// Entry holds: name=hex(value) pairs sorted by name and separated by NUL,
// which no name can contain.
func xattrString(x map[string][]byte) string {
	names := make([]string, 0, len(x))
	for name := range x {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(hex.EncodeToString(x[name]))
	}
	return b.String()
}

// parseXattrString undoes xattrString, with values left in hex.
func parseXattrString(s string) map[string]string {
	m := map[string]string{}
	if s == "" {
		return m
	}
	for _, pair := range strings.Split(s, "\x00") {
		i := strings.LastIndexByte(pair, '=') // hex has no '='; a name may
		m[pair[:i]] = pair[i+1:]
	}
	return m
}

// addXattrs adds the attributes hdr sets to the inode a describes.
func (ix *Indexer) addXattrs(hdr *tar.Header, a fuse.Attr) error {
	x, err := tarXattrs(hdr, a.Mode)
	if err != nil || len(x) == 0 {
		return err
	}
	if ix.xattrs == nil {
		ix.xattrs = map[uint64]map[string][]byte{}
	}
	have := ix.xattrs[a.Ino]
	if have == nil {
		have = map[string][]byte{}
		ix.xattrs[a.Ino] = have
	}
	for name, v := range x {
		have[name] = v
	}
	return nil
}

// Xattrs returns the extended attributes of the finished tree by inode
// number, the numbers Nodes gives (hard links share one), for
// Trailer.Xattrs: what containers-storage's unpack of the same layers sets
// as root, less what is not the image's (see imageXattr). An entry sets
// its attributes on the inode it makes; a later entry that replaces the
// path makes a new inode without them, a directory merged into an existing
// one adds its attributes to the old ones, and a hard link adds its own to
// those of the inode it shares. Inodes that whiteouts removed from every
// path are left out. nil when no inode has any.
func (ix *Indexer) Xattrs() map[uint64]map[string][]byte {
	var out map[uint64]map[string][]byte
	for _, n := range ix.nodes {
		x := ix.xattrs[n.Attr.Ino]
		if len(x) == 0 {
			continue
		}
		if out == nil {
			out = map[uint64]map[string][]byte{}
		}
		if _, ok := out[n.Attr.Ino]; !ok {
			out[n.Attr.Ino] = maps.Clone(x)
		}
	}
	return out
}
