package registry_test

import (
	"bytes"
	"context"
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

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/clipbuild/clipbuild/registry"
)

// blobGet is one blob GET a rangeProxy saw, and what it answered.
type blobGet struct {
	rng, auth string
	status    int
	body      int64 // bytes of the answer's body
}

// rangeProxy is a reverse proxy in front of a registry that records every
// blob GET, and lets a test answer some requests itself.
type rangeProxy struct {
	srv *httptest.Server
	// handle, if set, may answer a request itself (and return true).
	handle func(w http.ResponseWriter, r *http.Request) bool
	// stripRange makes the proxy drop Range headers, as a server that
	// ignores them would.
	stripRange bool

	mu   sync.Mutex
	gets []blobGet
	// inflight and peak count concurrent blob GETs.
	inflight, peak int
}

func newRangeProxy(t *testing.T, upstream string) *rangeProxy {
	t.Helper()
	px := &rangeProxy{}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	px.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			if px.handle == nil || !px.handle(w, r) {
				rp.ServeHTTP(w, r)
			}
			return
		}
		px.mu.Lock()
		px.inflight++
		px.peak = max(px.peak, px.inflight)
		px.mu.Unlock()
		g := blobGet{rng: r.Header.Get("Range"), auth: r.Header.Get("Authorization")}
		if px.stripRange {
			r.Header.Del("Range")
		}
		rec := httptest.NewRecorder()
		if px.handle == nil || !px.handle(rec, r) {
			time.Sleep(5 * time.Millisecond) // so that parallel GETs overlap
			rp.ServeHTTP(rec, r)
		}
		// Recorded before the client can have the answer, so a test sees
		// every GET that its read made.
		g.status, g.body = rec.Code, int64(rec.Body.Len())
		px.mu.Lock()
		px.inflight--
		px.gets = append(px.gets, g)
		px.mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(px.srv.Close)
	return px
}

func (px *rangeProxy) addr() string { return px.srv.Listener.Addr().String() }

func (px *rangeProxy) blobGets() []blobGet {
	px.mu.Lock()
	defer px.mu.Unlock()
	return append([]blobGet(nil), px.gets...)
}

// pushBlob uploads data to repo and returns its digest.
func pushBlob(t *testing.T, repo string, o registry.Options, data []byte) digest.Digest {
	t.Helper()
	dg, _, err := newPusher(t, repo, o).UploadBlob(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatalf("UploadBlob() = %v", err)
	}
	return dg
}

func newRangeReader(t *testing.T, repo string, o registry.Options, opts ...registry.RangeOption) *registry.RangeReader {
	t.Helper()
	opts = append([]registry.RangeOption{registry.WithRangeLog(testLog(t)), registry.WithRangeBackoff(registry.Backoff{Attempts: 3, Initial: 10 * time.Millisecond})}, opts...)
	r, err := registry.NewRangeReader(repo, o, opts...)
	if err != nil {
		t.Fatalf("NewRangeReader(%s) = %v", repo, err)
	}
	return r
}

func TestRangeReaderReadsOneRange(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	data := randomBytes(t, 3<<20)
	dg := pushBlob(t, addr+"/ranges/one", registry.DefaultOptions(), data)
	px := newRangeProxy(t, addr)
	r := newRangeReader(t, px.addr()+"/ranges/one", registry.DefaultOptions())
	tests := []struct {
		name   string
		off, n int64
	}{
		{"start", 0, 1},
		{"middle", 12345, 1000},
		{"end", int64(len(data)) - 6, 6},
		{"just below the split", 100, registry.DefaultSplitThreshold - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(px.blobGets())
			got, err := r.ReadRange(context.Background(), dg.String(), tt.off, min(tt.n, int64(len(data))-tt.off))
			if err != nil {
				t.Fatalf("ReadRange(%d, %d) = %v", tt.off, tt.n, err)
			}
			want := data[tt.off : tt.off+min(tt.n, int64(len(data))-tt.off)]
			if !bytes.Equal(got, want) {
				t.Fatalf("ReadRange(%d, %d) returned other bytes", tt.off, tt.n)
			}
			gets := px.blobGets()[before:]
			if len(gets) != 1 {
				t.Fatalf("ReadRange made %d blob GETs, want 1", len(gets))
			}
			wantRange := fmt.Sprintf("bytes=%d-%d", tt.off, tt.off+int64(len(want))-1)
			if g := gets[0]; g.rng != wantRange || g.status != http.StatusPartialContent || g.body != int64(len(want)) {
				t.Errorf("GET: Range %q, status %d, %d body bytes; want %q, 206, %d", g.rng, g.status, g.body, wantRange, len(want))
			}
		})
	}
	if _, err := r.ReadRange(context.Background(), dg.String(), int64(len(data)), 10); err == nil {
		t.Error("ReadRange(past the end) = nil error")
	}
}

