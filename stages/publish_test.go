package stages

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"go.podman.io/storage"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/registry"
)

// countingProxy sits in front of a registry and records every request
// and how many body bytes the registry sent back. fail, when set, answers
// a request with its status instead of passing it on.
type countingProxy struct {
	addr    string
	backend string

	mu   sync.Mutex
	reqs []string // "METHOD /path"
	sent int64
	fail func(r *http.Request) int
}

func startCountingProxy(t *testing.T, backend string) *countingProxy {
	t.Helper()
	target, _ := url.Parse("http://" + backend)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &countingProxy{backend: backend}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Method+" "+r.URL.Path)
		fail := p.fail
		p.mu.Unlock()
		if fail != nil {
			if status := fail(r); status != 0 {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(status)
				return
			}
		}
		rp.ServeHTTP(&countingResponse{ResponseWriter: w, p: p}, r)
	}))
	t.Cleanup(srv.Close)
	p.addr = strings.TrimPrefix(srv.URL, "http://")
	return p
}

// countingResponse counts response body bytes.
type countingResponse struct {
	http.ResponseWriter
	p *countingProxy
}

func (w *countingResponse) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.p.mu.Lock()
	w.p.sent += int64(n)
	w.p.mu.Unlock()
	return n, err
}

// reset forgets what was counted so far.
func (p *countingProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs, p.sent = nil, 0
}

