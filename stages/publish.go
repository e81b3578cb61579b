package stages

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/storage"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/registry"
)

// Publisher pushes images from containers-storage to a registry as
// seekable gzip and writes their v2 archives, reading each layer once:
// the layer's diff is compressed, hashed, uploaded and indexed in the same
// pass, and nothing is read back from the registry.
//
// Layers are streamed from the store one after another: while a diff
// stream is open containers-storage holds the layer store's write lock, so
// a second stream of the same store would wait for the first. The
// parallelism is inside each pass instead: the seekable writer compresses
// the layer's members on all cores at once.
type Publisher struct {
	registry string
	reg      registry.Options
	o        publishOptions
}

type publishOptions struct {
	cacheDir    string
	memberSize  int
	level       int
	compressors int
	store       []StoreOption
	push        []registry.PushOption
	backoff     registry.Backoff
	log         *logrus.Entry
	progress    ProgressFunc
}

// PublishOption configures a Publisher.
type PublishOption func(*publishOptions) error

// WithPublishCache keeps what each layer's pass made (blob digest and size,
// gzip members, the layer's entries) in dir, so that a layer already pushed
// to the same repository with the same settings is neither compressed,
// uploaded nor indexed again. An empty dir turns the cache off. The
// default is DefaultPublishCacheDir().
func WithPublishCache(dir string) PublishOption {
	return func(o *publishOptions) error {
		o.cacheDir = dir
		return nil
	}
}

// WithMemberSize sets the most uncompressed bytes in one gzip member of a
// layer blob (members are cut earlier at tar entry boundaries). The default
// is 1 MiB.
func WithMemberSize(n int) PublishOption {
	return func(o *publishOptions) error {
		if n < 4096 {
			return fmt.Errorf("member size %d: want at least 4096 bytes", n)
		}
		o.memberSize = n
		return nil
	}
}

// WithCompressionLevel sets the deflate level, 1 (fastest) to 9
// (smallest). The default is 5, the level of buildah push.
func WithCompressionLevel(level int) PublishOption {
	return func(o *publishOptions) error {
		if level < 1 || level > 9 {
			return fmt.Errorf("compression level %d: want 1 to 9", level)
		}
		o.level = level
		return nil
	}
}

// WithCompressors sets how many members of a layer are compressed at once.
// It does not change the blob. The default is runtime.GOMAXPROCS(0).
func WithCompressors(n int) PublishOption {
	return func(o *publishOptions) error {
		if n < 1 {
			return fmt.Errorf("%d compressors: want at least 1", n)
		}
		o.compressors = n
		return nil
	}
}

// WithPublishStore reads images from the store s describes. The default is
// buildah's store (DefaultStoreOptions).
func WithPublishStore(s storage.StoreOptions) PublishOption {
	return func(o *publishOptions) error {
		o.store = append(o.store, WithStoreOptions(s))
		return nil
	}
}

// WithPublishPushOptions configures the registry client's uploads (chunk
// size, per-request retries). The default is registry.NewPusher's.
func WithPublishPushOptions(opts ...registry.PushOption) PublishOption {
	return func(o *publishOptions) error {
		o.push = append(o.push, opts...)
		return nil
	}
}

// WithPublishLog is where progress, retries and cache problems are
// reported. The default is logrus's standard logger.
func WithPublishLog(l *logrus.Entry) PublishOption {
	return func(o *publishOptions) error {
		if l != nil {
			o.log = l
		}
		return nil
	}
}

// WithPublishProgress is told how many of the image's uncompressed layer
// bytes are pushed; a layer already in the registry counts as done at once.
// The default reports nothing.
func WithPublishProgress(fn ProgressFunc) PublishOption {
	return func(o *publishOptions) error {
		o.progress = fn
		return nil
	}
}

// defaultMemberSize and defaultLevel are the publisher's compression
// settings, set here rather than left to the seekable writer's defaults so
// that the cache key names them exactly.
const (
	defaultMemberSize = 1 << 20
	defaultLevel      = 5
)

// NewPublisher publishes to reg (HOST[:PORT][/NAMESPACE]), reached as o
// says.
func NewPublisher(reg string, o registry.Options, opts ...PublishOption) (*Publisher, error) {
	po := publishOptions{
		cacheDir:    DefaultPublishCacheDir(),
		memberSize:  defaultMemberSize,
		level:       defaultLevel,
		compressors: runtime.GOMAXPROCS(0),
		backoff:     registry.DefaultBackoff,
		log:         logrus.NewEntry(logrus.StandardLogger()),
	}
	for _, opt := range opts {
		if err := opt(&po); err != nil {
			return nil, err
		}
	}
	return &Publisher{registry: reg, reg: o, o: po}, nil
}

