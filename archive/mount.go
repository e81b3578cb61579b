package archive

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Mount is a live read-only FUSE mount of an archive.
type Mount struct {
	Point   string
	server  *fuse.Server
	storage Storage
	done    chan struct{}
}

// MountArchive mounts a read-only at mountpoint and serves it in the
// background until Unmount. The filesystem is clip's; the storage behind it
// is ours. Permission checks are left to the kernel (default_permissions),
// and as root the mount is visible to other users, as a container runtime
// needs.
func MountArchive(a *Archive, s Storage, mountpoint string) (*Mount, error) {
	st, err := os.Stat(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", mountpoint)
	}
	cfs, err := clip.NewFileSystem(s, clip.ClipFileSystemOpts{})
	if err != nil {
		return nil, fmt.Errorf("creating filesystem: %w", err)
	}
	root, err := cfs.Root()
	if err != nil {
		return nil, err
	}
	timeout := time.Minute
	opts := &fuse.MountOptions{
		FsName:               "clip:" + a.Path,
		Name:                 "clipbuild",
		Options:              []string{"ro", "default_permissions"},
		AllowOther:           os.Geteuid() == 0,
		MaxBackground:        512,
		DisableXAttrs:        true,
		EnableSymlinkCaching: true,
		RememberInodes:       true,
		MaxReadAhead:         128 << 10,
	}
	server, err := fuse.NewServer(fs.NewNodeFS(root, &fs.Options{AttrTimeout: &timeout, EntryTimeout: &timeout, NullPermissions: true}), mountpoint, opts)
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
	return m, nil
}

// Done is closed when the filesystem stops serving, whether by Unmount or
// because someone ran fusermount -u.
func (m *Mount) Done() <-chan struct{} { return m.done }

// Unmount unmounts, falling back to a lazy unmount when the mount is busy,
// and waits for the server to stop.
func (m *Mount) Unmount() error {
	defer m.storage.Cleanup()
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