// count is how many requests had method and a path containing part.
func (p *countingProxy) count(method, part string) int {
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

func (p *countingProxy) bytesSent() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// publishEnv is a registry behind a counting proxy and a vfs store.
type publishEnv struct {
	proxy *countingProxy
	reg   registry.Options
	store storage.Store
	sopts storage.StoreOptions
	cache string
}

func newPublishEnv(t *testing.T) *publishEnv {
	t.Helper()
	addr, o := policyRegistry(t)
	store, sopts := testStore(t, "vfs")
	return &publishEnv{proxy: startCountingProxy(t, addr), reg: o, store: store, sopts: sopts, cache: filepath.Join(t.TempDir(), "cache")}
}

// publisher publishes to the proxy's ns namespace with 16 KiB members, so
// that the test layers have several.
func (e *publishEnv) publisher(t *testing.T, ns string, opts ...PublishOption) *Publisher {
	t.Helper()
	l := logrus.New()
	l.SetOutput(tWriter{t})
	l.SetLevel(logrus.DebugLevel)
	opts = append([]PublishOption{WithPublishStore(e.sopts), WithPublishCache(e.cache), WithMemberSize(16 << 10),
		WithPublishLog(logrus.NewEntry(l))}, opts...)
	p, err := NewPublisher(e.proxy.addr+"/"+ns, e.reg, opts...)
	if err != nil {
		t.Fatalf("NewPublisher() = %v", err)
	}
	return p
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// publish publishes the image named name and opens its archive.
func (e *publishEnv) publish(t *testing.T, p *Publisher, name, id string) (Indexed, *archive.Archive) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.clip")
	res, err := p.Publish(context.Background(), Image{Name: name, ID: id}, out)
	if err != nil {
		t.Fatalf("Publish(%s) = %v", name, err)
	}
	a, err := archive.Open(out)
	if err != nil {
		t.Fatalf("archive.Open() = %v", err)
	}
	return res, a
}

// publishLayers are layers worth compressing in members: many small
// files, a file of text spanning several members, a file of random bytes,
// and the entry kinds of testLayers.
func publishLayers(t *testing.T, seed int64) [][]byte {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	random := make([]byte, 100<<10)
	rng.Read(random)
	var small []storeEntry
	small = append(small, storeEntry{name: "usr/", typ: tar.TypeDir, mode: 0o755}, storeEntry{name: "usr/share/", typ: tar.TypeDir, mode: 0o755})
	for i := range 200 {
		small = append(small, storeEntry{name: fmt.Sprintf("usr/share/f%03d", i), typ: tar.TypeReg, mode: 0o644,
			body: strings.Repeat(fmt.Sprintf("line %d of file %d\n", rng.Intn(1000), i), 1+rng.Intn(60))})
	}
	var text strings.Builder
	for text.Len() < 120<<10 {
		fmt.Fprintf(&text, "word%d ", rng.Intn(5000))
	}
	layers := testLayers(t)
	return append(layers[:2],
		storeTar(t, small...),
		storeTar(t, storeEntry{name: "big.txt", typ: tar.TypeReg, mode: 0o644, body: text.String()},
			storeEntry{name: "random.bin", typ: tar.TypeReg, mode: 0o600, body: string(random)}),
		layers[2],
	)
}

// indexOf indexes layers with archive.Indexer straight from their tars,
// naming them by the blobs the archive lists: the archive Publish wrote
// must be this one.
func indexOf(t *testing.T, layers [][]byte, blobs []string) *archive.Indexer {
	t.Helper()
	ix := archive.NewIndexer()
	for i, l := range layers {
		if err := ix.AddLayer(context.Background(), blobs[i], bytes.NewReader(l), archive.WithContentHashes()); err != nil {
			t.Fatalf("AddLayer(%d) = %v", i, err)
		}
	}
	return ix
}

// getBlob fetches a blob from the registry itself, past the proxy.
func getBlob(t *testing.T, backend, repo, dg string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + backend + "/v2/" + repo + "/blobs/" + dg)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET blob %s: %s", dg, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// getManifest fetches a manifest from the registry itself, and its bytes.
func getManifest(t *testing.T, backend, repo, ref string) (imgspecv1.Manifest, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+backend+"/v2/"+repo+"/manifests/"+ref, nil)
	req.Header.Set("Accept", imgspecv1.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET manifest %s: %s", ref, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return m, body
}

// checkArchive checks a's tree against the Indexer over the same layers,
// and its storage info and trailer against what Publish returned.
func checkArchive(t *testing.T, a *archive.Archive, res Indexed, layers [][]byte, id string) {
	t.Helper()
	if a.Version() != 2 {
		t.Fatalf("archive version = %d, want 2", a.Version())
	}
	if got, want := len(a.OCI.Layers), len(layers); got != want {
		t.Fatalf("archive lists %d layers, want %d", got, want)
	}
	ix := indexOf(t, layers, a.OCI.Layers)
	if diff := cmp.Diff(ix.Nodes(), a.Nodes()); diff != "" {
		t.Errorf("archive nodes differ from the Indexer's (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ix.Xattrs(), a.Trailer.Xattrs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("archive xattrs differ (-want +got):\n%s", diff)
	}
	if got, want := a.OCI.Reference, "id-"+id; got != want {
		t.Errorf("OCI.Reference = %q, want %q", got, want)
	}
	if got, want := a.Trailer.ImageRef, res.ImageRef; got != want || !strings.HasSuffix(got, "@"+res.ManifestDigest) {
		t.Errorf("Trailer.ImageRef = %q, want %q pinned by %s", got, want, res.ManifestDigest)
	}
	var uncompressed int64
	for i, dg := range a.OCI.Layers {
		uncompressed += int64(len(layers[i]))
		if got, want := a.OCI.DecompressedHashByLayer[dg], digest.FromBytes(layers[i]).Encoded(); got != want {
			t.Errorf("DecompressedHashByLayer[%s] = %s, want %s", dg, got, want)
		}
		members := a.Trailer.Members[dg]
		idx := a.OCI.GzipIdxByLayer[dg]
		if idx == nil || len(idx.Checkpoints) != len(members) || len(members) == 0 {
			t.Fatalf("layer %d: %d checkpoints for %d members, want one per member", i, len(idx.Checkpoints), len(members))
		}
		for j, m := range members {
			if c := idx.Checkpoints[j]; c.COff != m.COff || c.UOff != m.UOff {
				t.Errorf("layer %d checkpoint %d = %+v, want member start %d/%d", i, j, c, m.COff, m.UOff)
			}
		}
	}
	if res.UncompressedBytes != uncompressed {
		t.Errorf("UncompressedBytes = %d, want %d", res.UncompressedBytes, uncompressed)
	}
}

func TestPublishWritesTheIndexersArchiveOfSeekableBlobs(t *testing.T) {
	env := newPublishEnv(t)
	layers := publishLayers(t, 1)
	id := putImage(t, env.store, "localhost/pub:latest", layers, nil, false)
	res, a := env.publish(t, env.publisher(t, "ns"), "localhost/pub:latest", id)
	checkArchive(t, a, res, layers, id)

	// Nothing was read back: no blob GETs, and the registry sent only
	// small answers (the manifest PUT's and the HEADs' have no body).
	if n := env.proxy.count(http.MethodGet, "/blobs/sha256:"); n != 0 {
		t.Errorf("publish sent %d blob GETs, want 0", n)
	}
	if n := env.proxy.bytesSent(); n > res.ImageBytes/100 {
		t.Errorf("registry sent %d bytes during publish, want at most 1%% of %d", n, res.ImageBytes)
	}

	repo := a.OCI.Repository
	m, body := getManifest(t, env.proxy.backend, repo, a.OCI.Reference)
	if got := digest.FromBytes(body).String(); got != res.ManifestDigest || a.Trailer.ManifestDigest != got {
		t.Errorf("ManifestDigest = %s (trailer %s), the tag's manifest is %s", res.ManifestDigest, a.Trailer.ManifestDigest, got)
	}
	if m.MediaType != imgspecv1.MediaTypeImageManifest {
		t.Errorf("manifest media type = %q, want %q", m.MediaType, imgspecv1.MediaTypeImageManifest)
	}
	var imageBytes int64
	for i, l := range m.Layers {
		if l.MediaType != imgspecv1.MediaTypeImageLayerGzip {
			t.Errorf("manifest layer %d media type = %s, want %s", i, l.MediaType, imgspecv1.MediaTypeImageLayerGzip)
		}
		if got, want := l.Digest.String(), a.OCI.Layers[i]; got != want {
			t.Errorf("manifest layer %d = %s, archive says %s", i, got, want)
		}
		imageBytes += l.Size
		blob := getBlob(t, env.proxy.backend, repo, l.Digest.String())
		if got := digest.FromBytes(blob); got != l.Digest || int64(len(blob)) != l.Size {
			t.Fatalf("blob %s is %s (%d bytes), manifest says %d bytes", l.Digest, got, len(blob), l.Size)
		}
		gz := exec.Command("gzip", "-t")
		gz.Stdin = bytes.NewReader(blob)
		if out, err := gz.CombinedOutput(); err != nil {
			t.Errorf("gzip -t of layer %d: %v\n%s", i, err, out)
		}
		members := a.Trailer.Members[l.Digest.String()]
		if i == 3 && len(members) < 3 {
			t.Errorf("layer %d has %d members, want several (it holds 220 KiB)", i, len(members))
		}
		var end int64
		for j, mb := range members {
			if mb.COff != end || mb.COff+mb.CLen > int64(len(blob)) {
				t.Fatalf("layer %d member %d at %d+%d does not follow %d in a %d-byte blob", i, j, mb.COff, mb.CLen, end, len(blob))
			}
			end = mb.COff + mb.CLen
			data, err := archive.InflateMember(blob[mb.COff:end], mb)
			if err != nil {
				t.Fatalf("layer %d member %d: %v", i, j, err)
			}
			if !bytes.Equal(data, layers[i][mb.UOff:mb.UOff+mb.ULen]) {
				t.Errorf("layer %d member %d inflates to other bytes than the layer's %d-%d", i, j, mb.UOff, mb.UOff+mb.ULen)
			}
		}
		if end != int64(len(blob)) {
			t.Errorf("layer %d members end at %d, blob is %d bytes", i, end, len(blob))
		}
	}
	if res.ImageBytes != imageBytes {
		t.Errorf("ImageBytes = %d, want %d (the manifest's)", res.ImageBytes, imageBytes)
	}
	img, err := NewLayerSource(env.store).Layers(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got := getBlob(t, env.proxy.backend, repo, m.Config.Digest.String()); !bytes.Equal(got, img.ConfigBlob) {
		t.Errorf("pushed config differs from the stored config")
	}
}

// sameArchive reports how two archives of the same image differ in what
// they hold (the encoding of maps may differ from run to run).
func sameArchive(t *testing.T, want, got *archive.Archive) {
	t.Helper()
	if diff := cmp.Diff(want.Nodes(), got.Nodes()); diff != "" {
		t.Errorf("nodes differ (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(want.OCI, got.OCI); diff != "" {
		t.Errorf("storage info differs (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(want.Trailer, got.Trailer, cmpopts.IgnoreFields(archive.Trailer{}, "MetadataSHA256")); diff != "" {
		t.Errorf("trailer differs (-first +second):\n%s", diff)
	}
}

// uploads is how many blob uploads were committed, and how many chunks
// were sent.
func uploads(p *countingProxy) (commits, chunks int) {
	return p.count(http.MethodPut, "/blobs/uploads/"), p.count(http.MethodPatch, "/blobs/uploads/")
}

func TestPublishAgainUploadsNothing(t *testing.T) {
	env := newPublishEnv(t)
	layers := publishLayers(t, 2)
	id := putImage(t, env.store, "localhost/again:latest", layers, nil, false)
	p := env.publisher(t, "ns")
	_, first := env.publish(t, p, "localhost/again:latest", id)
	if commits, _ := uploads(env.proxy); commits != len(layers)+1 {
		t.Errorf("first publish committed %d uploads, want %d (layers and config)", commits, len(layers)+1)
	}
	env.proxy.reset()
	res, second := env.publish(t, p, "localhost/again:latest", id)
	if commits, chunks := uploads(env.proxy); commits != 0 || chunks != 0 || env.proxy.count(http.MethodPost, "/blobs/uploads/") != 0 {
		t.Errorf("second publish: %d commits, %d chunks, %d sessions; want none", commits, chunks, env.proxy.count(http.MethodPost, "/blobs/uploads/"))
	}
	if n := env.proxy.count(http.MethodPut, "/manifests/"); n != 1 {
		t.Errorf("second publish put %d manifests, want 1", n)
	}
	sameArchive(t, first, second)
	checkArchive(t, second, res, layers, id)
}

func TestPublishRebuildUploadsOnlyTheChangedLayer(t *testing.T) {
	env := newPublishEnv(t)
	layers := publishLayers(t, 3)
	id := putImage(t, env.store, "localhost/rebuild:1", layers, nil, false)
	p := env.publisher(t, "ns")
	_, first := env.publish(t, p, "localhost/rebuild:1", id)

	changed := append(append([][]byte(nil), layers[:len(layers)-1]...),
		storeTar(t, storeEntry{name: "changed.txt", typ: tar.TypeReg, mode: 0o644, body: strings.Repeat("changed\n", 5000)}))
	id2 := putImage(t, env.store, "localhost/rebuild:2", changed, nil, false)
	env.proxy.reset()
	res, second := env.publish(t, p, "localhost/rebuild:2", id2)
	checkArchive(t, second, res, changed, id2)
	// One layer and the config: two sessions, two commits.
	if commits := env.proxy.count(http.MethodPut, "/blobs/uploads/"); commits != 2 {
		t.Errorf("rebuild committed %d uploads, want 2 (the changed layer and the config)", commits)
	}
	if n := env.proxy.count(http.MethodPost, "/blobs/uploads/"); n != 2 {
		t.Errorf("rebuild opened %d upload sessions, want 2", n)
	}
	for i := range len(layers) - 1 {
		if got, want := second.OCI.Layers[i], first.OCI.Layers[i]; got != want {
			t.Errorf("layer %d is %s in the rebuild, %s before", i, got, want)
		}
	}
	if first.OCI.Layers[len(layers)-1] == second.OCI.Layers[len(layers)-1] {
		t.Errorf("changed last layer kept its blob %s", first.OCI.Layers[len(layers)-1])
	}
}

// cacheEntries lists the cache's entry files.
func cacheEntries(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestPublishRecomputesCorruptCacheEntries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func([]byte) []byte
	}{
		{"flipped byte", func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-10] }},
		{"empty", func([]byte) []byte { return nil }},
		{"other magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"checksum of nothing", func([]byte) []byte { s := sha256.Sum256(nil); return append(append([]byte{}, cacheMagic...), s[:]...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newPublishEnv(t)
			layers := publishLayers(t, 4)
			id := putImage(t, env.store, "localhost/corrupt:latest", layers, nil, false)
			p := env.publisher(t, "ns")
			_, first := env.publish(t, p, "localhost/corrupt:latest", id)
			entries := cacheEntries(t, env.cache)
			// The empty layer's entry is shared by nothing else; damage all.
			if len(entries) == 0 {
				t.Fatal("publish wrote no cache entries")
			}
			for _, e := range entries {
				b, err := os.ReadFile(e)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(e, tc.corrupt(b), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			env.proxy.reset()
			res, second := env.publish(t, p, "localhost/corrupt:latest", id)
			if n := env.proxy.count(http.MethodPost, "/blobs/uploads/"); n != len(layers) {
				t.Errorf("publish with damaged cache opened %d upload sessions, want %d (every layer again)", n, len(layers))
			}
			sameArchive(t, first, second)
			checkArchive(t, second, res, layers, id)
			// The entries were rewritten whole: a third publish uploads nothing.
			env.proxy.reset()
			env.publish(t, p, "localhost/corrupt:latest", id)
			if n := env.proxy.count(http.MethodPost, "/blobs/uploads/"); n != 0 {
				t.Errorf("publish after the cache was rewritten opened %d upload sessions, want 0", n)
			}
		})
	}
}

func TestPublishRecomputesLayerDeletedFromRegistry(t *testing.T) {
	env := newPublishEnv(t)
	layers := publishLayers(t, 5)
	id := putImage(t, env.store, "localhost/deleted:latest", layers, nil, false)
	p := env.publisher(t, "ns")
	_, first := env.publish(t, p, "localhost/deleted:latest", id)
	gone := first.OCI.Layers[3]
	req, _ := http.NewRequest(http.MethodDelete, "http://"+env.proxy.backend+"/v2/"+first.OCI.Repository+"/blobs/"+gone, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE blob: %s", resp.Status)
	}
	env.proxy.reset()
	res, second := env.publish(t, p, "localhost/deleted:latest", id)
	// Only the deleted layer goes again (the config is still there).
	if n := env.proxy.count(http.MethodPost, "/blobs/uploads/"); n != 1 {
		t.Errorf("publish opened %d upload sessions, want 1 (the deleted layer)", n)
	}
	sameArchive(t, first, second)
	checkArchive(t, second, res, layers, id)
	if b := getBlob(t, env.proxy.backend, first.OCI.Repository, gone); digest.FromBytes(b).String() != gone {
		t.Errorf("the deleted blob was not pushed again")
	}
}

func TestPublishMountsFromAnotherRepository(t *testing.T) {
	env := newPublishEnv(t)
	layers := publishLayers(t, 6)
	id := putImage(t, env.store, "localhost/shared:latest", layers, nil, false)
	_, first := env.publish(t, env.publisher(t, "one"), "localhost/shared:latest", id)
	env.proxy.reset()
	res, second := env.publish(t, env.publisher(t, "two"), "localhost/shared:latest", id)
	checkArchive(t, second, res, layers, id)
	if second.OCI.Repository == first.OCI.Repository {
		t.Fatalf("both publishes went to %s", first.OCI.Repository)
	}
	if _, chunks := uploads(env.proxy); chunks > 1 {
		t.Errorf("publish to a second repository sent %d chunks, want at most the config's", chunks)
	}
	if n := env.proxy.count(http.MethodPost, "/blobs/uploads/"); n < len(layers) {
		t.Errorf("publish to a second repository made %d mount requests, want one per layer", n)
	}
	if diff := cmp.Diff(first.OCI.Layers, second.OCI.Layers); diff != "" {
		t.Errorf("layers differ between repositories (-one +two):\n%s", diff)
	}
}

func TestPublishRetriesAFailedUploadAsAWholePass(t *testing.T) {
	env := newPublishEnv(t)
	layers := publishLayers(t, 7)
	id := putImage(t, env.store, "localhost/retry:latest", layers, nil, false)
	// Every request is tried once, so a failed chunk fails the upload and
	// only the pass's retry can save it.
	p := env.publisher(t, "ns", WithPublishPushOptions(registry.WithPushBackoff(registry.Backoff{Attempts: 1})))
	var failed int
	env.proxy.fail = func(r *http.Request) int {
		if r.Method == http.MethodPatch && failed < 2 {
			failed++
			return http.StatusServiceUnavailable
		}
		return 0
	}
	res, a := env.publish(t, p, "localhost/retry:latest", id)
	if failed != 2 {
		t.Fatalf("the proxy failed %d chunks, want 2", failed)
	}
	checkArchive(t, a, res, layers, id)
	if n := env.proxy.count(http.MethodPost, "/blobs/uploads/"); n != len(layers)+1+2 {
		t.Errorf("publish opened %d upload sessions, want %d (each layer, the config, two retried passes)", n, len(layers)+3)
	}
}

func TestPublishRefusesUnknownSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  PublishOption
	}{
		{"level 0", WithCompressionLevel(0)},
		{"level 10", WithCompressionLevel(10)},
		{"tiny members", WithMemberSize(100)},
		{"no compressors", WithCompressors(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewPublisher("127.0.0.1:5000", registry.DefaultOptions(), tc.opt); err == nil {
				t.Errorf("NewPublisher(%s) = nil error, want one", tc.name)
			}
		})
	}
}

func TestPublishCacheKeyNamesSettings(t *testing.T) {
	a, _ := NewPublisher("127.0.0.1:5000", registry.DefaultOptions())
	b, _ := NewPublisher("127.0.0.1:5000", registry.DefaultOptions(), WithCompressionLevel(6))
	c, _ := NewPublisher("127.0.0.1:5000", registry.DefaultOptions(), WithMemberSize(2<<20))
	d, _ := NewPublisher("127.0.0.1:5000", registry.DefaultOptions(), WithCompressors(7))
	if a.settings() == b.settings() || a.settings() == c.settings() {
		t.Errorf("settings %q, %q, %q: want level and member size in the key", a.settings(), b.settings(), c.settings())
	}
	if a.settings() != d.settings() {
		t.Errorf("settings %q and %q differ by compressor count, which does not change the blob", a.settings(), d.settings())
	}
}
