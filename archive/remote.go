package archive

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	godigest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	storarchive "go.podman.io/storage/pkg/archive"

	"github.com/clipbuild/clipbuild/registry"
)

// BlobOpener streams a registry blob by digest.
type BlobOpener interface {
	Open(ctx context.Context, digest string) (io.ReadCloser, error)
}

// remoteStorage serves a v2 archive's files from its image's layers in the
// registry, fetched by digest (so a re-pointed tag changes nothing) and kept
// uncompressed in a disk cache shared by every mount on the host. A layer
// is fetched on the first read of any file in it; a failed fetch is retried
// on the next read, and what is cached keeps being served when the registry
// is gone.
type remoteStorage struct {
	meta     *common.ClipArchiveMetadata
	blobs    BlobOpener
	cacheDir string
	timeout  time.Duration

	mu     sync.Mutex
	layers map[string]*cachedLayer
}

type cachedLayer struct {
	mu sync.Mutex // held while fetching
	f  *os.File
}

// ReadFile fills dest from node's bytes at off.
func (s *remoteStorage) ReadFile(node *common.ClipNode, dest []byte, off int64) (int, error) {
	if node.Remote == nil {
		return 0, nil // FIFOs, devices and empty files have no data
	}
	r := node.Remote
	if off >= r.ULength {
		return 0, nil
	}
	if rem := r.ULength - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	f, err := s.layer(r.LayerDigest)
	if err != nil {
		return 0, err
	}
	n, err := f.ReadAt(dest, r.UOffset+off)
	if err == io.EOF && n == len(dest) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("reading %s from layer %s: %w", node.Path, r.LayerDigest, err)
	}
	return n, nil
}

// fileRange returns where node's bytes lie in its cached uncompressed layer,
// fetching the layer if needed, as ReadFile does.
func (s *remoteStorage) fileRange(node *common.ClipNode, off int64, size int) (*os.File, int64, int, error) {
	if node.Remote == nil {
		return nil, 0, 0, nil
	}
	r := node.Remote
	if off >= r.ULength {
		return nil, 0, 0, nil
	}
	f, err := s.layer(r.LayerDigest)
	if err != nil {
		return nil, 0, 0, err
	}
	pos, n := clampRange(r.UOffset, r.ULength, off, size)
	return f, pos, n, nil
}

// layer returns the uncompressed layer file, fetching it if needed.
func (s *remoteStorage) layer(dg string) (*os.File, error) {
	s.mu.Lock()
	l := s.layers[dg]
	if l == nil {
		l = &cachedLayer{}
		s.layers[dg] = l
	}
	s.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return l.f, nil
	}
	d, err := godigest.Parse(dg)
	if err != nil {
		return nil, fmt.Errorf("layer digest: %w", err)
	}
	p := filepath.Join(s.cacheDir, d.Algorithm().String(), d.Encoded()+".tar")
	if f, err := os.Open(p); err == nil {
		l.f = f
		return f, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if err := s.fetch(ctx, dg, p); err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	l.f = f
	return f, nil
}

// fetch downloads and decompresses a layer into the cache, atomically.
func (s *remoteStorage) fetch(ctx context.Context, dg, p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("creating layer cache: %w", err)
	}
	rc, err := s.blobs.Open(ctx, dg)
	if err != nil {
		return err
	}
	defer rc.Close()
	plain, err := storarchive.DecompressStream(rc)
	if err != nil {
		return fmt.Errorf("decompressing layer %s: %w", dg, err)
	}
	defer plain.Close()
	return WriteFileAtomic(p, func(f *os.File) error {
		if _, err := io.Copy(f, plain); err != nil {
			return fmt.Errorf("fetching layer %s: %w", dg, err)
		}
		return nil
	})
}

func (s *remoteStorage) Metadata() *common.ClipArchiveMetadata { return s.meta }
func (s *remoteStorage) CachedLocally() bool                   { return false }

func (s *remoteStorage) Cleanup() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.layers {
		if l.f != nil {
			l.f.Close()
		}
	}
	return nil
}

// storageOptions configure OpenStorage.
type storageOptions struct {
	registry   registry.Options
	cacheDir   string
	timeout    time.Duration
	blobs      BlobOpener
	spanDir    string
	spanSize   int64
	ranger     BlobRanger
	log        *logrus.Entry
	noPrefetch bool
	window     time.Duration
	dense      float64
	regHost    string
}