// DefaultPublishCacheDir is $XDG_CACHE_HOME/clipbuild/publish
// (~/.cache/clipbuild/publish), beside mount's layer cache.
func DefaultPublishCacheDir() string {
	return filepath.Join(filepath.Dir(archive.DefaultCacheDir()), "publish")
}

// Repository is where Publish puts image: the registry's namespace plus
// the image's last name component.
func (p *Publisher) Repository(image string) (string, error) {
	reg := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(p.registry, "https://"), "http://"), "/")
	if reg == "" {
		return "", fmt.Errorf("no registry configured")
	}
	host, _, _ := strings.Cut(reg, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		// Without a dot or a port the first component would name a Docker
		// Hub namespace, and a scratch push would go to Docker Hub.
		return "", fmt.Errorf("registry %q: %q is not a registry host (want HOST[:PORT][/NAMESPACE])", p.registry, host)
	}
	repo := reg + "/" + strings.ToLower(imageBase(image))
	if _, err := reference.ParseNormalizedNamed(repo); err != nil {
		return "", fmt.Errorf("registry %q: %w", p.registry, err)
	}
	// The archive pins the image through go-containerregistry, and
	// containers/image (buildah pull, clipbuild pull's v1) must be able to
	// read it back: both must take the name.
	if _, err := docker.ParseReference("//" + repo + ":latest"); err != nil {
		return "", fmt.Errorf("registry %q: %w", p.registry, err)
	}
	if _, err := p.reg.ParseReference(repo + ":latest"); err != nil {
		return "", fmt.Errorf("registry %q: %w", p.registry, err)
	}
	return repo, nil
}

// imageBase is an image name's last path component without tag or digest.
func imageBase(image string) string {
	image = image[strings.LastIndex(image, "/")+1:]
	if i := strings.IndexAny(image, ":@"); i >= 0 {
		image = image[:i]
	}
	return image
}

// idTag is the tag an image is pushed under: made from its ID, so unique,
// and never re-pointed by a later push.
func idTag(id string) string {
	tag := "id-" + id
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return tag
}

// publishedLayer is one layer as pushed: its blob, its members, and the
// entries its pass found.
type publishedLayer struct {
	BlobDigest       digest.Digest
	BlobSize         int64
	UncompressedSize int64
	Members          []archive.Member
	Scan             *archive.LayerScan
}

// Publish pushes img (in the store) to the registry, under the tag
// id-<image ID>, and writes its v2 archive to output, atomically. Each
// layer is either found in the cache (and in the registry) or goes through
// one pass; the config goes as stored, so the diff IDs are the store's.
func (p *Publisher) Publish(ctx context.Context, img Image, output string) (Indexed, error) {
	repo, err := p.Repository(img.Name)
	if err != nil {
		return Indexed{}, err
	}
	tag := idTag(img.ID)
	ref, err := p.reg.ParseReference(repo + ":" + tag)
	if err != nil {
		return Indexed{}, err
	}
	pusher, err := registry.NewPusher(ctx, repo, p.reg, append([]registry.PushOption{registry.WithPushLog(p.o.log)}, p.o.push...)...)
	if err != nil {
		return Indexed{}, err
	}
	ix := archive.NewIndexer()
	si, layers, err := p.publishLayers(ctx, pusher, ref.Context().RegistryStr(), img, ix)
	if err != nil {
		return Indexed{}, err
	}
	m, body, err := p.pushManifest(ctx, pusher, tag, si, layers)
	if err != nil {
		return Indexed{}, err
	}
	manifestDigest := digest.FromBytes(body)
	oci := &common.OCIStorageInfo{
		RegistryURL:             ref.Context().RegistryStr(),
		Repository:              ref.Context().RepositoryStr(),
		Reference:               tag,
		GzipIdxByLayer:          map[string]*common.GzipIndex{},
		DecompressedHashByLayer: map[string]string{},
	}
	pinned := ref.Context().String() + "@" + manifestDigest.String()
	t := archive.Trailer{ImageRef: pinned, ManifestDigest: manifestDigest.String(), Tool: "clipbuild",
		PlainHTTP: p.reg.PlainHTTP(ref.Context().RegistryStr()) && !registry.IsLoopback(ref.Context().RegistryStr()),
		Members:   map[string][]archive.Member{}}
	out := Indexed{ImageRef: pinned, ManifestDigest: manifestDigest.String()}
	for i, l := range layers {
		dg := l.BlobDigest.String()
		oci.Layers = append(oci.Layers, dg)
		idx := archive.GzipIndexOf(dg, l.Members)
		oci.GzipIdxByLayer[dg] = &idx
		oci.DecompressedHashByLayer[dg] = si.Layers[i].DiffID.Encoded()
		t.Members[dg] = l.Members
		out.ImageBytes += l.BlobSize
		out.UncompressedBytes += l.UncompressedSize
	}
	md := ImageMetadata(img.Name, manifestDigest.String(), m, si.Config)
	oci.ImageMetadata, t.Image = md, md
	t.Xattrs = ix.Xattrs()
	nodes := ix.Nodes()
	out.Bytes, err = writeV2(output, nodes, oci, t)
	if err != nil {
		return Indexed{}, err
	}
	out.Path = output
	return out, nil
}

