package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// plainGzipFiles are the files of a one-layer image of about 25 MB of
// gzip: text and incompressible data (so gzip -6 writes stored blocks
// too), and a 6-byte file in the middle of the layer. The seed makes each
// run's bytes new, so no span cache on the host already has them.
func plainGzipFiles(seed int64) (map[string][]byte, []string) {
	rng := rand.New(rand.NewSource(seed))
	files := map[string][]byte{}
	var order []string
	add := func(p string, b []byte) {
		files[p] = b
		order = append(order, p)
	}
	for i := range 32 {
		r := make([]byte, 600<<10+rng.Intn(200<<10))
		rng.Read(r)
		add(fmt.Sprintf("data/blob%02d.bin", i), r)
		var sb strings.Builder
		for sb.Len() < 400<<10 {
			fmt.Fprintf(&sb, "line %d of file %d: %x\n", rng.Intn(1e6), i, rng.Int63())
		}
		add(fmt.Sprintf("text/notes%02d.txt", i), []byte(sb.String()))
		if i == 16 {
			add("etc/small", []byte("hello\n"))
		}
	}
	return files, order
}

// pushPlainGzipImage pushes files as a one-layer image compressed by
// gzip -6 (one stream, no seekable members) and returns its reference and
// the layer blob's size.
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
	ref := pushOneLayerImage(t, addr+"/zran/plain:1", gz)
	return ref, int64(len(gz))
}

// pullV2 runs `clipbuild pull REF --clip-version 2` and returns the
// archive, which must hold restart points for every layer and no seekable
// members.
func pullV2(t *testing.T, ref string) string {
	t.Helper()
	archivePath := filepath.Join(t.TempDir(), "pulled.clip")
	res := clipbuild(t, "pull", ref, "--clip-version", "2", "-o", archivePath, "--json")
	mustSucceed(t, res)
	var out buildOutput
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("pull --json: %v\n%v", err, res)
	}
	if out.ClipVersion != 2 {
		t.Fatalf("pull: clipVersion %d, want 2", out.ClipVersion)
	}
	a := openArchive(t, archivePath)
	if len(a.Trailer.Members) != 0 {
		t.Errorf("the pulled archive lists seekable members for %d layers, want none", len(a.Trailer.Members))
	}
	if len(a.Trailer.Zran) != len(a.OCI.Layers) || len(a.OCI.Layers) == 0 {
		t.Fatalf("the archive has restart points for %d layers, want %d (all)", len(a.Trailer.Zran), len(a.OCI.Layers))
	}
	for dg, ix := range a.Trailer.Zran {
		t.Logf("layer %s: %d compressed bytes, %d uncompressed, %d restart points", dg[:19], ix.CSize, ix.Size, len(ix.Points))
	}
	return archivePath
}

// readSmallCold reads the 6-byte file p from m, a mount with cold caches,
// and checks that the registry behind proxy sent at most 4 MiB for it:
// the span (about 4 MiB uncompressed) from the restart point before it.
func readSmallCold(t *testing.T, proxy *byteProxy, m *fuseMount, p string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(m.dir, p))
	if err != nil {
		t.Fatalf("reading %s: %v\n%s", p, err, m.stderr.String())
	}
	if string(got) != "hello\n" {
		t.Fatalf("%s: got %q, want %q", p, got, "hello\n")
	}
	sent, _ := proxy.stats()
	t.Logf("reading a 6-byte file cold: the registry sent %d bytes", sent)
	if sent == 0 {
		t.Errorf("reading a 6-byte file cold, the registry sent nothing")
	}
	if limit := int64(4 << 20); sent > limit {
		t.Errorf("reading a 6-byte file, the registry sent %d bytes, want at most %d", sent, limit)
	}
}

