package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/clip"
	"github.com/google/go-cmp/cmp"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/archive"
)

// byteProxy is a loopback reverse proxy in front of a registry that counts
// the body bytes the registry sends back and the requests clipbuild makes.
type byteProxy struct {
	addr string

	mu      sync.Mutex
	sent    int64
	patched int64 // request body bytes of blob uploads (PATCH and PUT)
	reqs    []string
}

func startByteProxy(t *testing.T, backend string) *byteProxy {
	t.Helper()
	target, _ := url.Parse("http://" + backend)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &byteProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Method+" "+r.URL.Path)
		if (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") {
			p.patched += max(r.ContentLength, 0)
		}
		p.mu.Unlock()
		rp.ServeHTTP(&byteCounter{ResponseWriter: w, p: p}, r)
	}))
	t.Cleanup(srv.Close)
	p.addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

type byteCounter struct {
	http.ResponseWriter
	p *byteProxy
}

func (w *byteCounter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.p.mu.Lock()
	w.p.sent += int64(n)
	w.p.mu.Unlock()
	return n, err
}

func (p *byteProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent, p.patched, p.reqs = 0, 0, nil
}

// count is how many requests had method and a path containing part.
func (p *byteProxy) count(method, part string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.reqs {
		m, path, _ := strings.Cut(r, " ")
		if m == method && strings.Contains(path, part) {
			n++
		}
	}
	return n
}

func (p *byteProxy) stats() (sent, patched int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.patched
}

// registryGet fetches path from the registry itself (not through the
// proxy), with accept as the Accept header when set.
func registryGet(t *testing.T, addr, path, accept string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
	}
	return b
}

// pushedManifest is the manifest an archive pins, from the registry.
func pushedManifest(t *testing.T, addr string, a *archive.Archive) imgspecv1.Manifest {
	t.Helper()
	body := registryGet(t, addr, "/v2/"+a.OCI.Repository+"/manifests/"+a.Trailer.ManifestDigest, imgspecv1.MediaTypeImageManifest)
	if got := digest.FromBytes(body).String(); got != a.Trailer.ManifestDigest {
		t.Fatalf("manifest digest %s, archive pins %s", got, a.Trailer.ManifestDigest)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkSeekableBlobs checks every layer blob of the archive's image: its
// digest, that gzip accepts it whole, and that every member the archive
// records starts a gzip member there and inflates on its own to bytes of
// its recorded digest.
func checkSeekableBlobs(t *testing.T, addr string, a *archive.Archive) {
	t.Helper()
	m := pushedManifest(t, addr, a)
	if got, want := len(m.Layers), len(a.OCI.Layers); got != want {
		t.Fatalf("manifest has %d layers, archive %d", got, want)
	}
	multi := false
	for i, l := range m.Layers {
		if l.Digest.String() != a.OCI.Layers[i] || l.MediaType != imgspecv1.MediaTypeImageLayerGzip {
			t.Errorf("manifest layer %d = %s (%s), archive says %s", i, l.Digest, l.MediaType, a.OCI.Layers[i])
		}
		blob := registryGet(t, addr, "/v2/"+a.OCI.Repository+"/blobs/"+l.Digest.String(), "")
		if digest.FromBytes(blob) != l.Digest {
			t.Fatalf("blob %s has another digest", l.Digest)
		}
		gz := exec.Command("gzip", "-t")
		gz.Stdin = bytes.NewReader(blob)
		if out, err := gz.CombinedOutput(); err != nil {
			t.Errorf("gzip -t of layer %d: %v\n%s", i, err, out)
		}
		members := a.Trailer.Members[l.Digest.String()]
		cps := a.OCI.GzipIdxByLayer[l.Digest.String()]
		if len(members) == 0 || cps == nil || len(cps.Checkpoints) != len(members) {
			t.Fatalf("layer %d: %d members, want as many gzip checkpoints", i, len(members))
		}
		multi = multi || len(members) > 1
		var end int64
		for j, mb := range members {
			if mb.COff != end || cps.Checkpoints[j].COff != mb.COff || cps.Checkpoints[j].UOff != mb.UOff {
				t.Fatalf("layer %d member %d at %d (checkpoint %+v) does not follow %d", i, j, mb.COff, cps.Checkpoints[j], end)
			}
			end = mb.COff + mb.CLen
			if end > int64(len(blob)) || blob[mb.COff] != 0x1f || blob[mb.COff+1] != 0x8b {
				t.Fatalf("layer %d member %d: no gzip header at %d", i, j, mb.COff)
			}
			if _, err := archive.InflateMember(blob[mb.COff:end], mb); err != nil {
				t.Errorf("layer %d member %d: %v", i, j, err)
			}
		}
		if end != int64(len(blob)) {
			t.Errorf("layer %d: members end at %d of %d bytes", i, end, len(blob))
		}
	}
	if !multi {
		t.Errorf("no layer has more than one gzip member")
	}
}

func openArchive(t *testing.T, p string) *archive.Archive {
	t.Helper()
	a, err := archive.Open(p)
	if err != nil {
		t.Fatalf("archive.Open(%s) = %v", p, err)
	}
	return a
}

// TestPublishReadsNothingBackAndRebuildsOnlyWhatChanged builds a v2
// archive through a counting proxy, checks that the registry sent almost
// nothing back, that the blobs are seekable gzip as the archive says, and
// that the archive mounts (ours and clip's) as buildah sees the image; then
// rebuilds with only the last layer changed and checks that only that layer
// (and the config) is uploaded.
func TestPublishReadsNothingBackAndRebuildsOnlyWhatChanged(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	proxy := startByteProxy(t, reg.addr)
	dir := inlineContext(t, busyboxBase+
		"RUN head -c 3000000 /dev/urandom > /random.bin && seq 1 200000 > /numbers.txt\nCOPY last.txt /last.txt\n")
	writeLast := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "last.txt"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeLast("first\n")
	flags := []string{"--clip-version", "2", "--registry", proxy.addr + "/pub", "--layers"}
	image1 := imageName("publish-1")
	out1, res := buildV2(t, dir, image1, flags...)
	checkV2Result(t, out1, res, proxy.addr+"/pub/")
	sent, _ := proxy.stats()
	t.Logf("build: registry sent %d bytes for %d image bytes", sent, out1.ImageBytes)
	if limit := out1.ImageBytes / 100; sent > limit {
		t.Errorf("the registry sent %d bytes during the build, want at most %d (1%% of %d)", sent, limit, out1.ImageBytes)
	}
	if n := proxy.count(http.MethodGet, "/blobs/sha256:"); n != 0 {
		t.Errorf("the build fetched %d blobs, want 0", n)
	}
	a1 := openArchive(t, out1.Archive)
	checkSeekableBlobs(t, reg.addr, a1)

	reference := buildahRootfs(t, image1, namePrefix+"-publish-ref")
	m := mountArchive(t, out1.Archive, "--cache-dir", t.TempDir())
	compareTrees(t, "buildah mount", reference, "clipbuild mount (v2)", m.dir)
	if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
		t.Errorf("stopping mount: exit %d, %v", code, err)
	}
	checkClipMount(t, out1.Archive, reference)

	writeLast("second, longer\n")
	proxy.reset()
	image2 := imageName("publish-2")
	out2, res := buildV2(t, dir, image2, flags...)
	checkV2Result(t, out2, res, proxy.addr+"/pub/")
	a2 := openArchive(t, out2.Archive)
	n := len(a2.OCI.Layers)
	if n != len(a1.OCI.Layers) || n < 3 {
		t.Fatalf("rebuild has %d layers, first build %d; want the same, at least 3", n, len(a1.OCI.Layers))
	}
	if diff := cmp.Diff(a1.OCI.Layers[:n-1], a2.OCI.Layers[:n-1]); diff != "" {
		t.Fatalf("buildah rebuilt more than the last layer (-first +second):\n%s", diff)
	}
	if a1.OCI.Layers[n-1] == a2.OCI.Layers[n-1] {
		t.Fatalf("the last layer did not change")
	}
	if got := proxy.count(http.MethodPut, "/blobs/uploads/"); got != 2 {
		t.Errorf("rebuild committed %d blob uploads, want 2 (the last layer and the config)", got)
	}
	sent, patched := proxy.stats()
	m2 := pushedManifest(t, reg.addr, a2)
	t.Logf("rebuild: registry sent %d bytes, clipbuild uploaded %d blob bytes (last layer %d, config %d) for %d image bytes",
		sent, patched, m2.Layers[n-1].Size, m2.Config.Size, out2.ImageBytes)
	if limit := m2.Layers[n-1].Size + m2.Config.Size; patched > limit {
		t.Errorf("rebuild sent %d blob bytes, want at most %d (the last layer and the config)", patched, limit)
	}
	if limit := out2.ImageBytes / 100; sent > limit {
		t.Errorf("the registry sent %d bytes during the rebuild, want at most %d (1%% of %d)", sent, limit, out2.ImageBytes)
	}
	checkSeekableBlobs(t, reg.addr, a2)
	reference2 := buildahRootfs(t, image2, namePrefix+"-publish-ref2")
	m = mountArchive(t, out2.Archive, "--cache-dir", t.TempDir())
	compareTrees(t, "buildah mount", reference2, "clipbuild mount (v2 rebuild)", m.dir)
	tree{t, "clipbuild mount (v2 rebuild)", m.dir}.file("last.txt", "second, longer\n")
	if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
		t.Errorf("stopping mount: exit %d, %v", code, err)
	}
}

