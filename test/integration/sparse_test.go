package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

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