// publishLayers publishes img's layers bottom-up, applying each layer's
// entries to ix as soon as the layer is done, so that only one layer's
// entries are held at a time. The store is open only for this.
func (p *Publisher) publishLayers(ctx context.Context, pusher *registry.Pusher, host string, img Image, ix *archive.Indexer) (*StoreImage, []publishedLayer, error) {
	store, release, err := OpenStore(ctx, append([]StoreOption{WithStoreLog(p.o.log)}, p.o.store...)...)
	if err != nil {
		return nil, nil, err
	}
	// Every diff stream is closed when its pass returns, so the store is
	// released with none open.
	defer release()
	si, err := NewLayerSource(store).Layers(ctx, img.StoreRef())
	if err != nil {
		return nil, nil, err
	}
	var cache *layerCache
	if p.o.cacheDir != "" {
		cache = &layerCache{dir: p.o.cacheDir, settings: p.settings(), host: host, repo: pusher.Repository(), log: p.o.log}
	}
	layers := make([]publishedLayer, len(si.Layers))
	progress := newProgressCounter(p.o.progress, si.UncompressedBytes())
	var cached int
	var pushed int64
	for i, l := range si.Layers {
		what := fmt.Sprintf("layer %d of %d (%s)", i+1, len(si.Layers), l.DiffID.Encoded()[:12])
		pl, hit, err := p.publishLayer(ctx, pusher, cache, l, what, progress)
		if err != nil {
			return nil, nil, err
		}
		if hit {
			cached++
		} else {
			pushed += pl.BlobSize
		}
		if err := ix.Apply(pl.BlobDigest.String(), pl.Scan); err != nil {
			return nil, nil, fmt.Errorf("indexing %s: %w", what, err)
		}
		pl.Scan = nil
		layers[i] = *pl
	}
	p.o.log.Infof("pushed %d of %d layers to %s (%d bytes), %d already there", len(layers)-cached, len(layers), pusher.Repository(), pushed, cached)
	return si, layers, nil
}

// settings names the compression settings in the cache key: a blob made
// with other settings is another blob.
func (p *Publisher) settings() string {
	return fmt.Sprintf("seekgz1-m%d-l%d", p.o.memberSize, p.o.level)
}

