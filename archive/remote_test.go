package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	digest "github.com/opencontainers/go-digest"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/registry"
)

// forgedArchive writes a v2 archive of one file whose layers sit at
// registryURL, with a trailer claiming the archive was indexed over plain
// HTTP, and returns it opened with the file's node.
func forgedArchive(t *testing.T, registryURL string) (*archive.Archive, *common.ClipNode) {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "secret.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5, ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("hello"))
	tw.Close()
	dg := digest.FromBytes(layer.Bytes()).String()
	ix := archive.NewIndexer()
	if err := ix.AddLayer(context.Background(), dg, bytes.NewReader(layer.Bytes())); err != nil {
		t.Fatal(err)
	}
	oci := &common.OCIStorageInfo{RegistryURL: registryURL, Repository: "victim/img", Reference: "1", Layers: []string{dg},
		DecompressedHashByLayer: map[string]string{dg: digest.FromBytes(layer.Bytes()).Encoded()}}
	p := filepath.Join(t.TempDir(), "forged.clip")
	err := archive.WriteFileAtomic(p, func(f *os.File) error {
		return archive.WriteV2(f, ix.Nodes(), oci, archive.Trailer{Tool: "clipbuild", PlainHTTP: true, ImageRef: registryURL + "/victim/img@" + dg})
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := archive.Open(p)
	if err != nil {
		t.Fatalf("Open(forged archive) = %v", err)
	}
	if !a.Trailer.PlainHTTP {
		t.Fatal("the forged trailer lost PlainHTTP")
	}
	for _, n := range a.Nodes() {
		if n.Path == "/secret.txt" {
			return a, n
		}
	}
	t.Fatal("no /secret.txt in the forged archive")
	return nil, nil
}

// saveCredentials makes the default credential lookup find user:pass for
// host, the way `buildah login host` leaves them, and hides the real
// user's files.
func saveCredentials(t *testing.T, host string) {
	t.Helper()
	run := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", run)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("DOCKER_CONFIG", "")
	if err := os.MkdirAll(filepath.Join(run, "containers"), 0o700); err != nil {
		t.Fatal(err)
	}
	auth := `{"auths":{"` + host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("user:pass")) + `"}}}`
	if err := os.WriteFile(filepath.Join(run, "containers", "auth.json"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOpenStorageIgnoresForgedPlainHTTP checks that an archive whose
// trailer says PlainHTTP cannot make a read go over plain HTTP to a registry
// that is not loopback, where it would carry the user's saved credentials
// in clear. The registry names are ones go-containerregistry itself would
// try plain HTTP on (*.localhost and private ranges), so only the guard
// stands between them and the network.
func TestOpenStorageIgnoresForgedPlainHTTP(t *testing.T) {
	t.Run("default options", func(t *testing.T) {
		// Nothing listens there and the name need not resolve: with
		// HTTPS only, the plain-HTTP attempt must be refused before any
		// dial, whatever the HTTPS attempt meets.
		host := "registry.localhost:1"
		saveCredentials(t, host)
		a, node := forgedArchive(t, host)
		s, err := archive.OpenStorage(a, archive.WithCacheDir(t.TempDir()), archive.WithFetchTimeout(30*time.Second))
		if err != nil {
			t.Fatalf("OpenStorage() = %v", err)
		}
		defer s.Cleanup()
		_, err = s.ReadFile(node, make([]byte, 5), 0)
		if err == nil || !strings.Contains(err.Error(), "refusing plain HTTP to "+host) {
			t.Fatalf("ReadFile() = %v, want the plain-HTTP attempt refused", err)
		}
	})
	for _, host := range []string{"registry.localhost:5000", "10.0.0.7:5000", "registry.example.com:5000"} {
		t.Run(host, func(t *testing.T) {
			saveCredentials(t, host)
			// Every connection goes to one local plain-HTTP server: a
			// request it sees is a request that went out in clear.
			var requests atomic.Int32
			var withCreds atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if r.Header.Get("Authorization") != "" {
					withCreds.Add(1)
				}
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				w.WriteHeader(http.StatusUnauthorized)
			}))
			defer srv.Close()
			opts := registry.DefaultOptions()
			opts.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
			}
			a, node := forgedArchive(t, host)
			s, err := archive.OpenStorage(a, archive.WithRegistryOptions(opts), archive.WithCacheDir(t.TempDir()), archive.WithFetchTimeout(30*time.Second))
			if err != nil {
				t.Fatalf("OpenStorage() = %v", err)
			}
			defer s.Cleanup()
			if _, err := s.ReadFile(node, make([]byte, 5), 0); err == nil {
				t.Fatal("ReadFile() = nil error, want the read refused")
			}
			if got := requests.Load(); got != 0 {
				t.Errorf("plain-HTTP requests that reached the server = %d (%d with credentials), want 0", got, withCreds.Load())
			}
		})
	}
}
