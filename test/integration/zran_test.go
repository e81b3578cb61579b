package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
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

// plainGzipFiles are the files of a one-layer image of about 8 MB of gzip:
// text and incompressible data (so gzip -6 writes stored blocks too),
// and a 6-byte file in the middle of the layer. The seed makes each run's
// bytes new, so no span cache on the host already has them.
func plainGzipFiles(seed int64) (map[string][]byte, []string) {
	rng := rand.New(rand.NewSource(seed))
	files := map[string][]byte{}
	var order []string
	add := func(p string, b []byte) {
		files[p] = b
		order = append(order, p)
	}
	for i := range 12 {
		r := make([]byte, 400<<10+rng.Intn(200<<10))
		rng.Read(r)
		add(fmt.Sprintf("data/blob%02d.bin", i), r)
		var sb strings.Builder
		for sb.Len() < 600<<10 {
			fmt.Fprintf(&sb, "line %d of file %d: %x\n", rng.Intn(1e6), i, rng.Int63())
		}
		add(fmt.Sprintf("text/notes%02d.txt", i), []byte(sb.String()))
		if i == 6 {
			add("etc/small", []byte("hello\n"))
		}
	}
	return files, order
}

// pushPlainGzipImage pushes files as a one-layer image compressed by
// gzip -6 (one stream, no seekable members) and returns its reference.
func pushPlainGzipImage(t *testing.T, addr string, files map[string][]byte, order []string) (string, int64) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	dirs := map[string]bool{}
	for _, p := range order {
		if d := filepath.Dir(p); !dirs[d] {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(1e9, 0)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: 0o644, Size: int64(len(files[p])), ModTime: time.Unix(1e9, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[p])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("gzip", "-6", "-c", "-n")
	cmd.Stdin = &tb
	gz, err := cmd.Output()
	if err != nil {
		t.Fatalf("gzip -6: %v", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(gz)), nil },
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
	ref := addr + "/zran/plain:1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref, int64(len(gz))
}

// TestPullPlainGzipReadsByRange pulls a plain gzip image as v2 and reads
// one small file from a cold mount: the restart points recorded while
// pulling let the mount fetch one span of the layer, not all of it.
func TestPullPlainGzipReadsByRange(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	proxy := startByteProxy(t, reg.addr)
	files, order := plainGzipFiles(time.Now().UnixNano())
	ref, blobBytes := pushPlainGzipImage(t, proxy.addr, files, order)

	archivePath := filepath.Join(t.TempDir(), "plain.clip")
	res := clipbuild(t, "pull", ref, "--clip-version", "2", "-o", archivePath, "--json")
	mustSucceed(t, res)
	var out buildOutput
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("pull --json: %v\n%v", err, res)
	}
	fi, err := os.Stat(archivePath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("layer blob %d bytes, archive %d bytes (%.2f%%)", blobBytes, fi.Size(), 100*float64(fi.Size())/float64(blobBytes))
	if limit := blobBytes / 50; fi.Size() > limit {
		t.Errorf("archive is %d bytes, want at most %d (2%% of the %d-byte layer)", fi.Size(), limit, blobBytes)
	}
	a := openArchive(t, archivePath)
	if len(a.Trailer.Zran) != 1 {
		t.Fatalf("the archive has restart points for %d layers, want 1", len(a.Trailer.Zran))
	}
	for _, ix := range a.Trailer.Zran {
		// SOCI's zTOC for the layer holds a raw 32 KiB window for each
		// of its 4 MiB spans, besides its file table.
		soci := (blobBytes + 4<<20 - 1) / (4 << 20) * 32 << 10
		t.Logf("%d restart points; SOCI's windows alone would take %d bytes", len(ix.Points), soci)
	}

	proxy.reset()
	m := mountArchive(t, archivePath, "--cache-dir", t.TempDir(), "--span-cache-dir", t.TempDir(), "--no-prefetch")
	got, err := os.ReadFile(filepath.Join(m.dir, "etc/small"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello\n" {
		t.Fatalf("etc/small: got %q, want %q", got, "hello\n")
	}
	sent, _ := proxy.stats()
	t.Logf("reading a 6-byte file cold: the registry sent %d bytes", sent)
	if limit := int64(4 << 20); sent > limit {
		t.Errorf("reading a 6-byte file, the registry sent %d bytes, want at most %d (the layer is %d)", sent, limit, blobBytes)
	}
	for _, p := range order {
		b, err := os.ReadFile(filepath.Join(m.dir, p))
		if err != nil {
			t.Errorf("reading %s: %v", p, err)
			continue
		}
		if !bytes.Equal(b, files[p]) {
			t.Errorf("%s: got %d bytes that differ from the image's %d", p, len(b), len(files[p]))
		}
	}
	entries := 0
	filepath.Walk(m.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			entries++
		}
		return nil
	})
	if entries != len(files) {
		t.Errorf("the mount has %d files, want %d", entries, len(files))
	}
}
