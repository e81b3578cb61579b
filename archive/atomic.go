package archive

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// WriteFileAtomic creates output through write. The data goes to an unnamed
// file in output's directory (O_TMPFILE), so a process killed mid-write
// leaves nothing behind, not even a temporary file; on success it is given a
// temporary name and renamed over output in one step. An existing output is
// untouched on failure. Where the filesystem has no O_TMPFILE, a named
// temporary file beside output is used instead and removed on failure.
func WriteFileAtomic(output string, write func(f *os.File) error) (err error) {
	dir := filepath.Dir(output)
	f, named, err := createTemp(dir, filepath.Base(output))
	if err != nil {
		return fmt.Errorf("creating %s: %w", output, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			if named {
				os.Remove(f.Name())
			}
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	tmp := f.Name()
	if !named {
		if tmp, err = linkTemp(f, dir, filepath.Base(output)); err != nil {
			return fmt.Errorf("creating %s: %w", output, err)
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, output); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("renaming into place: %w", err)
	}
	return nil
}

// createTemp opens an unnamed file in dir, or a named temporary one when the
// filesystem cannot do that; named says which.
func createTemp(dir, base string) (*os.File, bool, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "."+base+".tmp (unlinked)")), false, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, false, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	return f, true, err
}

// linkTemp gives an unnamed file a temporary name in dir, through
// /proc/self/fd (which, unlike AT_EMPTY_PATH, needs no privilege).
func linkTemp(f *os.File, dir, base string) (string, error) {
	for i := 0; ; i++ {
		tmp := filepath.Join(dir, "."+base+".tmp-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(i))
		err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, tmp, unix.AT_SYMLINK_FOLLOW)
		if err == nil {
			return tmp, nil
		}
		if !errors.Is(err, unix.EEXIST) || i > 100 {
			return "", err
		}
	}
}
