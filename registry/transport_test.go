package registry_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/clipbuild/clipbuild/registry"
)

// seen records the requests a test server received, by host.
type seen struct {
	mu    sync.Mutex
	hosts []string
	users []string
}

func (s *seen) add(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts = append(s.hosts, r.Host)
	if u, _, ok := r.BasicAuth(); ok {
		s.users = append(s.users, u)
	}
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.hosts)
}

// dialTo makes every connection of o go to addr, whatever host it names.
func dialTo(o registry.Options, addr string) registry.Options {
	o.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return o
}

// TestDockerHubCredentialsReachTheV2Client checks, over the wire, that the
// v2 client sends credentials that `buildah login docker.io` saved when it
// talks to index.docker.io.
func TestDockerHubCredentialsReachTheV2Client(t *testing.T) {
	auth, _ := authHome(t)
	authJSON(t, auth, map[string]string{"docker.io": "hub"}, nil)
	var got seen
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.add(r)
		if _, _, ok := r.BasicAuth(); !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="hub"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	// The test server's certificate is not for index.docker.io.
	o := dialTo(registry.Options{TLSVerify: false}, srv.Listener.Addr().String())
	ref, err := o.ParseReference("library/busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	ropts, err := o.RemoteOptions(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = remote.Head(ref, ropts...) // 404: only the credentials matter
	if len(got.users) == 0 || got.users[0] != "hub" {
		t.Errorf("users the registry saw = %q (hosts %q), want hub", got.users, got.hosts)
	}
	for _, h := range got.hosts {
		if h != "index.docker.io" {
			t.Errorf("request for host %q, want index.docker.io", h)
		}
	}
}

func TestTransportRefusesPlainHTTP(t *testing.T) {
	tests := []struct {
		name    string
		opts    registry.Options
		url     string
		refused bool
	}{
		{"private address", registry.DefaultOptions(), "http://10.1.2.3:5000/v2/", true},
		{"*.localhost name", registry.DefaultOptions(), "http://registry.localhost:5000/v2/", true},
		{"public name", registry.DefaultOptions(), "http://registry.example/v2/", true},
		{"loopback", registry.DefaultOptions(), "http://127.0.0.1:5000/v2/", false},
		{"localhost", registry.DefaultOptions(), "http://localhost:5000/v2/", false},
		{"--tls-verify=false", registry.Options{TLSVerify: false}, "http://10.1.2.3:5000/v2/", false},
		{"buildRegistryInsecure", registry.Options{TLSVerify: true, Insecure: true}, "http://registry.example/v2/", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got seen
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.add(r) }))
			defer srv.Close()
			client := http.Client{Transport: dialTo(tc.opts, srv.Listener.Addr().String()).Transport()}
			resp, err := client.Get(tc.url)
			if err == nil {
				resp.Body.Close()
			}
			if refused := err != nil && strings.Contains(err.Error(), "refusing plain HTTP"); refused != tc.refused {
				t.Errorf("GET %s: error %v, want refused %v", tc.url, err, tc.refused)
			}
			if want := map[bool]int{true: 0, false: 1}[tc.refused]; got.count() != want {
				t.Errorf("GET %s: the server saw %d requests, want %d", tc.url, got.count(), want)
			}
		})
	}
}

// TestTransportRefusesPlainHTTPRedirect checks that the guard judges each
// request's own host: a loopback registry (plain HTTP allowed) that
// redirects a client, or sends its token realm, to another host over
// plain HTTP does not get the request out in clear.
func TestTransportRefusesPlainHTTPRedirect(t *testing.T) {
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.add(r)
		if strings.HasPrefix(r.Host, "127.0.0.1") {
			http.Redirect(w, r, "http://cdn.example/blob", http.StatusTemporaryRedirect)
		}
	}))
	defer srv.Close()
	client := http.Client{Transport: dialTo(registry.DefaultOptions(), srv.Listener.Addr().String()).Transport()}
	_, err := client.Get(srv.URL + "/v2/x/blobs/sha256:00")
	if err == nil || !strings.Contains(err.Error(), "refusing plain HTTP to cdn.example") {
		t.Errorf("GET through a redirect to http://cdn.example = %v, want refused", err)
	}
	for _, h := range got.hosts {
		if h == "cdn.example" {
			t.Errorf("the redirect target got a plain-HTTP request")
		}
	}
}

// TestRemoteRefusesPlainHTTPFallback checks go-containerregistry's own
// fallback: it tries plain HTTP on private-range addresses without being
// asked, and that attempt must not leave the machine, credentials or not.
func TestRemoteRefusesPlainHTTPFallback(t *testing.T) {
	auth, _ := authHome(t)
	authJSON(t, auth, map[string]string{"10.1.2.3:5000": "lan"}, nil)
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.add(r)
		w.Header().Set("WWW-Authenticate", `Basic realm="lan"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	o := dialTo(registry.DefaultOptions(), srv.Listener.Addr().String())
	ref, err := o.ParseReference("10.1.2.3:5000/team/img:1")
	if err != nil {
		t.Fatal(err)
	}
	ropts, err := o.RemoteOptions(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Head(ref, ropts...)
	if err == nil || !strings.Contains(err.Error(), "refusing plain HTTP to 10.1.2.3:5000") {
		t.Errorf("Head(%s) = %v, want the plain-HTTP attempt refused", ref, err)
	}
	if got.count() != 0 {
		t.Errorf("the server saw %d plain-HTTP requests (users %q), want 0", got.count(), got.users)
	}
}
