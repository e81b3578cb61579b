package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/pgzip"

	"github.com/clipbuild/clipbuild/archive"
)

// Compare the seekable writer with what buildah push makes of the same
// layer (containers/image compresses with pgzip.NewWriter: klauspost level 5
// in 1 MiB blocks that share a dictionary, one gzip stream) and with
// stdlib compress/gzip members. Run on real tars with, for example:
//
//	tar -cf /tmp/usrlib.tar -C / usr/lib/gcc usr/lib/python3.11 usr/lib/git-core usr/lib/postgresql
//	tar -cf /tmp/include.tar -C / usr/include
//	SEEKGZ_BENCH_TARS=/tmp/usrlib.tar,/tmp/include.tar go test ./archive/ -run '^$' \
//	    -bench 'Seekable' -benchtime 1x -count 3
//
// Each result reports MB/s of uncompressed input and out/in, the blob's
// size relative to the input; compare out/in across rows of one data set.
// The pgzip rows hash the input and the blob, as a push does (copy verifies
// the layer's digest while reading it); the seekable rows also hash each
// member.
// Without SEEKGZ_BENCH_TARS a generated 16 MiB tar of text files is used.

type seekBenchData struct {
	name   string
	data   []byte
	bounds []int64
}

func seekBenchSets(b *testing.B) []seekBenchData {
	b.Helper()
	env := os.Getenv("SEEKGZ_BENCH_TARS")
	if env == "" {
		data, bounds := seekTextTar(b, 800)
		return []seekBenchData{{name: "gen", data: data, bounds: bounds}}
	}
	var sets []seekBenchData
	for _, p := range strings.Split(env, ",") {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		sets = append(sets, seekBenchData{name: strings.TrimSuffix(filepath.Base(p), ".tar"), data: data, bounds: seekTarBounds(b, data)})
	}
	return sets
}

type seekCountingReader struct {
	r io.Reader
	n int64
}

func (c *seekCountingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// seekTarBounds returns the offset of every entry's last header block, as
// a tar reader fed the same stream would report it.
func seekTarBounds(b *testing.B, data []byte) []int64 {
	cr := &seekCountingReader{r: bytes.NewReader(data)}
	tr := tar.NewReader(cr)
	var bounds []int64
	for {
		_, err := tr.Next()
		if err == io.EOF {
			return bounds
		}
		if err != nil {
			b.Fatalf("reading tar: %v", err)
		}
		bounds = append(bounds, cr.n-512)
	}
}

type seekCounter struct{ n int64 }

func (c *seekCounter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// seekBenchRun runs f b.N times with GOMAXPROCS set to procs and reports
// throughput and out/in.
func seekBenchRun(b *testing.B, procs int, d seekBenchData, f func(w io.Writer) error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	b.SetBytes(int64(len(d.data)))
	b.ReportAllocs()
	var out int64
	cpu0 := seekCPUTime(b)
	for i := 0; i < b.N; i++ {
		var c seekCounter
		if err := f(&c); err != nil {
			b.Fatal(err)
		}
		out = c.n
	}
	// CPU time is the cost that survives a machine shared with other work;
	// ns/op is what a user waits.
	b.ReportMetric((seekCPUTime(b)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(out)/float64(len(d.data)), "out/in")
	b.ReportMetric(float64(out), "out-bytes")
}

func BenchmarkSeekable(b *testing.B) {
	procsList := []int{1, runtime.GOMAXPROCS(0)}
	if procsList[1] == 1 {
		procsList = procsList[:1]
	}
	for _, d := range seekBenchSets(b) {
		for _, procs := range procsList {
			b.Run(fmt.Sprintf("%s/pgzip-default/procs=%d", d.name, procs), func(b *testing.B) {
				seekBenchRun(b, procs, d, func(w io.Writer) error {
					// A push verifies the layer's digest as it reads it
					// and digests the blob as it uploads it.
					zw := pgzip.NewWriter(io.MultiWriter(w, sha256.New()))
					diffID := sha256.New()
					for off := 0; off < len(d.data); off += 32 << 10 {
						p := d.data[off:min(off+32<<10, len(d.data))]
						diffID.Write(p)
						if _, err := zw.Write(p); err != nil {
							return err
						}
					}
					return zw.Close()
				})
			})
			for level := 1; level <= 6; level++ {
				b.Run(fmt.Sprintf("%s/seekable-level%d/procs=%d", d.name, level, procs), func(b *testing.B) {
					seekBenchRun(b, procs, d, func(w io.Writer) error {
						sw := archive.NewSeekableWriter(w, archive.WithCompressionLevel(level))
						return seekBenchFeed(sw, d)
					})
				})
			}
		}
		for _, level := range []int{1, 4, 6} {
			b.Run(fmt.Sprintf("%s/stdlib-members-level%d/procs=1", d.name, level), func(b *testing.B) {
				seekBenchRun(b, 1, d, func(w io.Writer) error {
					return seekStdlibMembers(w, d, level)
				})
			})
		}
	}
}

// BenchmarkSeekableMemberSize measures what smaller members cost in blob
// size (out/in; compare with the 1 MiB row, the default), at the default
// level: the price of finer range reads, where a read of a small file
// fetches and inflates its whole member. Members are still cut at tar
// entry boundaries, so at 4 KiB a text tree gets about one per file. Run
// on the bench image's text layer with, for example:
//
//	SEEKGZ_BENCH_TARS=/tmp/text.tar go test ./archive/ -run '^$' -bench SeekableMemberSize -benchtime 1x
func BenchmarkSeekableMemberSize(b *testing.B) {
	for _, d := range seekBenchSets(b) {
		for _, size := range []int{1 << 20, 256 << 10, 64 << 10, 16 << 10, 8 << 10, 4 << 10} {
			b.Run(fmt.Sprintf("%s/member-%dKiB", d.name, size>>10), func(b *testing.B) {
				seekBenchRun(b, runtime.GOMAXPROCS(0), d, func(w io.Writer) error {
					sw := archive.NewSeekableWriter(w, archive.WithMemberSize(size))
					return seekBenchFeed(sw, d)
				})
			})
		}
	}
}

// seekBenchFeed writes d in 32 KiB pieces, as io.Copy would, reporting
// each boundary once its header block has been written.
func seekBenchFeed(sw *archive.SeekableWriter, d seekBenchData) error {
	next := 0
	for off := 0; off < len(d.data); {
		end := min(off+32<<10, len(d.data))
		if _, err := sw.Write(d.data[off:end]); err != nil {
			return err
		}
		off = end
		for next < len(d.bounds) && d.bounds[next]+512 <= int64(off) {
			sw.Boundary(d.bounds[next])
			next++
		}
	}
	return sw.Close()
}

// seekStdlibMembers compresses d in 1 MiB stdlib gzip members, serially:
// the single-core cost and size of using compress/gzip for the members.
func seekStdlibMembers(w io.Writer, d seekBenchData, level int) error {
	zw, err := gzip.NewWriterLevel(w, level)
	if err != nil {
		return err
	}
	for off := 0; off < len(d.data); off += 1 << 20 {
		zw.Reset(w)
		if _, err := zw.Write(d.data[off:min(off+1<<20, len(d.data))]); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// seekCPUTime returns the user and system time this process has used.
func seekCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
