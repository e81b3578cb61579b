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
// filesystem storage, deletes enabled and no tracing.
type Server struct {
	// Addr is the address it listens on, resolved (a ":0" port is filled in).
	Addr string
	Root string

	app    *handlers.App
	server *http.Server
	ln     net.Listener
	done   chan error
}

// serverOptions configure Start.
type serverOptions struct {
	htpasswd string
}

// ServerOption configures Start.
type ServerOption func(*serverOptions)

// WithHtpasswd requires clients to authenticate with a user from the given
// htpasswd file (bcrypt entries). The default is no authentication.
func WithHtpasswd(path string) ServerOption {
	return func(o *serverOptions) { o.htpasswd = path }
}

// Start serves a registry on addr (host:port; port 0 picks a free one)
// storing its data under root, in the background until Shutdown.
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
	// distribution wires OpenTelemetry in its own server; we use only its
	// handlers, and turn the exporter off as well so nothing ever dials out.
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		os.Setenv("OTEL_TRACES_EXPORTER", "none")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("creating registry root: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	var secret [16]byte
	_, _ = rand.Read(secret[:])
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": root},
			"delete":     configuration.Parameters{"enabled": true},
		},
	}
	cfg.HTTP.Secret = hex.EncodeToString(secret[:])
	if so.htpasswd != "" {
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "clipbuild", "path": so.htpasswd}}
	}
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	app := handlers.NewApp(ctx, cfg)
	s := &Server{
		Addr:   ln.Addr().String(),
		Root:   root,
		app:    app,
		ln:     ln,
		server: &http.Server{Handler: app, ReadHeaderTimeout: 30 * time.Second},
		done:   make(chan error, 1),
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