// WithSpanCacheDir sets where inflated spans of seekable layers are kept,
// shared by every mount on the host. The default is
// $XDG_CACHE_HOME/clipbuild/spans.
func WithSpanCacheDir(dir string) StorageOption {
	return func(so *storageOptions) error {
		if dir != "" {
			so.spanDir = dir
		}
		return nil
	}
}

// WithSpanCacheSize bounds the span cache in bytes; least recently used
// spans are evicted past it. The default is the smaller of 2 GiB and 10%
// of the cache's filesystem.
func WithSpanCacheSize(n int64) StorageOption {
	return func(so *storageOptions) error {
		if n < 0 {
			return fmt.Errorf("span cache size %d is negative", n)
		}
		so.spanSize = n
		return nil
	}
}

// WithPrefetch says whether a mount of a v2 archive fetches, in the
// background, the spans the last mount of the same image read in its first
// seconds (see WithPrefetchWindow). The default is true.
func WithPrefetch(on bool) StorageOption {
	return func(so *storageOptions) error { so.noPrefetch = !on; return nil }
}

// WithPrefetchWindow sets how long after it starts a mount records the
// spans it reads, for the next mount of the same image to prefetch; the
// trace is kept in the span cache directory, under traces/, by manifest
// digest. The default is DefaultPrefetchWindow (30 seconds).
func WithPrefetchWindow(d time.Duration) StorageOption {
	return func(so *storageOptions) error {
		if d <= 0 {
			return fmt.Errorf("prefetch window %s: must be positive", d)
		}
		so.window = d
		return nil
	}
}

// WithDenseThreshold sets the share of a seekable layer's spans (0 to 1)
// that reads must have needed before the rest of the layer is fetched in
// the background, in parallel ranges; 0 turns it off. The default is
// DefaultDenseThreshold (0.25).
func WithDenseThreshold(f float64) StorageOption {
	return func(so *storageOptions) error {
		if f < 0 || f > 1 {
			return fmt.Errorf("dense threshold %g: want 0 to 1", f)
		}
		so.dense = f
		return nil
	}
}

// WithBlobRanger replaces the ranged registry reader (for tests and
// proxies). The default reads from the registry named in the archive.
func WithBlobRanger(r BlobRanger) StorageOption {
	return func(so *storageOptions) error { so.ranger = r; return nil }
}

// WithStorageLog sets where read errors are logged. The default is
// logrus's standard logger.
func WithStorageLog(l *logrus.Entry) StorageOption {
	return func(so *storageOptions) error { so.log = l; return nil }
}

// StorageOption configures OpenStorage.
type StorageOption func(*storageOptions) error

// WithRegistryHost reads a v2 archive's blobs from the registry at host
// (HOST[:PORT]) instead of the one the archive names, keeping its
// repository and digests: another replica or a mirror serving the same
// content. The default is the archive's registry.
func WithRegistryHost(host string) StorageOption {
	return func(so *storageOptions) error {
		if host != "" && (strings.ContainsAny(host, "/@?# ") || strings.HasPrefix(host, ":")) {
			return fmt.Errorf("registry host %q: want HOST[:PORT]", host)
		}
		so.regHost = host
		return nil
	}
}

// WithRegistryOptions sets how a v2 archive's registry is reached. The
// default is registry.DefaultOptions: HTTPS, except to loopback hosts.
// Plain HTTP elsewhere is the caller's decision (--tls-verify=false),
// never the archive's.
func WithRegistryOptions(o registry.Options) StorageOption {
	return func(so *storageOptions) error { so.registry = o; return nil }
}

// WithCacheDir sets where fetched layers are kept. The default is
// $XDG_CACHE_HOME/clipbuild/layers (~/.cache/clipbuild/layers).
func WithCacheDir(dir string) StorageOption {
	return func(so *storageOptions) error {
		if dir != "" {
			so.cacheDir = dir
		}
		return nil
	}
}

// WithFetchTimeout bounds one layer fetch. The default is 10 minutes.
func WithFetchTimeout(d time.Duration) StorageOption {
	return func(so *storageOptions) error { so.timeout = d; return nil }
}

