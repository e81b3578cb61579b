package archive

import (
	"container/list"
	"os"
	"sync"
)

// defaultOpenSpans is how many span files a process keeps open for
// reading in place (spanFiles).
const defaultOpenSpans = 512

// spanFiles are the span files this process has hashed (read from disk, or
// written from bytes it fetched and checked), kept open so that a read of
// a few bytes of a span reads just those bytes, in place, rather than the
// whole span and its hash again: a span is hashed once when it enters a
// process. A file is trusted only while it is the one hashed: an open file
// keeps its inode even when the span is evicted or replaced, and a change
// of its size or modification time (anything writing to it) drops it, so
// the next read loads and hashes it again. The least recently used are
// closed past the bound; one in use by a read is closed when that read
// releases it.
type spanFiles struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*spanFile
	order *list.List // of *spanFile, most recent first
}

type spanFile struct {
	key   string
	f     *os.File
	size  int64
	mtime int64 // nanoseconds
	refs  int
	gone  bool // out of the set: closed by the last release
	elem  *list.Element
}

func newSpanFiles(max int) *spanFiles {
	return &spanFiles{max: max, byKey: map[string]*spanFile{}, order: list.New()}
}

// add takes f, the open file of span key whose bytes were just hashed (or
// written) and found right, with st its state then. It closes f if the
// set cannot take it.
func (s *spanFiles) add(key string, f *os.File, st os.FileInfo) {
	if s.max <= 0 {
		f.Close()
		return
	}
	sf := &spanFile{key: key, f: f, size: st.Size(), mtime: st.ModTime().UnixNano()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byKey[key]; old != nil {
		s.dropLocked(old)
	}
	s.byKey[key] = sf
	sf.elem = s.order.PushFront(sf)
	for s.order.Len() > s.max {
		s.dropLocked(s.order.Back().Value.(*spanFile))
	}
}

// acquire returns the open, unchanged file of span key for reading, or nil;
// release must follow.
func (s *spanFiles) acquire(key string) *spanFile {
	s.mu.Lock()
	sf := s.byKey[key]
	if sf == nil {
		s.mu.Unlock()
		return nil
	}
	sf.refs++
	s.order.MoveToFront(sf.elem)
	s.mu.Unlock()
	if st, err := sf.f.Stat(); err != nil || st.Size() != sf.size || st.ModTime().UnixNano() != sf.mtime {
		s.release(sf)
		s.drop(sf)
		return nil
	}
	return sf
}

func (s *spanFiles) release(sf *spanFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sf.refs--
	if sf.gone && sf.refs == 0 {
		sf.f.Close()
	}
}

// drop takes sf out of the set, as when its bytes could not be read.
func (s *spanFiles) drop(sf *spanFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey[sf.key] == sf {
		s.dropLocked(sf)
	}
}

func (s *spanFiles) dropLocked(sf *spanFile) {
	if sf.gone {
		return
	}
	sf.gone = true
	delete(s.byKey, sf.key)
	s.order.Remove(sf.elem)
	if sf.refs == 0 {
		sf.f.Close()
	}
}

// readAt reads len(p) bytes at off of the span key from its verified file,
// reporting false (and reading nothing trustworthy into p) when the
// process has no such file or it cannot give them.
func (s *spanFiles) readAt(key string, p []byte, off int64) bool {
	sf := s.acquire(key)
	if sf == nil {
		return false
	}
	defer s.release(sf)
	if off < 0 || off+int64(len(p)) > sf.size {
		return false
	}
	if n, err := sf.f.ReadAt(p, off); err != nil || n != len(p) {
		s.drop(sf)
		return false
	}
	return true
}

// closeAll closes every file not in use (and the others as they are
// released).
func (s *spanFiles) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.order.Len() > 0 {
		s.dropLocked(s.order.Back().Value.(*spanFile))
	}
}

// readInPlace fills dest, the uncompressed bytes at uoff of a layer, from
// the members ms that hold them when each is in memory or in a file this
// process has hashed (SpanCache.readAt), and reports whether it could: the
// warm read of a few bytes then costs their copy, not a whole span's load
// and hash.
func (s *rangedStorage) readInPlace(ms []Member, uoff int64, dest []byte) bool {
	if !readSpansInPlace(s.cache, ms, uoff, dest) {
		return false
	}
	s.stats.hits.Add(int64(len(ms)))
	return true
}

// readSpansInPlace fills dest, the bytes at uoff of a layer, from the
// spans ms (members, or the spans between restart points) that hold them,
// if c has each in memory or in a file this process has hashed.
func readSpansInPlace(c *SpanCache, ms []Member, uoff int64, dest []byte) bool {
	end := uoff + int64(len(dest))
	for _, m := range ms {
		lo, hi := max(uoff, m.UOff), min(end, m.UOff+m.ULen)
		if !c.readAt(m, dest[lo-uoff:hi-uoff], lo-m.UOff) {
			return false
		}
	}
	return true
}