func TestRangeReaderParallelParts(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	data := randomBytes(t, 8<<20)
	dg := pushBlob(t, addr+"/ranges/parts", registry.DefaultOptions(), data)
	px := newRangeProxy(t, addr)
	const part, conc = 1 << 20, 2
	r := newRangeReader(t, px.addr()+"/ranges/parts", registry.DefaultOptions(), registry.WithParallelRanges(4<<20, part, conc))
	off, n := int64(1000), int64(6<<20+100)
	got, err := r.ReadRange(context.Background(), dg.String(), off, n)
	if err != nil {
		t.Fatalf("ReadRange(%d, %d) = %v", off, n, err)
	}
	if !bytes.Equal(got, data[off:off+n]) {
		t.Fatal("ReadRange returned other bytes")
	}
	gets := px.blobGets()
	if want := int((n + part - 1) / part); len(gets) != want {
		t.Fatalf("ReadRange made %d GETs, want %d parts", len(gets), want)
	}
	seen := map[string]bool{}
	for _, g := range gets {
		if strings.Contains(g.rng, ",") {
			t.Errorf("Range %q asks for more than one range", g.rng)
		}
		seen[g.rng] = true
	}
	for start := int64(0); start < n; start += part {
		want := fmt.Sprintf("bytes=%d-%d", off+start, off+min(start+part, n)-1)
		if !seen[want] {
			t.Errorf("no GET with Range %q; got %v", want, seen)
		}
	}
	px.mu.Lock()
	peak := px.peak
	px.mu.Unlock()
	if peak > conc || peak < 2 {
		t.Errorf("%d GETs at once at most, want 2..%d", peak, conc)
	}
}

func TestRangeReaderWholeBlobAnswer(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	data := randomBytes(t, 1<<20)
	dg := pushBlob(t, addr+"/ranges/whole", registry.DefaultOptions(), data)
	px := newRangeProxy(t, addr)
	px.stripRange = true
	const maxDiscard = 256 << 10
	r := newRangeReader(t, px.addr()+"/ranges/whole", registry.DefaultOptions(), registry.WithMaxDiscard(maxDiscard))
	tests := []struct {
		name        string
		off, n      int64
		unsupported bool
	}{
		{"at the start", 0, 100, false},
		{"within the discard bound", maxDiscard, 4096, false},
		{"past the discard bound", maxDiscard + 1, 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.ReadRange(context.Background(), dg.String(), tt.off, tt.n)
			if tt.unsupported {
				if !errors.Is(err, registry.ErrRangeUnsupported) {
					t.Fatalf("ReadRange(%d, %d) = %v, want ErrRangeUnsupported", tt.off, tt.n, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadRange(%d, %d) = %v", tt.off, tt.n, err)
			}
			if !bytes.Equal(got, data[tt.off:tt.off+tt.n]) {
				t.Errorf("ReadRange(%d, %d) returned other bytes", tt.off, tt.n)
			}
		})
	}
	for _, g := range px.blobGets() {
		if g.status != http.StatusOK {
			t.Errorf("the range-stripping proxy answered %d, want 200", g.status)
		}
	}
}

func TestRangeReaderRetriesCutBody(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	data := randomBytes(t, 64<<10)
	dg := pushBlob(t, addr+"/ranges/cut", registry.DefaultOptions(), data)
	px := newRangeProxy(t, addr)
	var calls atomic.Int32
	px.handle = func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		switch calls.Add(1) {
		case 1:
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return true
		case 2: // promise the range, send half, hang up
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 100-1099/%d", len(data)))
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[100:600])
			return true
		}
		return false
	}
	r := newRangeReader(t, px.addr()+"/ranges/cut", registry.DefaultOptions())
	got, err := r.ReadRange(context.Background(), dg.String(), 100, 1000)
	if err != nil {
		t.Fatalf("ReadRange() = %v", err)
	}
	if !bytes.Equal(got, data[100:1100]) {
		t.Error("ReadRange() returned other bytes")
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d blob GETs, want 3 (503, cut short, whole)", n)
	}
}

func TestRangeReaderRefusesWrongContentRange(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Range", "bytes 0-9/100")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(make([]byte, 10))
	}))
	defer srv.Close()
	r := newRangeReader(t, srv.Listener.Addr().String()+"/ranges/liar", registry.DefaultOptions())
	dg := digest.FromString("x").String()
	if _, err := r.ReadRange(context.Background(), dg, 10, 10); err == nil || !strings.Contains(err.Error(), "Content-Range") {
		t.Errorf("ReadRange(10, 10) answered with bytes 0-9 = %v, want a Content-Range error", err)
	}
}