// publishLayer returns the cached layer if the registry still has its
// blob (and reports the hit), else runs the layer's pass, retrying the
// whole pass when the upload fails transiently, and caches the result.
func (p *Publisher) publishLayer(ctx context.Context, pusher *registry.Pusher, cache *layerCache, l StoreLayer, what string, progress *progressCounter) (*publishedLayer, bool, error) {
	if cache != nil {
		if pl := cache.lookup(ctx, pusher, l.DiffID); pl != nil {
			p.o.log.Debugf("%s: already in %s as %s (cached)", what, pusher.Repository(), pl.BlobDigest)
			progress.add(max(l.Size, 0))
			return pl, true, nil
		}
	}
	var pl *publishedLayer
	mark := progress.mark()
	err := registry.Retry(ctx, p.o.backoff, p.o.log.Warnf, "publishing "+what, func() (err error) {
		progress.rewind(mark)
		pl, err = p.pass(ctx, pusher, l, progress)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("publishing %s: %w", what, err)
	}
	p.o.log.Debugf("%s: %d bytes compressed to %d in %d members, pushed as %s", what, pl.UncompressedSize, pl.BlobSize, len(pl.Members), pl.BlobDigest)
	if cache != nil {
		if err := cache.store(l.DiffID, pl); err != nil {
			// The cache only saves work; the layer is published.
			p.o.log.Warnf("caching %s: %v", what, err)
		}
	}
	return pl, false, nil
}

// upload is what UploadBlob returned.
type upload struct {
	digest digest.Digest
	size   int64
	err    error
}

// pass streams the layer's diff once: through a tee into the seekable
// writer, whose blob goes through a pipe into a chunked upload, while the
// tar scanner reads the same bytes and tells the writer where entries
// start. The upload's failure is the pass's error, so that it can be told
// from a bad layer and retried.
func (p *Publisher) pass(ctx context.Context, pusher *registry.Pusher, l StoreLayer, progress *progressCounter) (*publishedLayer, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan upload, 1)
	go func() {
		dg, n, err := pusher.UploadBlob(ctx, pr)
		if err != nil {
			// The writer blocked on the pipe gets the error instead.
			pr.CloseWithError(err)
		} else {
			pr.Close()
		}
		done <- upload{dg, n, err}
	}()
	// The diff stream checks its diff ID and the upload hashes the blob:
	// the writer need hash neither again.
	sw := archive.NewSeekableWriter(pw, archive.WithMemberSize(p.o.memberSize),
		archive.WithCompressionLevel(p.o.level), archive.WithConcurrency(p.o.compressors), archive.WithoutDigests())
	scan, err := scanInto(ctx, l, sw, progress)
	if err != nil {
		pw.CloseWithError(err) // the upload stops and deletes its session
		_ = sw.Close()
	} else if err = sw.Close(); err != nil {
		pw.CloseWithError(err)
	} else {
		pw.Close()
	}
	up := <-done
	if up.err != nil {
		return nil, up.err
	}
	if err != nil {
		return nil, err
	}
	if up.size != sw.BlobSize() {
		return nil, fmt.Errorf("uploaded %s (%d bytes), but the writer made %d bytes", up.digest, up.size, sw.BlobSize())
	}
	return &publishedLayer{BlobDigest: up.digest, BlobSize: up.size, UncompressedSize: sw.UncompressedSize(), Members: sw.Members(), Scan: scan}, nil
}

// scanInto reads the layer's diff to its end (which checks its diff ID),
// writing every byte to w and reporting entry starts to it, and closes the
// diff stream, releasing the store's lock.
func scanInto(ctx context.Context, l StoreLayer, w *archive.SeekableWriter, progress *progressCounter) (*archive.LayerScan, error) {
	rc, err := l.Open(ctx)
	if err != nil {
		return nil, err
	}
	rc = progress.reader(rc)
	// The buffer makes the store's reads large; the tee above it passes the
	// scanner's reads on as they are, so entry starts reach the writer
	// right after their bytes.
	tee := io.TeeReader(bufio.NewReaderSize(rc, 256<<10), w)
	scan, err := archive.ScanLayer(ctx, tee, archive.WithBoundaries(w.Boundary), archive.WithContentHashes())
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return scan, nil
}

// pushManifest pushes the config as stored and an OCI manifest of the
// published layers under tag, and returns the manifest and its bytes.
func (p *Publisher) pushManifest(ctx context.Context, pusher *registry.Pusher, tag string, si *StoreImage, layers []publishedLayer) (imgspecv1.Manifest, []byte, error) {
	cfgSize := int64(len(si.ConfigBlob))
	size, ok, err := pusher.BlobExists(ctx, si.ConfigDigest)
	if err != nil {
		return imgspecv1.Manifest{}, nil, err
	}
	if !ok || size != cfgSize {
		if err := pusher.UploadBlobKnown(ctx, si.ConfigDigest, cfgSize, bytes.NewReader(si.ConfigBlob)); err != nil {
			return imgspecv1.Manifest{}, nil, fmt.Errorf("pushing the image config: %w", err)
		}
	}
	m := imgspecv1.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   imgspecv1.MediaTypeImageManifest,
		Config:      imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageConfig, Digest: si.ConfigDigest, Size: cfgSize},
		Layers:      make([]imgspecv1.Descriptor, 0, len(layers)),
		Annotations: storedAnnotations(si),
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageLayerGzip, Digest: l.BlobDigest, Size: l.BlobSize})
	}
	body, err := json.Marshal(m)
	if err != nil {
		return imgspecv1.Manifest{}, nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	if _, err := pusher.PutManifest(ctx, tag, imgspecv1.MediaTypeImageManifest, body); err != nil {
		return imgspecv1.Manifest{}, nil, err
	}
	return m, body, nil
}

// storedAnnotations are the annotations of the OCI manifest buildah stored
// with the image, which a push through containers/image would keep.
func storedAnnotations(si *StoreImage) map[string]string {
	if si.Manifest == nil || si.ManifestMIMEType != imgspecv1.MediaTypeImageManifest {
		return nil
	}
	m, err := manifest.OCI1FromManifest(si.Manifest)
	if err != nil || len(m.Annotations) == 0 {
		return nil
	}
	return m.Annotations
}
