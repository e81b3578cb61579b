package registry

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.podman.io/image/v5/types"
)

// Options say how to reach and authenticate to a registry, in buildah's
// terms. The zero value is not useful: start from DefaultOptions.
type Options struct {
	// Creds is USER[:PASS], as --creds takes it. The default is none.
	Creds string
	// AuthFile is a containers auth.json or docker config.json. The default
	// is the usual search path ($REGISTRY_AUTH_FILE, the containers auth
	// file, ~/.docker/config.json).
	AuthFile string
	// TLSVerify requires HTTPS with a verified certificate, except for
	// loopback hosts. The default is true.
	TLSVerify bool
	// Insecure allows plain HTTP to a host that is not loopback. The default
	// is false.
	Insecure bool
}

// DefaultOptions verifies TLS and uses no explicit credentials.
func DefaultOptions() Options { return Options{TLSVerify: true} }

// IsLoopback reports whether host (with or without a port) names this
// machine: localhost, 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// PlainHTTP reports whether talking plain HTTP to host is allowed.
func (o Options) PlainHTTP(host string) bool {
	return IsLoopback(host) || o.Insecure || !o.TLSVerify
}

// ParseReference parses an image reference, marking the registry insecure
// (HTTP allowed) only where these options allow it.
func (o Options) ParseReference(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %q: %w", s, err)
	}
	if o.PlainHTTP(ref.Context().RegistryStr()) {
		if ref, err = name.ParseReference(s, name.Insecure); err != nil {
			return nil, fmt.Errorf("parsing image reference %q: %w", s, err)
		}
	}
	// An archive pins the image by digest in its full name; a name too long
	// for that form (a short Docker Hub name near the length limit grows by
	// "index.docker.io/library/") is refused here rather than later.
	if _, err := name.NewDigest(ref.Context().Name() + "@sha256:" + strings.Repeat("0", 64)); err != nil {
		return nil, fmt.Errorf("parsing image reference %q: the repository name is too long to pin by digest", s)
	}
	return ref, nil
}

// splitCreds splits USER[:PASS].
func splitCreds(creds string) (user, pass string, err error) {
	user, pass, _ = strings.Cut(creds, ":")
	if user == "" {
		return "", "", errors.New("--creds: user name is empty (want USER[:PASS])")
	}
	return user, pass, nil
}

// Authenticator returns the credentials for registry host.
func (o Options) Authenticator(host string) (authn.Authenticator, error) {
	if o.Creds != "" {
		user, pass, err := splitCreds(o.Creds)
		if err != nil {
			return nil, err
		}
		return authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}), nil
	}
	files := authFiles()
	if o.AuthFile != "" {
		if _, err := os.Stat(o.AuthFile); err != nil {
			return nil, fmt.Errorf("--authfile: %w", err)
		}
		files = []string{o.AuthFile}
	}
	for _, f := range files {
		cfg, ok, err := lookupAuthFile(f, host)
		if err != nil {
			return nil, err
		}
		if ok {
			return authn.FromConfig(cfg), nil
		}
	}
	return authn.Anonymous, nil
}

// authFiles is where containers tools and docker keep credentials, in the
// order buildah searches them.
func authFiles() []string {
	var files []string
	if f := os.Getenv("REGISTRY_AUTH_FILE"); f != "" {
		files = append(files, f)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		files = append(files, filepath.Join(d, "containers", "auth.json"))
	}
	files = append(files, fmt.Sprintf("/run/containers/%d/auth.json", os.Getuid()))
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".config", "containers", "auth.json"), filepath.Join(home, ".docker", "config.json"))
	}
	return files
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// lookupAuthFile finds host's entry in an auth file. A missing file is not
// an error; an unreadable or malformed one is, without quoting its contents.
func lookupAuthFile(path, host string) (authn.AuthConfig, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return authn.AuthConfig{}, false, nil
	}
	if err != nil {
		return authn.AuthConfig{}, false, fmt.Errorf("reading auth file %s: %w", path, err)
	}
	var f struct {
		Auths map[string]authEntry `json:"auths"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return authn.AuthConfig{}, false, fmt.Errorf("auth file %s is not valid JSON", path)
	}
	for key, e := range f.Auths {
		k := strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
		k, _, _ = strings.Cut(k, "/")
		if k != host {
			continue
		}
		cfg := authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return authn.AuthConfig{}, false, fmt.Errorf("auth file %s: entry for %s is not valid base64", path, host)
			}
			cfg.Username, cfg.Password, _ = strings.Cut(string(raw), ":")
		}
		return cfg, true, nil
	}
	return authn.AuthConfig{}, false, nil
}

// Transport is the HTTP transport for host: bounded timeouts so a dead
// registry never hangs a caller, certificate checks unless TLSVerify is off,
// and no plain HTTP where it is not allowed.
func (o Options) Transport(host string) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 8
	if !o.TLSVerify {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // --tls-verify=false asks for it
	}
	return httpGuard{next: t, allowHTTP: o.PlainHTTP(host), host: host}
}

// httpGuard refuses plain-HTTP requests to hosts that must use HTTPS.
// go-containerregistry speaks HTTP to private-range addresses on its own;
// credentials must not go there in clear unless the user said so.
type httpGuard struct {
	next      http.RoundTripper
	allowHTTP bool
	host      string
}

func (g httpGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" && !g.allowHTTP && r.URL.Host == g.host {
		return nil, fmt.Errorf("refusing plain HTTP to %s: use --tls-verify=false or buildRegistryInsecure: true to allow it", g.host)
	}
	return g.next.RoundTrip(r)
}

// RemoteOptions are go-containerregistry options for ref's registry.
func (o Options) RemoteOptions(ctx context.Context, ref name.Reference) ([]remote.Option, error) {
	host := ref.Context().RegistryStr()
	auth, err := o.Authenticator(host)
	if err != nil {
		return nil, err
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(o.Transport(host)),
		remote.WithRetryBackoff(remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}),
		remote.WithUserAgent("clipbuild"),
	}, nil
}

// SystemContext is the containers/image equivalent, for copies into or out
// of host.
func (o Options) SystemContext(host string) (*types.SystemContext, error) {
	sc := &types.SystemContext{AuthFilePath: o.AuthFile}
	if o.Creds != "" {
		user, pass, err := splitCreds(o.Creds)
		if err != nil {
			return nil, err
		}
		sc.DockerAuthConfig = &types.DockerAuthConfig{Username: user, Password: pass}
	}
	if o.PlainHTTP(host) {
		sc.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	return sc, nil
}