// checkClipMount mounts the archive with clip's own runtime, reading with
// its gzip checkpoints, and compares types and contents with reference
// (clip masks modes and splits hard links, so only those are compared).
func checkClipMount(t *testing.T, archivePath, reference string) {
	t.Helper()
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(io.Discard)
	archive.RouteClipLogs(l)
	mnt := filepath.Join(t.TempDir(), "clipmnt")
	start, serverErr, server, err := clip.MountArchive(clip.MountOptions{ArchivePath: archivePath, MountPoint: mnt, CachePath: t.TempDir(), UseCheckpoints: true})
	if err != nil {
		t.Fatalf("clip.MountArchive() = %v", err)
	}
	if err := start(); err != nil {
		t.Fatal(err)
	}
	if err := server.WaitMount(); err != nil {
		t.Fatalf("clip's server: %v", err)
	}
	defer func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmounting clip's mount: %v", err)
		}
		select {
		case <-serverErr:
		case <-time.After(10 * time.Second):
			t.Errorf("clip's server did not stop")
		}
	}()
	want, err := archive.TreeFromDir(context.Background(), reference)
	if err != nil {
		t.Fatal(err)
	}
	got, err := archive.TreeFromDir(context.Background(), mnt)
	if err != nil {
		t.Fatalf("TreeFromDir(clip's mount) = %v", err)
	}
	contents := func(tr archive.Tree) map[string]archive.Entry {
		m := map[string]archive.Entry{}
		for p, e := range tr {
			m[p] = archive.Entry{Type: e.Type, Size: e.Size, Digest: e.Digest, Target: e.Target}
		}
		return m
	}
	if d := cmp.Diff(contents(want), contents(got)); d != "" {
		t.Errorf("clip's mount differs from buildah's in types or contents (-buildah +clip):\n%s", d)
	}
}
