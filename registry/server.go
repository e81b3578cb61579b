package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // the "htpasswd" access controller
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the "filesystem" storage driver
)

// DefaultAddr is where `clipbuild registry serve` listens by default.
const DefaultAddr = "127.0.0.1:5000"

// DefaultRoot is where the embedded registry keeps its data by default:
// $XDG_DATA_HOME/clipbuild/registry, or ~/.local/share/clipbuild/registry.
func DefaultRoot() (string, error) {
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("finding the data directory: %w", err)
		}
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "clipbuild", "registry"), nil
}

// Server is the embedded scratch registry: distribution's registry with
// filesystem or S3 storage, deletes enabled and no tracing.
type Server struct {
	// Addr is the address it listens on, resolved (a ":0" port is filled in).
	Addr string
	// Root is the filesystem storage directory; empty on S3.
	Root string
	// Storage says where the data is: Root, or an s3:// URL.
	Storage string

	app    *handlers.App
	server *http.Server
	ln     net.Listener
	done   chan error
}

// serverOptions configure Start.
type serverOptions struct {
	htpasswd   string
	s3         *S3Storage
	secret     string
	noRedirect bool
}

// ServerOption configures Start.
type ServerOption func(*serverOptions)

// WithHtpasswd requires clients to authenticate with a user from the given
// htpasswd file (bcrypt entries). The default is no authentication.
func WithHtpasswd(path string) ServerOption {
	return func(o *serverOptions) { o.htpasswd = path }
}

// WithS3 stores the registry's data in S3 (resolved from the environment
// with S3Storage.Resolve) instead of under root, which is then ignored.
// The default is filesystem storage under root.
func WithS3(s S3Storage) ServerOption {
	return func(o *serverOptions) { o.s3 = &s }
}

// WithSecret sets the HTTP secret that signs upload state. Registries that
// share storage behind one name must share it, or a chunked upload begun on
// one and continued on another fails. The default is a random secret, which
// ties each upload to this process.
func WithSecret(secret string) ServerOption {
	return func(o *serverOptions) { o.secret = secret }
}

// WithRedirect chooses whether blob GETs and HEADs redirect to the storage's
// own URLs (presigned S3 URLs) or are served through the registry. The
// filesystem has no such URLs, so it only matters on S3. The default is
// true.
func WithRedirect(redirect bool) ServerOption {
	return func(o *serverOptions) { o.noRedirect = !redirect }
}

// Start serves a registry on addr (host:port; port 0 picks a free one)
// storing its data under root (or in S3, WithS3), in the background until
// Shutdown.
func Start(ctx context.Context, addr, root string, opts ...ServerOption) (*Server, error) {
	var so serverOptions
	for _, o := range opts {
		o(&so)
	}
	if so.htpasswd != "" {
		if _, err := os.Stat(so.htpasswd); err != nil {
			return nil, fmt.Errorf("htpasswd file: %w", err)
		}
	}
	storage, where, err := storageConfig(ctx, root, so.s3)
	if err != nil {
		return nil, err
	}
	storage["redirect"] = configuration.Parameters{"disable": so.noRedirect}
	// distribution wires OpenTelemetry in its own server; we use only its
	// handlers, and turn the exporter off as well so nothing ever dials out.
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		os.Setenv("OTEL_TRACES_EXPORTER", "none")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	cfg := &configuration.Configuration{Storage: storage}
	cfg.HTTP.Secret = so.secret
	if cfg.HTTP.Secret == "" {
		var secret [16]byte
		_, _ = rand.Read(secret[:])
		cfg.HTTP.Secret = hex.EncodeToString(secret[:])
	}
	if so.htpasswd != "" {
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "clipbuild", "path": so.htpasswd}}
	}
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	app := handlers.NewApp(ctx, cfg)
	s := &Server{
		Addr:    ln.Addr().String(),
		Storage: where,
		app:     app,
		ln:      ln,
		server:  &http.Server{Handler: app, ReadHeaderTimeout: 30 * time.Second},
		done:    make(chan error, 1),
	}
	if so.s3 == nil {
		s.Root = root
	}
	go func() {
		err := s.server.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// storageConfig is distribution's storage configuration for filesystem
// storage under root, or for s3 when it is not nil (checked by one request),
// with deletes enabled; where names it for logs.
func storageConfig(ctx context.Context, root string, s3 *S3Storage) (configuration.Storage, string, error) {
	if s3 == nil {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, "", fmt.Errorf("creating registry root: %w", err)
		}
		return configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": root},
			"delete":     configuration.Parameters{"enabled": true},
		}, root, nil
	}
	s, err := s3.Resolve()
	if err != nil {
		return nil, "", err
	}
	if err := checkS3(ctx, s); err != nil {
		return nil, "", err
	}
	return configuration.Storage{
		s3DriverName: s.parameters(),
		"delete":     configuration.Parameters{"enabled": true},
	}, s.String(), nil
}

// Done delivers the serve loop's error (nil after Shutdown) when it stops.
func (s *Server) Done() <-chan error { return s.done }

// Shutdown stops accepting connections and waits for requests in flight,
// up to ctx's deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.server.Shutdown(ctx)
	if cerr := s.app.Shutdown(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
