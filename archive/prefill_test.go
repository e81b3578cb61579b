package archive

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"
)

// mountRanged mounts the fixture's tree over s until the test ends.
func mountRanged(t *testing.T, f *seekableFixture, s Storage) (*Mount, string) {
	t.Helper()
	return mountNodes(t, f.nodeList(), s)
}

// mountNodes mounts a tree of nodes over s until the test ends.
func mountNodes(t *testing.T, nodes []*common.ClipNode, s Storage) (*Mount, string) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := MountArchive(memArchive(nodes...), s, mnt)
	if err != nil {
		t.Fatalf("MountArchive() = %v", err)
	}
	t.Cleanup(func() { m.Unmount() })
	return m, mnt
}

func readThrough(t *testing.T, f *seekableFixture, mnt string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		got, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.files[p]) {
			t.Fatalf("%s through the mount: other bytes than were written", p)
		}
	}
}

func waitPrefilled(t *testing.T, m *Mount) {
	t.Helper()
	if m.prefillDone == nil {
		t.Fatal("the mount has no prefill (its storage lists no files to prefill)")
	}
	select {
	case <-m.prefillDone:
	case <-time.After(20 * time.Second):
		t.Fatal("the prefill did not end in 20s")
	}
}

// TestPrefillServesTheTracesFilesFromTheKernel mounts twice over one span
// cache: the second mount stores the small files the first one read in the
// kernel's page cache, so that reading them reaches the filesystem not at
// all, while a file the trace does not list still does.
func TestPrefillServesTheTracesFilesFromTheKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test mounts as root, and CI=true")
		}
		t.Skip("this test mounts as root")
	}
	f := newSeekableFixture(t)
	cache := openTestSpanCache(t, t.TempDir())
	path := TracePath(t.TempDir(), "sha256:"+fmt.Sprintf("%064x", 5))
	opts := func(prefetch bool) []rangedOption {
		return []rangedOption{withReadAhead(0), withDenseThreshold(0), withTrace(path, time.Minute, prefetch)}
	}

	first := newTestRanged(t, f, cache, nil, opts(true)...)
	m, mnt := mountRanged(t, f, first)
	waitPrefilled(t, m)
	if st := first.Stats(); st.TraceFiles != 0 || st.PrefillFiles != 0 {
		t.Fatalf("Stats() = %+v with no trace yet; want no trace or prefill files", st)
	}
	readThrough(t, f, mnt, "/mid.bin", "/small.txt", "/big1.bin")
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	// big1.bin is over prefillMaxFile: its spans are listed, it is not.
	if diff := cmp.Diff([]string{"/mid.bin", "/small.txt"}, readTraceFile(t, path).Files); diff != "" {
		t.Fatalf("the trace's files (-want +got):\n%s", diff)
	}

	second := newTestRanged(t, f, cache, nil, opts(true)...)
	m, mnt = mountRanged(t, f, second)
	waitPrefilled(t, m)
	st := second.Stats()
	if want := int64(len(f.files["/mid.bin"]) + len(f.files["/small.txt"])); st.TraceFiles != 2 || st.PrefillFiles != 2 || st.PrefillBytes != want {
		t.Fatalf("Stats() = %+v; want 2 trace and prefill files, %d bytes prefilled", st, want)
	}
	before := st.Reads
	readThrough(t, f, mnt, "/small.txt", "/mid.bin")
	if n := second.Stats().Reads - before; n != 0 {
		t.Errorf("reading the prefilled files made %d reads of the filesystem, want 0", n)
	}
	readThrough(t, f, mnt, "/big2.bin")
	if second.Stats().Reads == before {
		t.Error("reading a file the trace does not list made no read of the filesystem: the count shows nothing")
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	// The prefill's reads count for the next trace as the reads the
	// kernel served in its place would have.
	if diff := cmp.Diff([]string{"/mid.bin", "/small.txt"}, readTraceFile(t, path).Files[:2]); diff != "" {
		t.Errorf("the second mount's trace (-want +got):\n%s", diff)
	}

	third := newTestRanged(t, f, cache, nil, opts(false)...)
	m, _ = mountRanged(t, f, third)
	waitPrefilled(t, m)
	if st := third.Stats(); st.TraceFiles != 0 || st.PrefillFiles != 0 {
		t.Errorf("Stats() = %+v without prefetch; want no trace or prefill files", st)
	}
}