// TestPullPlainGzipReadsByRange pulls images as v2 and reads one small file
// from a cold mount: the restart points recorded while pulling let the
// mount fetch one span of its layer, not all of it. Layers of any gzip
// layout: one gzip -6 stream (stored blocks among compressed ones), what
// buildah push writes (pgzip, one member), and clipbuild's own seekable
// gzip (1 MiB members, so a span crosses several member ends). Then every
// file is read and compared, and a corrupted cached span fails the read
// with EIO instead of serving wrong bytes.
func TestPullPlainGzipReadsByRange(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	proxy := startByteProxy(t, reg.addr)

	t.Run("gzip -6", func(t *testing.T) {
		files, order := plainGzipFiles(time.Now().UnixNano())
		ref, blobBytes := pushPlainGzipImage(t, proxy.addr, files, order)
		if blobBytes < 20e6 {
			t.Fatalf("the layer is %d bytes, want over 20 MB", blobBytes)
		}
		archivePath := pullV2(t, ref)
		fi, err := os.Stat(archivePath)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("layer blob %d bytes, archive %d bytes (%.2f%%)", blobBytes, fi.Size(), 100*float64(fi.Size())/float64(blobBytes))
		if limit := blobBytes / 50; fi.Size() > limit {
			t.Errorf("archive is %d bytes, want at most %d (2%% of the %d-byte layer)", fi.Size(), limit, blobBytes)
		}

		proxy.reset()
		stats := filepath.Join(t.TempDir(), "stats.json")
		m := mountArchive(t, archivePath, "--cache-dir", t.TempDir(), "--span-cache-dir", t.TempDir(), "--no-prefetch", "--stats", stats)
		readSmallCold(t, proxy, m, "etc/small")
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
		sent, _ := proxy.stats()
		if sent > blobBytes+blobBytes/10 {
			t.Errorf("reading every file, the registry sent %d bytes for a %d-byte layer", sent, blobBytes)
		}
		if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
			t.Fatalf("stopping mount: exit %d, %v", code, err)
		}
		st := readStats(t, stats)
		if st.Reads == 0 || st.SpansFetched == 0 || st.BytesFetched == 0 || st.BytesFetched > sent || st.FallbackReads != 0 || st.Errors != 0 {
			t.Errorf("stats = %+v, want reads by range (spans and at most the %d bytes sent fetched), none whole, no errors", st, sent)
		}
	})

	t.Run("buildah push", func(t *testing.T) {
		image := imageName("zran-buildah")
		removeImageLater(t, image)
		ctx := inlineContext(t, busyboxBase+"RUN head -c 12000000 /dev/urandom > /r1.bin && seq 1 1500000 > /seq.txt && "+
			"printf 'hello\\n' > /small.txt && head -c 12000000 /dev/urandom > /r2.bin\n")
		mustSucceed(t, run(t, "", buildTimeout, "buildah", append(append([]string{"bud", "--layers"}, isolationArgs()...), "-t", image, ctx)...))
		ref := proxy.addr + "/zran/buildah:1"
		mustSucceed(t, run(t, "", commandTimeout, "buildah", "push", "--tls-verify=false", image, "docker://"+ref))
		archivePath := pullV2(t, ref)
		a := openArchive(t, archivePath)
		var largest int64
		for _, ix := range a.Trailer.Zran {
			largest = max(largest, ix.CSize)
		}
		if largest < 20e6 {
			t.Fatalf("the largest layer is %d bytes, want over 20 MB", largest)
		}

		proxy.reset()
		m := mountArchive(t, archivePath, "--cache-dir", t.TempDir(), "--span-cache-dir", t.TempDir(), "--no-prefetch")
		readSmallCold(t, proxy, m, "small.txt")
		reference := buildahRootfs(t, image, namePrefix+"-zran-buildah-ref")
		compareTrees(t, "buildah mount", reference, "clipbuild mount (pulled v2, by range)", m.dir)
	})

	t.Run("multi-member layers", func(t *testing.T) {
		// small.txt lies in the fourth 1 MiB member of its layer, in the
		// span of the layer's first restart point, which crosses three
		// member ends; z.bin lies in spans that start inside members.
		dir := inlineContext(t, busyboxBase+"RUN head -c 3000000 /dev/urandom > /big.bin && printf 'hello\\n' > /small.txt && "+
			"head -c 9000000 /dev/urandom > /z.bin\n")
		image := imageName("zran-multi")
		out, res := buildV2(t, dir, image, "--clip-version", "2", "--registry", proxy.addr+"/zran")
		checkV2Result(t, out, res, proxy.addr+"/zran/")
		if built := openArchive(t, out.Archive); len(built.Trailer.Members) == 0 {
			t.Fatal("the built archive lists no seekable members: its layers are not multi-member")
		}
		archivePath := pullV2(t, out.ImageRef)

		proxy.reset()
		spans := t.TempDir()
		m := mountArchive(t, archivePath, "--cache-dir", t.TempDir(), "--span-cache-dir", spans, "--no-prefetch")
		readSmallCold(t, proxy, m, "small.txt")
		reference := buildahRootfs(t, image, namePrefix+"-zran-multi-ref")
		compareTrees(t, "buildah mount", reference, "clipbuild mount (pulled v2, by range)", m.dir)
		if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
			t.Fatalf("stopping mount: exit %d, %v", code, err)
		}

		// Corrupt every cached span: a new mount sharing the cache must
		// not serve them. The read that finds one fails (EIO), says why
		// and drops it; the kernel may retry the read at once, which
		// then fetches the span again: EIO or the exact bytes, never
		// others.
		flipped := 0
		err := filepath.WalkDir(spans, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || len(d.Name()) != 64 {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil || len(b) == 0 {
				return err
			}
			b[len(b)/2] ^= 0x20
			flipped++
			return os.WriteFile(p, b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
		if flipped == 0 {
			t.Fatalf("no cached span in %s", spans)
		}
		m2 := mountArchive(t, archivePath, "--cache-dir", t.TempDir(), "--span-cache-dir", spans, "--no-prefetch")
		got, err := os.ReadFile(filepath.Join(m2.dir, "small.txt"))
		if err != nil && !errors.Is(err, syscall.EIO) {
			t.Errorf("reading through a corrupted cached span: %v, want EIO or the file", err)
		}
		if err == nil && string(got) != "hello\n" {
			t.Errorf("reading through a corrupted cached span: got %q, want %q or EIO", got, "hello\n")
		}
		if log := m2.stderr.String(); !strings.Contains(log, "small.txt") || !strings.Contains(log, "span does not match its digest") {
			t.Errorf("the mount's log does not name the file and the corrupt span:\n%s", log)
		}
		got, err = os.ReadFile(filepath.Join(m2.dir, "small.txt"))
		if err != nil || string(got) != "hello\n" {
			t.Errorf("reading again once the corrupted span is dropped: %q, %v, want %q", got, err, "hello\n")
		}
		want, err := os.ReadFile(filepath.Join(reference, "z.bin"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(m2.dir, "z.bin")); err != nil && !errors.Is(err, syscall.EIO) {
			t.Errorf("reading z.bin through corrupted cached spans: %v, want EIO or the file", err)
		} else if err == nil && !bytes.Equal(got, want) {
			t.Errorf("reading z.bin through corrupted cached spans: %d bytes that differ from the image's %d", len(got), len(want))
		}
	})
}
