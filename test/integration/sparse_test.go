package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// sparseFiles are the files of the hostile corpus's mixed sparse layer
// (test/hostile/testdata/mksparse.sh), by path, with their bytes: holes at
// the start, in the middle, at the end, a file all hole and a plain file,
// under mixed/gnu in GNU tar's old sparse format and under mixed/pax in its
// PAX format 1.0.
func sparseFiles() map[string][]byte {
	at := func(size int, parts ...any) []byte {
		b := make([]byte, size)
		for i := 0; i < len(parts); i += 3 {
			off, word, n := parts[i].(int), parts[i+1].(string), parts[i+2].(int)
			copy(b[off:], strings.Repeat(word+"\n", n/len(word)+1)[:n]) // `yes word | head -c n`
		}
		return b
	}
	files := map[string][]byte{}
	for _, dir := range []string{"mixed/gnu", "mixed/pax"} {
		files[dir+"/hole-start"] = at(262144, 200000, "hole-start", 1000)
		files[dir+"/hole-middle"] = at(153000, 0, "hole-middle-a", 3000, 150000, "hole-middle-b", 3000)
		files[dir+"/hole-end"] = at(262144, 0, "hole-end", 3000)
		files[dir+"/all-hole"] = at(100000)
		files[dir+"/after"] = []byte("a regular file after the sparse ones\n")
	}
	return files
}

// pushSparseImage pushes an image whose one layer (gzip) is the mixed
// sparse layer, with go-containerregistry, and returns its reference.
func pushSparseImage(t *testing.T, addr string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "hostile", "testdata", "sparse-mixed.tar"))
	if err != nil {
		t.Fatal(err)
	}
	return pushOneLayerImage(t, addr+"/sparse/mixed:1", raw)
}

// pushOneLayerImage pushes, with go-containerregistry, an image whose one
// layer blob is blob as it is (not recompressed), and returns ref.
func pushOneLayerImage(t *testing.T, ref string, blob []byte) string {
	t.Helper()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.ConfigFile(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		&v1.ConfigFile{Architecture: runtime.GOARCH, OS: "linux", Config: v1.Config{Cmd: []string{"/bin/sh"}}})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref
}

func checkSparseMount(t *testing.T, archive string) {
	t.Helper()
	m := mountArchive(t, archive)
	for p, want := range sparseFiles() {
		got, err := os.ReadFile(filepath.Join(m.dir, p))
		if err != nil {
			t.Errorf("reading %s from the mount: %v", p, err)
			continue
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s: got %d bytes, want %d; the first difference at byte %d", p, len(got), len(want), i)
		}
	}
}

// TestPullSparse pulls an image with sparse files in GNU and PAX format:
// v1 holds them exactly, v2 refuses them with a clear error (its nodes'
// data is one run of a layer's bytes), and auto mode falls back to v1.
func TestPullSparse(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	ref := pushSparseImage(t, reg.addr)

	t.Run("v1", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "sparse.clip")
		res := clipbuild(t, "pull", ref, "--clip-version", "1", "-o", archive, "--json")
		mustSucceed(t, res)
		var out buildOutput
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("pull --json: %v\n%v", err, res)
		}
		if out.ClipVersion != 1 || out.FallbackReason != "" {
			t.Errorf("got clipVersion %d, fallbackReason %q; want 1, none", out.ClipVersion, out.FallbackReason)
		}
		checkSparseMount(t, archive)
	})

	t.Run("v2", func(t *testing.T) {
		outDir := t.TempDir()
		res := clipbuild(t, "pull", ref, "--clip-version", "2", "-o", filepath.Join(outDir, "sparse.clip"))
		assertCleanFailure(t, res)
		if last := res.lastStderrLine(); !strings.Contains(last, `"mixed/gnu/hole-start": sparse file`) {
			t.Errorf("last stderr line: got %q, want it to name the sparse file\n%v", last, res)
		}
		assertDirEmpty(t, outDir)
		if strings.Contains(res.stderr, "falling back") {
			t.Errorf("--clip-version 2 fell back\n%v", res)
		}
	})

	t.Run("auto", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "sparse.clip")
		res := clipbuild(t, "pull", ref, "-o", archive, "--json")
		mustSucceed(t, res)
		var out buildOutput
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("pull --json: %v\n%v", err, res)
		}
		if out.ClipVersion != 1 || !strings.Contains(out.FallbackReason, "sparse file") {
			t.Errorf("got clipVersion %d, fallbackReason %q; want 1 and a reason naming the sparse file", out.ClipVersion, out.FallbackReason)
		}
		if !strings.Contains(res.stderr, "falling back to v1: ") {
			t.Errorf("stderr lacks %q\n%v", "falling back to v1: ", res)
		}
		checkSparseMount(t, archive)
	})
}

