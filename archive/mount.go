package archive

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"
	"golang.org/x/sys/unix"
)

// Mount is a live read-only FUSE mount of an archive.
type Mount struct {
	Point   string
	server  *fuse.Server
	storage Storage
	done    chan struct{}

	// prefillStop ends the kernel prefill, which closes prefillDone
	// (both nil when there is none).
	prefillStop, prefillDone chan struct{}
	prefillOnce              sync.Once
	// prefilled is what the prefill did, once prefillDone is closed.
	prefilled prefillCounts
}

// MountArchive mounts a read-only at mountpoint and serves it in the
// background until Unmount. The filesystem is ours (fusefs.go) over s: the
// whole tree is built here, once, and the kernel is told it may cache
// everything (entries, attributes, negative lookups, symlinks, directory
// listings and file pages) for as long as the mount lives, since an archive
// never changes. Permission checks are left to the kernel
// (default_permissions), and as root the mount is mounted directly (no
// fusermount3) and visible to other users, as a container runtime needs;
// other users mount through fusermount3 (see MountOption).
func MountArchive(a *Archive, s Storage, mountpoint string, options ...MountOption) (*Mount, error) {
	mo := mountOptions{allowOther: os.Geteuid() == 0}
	for _, o := range options {
		if err := o(&mo); err != nil {
			return nil, err
		}
	}
	st, err := os.Stat(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", mountpoint)
	}
	afs, err := newArchiveFS(a, s)
	if err != nil {
		return nil, fmt.Errorf("creating filesystem: %w", err)
	}
	mo.mapRootOwner(afs.root)
	timeout := cacheTimeout
	maxRead := fuse.MAX_KERNEL_WRITE
	if afs.ranges != nil {
		maxRead = spliceMaxRead()
	}
	asRoot := os.Geteuid() == 0
	opts := &fuse.MountOptions{
		FsName:      "clip:" + a.Path,
		Name:        "clipbuild",
		Options:     []string{"ro", "default_permissions"},
		AllowOther:  mo.allowOther,
		DirectMount: asRoot,
		// Not nosuid: the mount is a container's root filesystem, where
		// setuid binaries and file capabilities (security.capability)
		// must take effect as they do in the image. nodev: device nodes
		// in an image stay inert; runtimes mount their own /dev.
		DirectMountFlags:     syscall.MS_RDONLY | syscall.MS_NODEV,
		MaxBackground:        512,
		MaxWrite:             maxRead,
		MaxReadAhead:         maxRead,
		EnableSymlinkCaching: true,
	}
	rawFS := fs.NewNodeFS(afs.root, &fs.Options{
		AttrTimeout:     &timeout,
		EntryTimeout:    &timeout,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: afs.root.attr.Ino},
	})
	server, err := fuse.NewServer(&kernelCache{RawFileSystem: rawFS}, mountpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("mounting %s: %w", mountpoint, err)
	}
	m := &Mount{Point: mountpoint, server: server, storage: s, done: make(chan struct{})}
	go func() {
		server.Serve()
		close(m.done)
	}()
	if err := server.WaitMount(); err != nil {
		m.Unmount()
		return nil, fmt.Errorf("mounting %s: %w", mountpoint, err)
	}
	if asRoot {
		raiseReadahead(mountpoint, maxRead)
	}
	if src, ok := s.(prefillSource); ok {
		m.startPrefill(afs, src)
	}
	return m, nil
}

// spliceMaxRead is the largest read request that go-fuse can splice whole
// (see spliceFits), up to the kernel's 1 MiB: with the default pipe size
// limit of 1 MiB, 1016 KiB. Splicing the bytes from the archive's (or the
// layer's) page cache instead of copying them through a buffer makes large
// files about a third faster to read, which outweighs the extra requests.
func spliceMaxRead() int {
	page := os.Getpagesize()
	n := (splice.MaxPipeSize() - spliceHeader - page) / page * page
	if !splice.Resizable() || n < 128<<10 || n > fuse.MAX_KERNEL_WRITE {
		return fuse.MAX_KERNEL_WRITE
	}
	return n
}

// raiseReadahead lets the kernel read ahead as much as one request carries
// (maxRead bytes) rather than the 128 KiB it allows a FUSE mount by default,
// which no mount option changes: the limit is the read_ahead_kb of the
// mount's backing device in sysfs, which only root may write. It is best
// effort: a mount that keeps the default is only slower on large files.
func raiseReadahead(mountpoint string, maxRead int) {
	var st unix.Stat_t
	if unix.Stat(mountpoint, &st) != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	_ = os.WriteFile(p, []byte(strconv.Itoa(maxRead>>10)), 0)
}

// Done is closed when the filesystem stops serving, whether by Unmount or
// because someone ran fusermount -u.
func (m *Mount) Done() <-chan struct{} { return m.done }

// Unmount unmounts, falling back to a lazy unmount when the mount is busy,
// and waits for the server to stop.
func (m *Mount) Unmount() error {
	defer m.storage.Cleanup()
	// The prefill stops before the unmount (it may hold a directory of
	// the mount open for a moment); one blocked on a fetch ends when the
	// storage is cleaned up.
	m.stopPrefill(time.Second)
	select {
	case <-m.done:
		return nil
	default:
	}
	err := m.server.Unmount()
	if err != nil {
		if lerr := lazyUnmount(m.Point); lerr != nil {
			return fmt.Errorf("unmounting %s: %w", m.Point, errors.Join(err, lerr))
		}
	}
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("unmounting %s: server did not stop", m.Point)
	}
	return nil
}

// lazyUnmount detaches a busy mount; it disappears once the last user goes.
func lazyUnmount(mountpoint string) error {
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err == nil {
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", mountpoint).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z: %v: %s", err, out)
	}
	return nil
}
