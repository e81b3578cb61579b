package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Options say how to reach and authenticate to a registry, in buildah's
// terms. The zero value is not useful: start from DefaultOptions.
type Options struct {
	// Creds is USER[:PASS], as --creds takes it. The default is none.
	Creds string
	// AuthFile is a containers auth.json or docker config.json, which must
	// exist. The default is $REGISTRY_AUTH_FILE if set, else containers'
	// search path ($XDG_RUNTIME_DIR/containers/auth.json or
	// /run/containers/UID/auth.json, ~/.config/containers/auth.json,
	// ~/.docker/config.json, ~/.dockercfg), skipping files that cannot be
	// read. See Credentials.
	AuthFile string
	// TLSVerify requires HTTPS with a verified certificate, except for
	// loopback hosts. The default is true.
	TLSVerify bool
	// Insecure allows plain HTTP to a host that is not loopback. The default
	// is false. Only the user sets it (buildRegistryInsecure: true), never
	// an archive.
	Insecure bool
	// Dial opens the connections of Transport. The default is a
	// net.Dialer with a 10 s timeout; tests point it at a local server.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
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

// Transport is the HTTP transport for every registry request: bounded
// timeouts so a dead registry never hangs a caller, certificate checks
// unless TLSVerify is off, and no plain HTTP where it is not allowed.
func (o Options) Transport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if o.Dial != nil {
		t.DialContext = o.Dial
	}
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 8
	if !o.TLSVerify {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // --tls-verify=false asks for it
	}
	return httpGuard{next: t, opts: o}
}

// httpGuard refuses plain-HTTP requests to hosts that must use HTTPS. It
// decides on each request's own host, so neither a redirect, nor a token
// realm on another host, nor go-containerregistry's habit of trying plain
// HTTP on private-range addresses and *.local names gets credentials sent
// in clear unless the user said so.
type httpGuard struct {
	next http.RoundTripper
	opts Options
}

func (g httpGuard) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && !g.opts.PlainHTTP(r.URL.Host) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("refusing plain HTTP to %s: use --tls-verify=false or buildRegistryInsecure: true to allow it", r.URL.Host)
	}
	return g.next.RoundTrip(r)
}

// RemoteOptions are go-containerregistry options for ref's repository.
func (o Options) RemoteOptions(ctx context.Context, ref name.Reference) ([]remote.Option, error) {
	auth, err := o.Authenticator(ref.Context())
	if err != nil {
		return nil, err
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(o.Transport()),
		remote.WithRetryBackoff(remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}),
		remote.WithUserAgent("clipbuild"),
	}, nil
}