// hugeSparseLayer makes, with GNU tar, a layer holding "huge", a sparse
// file of size bytes whose only data is marker at offset size/2, and
// "small", a plain file; it returns the layer and the marker's offset.
func hugeSparseLayer(t *testing.T, size int64) ([]byte, int64) {
	t.Helper()
	dir := t.TempDir()
	huge := filepath.Join(dir, "src", "huge")
	if err := os.MkdirAll(filepath.Dir(huge), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	at := size / 2
	if _, err := f.WriteAt([]byte(hugeMarker), at); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(f.Truncate(size), f.Close()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "src", "small"), []byte("small\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(dir, "layer.tar")
	mustSucceed(t, run(t, "", commandTimeout, "tar", "--sparse", "--format=posix", "-cf", layer, "-C", filepath.Join(dir, "src"), "."))
	raw, err := os.ReadFile(layer)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 1<<20 {
		t.Fatalf("the layer of a sparse file is %d bytes: tar did not keep the holes", len(raw))
	}
	return raw, at
}

// hugeMarker is the data of hugeSparseLayer's sparse file.
const hugeMarker = "the one run of data in a sparse file\n"

// TestPullV1KeepsSparseFilesSparse pulls to v1 an image whose layer holds
// a 1 GiB sparse file in a few KiB of tar: the archive holds its bytes
// exactly, yet takes only its data on disk (the file's zeros are a hole in
// the archive, as GNU tar leaves them when it unpacks), not a block for
// each byte the file declares.
func TestPullV1KeepsSparseFilesSparse(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	const size = 1 << 30
	raw, at := hugeSparseLayer(t, size)
	ref := pushOneLayerImage(t, reg.addr+"/sparse/huge:1", raw)
	archive := filepath.Join(t.TempDir(), "huge.clip")
	mustSucceed(t, clipbuild(t, "pull", ref, "--clip-version", "1", "-o", archive))

	var st syscall.Stat_t
	if err := syscall.Stat(archive, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size <= size {
		t.Fatalf("archive is %d bytes, want more than the file's %d", st.Size, size)
	}
	if used := st.Blocks * 512; used > 16<<20 {
		t.Errorf("archive takes %d bytes on disk for %d bytes of data: the file's holes were written out", used, len(hugeMarker)+6)
	}

	m := mountArchive(t, archive)
	f, err := os.Open(filepath.Join(m.dir, "huge"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		t.Fatalf("huge: stat = %v, %v; want %d bytes", fi, err, size)
	}
	// The marker with a MiB of zeros either side, and the file's ends.
	for _, span := range [][2]int64{{at - 1<<20, 2<<20 + int64(len(hugeMarker))}, {0, 1 << 20}, {size - 1<<20, 1 << 20}} {
		got := make([]byte, span[1])
		if _, err := f.ReadAt(got, span[0]); err != nil {
			t.Fatalf("huge: reading %d bytes at %d: %v", span[1], span[0], err)
		}
		want := make([]byte, span[1])
		if span[0] < at && at < span[0]+span[1] {
			copy(want[at-span[0]:], hugeMarker)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("huge: the %d bytes at %d differ from the file's", span[1], span[0])
		}
	}
	if got, err := os.ReadFile(filepath.Join(m.dir, "small")); err != nil || string(got) != "small\n" {
		t.Errorf("small: got %q, %v; want %q", got, err, "small\n")
	}
}

// TestSignalStopsTheCopyOfAHugeFile interrupts a v1 pull while it copies
// a sparse file that declares 256 GiB in a few KiB of tar (minutes of
// hashing): the copy must stop between chunks, so the run exits 130 with
// an Error line soon after SIGTERM, leaving nothing behind, rather than
// when the file is done.
func TestSignalStopsTheCopyOfAHugeFile(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	raw, _ := hugeSparseLayer(t, 256<<30)
	ref := pushOneLayerImage(t, reg.addr+"/sparse/huger:1", raw)
	dir, tmp := t.TempDir(), t.TempDir()
	cmd, out := startClipbuild(t, tmp, "pull", ref, "--clip-version", "1", "-o", filepath.Join(dir, "huge.clip"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The archive's (unnamed) temporary file is opened in the output
	// directory once the layer is fetched; the copy follows within
	// milliseconds.
	if !waitFor(time.Minute, func() bool { return holdsFileIn(cmd.Process.Pid, dir) }) {
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("no archive begun within a minute\n%s", out.String())
	}
	time.Sleep(time.Second)
	sent := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("still running 30s after SIGTERM: the copy does not stop\n%s", out.String())
	}
	// A chunk is a MiB: the run stops in milliseconds (the signal test's
	// runs take at most a tenth of a second); 3 s leaves room for a busy
	// machine, and a file read to its end takes minutes.
	took := time.Since(sent)
	t.Logf("stopped %v after SIGTERM", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("stopped %v after SIGTERM, want within 3s: the copy does not stop between chunks", took.Round(time.Millisecond))
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit code %d, want 130\n%s", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "Error: ") {
		t.Errorf("last line %q, want an Error line", last)
	}
	assertDirEmpty(t, dir)
	assertDirEmpty(t, tmp)
}

// holdsFileIn reports whether process pid has a file in dir open.
func holdsFileIn(pid int, dir string) bool {
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	es, _ := os.ReadDir(fds)
	for _, e := range es {
		if target, err := os.Readlink(filepath.Join(fds, e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			return true
		}
	}
	return false
}
