package registry_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	"github.com/clipbuild/clipbuild/registry"
)

// startUploadRegistry starts the embedded registry on a random loopback
// port, with the credential lookup isolated from the machine's own auth
// files, and returns its address and storage root.
func startUploadRegistry(t *testing.T, opts ...registry.ServerOption) (addr, root string) {
	t.Helper()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, v := range []string{"REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	registry.RouteLogs(quiet) // dropped connections are logged as errors
	root = t.TempDir()
	s, err := registry.Start(context.Background(), "127.0.0.1:0", root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("registry shutdown: %v", err)
		}
	})
	return s.Addr, root
}

// uploadSessions lists the upload sessions the embedded registry at root
// still knows for repo: those with a startedat file, which is what
// distribution resumes a session from. (A deleted session can leave an
// empty hashstates directory behind.)
func uploadSessions(t *testing.T, root, repo string) []string {
	t.Helper()
	dir := filepath.Join(root, "docker/registry/v2/repositories", repo, "_uploads")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "startedat")); err == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// testLog is a logrus entry writing to t.Log, for the Pusher's retries.
func testLog(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(tWriter{t})
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newPusher(t *testing.T, repo string, o registry.Options, opts ...registry.PushOption) *registry.Pusher {
	t.Helper()
	opts = append([]registry.PushOption{registry.WithPushLog(testLog(t))}, opts...)
	p, err := registry.NewPusher(context.Background(), repo, o, opts...)
	if err != nil {
		t.Fatalf("NewPusher(%s) = %v", repo, err)
	}
	return p
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// readBlob reads blob dg of repo back through the v2 client's reader.
func readBlob(t *testing.T, repo string, dg digest.Digest) []byte {
	t.Helper()
	b, err := registry.NewBlobs(repo, registry.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := b.Open(context.Background(), dg.String())
	if err != nil {
		t.Fatalf("Open(%s) = %v", dg, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", dg, err)
	}
	return got
}

// exchange is one request a proxy passed on (or broke), and its answer.
type exchange struct {
	method, path string
	contentRange string // of the request
	length       int64  // of the request body
	status       int    // 0: the proxy dropped the connection
	rng          string // Range of the response
}

// start is where a PATCH's Content-Range begins.
func (e exchange) start() int64 {
	n, _ := strconv.ParseInt(strings.Split(e.contentRange, "-")[0], 10, 64)
	return n
}

// upProxy is a reverse proxy in front of a registry that records every
// exchange and lets a test break some of them.
type upProxy struct {
	t        *testing.T
	upstream string
	srv      *httptest.Server
	// fault, if set, may handle a request itself (and return true)
	// instead of passing it on.
	fault func(w http.ResponseWriter, r *http.Request) bool

	mu  sync.Mutex
	log []exchange
}

func newUpProxy(t *testing.T, upstream string) *upProxy {
	px := &upProxy{t: t, upstream: "http://" + upstream}
	target, _ := url.Parse(px.upstream)
	rp := httputil.NewSingleHostReverseProxy(target) // keeps the client's Host, so Locations name the proxy
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		px.record(resp.Request, resp.StatusCode, resp.Header.Get("Range"))
		return nil
	}
	px.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if px.fault != nil && px.fault(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(px.srv.Close)
	return px
}

func (px *upProxy) addr() string { return px.srv.Listener.Addr().String() }

func (px *upProxy) record(r *http.Request, status int, rng string) {
	px.mu.Lock()
	defer px.mu.Unlock()
	px.log = append(px.log, exchange{
		method: r.Method, path: r.URL.Path, contentRange: r.Header.Get("Content-Range"),
		length: r.ContentLength, status: status, rng: rng,
	})
}

func (px *upProxy) exchanges(method string) []exchange {
	px.mu.Lock()
	defer px.mu.Unlock()
	var out []exchange
	for _, e := range px.log {
		if method == "" || e.method == method {
			out = append(out, e)
		}
	}
	return out
}

// dropAfter passes the first n bytes of r's body to the registry, then
// breaks the connection to the registry and the client's.
func (px *upProxy) dropAfter(w http.ResponseWriter, r *http.Request, n int64) {
	body := io.MultiReader(io.LimitReader(r.Body, n), failingReader{})
	out, err := http.NewRequestWithContext(r.Context(), r.Method, px.upstream+r.URL.RequestURI(), body)
	if err != nil {
		px.t.Error(err)
		return
	}
	out.Header, out.Host, out.ContentLength = r.Header.Clone(), r.Host, r.ContentLength
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	if resp, err := tr.RoundTrip(out); err == nil {
		resp.Body.Close()
		px.t.Errorf("registry answered a truncated %s with %s", r.Method, resp.Status)
	}
	px.record(r, 0, "")
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		px.t.Error(err)
		return
	}
	conn.Close()
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) {
	return 0, errors.New("connection cut by the test proxy")
}

func TestPusherUploadBlobInChunks(t *testing.T) {
	addr, root := startUploadRegistry(t)
	px := newUpProxy(t, addr)
	const chunk = 3 << 20
	data := randomBytes(t, 20<<20)
	p := newPusher(t, px.addr()+"/chunks/blob", registry.DefaultOptions(), registry.WithChunkSize(chunk))

	dg, size, err := p.UploadBlob(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(data); dg != want || size != int64(len(data)) {
		t.Errorf("UploadBlob() = %s, %d, want %s, %d", dg, size, want, len(data))
	}

	patches := px.exchanges(http.MethodPatch)
	if got, want := len(patches), 7; got != want {
		t.Errorf("PATCH requests = %d, want %d (20 MiB in 3 MiB chunks)", got, want)
	}
	for i, e := range patches {
		wantLen := int64(chunk)
		if i == len(patches)-1 {
			wantLen = int64(len(data)) - int64(i)*chunk
		}
		wantRange := fmt.Sprintf("%d-%d", int64(i)*chunk, int64(i)*chunk+wantLen-1)
		if e.contentRange != wantRange || e.length != wantLen || e.status != http.StatusAccepted {
			t.Errorf("PATCH %d: Content-Range %q, length %d, status %d; want %q, %d, 202", i, e.contentRange, e.length, e.status, wantRange, wantLen)
		}
	}
	if puts := px.exchanges(http.MethodPut); len(puts) != 1 || puts[0].status != http.StatusCreated {
		t.Errorf("PUT requests = %+v, want one answered 201", puts)
	}

	if got := readBlob(t, addr+"/chunks/blob", dg); !bytes.Equal(got, data) {
		t.Errorf("blob read back by digest: %d bytes differing from the %d uploaded", len(got), len(data))
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/chunks/blob/blobs/"+dg.String(), nil)
	req.Header.Set("Range", "bytes=5000000-9999999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	part, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, data[5000000:10000000]) {
		t.Errorf("ranged read: status %d, %d bytes (equal: %t), want 206 and bytes 5000000-9999999",
			resp.StatusCode, len(part), bytes.Equal(part, data[5000000:10000000]))
	}
	if s := uploadSessions(t, root, "chunks/blob"); len(s) != 0 {
		t.Errorf("upload sessions left = %q, want none", s)
	}
}

func TestPusherBlobExists(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	p := newPusher(t, addr+"/exists/repo", registry.DefaultOptions())
	data := randomBytes(t, 1234)
	dg, _, err := p.UploadBlob(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		dg       digest.Digest
		wantOK   bool
		wantSize int64
	}{
		{"uploaded", dg, true, int64(len(data))},
		{"never uploaded", digest.FromString("not uploaded"), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size, ok, err := p.BlobExists(context.Background(), tt.dg)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK || (ok && size != tt.wantSize) {
				t.Errorf("BlobExists(%s) = %d, %t, want %d, %t", tt.dg, size, ok, tt.wantSize, tt.wantOK)
			}
		})
	}
}

func TestPusherMountBlob(t *testing.T) {
	addr, root := startUploadRegistry(t)
	px := newUpProxy(t, addr)
	ctx := context.Background()
	from := newPusher(t, px.addr()+"/mount/from", registry.DefaultOptions())
	data := randomBytes(t, 100<<10)
	dg, _, err := from.UploadBlob(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("present", func(t *testing.T) {
		to := newPusher(t, px.addr()+"/mount/to", registry.DefaultOptions())
		if _, ok, err := to.BlobExists(ctx, dg); err != nil || ok {
			t.Fatalf("BlobExists before mounting = %t, %v, want false", ok, err)
		}
		mounted, err := to.MountBlob(ctx, dg, px.addr()+"/mount/from")
		if err != nil || !mounted {
			t.Fatalf("MountBlob() = %t, %v, want true", mounted, err)
		}
		if size, ok, err := to.BlobExists(ctx, dg); err != nil || !ok || size != int64(len(data)) {
			t.Errorf("BlobExists after mounting = %d, %t, %v, want %d, true", size, ok, err, len(data))
		}
		if got := readBlob(t, addr+"/mount/to", dg); !bytes.Equal(got, data) {
			t.Errorf("mounted blob read back: %d bytes differing from the %d uploaded", len(got), len(data))
		}
	})

	t.Run("absent falls back", func(t *testing.T) {
		to := newPusher(t, px.addr()+"/mount/other", registry.DefaultOptions())
		missing := digest.FromString("in no repository")
		mounted, err := to.MountBlob(ctx, missing, px.addr()+"/mount/from")
		if err != nil || mounted {
			t.Fatalf("MountBlob(missing) = %t, %v, want false, nil", mounted, err)
		}
		var posts, deletes []exchange
		for _, e := range px.exchanges("") {
			if strings.HasPrefix(e.path, "/v2/mount/other/") {
				switch e.method {
				case http.MethodPost:
					posts = append(posts, e)
				case http.MethodDelete:
					deletes = append(deletes, e)
				}
			}
		}
		if len(posts) != 1 || posts[0].status != http.StatusAccepted {
			t.Errorf("mount POSTs = %+v, want one answered 202", posts)
		}
		if len(deletes) != 1 || deletes[0].status != http.StatusNoContent {
			t.Errorf("DELETEs of the session the mount opened = %+v, want one answered 204", deletes)
		}
		if s := uploadSessions(t, root, "mount/other"); len(s) != 0 {
			t.Errorf("upload sessions left = %q, want none", s)
		}
	})

	t.Run("another registry", func(t *testing.T) {
		to := newPusher(t, px.addr()+"/mount/to", registry.DefaultOptions())
		if _, err := to.MountBlob(ctx, dg, "127.0.0.2:1/mount/from"); err == nil || !strings.Contains(err.Error(), "another registry") {
			t.Errorf("MountBlob(from another registry) = %v, want an error saying so", err)
		}
	})
}

func TestPusherUploadResumesAfterDroppedConnection(t *testing.T) {
	addr, root := startUploadRegistry(t)
	px := newUpProxy(t, addr)
	const chunk = 2 << 20
	var dropped atomic.Bool
	px.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPatch || !strings.HasPrefix(r.Header.Get("Content-Range"), strconv.Itoa(chunk)+"-") || dropped.Swap(true) {
			return false
		}
		px.dropAfter(w, r, 700<<10+5)
		return true
	}
	data := randomBytes(t, 4*chunk+1000)
	p := newPusher(t, px.addr()+"/resume/blob", registry.DefaultOptions(),
		registry.WithChunkSize(chunk), registry.WithPushBackoff(registry.Backoff{Attempts: 4, Initial: 100 * time.Millisecond}))

	dg, size, err := p.UploadBlob(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(data); dg != want || size != int64(len(data)) {
		t.Errorf("UploadBlob() = %s, %d, want %s, %d", dg, size, want, len(data))
	}
	if got := readBlob(t, addr+"/resume/blob", dg); !bytes.Equal(got, data) {
		t.Errorf("blob read back: %d bytes differing from the %d uploaded", len(got), len(data))
	}

	log := px.exchanges("")
	drop := -1
	for i, e := range log {
		if e.status == 0 {
			if drop >= 0 {
				t.Fatalf("more than one dropped request: %+v", log)
			}
			drop = i
		}
	}
	if drop < 0 {
		t.Fatalf("the proxy dropped no request: %+v", log)
	}
	// After the drop: where the upload stands, then the rest of the chunk
	// from exactly there.
	if drop+2 >= len(log) || log[drop+1].method != http.MethodGet || log[drop+2].method != http.MethodPatch {
		t.Fatalf("requests after the drop = %+v, want GET (upload status) then PATCH", log[drop+1:])
	}
	status, resend := log[drop+1], log[drop+2]
	var last int64
	if _, err := fmt.Sscanf(status.rng, "0-%d", &last); err != nil || status.status != http.StatusNoContent {
		t.Fatalf("upload status: %d with Range %q, want 204 with 0-N", status.status, status.rng)
	}
	t.Logf("dropped PATCH %s after %d bytes; the registry then held 0-%d; resent %s", log[drop].contentRange, 700<<10+5, last, resend.contentRange)
	if resend.start() != last+1 {
		t.Errorf("resent PATCH Content-Range %q, want it to start at %d, where the registry said the upload stood", resend.contentRange, last+1)
	}
	if resend.start() <= chunk {
		t.Errorf("resent PATCH Content-Range %q starts at or before the dropped chunk's start %d: the registry kept %d bytes of it", resend.contentRange, chunk, last+1-chunk)
	}
	if s := uploadSessions(t, root, "resume/blob"); len(s) != 0 {
		t.Errorf("upload sessions left = %q, want none", s)
	}
}

func TestPusherUploadGivesUpAndDeletesSession(t *testing.T) {
	addr, root := startUploadRegistry(t)
	px := newUpProxy(t, addr)
	var patches atomic.Int32
	px.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPatch {
			return false
		}
		patches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"errors":[{"code":"UNAVAILABLE","message":"the test proxy always fails"}]}`)
		return true
	}
	repo := px.addr() + "/fails/blob"
	p := newPusher(t, repo, registry.DefaultOptions(),
		registry.WithPushBackoff(registry.Backoff{Attempts: 3, Initial: 10 * time.Millisecond}))

	_, _, err := p.UploadBlob(context.Background(), bytes.NewReader(randomBytes(t, 1<<20)))
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("UploadBlob() = %v, want the registry's 503", err)
	}
	if want := "uploading blob to " + repo + ": "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("UploadBlob() error %q, want it to start %q", err, want)
	}
	if got := patches.Load(); got != 3 {
		t.Errorf("PATCH attempts = %d, want 3", got)
	}
	deletes := px.exchanges(http.MethodDelete)
	if len(deletes) != 1 || deletes[0].status != http.StatusNoContent {
		t.Errorf("DELETEs = %+v, want one answered 204", deletes)
	}
	if s := uploadSessions(t, root, "fails/blob"); len(s) != 0 {
		t.Errorf("upload sessions left = %q, want none", s)
	}
}

func TestPusherCredentials(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("pusher:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ := startUploadRegistry(t, registry.WithHtpasswd(htpasswd))
	repo := addr + "/auth/blob"
	tests := []struct {
		name     string
		creds    string
		wantCode int // 0: success
	}{
		{"right", "pusher:s3cret", 0},
		{"wrong password", "pusher:nope", http.StatusUnauthorized},
		{"none", "", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := registry.DefaultOptions()
			o.Creds = tt.creds
			p := newPusher(t, repo, o)
			data := randomBytes(t, 4096)
			dg, _, err := p.UploadBlob(context.Background(), bytes.NewReader(data))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("UploadBlob() = %v", err)
				}
				if _, ok, err := p.BlobExists(context.Background(), dg); err != nil || !ok {
					t.Errorf("BlobExists(uploaded) = %t, %v, want true", ok, err)
				}
				return
			}
			t.Logf("UploadBlob() error: %v", err)
			var terr *transport.Error
			if !errors.As(err, &terr) || terr.StatusCode != tt.wantCode {
				t.Fatalf("UploadBlob() = %v, want status %d", err, tt.wantCode)
			}
			if !strings.HasPrefix(err.Error(), "uploading blob to "+repo+": ") || !strings.Contains(err.Error(), "UNAUTHORIZED") {
				t.Errorf("UploadBlob() error %q, want it to say it was uploading to %s and was unauthorized", err, repo)
			}
		})
	}
}

func TestPusherPutManifest(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	ctx := context.Background()
	p := newPusher(t, addr+"/manifest/image", registry.DefaultOptions())
	layer := randomBytes(t, 300<<10)
	ldg, lsize, err := p.UploadBlob(ctx, bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cdg := digest.FromBytes(config)
	if err := p.UploadBlobKnown(ctx, cdg, int64(len(config)), bytes.NewReader(config)); err != nil {
		t.Fatal(err)
	}
	if size, ok, err := p.BlobExists(ctx, cdg); err != nil || !ok || size != int64(len(config)) {
		t.Errorf("BlobExists(config) = %d, %t, %v, want %d, true", size, ok, err, len(config))
	}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cdg, Size: int64(len(config))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: ldg, Size: lsize}},
	}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	mdg, err := p.PutManifest(ctx, "v1", ocispec.MediaTypeImageManifest, body)
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(body); mdg != want {
		t.Errorf("PutManifest() = %s, want %s", mdg, want)
	}
	for _, ref := range []string{mdg.String(), "v1"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/manifest/image/manifests/"+ref, nil)
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) || resp.Header.Get("Docker-Content-Digest") != mdg.String() {
			t.Errorf("GET manifest %s: status %d, digest %s, body %s; want 200, %s, %s",
				ref, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), got, mdg, body)
		}
	}
}

// TestPusherAgainstGGCRRegistry pushes to go-containerregistry's in-memory
// registry, which answers with relative Locations, and has it ask for a
// larger minimum chunk than the Pusher's.
func TestPusherAgainstGGCRRegistry(t *testing.T) {
	const minChunk = 1 << 20
	var mu sync.Mutex
	var patchLens []int64
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			w.Header().Set("OCI-Chunk-Min-Length", strconv.Itoa(minChunk))
		case http.MethodPatch:
			mu.Lock()
			patchLens = append(patchLens, r.ContentLength)
			mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ctx := context.Background()
	p := newPusher(t, srv.Listener.Addr().String()+"/ggcr/blob", registry.DefaultOptions(), registry.WithChunkSize(256<<10))
	data := randomBytes(t, 2*minChunk+minChunk/2)

	dg, size, err := p.UploadBlob(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(data); dg != want || size != int64(len(data)) {
		t.Errorf("UploadBlob() = %s, %d, want %s, %d", dg, size, want, len(data))
	}
	if want := []int64{minChunk, minChunk, minChunk / 2}; fmt.Sprint(patchLens) != fmt.Sprint(want) {
		t.Errorf("PATCH lengths = %v, want %v (OCI-Chunk-Min-Length %d)", patchLens, want, minChunk)
	}
	if got := readBlob(t, srv.Listener.Addr().String()+"/ggcr/blob", dg); !bytes.Equal(got, data) {
		t.Errorf("blob read back: %d bytes differing from the %d uploaded", len(got), len(data))
	}
	if _, ok, err := p.BlobExists(ctx, dg); err != nil || !ok {
		t.Errorf("BlobExists(uploaded) = %t, %v, want true", ok, err)
	}
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	if _, err := p.PutManifest(ctx, "", ocispec.MediaTypeImageManifest, body); err != nil {
		t.Errorf("PutManifest() = %v", err)
	}
}

// TestPusherUploadResumesAfterOneByte drops the first chunk after one
// byte, so that the registry answers "Range: 0-0", which also means
// "nothing": the Pusher must find out which by being refused.
func TestPusherUploadResumesAfterOneByte(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	px := newUpProxy(t, addr)
	var dropped atomic.Bool
	px.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPatch || dropped.Swap(true) {
			return false
		}
		px.dropAfter(w, r, 1)
		return true
	}
	data := randomBytes(t, 64<<10)
	p := newPusher(t, px.addr()+"/resume/byte", registry.DefaultOptions(),
		registry.WithPushBackoff(registry.Backoff{Attempts: 4, Initial: 100 * time.Millisecond}))

	dg, _, err := p.UploadBlob(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, addr+"/resume/byte", dg); !bytes.Equal(got, data) {
		t.Errorf("blob read back: %d bytes differing from the %d uploaded", len(got), len(data))
	}
	var got []string
	for _, e := range px.exchanges("") {
		if e.method == http.MethodPatch || e.method == http.MethodGet && strings.Contains(e.path, "/uploads/") {
			got = append(got, fmt.Sprintf("%s %s %d %s", e.method, e.contentRange, e.status, e.rng))
		}
	}
	want := []string{
		"PATCH 0-65535 0 ",   // dropped after one byte
		"GET  204 0-0",       // nothing, or one byte?
		"PATCH 0-65535 416 ", // not nothing
		"GET  204 0-0",       // so one byte
		"PATCH 1-65535 202 0-65535",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("upload requests:\n got %q\nwant %q", got, want)
	}
}