func TestRangeReaderRedirectGetsNoAuthorization(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("reader:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ := startUploadRegistry(t, registry.WithHtpasswd(htpasswd))
	o := registry.DefaultOptions()
	o.Creds = "reader:s3cret"
	data := randomBytes(t, 256<<10)
	dg := pushBlob(t, addr+"/ranges/s3", o, data)

	// "S3": another host (localhost, not 127.0.0.1) serving the blob at a
	// presigned URL.
	var s3mu sync.Mutex
	var s3gets []blobGet
	s3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s3mu.Lock()
		s3gets = append(s3gets, blobGet{rng: r.Header.Get("Range"), auth: r.Header.Get("Authorization")})
		s3mu.Unlock()
		if r.URL.Query().Get("X-Amz-Signature") != "sig" {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(data))
	}))
	defer s3.Close()
	_, s3port, _ := strings.Cut(s3.Listener.Addr().String(), ":")
	px := newRangeProxy(t, addr)
	px.handle = func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		if r.Header.Get("Authorization") == "" { // the registry would challenge
			return false
		}
		http.Redirect(w, r, "http://localhost:"+s3port+"/bucket/blob?X-Amz-Signature=sig", http.StatusTemporaryRedirect)
		return true
	}
	r := newRangeReader(t, px.addr()+"/ranges/s3", o)
	got, err := r.ReadRange(context.Background(), dg.String(), 5000, 70000)
	if err != nil {
		t.Fatalf("ReadRange() = %v", err)
	}
	if !bytes.Equal(got, data[5000:75000]) {
		t.Error("ReadRange() returned other bytes")
	}
	gets := px.blobGets()
	if len(gets) != 1 || !strings.HasPrefix(gets[0].auth, "Basic ") || gets[0].status != http.StatusTemporaryRedirect {
		t.Fatalf("registry blob GETs = %+v, want one with Basic auth, redirected", gets)
	}
	s3mu.Lock()
	defer s3mu.Unlock()
	if len(s3gets) != 1 {
		t.Fatalf("S3 saw %d GETs, want 1", len(s3gets))
	}
	if g := s3gets[0]; g.auth != "" || g.rng != "bytes=5000-74999" {
		t.Errorf("S3 GET: Authorization %q, Range %q; want none, bytes=5000-74999", g.auth, g.rng)
	}
}

// tokenFront is a registry front door that wants bearer tokens, issued by
// its own /token endpoint for user:pass, each good for a few requests,
// and passes authorized requests to the registry behind it.
type tokenFront struct {
	srv        *httptest.Server
	user, pass string
	uses       int // requests a token is good for

	mu      sync.Mutex
	token   string
	left    int
	issued  int
	refused int
}

func newTokenFront(t *testing.T, upstream, user, pass string, uses int) *tokenFront {
	tf := &tokenFront{user: user, pass: pass, uses: uses}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	tf.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			tf.issue(w, r)
			return
		}
		tf.mu.Lock()
		ok := tf.token != "" && r.Header.Get("Authorization") == "Bearer "+tf.token && tf.left > 0
		if ok {
			tf.left--
		} else {
			tf.refused++
		}
		tf.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test",scope="repository:ranges/tok:pull"`, tf.srv.URL))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		r.Header.Del("Authorization")
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(tf.srv.Close)
	return tf
}

func (tf *tokenFront) issue(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); !ok || u != tf.user || p != tf.pass {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	tf.mu.Lock()
	tf.issued++
	tf.token, tf.left = "tok-"+strconv.Itoa(tf.issued), tf.uses
	tok := tf.token
	tf.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
}

func TestRangeReaderBearerToken(t *testing.T) {
	addr, _ := startUploadRegistry(t)
	data := randomBytes(t, 128<<10)
	dg := pushBlob(t, addr+"/ranges/tok", registry.DefaultOptions(), data)
	tf := newTokenFront(t, addr, "reader", "pw", 2)
	host := tf.srv.Listener.Addr().String()

	o := registry.DefaultOptions()
	o.Creds = "reader:wrong"
	if _, err := newRangeReader(t, host+"/ranges/tok", o).ReadRange(context.Background(), dg.String(), 0, 10); err == nil {
		t.Error("ReadRange() with the wrong password = nil error")
	}

	o.Creds = "reader:pw"
	r := newRangeReader(t, host+"/ranges/tok", o)
	for i := range 5 { // more requests than one token is good for
		off := int64(i * 1000)
		got, err := r.ReadRange(context.Background(), dg.String(), off, 500)
		if err != nil {
			t.Fatalf("read %d: ReadRange() = %v", i, err)
		}
		if !bytes.Equal(got, data[off:off+500]) {
			t.Fatalf("read %d: ReadRange() returned other bytes", i)
		}
	}
	tf.mu.Lock()
	defer tf.mu.Unlock()
	if tf.issued < 3 {
		t.Errorf("%d tokens issued for 5 reads with tokens good for 2 requests, want the transport to renew them", tf.issued)
	}
}
