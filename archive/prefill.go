package archive

import (
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// The kernel prefill. A FUSE mount costs a round trip to this process for
// each file looked up (LOOKUP) and for each read the page cache cannot
// serve (READ): two per small file on a fresh mount, however warm the span
// cache is, and on a VM each round trip is tens of microseconds of
// cross-CPU wakeups. When the storage knows which files the last mount of
// the same image read first (the read trace), the mount puts them in the
// kernel's caches before they are asked for: it has the kernel make their
// inodes, then stores each file's bytes, read and checked through the
// storage as any read is, in the file's page cache (FUSE_NOTIFY_STORE). A
// directory of which the trace lists many entries is listed through the
// mount point (READDIRPLUS hands the kernel every entry with its
// attributes, so no LOOKUP follows); in one of which it lists few, only
// those are looked up, since the kernel makes an inode for every entry a
// listing hands it. Opening and reading such a file then costs no request
// at all, as on a local filesystem. The bytes stored are the file's, whole,
// so the kernel's view of its size is unchanged; the archive never
// changes, so they never go stale.

// prefillSource is a storage that knows which files to prefill.
type prefillSource interface {
	// prefillFiles returns archive paths, in the order to store them; it
	// may wait for them to be read.
	prefillFiles() []string
	// notePrefilled counts a file of n bytes stored in the kernel.
	notePrefilled(n int64)
	// prefillLog is where the prefill reports.
	prefillLog() *logrus.Entry
	// prefillRead fills dest with the whole of a file's bytes.
	prefillRead(node *common.ClipNode, dest []byte) error
}

const (
	// prefillGiveUp is how many files in a row the kernel may refuse (it
	// knows no such inode: the listing did not reach it) before the
	// prefill stops.
	prefillGiveUp = 64
	// prefillWorkers files are read and stored at once, each worker
	// taking runs of prefillChunk files in the trace's order: reading
	// (a span's first read in a process checks its SHA-256) and storing
	// (a copy into new pages) are CPU work, which more workers than two
	// did not make faster on the 2-CPU hosts measured.
	prefillWorkers = 2
	prefillChunk   = 32
	// prefillListers directories are listed at once, ahead of the
	// workers: the kernel makes an inode for each entry, which is most of
	// a listing's cost.
	prefillListers = 2
	// prefillListShare is the share of a directory's entries that the
	// trace must list for the directory to be listed whole rather than
	// its files looked up one by one. Measured on a warm mount of the
	// medium bench image (2 CPUs, 100 files per directory), a listing
	// cost about 6.5 µs per entry and a lookup 40 µs per file: listing
	// wins from about one entry in six.
	prefillListShare = 1.0 / 6
)

// startPrefill starts the prefill of the files src lists, in the
// background: reading the trace and finding its files in the tree do not
// delay the mount.
func (m *Mount) startPrefill(afs *archiveFS, src prefillSource) {
	m.prefillStop, m.prefillDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.prefillDone)
		var nodes []*fsNode
		var names []string
		queued := map[*fsNode]bool{} // a hard link's other names
		for _, p := range src.prefillFiles() {
			n := afs.node(p)
			if n == nil || n.attr.Mode&syscall.S_IFMT != syscall.S_IFREG || n.attr.Size == 0 || n.attr.Size > prefillMaxFile || queued[n] {
				continue
			}
			queued[n] = true
			nodes = append(nodes, n)
			names = append(names, path.Clean("/"+p))
		}
		if len(nodes) > 0 {
			m.prefill(afs, src, nodes, names)
		}
	}()
}

// stopPrefill stops the prefill and waits for it, at most wait.
func (m *Mount) stopPrefill(wait time.Duration) {
	if m.prefillStop == nil {
		return
	}
	m.prefillOnce.Do(func() { close(m.prefillStop) })
	select {
	case <-m.prefillDone:
	case <-time.After(wait):
	}
}

// prefillCounts is what a prefill did: the directories it listed, the
// files it looked up one by one, and the files it stored.
type prefillCounts struct {
	listed, lookedUp, stored int64
}

// prefillJob is one mount's prefill: nodes to store, in order, each once
// the kernel has the inode by the path names[i] the trace named it by.
type prefillJob struct {
	m     *Mount
	src   prefillSource
	nodes []*fsNode
	names []string
	// dirs is each directory's listing, by the directory's path; order
	// the directories in the order the files need them.
	dirs  map[string]*listing
	order []string

	stored, bytes    atomic.Int64
	listed, lookedUp atomic.Int64
	refused          atomic.Int64 // files in a row the kernel refused
}

// listing is one directory's: done is closed once the kernel has the
// inodes of its files that the trace lists, and ok says whether it could
// be given them. lookup are those files' names, to be looked up one by one,
// or nil when the directory is listed whole.
type listing struct {
	done   chan struct{}
	ok     bool
	lookup []string
}