// prefillStorage serves files from memory and lists some of them for the
// prefill, counting the reads the mount makes.
type prefillStorage struct {
	files map[string][]byte
	trace []string
	reads atomic.Int64
}

func (s *prefillStorage) ReadFile(node *common.ClipNode, dest []byte, off int64) (int, error) {
	s.reads.Add(1)
	b := s.files[node.Path]
	if off >= int64(len(b)) {
		return 0, nil
	}
	return copy(dest, b[off:]), nil
}

func (s *prefillStorage) Metadata() *common.ClipArchiveMetadata { return nil }
func (s *prefillStorage) CachedLocally() bool                   { return true }
func (s *prefillStorage) Cleanup() error                        { return nil }
func (s *prefillStorage) prefillFiles() []string                { return s.trace }
func (s *prefillStorage) notePrefilled(n int64)                 {}
func (s *prefillStorage) prefillLog() *logrus.Entry             { return logrus.NewEntry(logrus.StandardLogger()) }

func (s *prefillStorage) prefillRead(node *common.ClipNode, dest []byte) error {
	copy(dest, s.files[node.Path])
	return nil
}

// TestPrefillLooksUpTheFilesOfSparseDirectories prefills a trace that
// lists two of the 60 files of one directory and two of the 6 of another:
// the first directory's two files are looked up alone (listing it would
// have the kernel make 60 inodes), the second directory is listed, and
// every traced file is then read from the kernel's page cache.
func TestPrefillLooksUpTheFilesOfSparseDirectories(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test mounts as root, and CI=true")
		}
		t.Skip("this test mounts as root")
	}
	s := &prefillStorage{files: map[string][]byte{}}
	nodes := []*common.ClipNode{dirNode("/", 1), dirNode("/sparse", 2), dirNode("/dense", 3)}
	add := func(p string, ino uint64) {
		n := fileNode(p, ino)
		s.files[p] = []byte(fmt.Sprintf("the bytes of %s\n", p))
		n.Attr.Size = uint64(len(s.files[p]))
		nodes = append(nodes, n)
	}
	for i := range 60 {
		add(fmt.Sprintf("/sparse/f%02d", i), uint64(10+i))
	}
	for i := range 6 {
		add(fmt.Sprintf("/dense/f%d", i), uint64(100+i))
	}
	s.trace = []string{"/sparse/f40", "/dense/f1", "/sparse/f10", "/dense/f4"}

	m, mnt := mountNodes(t, nodes, s)
	waitPrefilled(t, m)
	if want := (prefillCounts{listed: 1, lookedUp: 2, stored: 4}); m.prefilled != want {
		t.Fatalf("the prefill did %+v, want %+v (/dense listed, /sparse's two files looked up)", m.prefilled, want)
	}
	for _, p := range s.trace {
		got, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil || !bytes.Equal(got, s.files[p]) {
			t.Fatalf("%s through the mount = %q, %v; want %q", p, got, err, s.files[p])
		}
	}
	if n := s.reads.Load(); n != 0 {
		t.Errorf("reading the prefilled files made %d reads of the storage, want 0", n)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "/sparse/f11")); err != nil || !bytes.Equal(got, s.files["/sparse/f11"]) || s.reads.Load() == 0 {
		t.Errorf("a file the trace does not list = %q, %v after %d reads of the storage; want its bytes, read from the storage", got, err, s.reads.Load())
	}
}
