package archive

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"sync"
)

// defaultOpenSpans is how many span files a process keeps open for
// reading in place (spanFiles): 4096 members are 4 GiB of layer data, more
// than the default cache holds, and well within the open-file limit, which
// Go raises to the hard limit at start.
const defaultOpenSpans = 4096

// spanFiles are the span files this process trusts (hashed on disk, found
// with a seal of their state, or written from bytes it fetched and
// checked), kept open so that a read of a few bytes of a span reads just
// those bytes, in place, rather than the whole span and its hash again.
//
// A file is trusted only while it is the one checked: an open file keeps
// its inode even when the span is evicted from the cache or replaced, and
// a change of its size or modification time (anything writing to it) drops
// it, so the next read loads and checks it again. Past the bound no more
// files are kept. None is closed while the cache is in use, dropped ones
// included (they are closed with the cache, when it is garbage, or with the
// process): reads of a file run concurrently, without a lock, and one
// whose descriptor was closed (and its number reused) meanwhile would read
// another file's bytes.
type spanFiles struct {
	mu       sync.Mutex
	max      int
	byKey    map[string]*spanFile
	order    *list.List // of *spanFile, most recent first
	dropped  []*os.File
	trusting map[string]chan struct{} // files being hashed (trustFile)
}

type spanFile struct {
	key   string
	f     *os.File
	size  int64
	mtime int64 // nanoseconds
	elem  *list.Element
}

func newSpanFiles(max int) *spanFiles {
	return &spanFiles{max: max, byKey: map[string]*spanFile{}, order: list.New(), trusting: map[string]chan struct{}{}}
}

// beginTrust claims the hashing of span key's file: mine is true for the
// one caller that is to hash it, and done is closed when it has.
func (s *spanFiles) beginTrust(key string) (done chan struct{}, mine bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if done := s.trusting[key]; done != nil {
		return done, false
	}
	done = make(chan struct{})
	s.trusting[key] = done
	return done, true
}

// endTrust ends the hashing beginTrust claimed.
func (s *spanFiles) endTrust(key string, done chan struct{}) {
	s.mu.Lock()
	delete(s.trusting, key)
	s.mu.Unlock()
	close(done)
}

// add takes f, the open file of span key whose bytes were just hashed (or
// written) and found right, with st its state then. It closes f if the
// set is full.
func (s *spanFiles) add(key string, f *os.File, st os.FileInfo) {
	sf := &spanFile{key: key, f: f, size: st.Size(), mtime: st.ModTime().UnixNano()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byKey[key]; old != nil {
		s.dropLocked(old)
	} else if len(s.byKey) >= s.max {
		f.Close() // never handed out
		return
	}
	s.byKey[key] = sf
	sf.elem = s.order.PushFront(sf)
}

// acquire returns the open, unchanged file of span key, or nil.
func (s *spanFiles) acquire(key string) *spanFile {
	s.mu.Lock()
	sf := s.byKey[key]
	if sf == nil {
		s.mu.Unlock()
		return nil
	}
	s.order.MoveToFront(sf.elem)
	s.mu.Unlock()
	if st, err := sf.f.Stat(); err != nil || st.Size() != sf.size || st.ModTime().UnixNano() != sf.mtime {
		s.drop(sf)
		return nil
	}
	return sf
}

// retime keeps span key's file trusted after this process refreshed its
// times (the cache's LRU touch), when the file held open is the one at
// fi's path and its size is unchanged, and seals it anew; without it, each
// touch would drop the file, and with it an open descriptor (and the next
// process would hash it again).
func (s *spanFiles) retime(key string, fi os.FileInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sf := s.byKey[key]
	if sf == nil {
		return
	}
	if st, err := sf.f.Stat(); err == nil && os.SameFile(st, fi) && st.Size() == sf.size {
		sf.mtime = st.ModTime().UnixNano()
		seal(sf.f, key, st)
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
	delete(s.byKey, sf.key)
	s.order.Remove(sf.elem)
	s.dropped = append(s.dropped, sf.f)
}

// readAt reads len(p) bytes at off of the span key from its verified file,
// reporting false (and reading nothing trustworthy into p) when the
// process has no such file or it cannot give them.
func (s *spanFiles) readAt(key string, p []byte, off int64) bool {
	sf := s.acquire(key)
	if sf == nil {
		return false
	}
	if off < 0 || off+int64(len(p)) > sf.size {
		return false
	}
	if n, err := sf.f.ReadAt(p, off); err != nil || n != len(p) {
		s.drop(sf)
		return false
	}
	return true
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
		p := dest[lo-uoff : hi-uoff]
		if !c.readAt(m, p, lo-m.UOff) && !(c.trustFile(m) && c.readAt(m, p, lo-m.UOff)) {
			return false
		}
	}
	return true
}

// hashBuffers are the buffers trustFile hashes span files through.
var hashBuffers = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// trustFile hashes the span file of m on disk, through a small buffer
// rather than by loading it, unless it carries a seal of its present state
// (spanseal.go), and when its bytes are m's keeps it open to be read in
// place (spanFiles). It reports whether the file is now trusted.
// One caller hashes a file; others wanting it meanwhile wait for it. A
// file that is missing or not right is left alone here: load fetches the
// one, and removes the other.
func (c *SpanCache) trustFile(m Member) bool {
	if c.files.acquire(m.SHA256) != nil {
		return true
	}
	done, mine := c.files.beginTrust(m.SHA256)
	if !mine {
		<-done
		return c.files.acquire(m.SHA256) != nil
	}
	defer c.files.endTrust(m.SHA256, done)
	p, err := c.spanPath(m)
	if err != nil || m.ULen <= 0 {
		return false
	}
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	st, err := f.Stat()
	if err != nil || st.Size() != m.ULen {
		f.Close()
		return false
	}
	if !sealed(f, m.SHA256, st) {
		h := sha256.New()
		bp := hashBuffers.Get().(*[]byte)
		_, err = io.CopyBuffer(h, io.NewSectionReader(f, 0, m.ULen), *bp)
		hashBuffers.Put(bp)
		c.hashed.Add(m.ULen)
		if err != nil || hex.EncodeToString(h.Sum(nil)) != m.SHA256 || !seal(f, m.SHA256, st) {
			f.Close()
			return false
		}
	}
	c.files.add(m.SHA256, f, st)
	c.touch(m)
	return c.files.acquire(m.SHA256) != nil
}

// copySpans fills dest, the bytes at uoff of a layer, from spans, the
// bytes of ms, the spans that hold them.
func copySpans(dest []byte, uoff int64, ms []Member, spans [][]byte) {
	end := uoff + int64(len(dest))
	for k, b := range spans {
		m := ms[k]
		lo, hi := max(uoff, m.UOff), min(end, m.UOff+m.ULen)
		copy(dest[lo-uoff:hi-uoff], b[lo-m.UOff:hi-m.UOff])
	}
}
