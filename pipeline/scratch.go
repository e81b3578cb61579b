package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"
)

// A run's intermediate files live in one scratch tree in the temporary
// directory, named clipbuild-<pid>-<random> after the process that made it,
// which holds an exclusive flock on the tree for as long as it lives. A run
// that is killed (SIGKILL, OOM, power) cannot remove its tree; the next run
// that makes one removes the trees whose owners are gone.

// scratchPattern matches the names of scratch trees; the group is the
// owner's PID.
var scratchPattern = regexp.MustCompile(`^clipbuild-([0-9]+)-[0-9]+$`)

// scratchGrace is how old a scratch tree with a free lock must be before it
// is taken for stale while a process with its owner's PID runs: that process
// may be the owner between making the tree and locking it, or another one
// that reused the PID.
const scratchGrace = time.Minute

// scratch is a run's scratch tree and the lock on it.
type scratch struct {
	dir  string
	lock *os.File
}

// newScratch makes and locks a scratch tree in tmp.
func newScratch(tmp string) (*scratch, error) {
	dir, err := os.MkdirTemp(tmp, fmt.Sprintf("clipbuild-%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("creating scratch directory: %w", err)
	}
	lock, err := tryLock(dir)
	if err == nil && lock == nil {
		err = errors.New("locked by another process")
	}
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("locking scratch directory %s: %w", dir, err)
	}
	return &scratch{dir: dir, lock: lock}, nil
}

// remove removes the tree, then releases the lock.
func (s *scratch) remove() error {
	err := removeAll(s.dir)
	if cerr := s.lock.Close(); err == nil {
		err = cerr
	}
	return err
}

// tryLock takes an exclusive flock on dir without waiting. It returns a nil
// file, and no error, when another open file (in any process) holds it.
func tryLock(dir string) (*os.File, error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	for {
		err = syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if err == nil {
		return f, nil
	}
	f.Close()
	if err == syscall.EWOULDBLOCK {
		return nil, nil
	}
	return nil, &os.PathError{Op: "flock", Path: dir, Err: err}
}

// processAlive reports whether a process with the given PID exists (in this
// PID namespace).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// sweepScratch removes the scratch trees in tmp that belong to this user and
// whose owners are gone: nobody holds the tree's lock, and either no process
// has the owner's PID or the tree is older than scratchGrace. A tree whose
// owner lives always has its lock held, so it is never removed; the lock,
// not the PID, is what decides, so PID reuse and PID namespaces cannot make
// a live run lose its files. It returns the trees it removed.
func sweepScratch(tmp string) (removed []string, err error) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", tmp, err)
	}
	var errs []error
	for _, e := range entries {
		m := scratchPattern.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		gone, err := removeIfStale(dir, m[1])
		if err != nil {
			errs = append(errs, err)
		}
		if gone {
			removed = append(removed, dir)
		}
	}
	return removed, errors.Join(errs...)
}

// removeIfStale removes the scratch tree dir of the process pid if its owner
// is gone, holding the tree's lock while it does.
func removeIfStale(dir, pid string) (bool, error) {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return false, nil // gone meanwhile, or not a tree of ours
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return false, nil
	}
	lock, err := tryLock(dir)
	if err != nil || lock == nil {
		return false, nil // held by its owner, or removed meanwhile
	}
	defer lock.Close()
	n, perr := strconv.Atoi(pid)
	if perr == nil && processAlive(n) && time.Since(fi.ModTime()) < scratchGrace {
		return false, nil
	}
	if err := removeAll(dir); err != nil {
		return false, fmt.Errorf("removing stale scratch directory %s: %w", dir, err)
	}
	return true, nil
}