// WithBlobOpener replaces the registry client (for tests and proxies). The
// default reads from the registry named in the archive.
func WithBlobOpener(b BlobOpener) StorageOption {
	return func(so *storageOptions) error { so.blobs = b; return nil }
}

// DefaultCacheDir is the default layer cache directory.
func DefaultCacheDir() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		if home, err := os.UserHomeDir(); err == nil {
			base = filepath.Join(home, ".cache")
		} else {
			base = os.TempDir()
		}
	}
	return filepath.Join(base, "clipbuild", "layers")
}

// OpenStorage returns the reader for a's file contents: the archive file for
// v1, the image's registry for v2, reached as the registry options say
// whatever the archive's trailer records about plain HTTP.
func OpenStorage(a *Archive, opts ...StorageOption) (Storage, error) {
	// a.Trailer.PlainHTTP is not consulted: the archive is data anyone can
	// write (only CRC-checked), and letting it ask for plain HTTP would send
	// the user's saved credentials for its registry in clear.
	so := storageOptions{registry: registry.DefaultOptions(), cacheDir: DefaultCacheDir(), spanDir: DefaultSpanCacheDir(), timeout: 10 * time.Minute,
		window: DefaultPrefetchWindow, dense: DefaultDenseThreshold}
	for _, o := range opts {
		if err := o(&so); err != nil {
			return nil, err
		}
	}
	if a.Version() == 1 {
		return newLocalStorage(a)
	}
	repo := strings.TrimSuffix(registryURL(a.OCI.RegistryURL, so.regHost), "/") + "/" + a.OCI.Repository
	blobs := so.blobs
	if blobs == nil {
		b, err := registry.NewBlobs(repo, so.registry)
		if err != nil {
			return nil, fmt.Errorf("archive registry: %w", err)
		}
		blobs = b
	}
	whole := &remoteStorage{meta: a.Metadata, blobs: blobs, cacheDir: so.cacheDir, timeout: so.timeout, layers: map[string]*cachedLayer{}}
	// Seekable layers (built by clipbuild: the trailer lists their gzip
	// members) are read by byte range, a member at a time; pulled layers
	// (gzip as their registry has it) by byte range from the restart
	// points pull recorded. What has neither is fetched whole, as are all
	// layers when a caller replaced the blob opener but gave no ranged
	// reader.
	if (len(a.Trailer.Members) == 0 && len(a.Trailer.Zran) == 0) || (so.blobs != nil && so.ranger == nil) {
		return whole, nil
	}
	log := so.log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	ranger := so.ranger
	if ranger == nil {
		rr, err := registry.NewRangeReader(repo, so.registry, registry.WithRangeLog(log))
		if err != nil {
			return nil, fmt.Errorf("archive registry: %w", err)
		}
		ranger = rr
	}
	copts := []SpanCacheOption{WithSpanLog(log)}
	if so.spanSize > 0 {
		copts = append(copts, WithCacheSize(so.spanSize))
	}
	cache, err := OpenSpanCache(so.spanDir, copts...)
	if err != nil {
		return nil, err
	}
	// Pulled layers (one gzip stream each, of one member or several) with
	// restart points are read by range from the nearest point; what has
	// neither members nor points is read whole.
	var fallback Storage = whole
	if len(a.Trailer.Zran) > 0 {
		zs, err := newZranStorage(a.Metadata, a.Trailer.Zran, ranger, cache, whole, withZranLog(log))
		if err != nil {
			return nil, err
		}
		fallback = zs
	}
	return newRangedStorage(a.Metadata, a.Trailer.Members, ranger, cache, fallback, withRangedLog(log),
		withDenseThreshold(so.dense), withTrace(TracePath(so.spanDir, a.Trailer.ManifestDigest), so.window, !so.noPrefetch))
}

// registryURL is the archive's registry URL u with its host replaced by
// host, when one is given; u may have a scheme (http://HOST) or not.
func registryURL(u, host string) string {
	if host == "" {
		return u
	}
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		scheme, rest = "", u
	}
	if i := strings.Index(rest, "/"); i >= 0 {
		rest = host + rest[i:]
	} else {
		rest = host
	}
	if scheme == "" {
		return rest
	}
	return scheme + "://" + rest
}