// prefill stores nodes, in order, in the kernel's page cache, once the
// kernel has the inode at names[i], the archive path of nodes[i]: its
// directory listed, or the name looked up. Files the kernel has already
// asked to read are passed over: their pages are there. (Jumping ahead of
// the latest read instead would leave out the files a reader in another
// order has yet to read.)
func (m *Mount) prefill(afs *archiveFS, src prefillSource, nodes []*fsNode, names []string) {
	start := time.Now()
	j := &prefillJob{m: m, src: src, nodes: nodes, names: names, dirs: map[string]*listing{}}
	for _, p := range names {
		d := path.Dir(p)
		l := j.dirs[d]
		if l == nil {
			l = &listing{done: make(chan struct{})}
			j.dirs[d] = l
			j.order = append(j.order, d)
		}
		l.lookup = append(l.lookup, path.Base(p))
	}
	for d, l := range j.dirs {
		// A directory the trace lists enough of is listed whole.
		if dn := afs.node(d); dn != nil && float64(len(l.lookup)) >= prefillListShare*float64(len(dn.children)) {
			l.lookup = nil
		}
	}
	j.listAhead()
	type run struct{ from, to int }
	runs := make(chan run)
	var wg sync.WaitGroup
	for range prefillWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for r := range runs {
				for i := r.from; i < r.to; i++ {
					buf = j.store(i, buf)
				}
			}
		}()
	}
feed:
	for i := 0; i < len(nodes) && j.refused.Load() < prefillGiveUp; i += prefillChunk {
		select {
		case runs <- run{i, min(i+prefillChunk, len(nodes))}:
		case <-m.prefillStop:
			break feed
		}
	}
	close(runs)
	wg.Wait()
	m.prefilled = prefillCounts{listed: j.listed.Load(), lookedUp: j.lookedUp.Load(), stored: j.stored.Load()}
	src.prefillLog().Debugf("prefill: stored %d of %d files (%d bytes) in the kernel's page cache in %s, listing %d directories and looking up %d files", j.stored.Load(), len(nodes), j.bytes.Load(), time.Since(start).Round(time.Millisecond), j.listed.Load(), j.lookedUp.Load())
}

// listAhead lists the directories, or looks up their files, in the order
// the files need them, with prefillListers goroutines running ahead of the
// workers; a worker waits only for its file's directory. The files of a
// directory that could not be listed are left to the reader's lookups.
func (j *prefillJob) listAhead() {
	var next atomic.Int64
	for range prefillListers {
		go func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= len(j.order) {
					return
				}
				l := j.dirs[j.order[k]]
				select {
				case <-j.m.prefillStop:
				default:
					if l.lookup == nil {
						l.ok = j.m.list(j.order[k])
						j.listed.Add(1)
					} else {
						l.ok = j.m.lookUp(j.order[k], l.lookup)
						j.lookedUp.Add(int64(len(l.lookup)))
					}
				}
				close(l.done)
			}
		}()
	}
}

// store stores file i in the kernel's page cache, reading it into buf,
// and returns buf (grown if it had to be).
func (j *prefillJob) store(i int, buf []byte) []byte {
	select {
	case <-j.m.prefillStop:
		return buf
	default:
	}
	n := j.nodes[i]
	l := j.dirs[path.Dir(j.names[i])]
	<-l.done
	if !l.ok || n.read.Load() {
		return buf
	}
	if cap(buf) < int(n.attr.Size) {
		buf = make([]byte, n.attr.Size)
	}
	b := buf[:n.attr.Size]
	// A failed read was logged by the storage; the read that needs the
	// file will meet it again.
	if j.src.prefillRead(n.clip, b) != nil {
		return buf
	}
	if errno := n.WriteCache(0, b); errno != 0 {
		if j.refused.Add(1) == prefillGiveUp {
			j.src.prefillLog().Debugf("prefill: the kernel refused %d files in a row (last %s: %v); stopping", prefillGiveUp, n.clip.Path, errno)
		}
		return buf
	}
	j.refused.Store(0)
	j.stored.Add(1)
	j.bytes.Add(int64(len(b)))
	j.src.notePrefilled(int64(len(b)))
	return buf
}

// noteRead marks n as read through the filesystem, for the prefill.
func (n *fsNode) noteRead() {
	if !n.read.Load() {
		n.read.Store(true)
	}
}

// list lists the directory at archive path dir through the mount, which
// has the kernel instantiate its entries (READDIRPLUS), and reports
// whether it could: a directory this process may not enter (a rootless
// mount of root's 0700 directory) cannot be listed. The buffer is large
// so that the kernel may ask for many entries at once.
func (m *Mount) list(dir string) bool {
	fd, err := unix.Open(filepath.Join(m.Point, filepath.FromSlash(dir)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	buf := make([]byte, 256<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return false
		}
		if n <= 0 {
			return true
		}
	}
}

// lookUp looks up each of names in the directory at archive path dir
// through the mount, which has the kernel make their inodes (LOOKUP), and
// reports whether any could be: a directory this process may not enter
// cannot be searched.
func (m *Mount) lookUp(dir string, names []string) bool {
	fd, err := unix.Open(filepath.Join(m.Point, filepath.FromSlash(dir)), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	ok := false
	var st unix.Stat_t
	for _, name := range names {
		if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			ok = true
		}
	}
	return ok
}

// node returns the node at archive path p, or nil.
func (afs *archiveFS) node(p string) *fsNode {
	n := afs.root
	for _, name := range strings.Split(p, "/") {
		if name == "" {
			continue
		}
		i, ok := slices.BinarySearchFunc(n.children, name, func(c fsChild, name string) int { return strings.Compare(c.name, name) })
		if !ok {
			return nil
		}
		n = n.children[i].node
	}
	return n
}
