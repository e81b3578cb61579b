package stages

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/signature"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/registry"
)

// ErrPlatformMismatch is returned when an image is not for the platform asked
// for (or the host's).
var ErrPlatformMismatch = errors.New("platform mismatch")

// Indexer writes v2 archives of images in a registry, reading each layer
// once, as a stream, and never storing it.
type Indexer struct {
	Options registry.Options
	// Platform is OS/ARCH[/VARIANT]; the default is the host's.
	Platform string
	// Policy, when set, is the signature policy the image must satisfy; it
	// is evaluated for the manifest digest that is then indexed. The
	// default is no check, for the images a build pushed itself (v1 builds
	// do not check their own images either); pull sets it.
	Policy *Policy
	// Progress is told how many of the layers' compressed bytes have been
	// read. The default is no reporting.
	Progress ProgressFunc
}

// Indexed is a v2 archive on disk.
type Indexed struct {
	Written
	ImageRef          string // repository@digest the archive reads from
	ManifestDigest    string
	ImageBytes        int64 // layer bytes as stored in the registry
	UncompressedBytes int64
}

// ParsePlatform parses OS/ARCH[/VARIANT]; an empty string is the host.
func ParsePlatform(s string) (v1.Platform, error) {
	if s == "" {
		p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		if runtime.GOARCH == "arm64" {
			p.Variant = "v8"
		}
		return p, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("--platform %q: want OS/ARCH[/VARIANT]", s)
	}
	return *p, nil
}

func platformMatches(want v1.Platform, cfg *v1.ConfigFile) bool {
	if cfg.OS != want.OS || cfg.Architecture != want.Architecture {
		return false
	}
	return want.Variant == "" || cfg.Variant == "" || cfg.Variant == want.Variant
}

// IndexRequest says what to index and where the archive goes.
type IndexRequest struct {
	Ref    string // the image in its registry; a digest reference pins it
	Image  string // what the archive calls the image
	Output string
	// Tag, when set, is the immutable tag recorded for clip's own runtime,
	// which resolves a reference by tag. The default is Ref's tag or digest.
	Tag string
}

// Index indexes the image at req.Ref into a v2 archive at req.Output,
// atomically.
func (x Indexer) Index(ctx context.Context, req IndexRequest) (Indexed, error) {
	ref := req.Ref
	want, err := ParsePlatform(x.Platform)
	if err != nil {
		return Indexed{}, err
	}
	r, err := x.Options.ParseReference(ref)
	if err != nil {
		return Indexed{}, err
	}
	var policy *signature.PolicyContext
	if x.Policy != nil {
		if policy, err = x.Policy.context(); err != nil {
			return Indexed{}, err
		}
		defer policy.Destroy()
	}
	ropts, err := x.Options.RemoteOptions(ctx, r)
	if err != nil {
		return Indexed{}, err
	}
	desc, err := remote.Get(r, append(ropts, remote.WithPlatform(want))...)
	if err != nil {
		return Indexed{}, fmt.Errorf("fetching manifest of %s: %w", ref, err)
	}
	var img v1.Image
	switch desc.MediaType {
	case types.OCIImageIndex, types.DockerManifestList:
		idx, err := desc.ImageIndex()
		if err != nil {
			return Indexed{}, fmt.Errorf("reading index of %s: %w", ref, err)
		}
		img, err = pickPlatform(idx, want)
		if err != nil {
			return Indexed{}, fmt.Errorf("%s: %w", ref, err)
		}
	default:
		if img, err = desc.Image(); err != nil {
			return Indexed{}, fmt.Errorf("reading image %s: %w", ref, err)
		}
	}
	return x.indexImage(ctx, r, img, policy, req)
}

func pickPlatform(idx v1.ImageIndex, want v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var have []string
	for _, m := range im.Manifests {
		if m.Platform == nil {
			continue
		}
		have = append(have, m.Platform.String())
		if m.Platform.OS == want.OS && m.Platform.Architecture == want.Architecture &&
			(want.Variant == "" || m.Platform.Variant == "" || m.Platform.Variant == want.Variant) {
			return idx.Image(m.Digest)
		}
	}
	return nil, fmt.Errorf("%w: no image for %s in the index (it has %s)", ErrPlatformMismatch, want.String(), strings.Join(have, ", "))
}

// indexImage indexes img, the manifest Index fetched, after policy (when
// set) has accepted exactly that manifest's digest; nothing else of the
// image is read before.
func (x Indexer) indexImage(ctx context.Context, r name.Reference, img v1.Image, policy *signature.PolicyContext, req IndexRequest) (Indexed, error) {
	want, _ := ParsePlatform(x.Platform)
	manifestDigest, err := img.Digest()
	if err != nil {
		return Indexed{}, err
	}
	if policy != nil {
		if err := checkPolicy(ctx, policy, x.Options, r.Context(), manifestDigest.String()); err != nil {
			return Indexed{}, err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Indexed{}, fmt.Errorf("reading image config: %w", err)
	}
	if !platformMatches(want, cfg) {
		return Indexed{}, fmt.Errorf("%w: image is %s/%s, want %s", ErrPlatformMismatch, cfg.OS, cfg.Architecture, want.String())
	}
	m, err := img.Manifest()
	if err != nil {
		return Indexed{}, fmt.Errorf("reading manifest: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return Indexed{}, fmt.Errorf("image config lists %d layers, manifest %d", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	ix := archive.NewIndexer()
	oci := &common.OCIStorageInfo{
		RegistryURL:             r.Context().RegistryStr(),
		Repository:              r.Context().RepositoryStr(),
		Reference:               r.Identifier(),
		DecompressedHashByLayer: map[string]string{},
	}
	var imageBytes, uncompressedBytes int64
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	progress := newProgressCounter(x.Progress, total)
	zran := map[string]*archive.ZranIndex{}
	for i, l := range m.Layers {
		oci.Layers = append(oci.Layers, l.Digest.String())
		imageBytes += l.Size
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return Indexed{}, fmt.Errorf("layer %d: %w", i+1, err)
		}
		n, zi, err := indexLayer(ctx, ix, layer, l, cfg.RootFS.DiffIDs[i], progress)
		uncompressedBytes += n
		if err != nil {
			return Indexed{}, fmt.Errorf("indexing layer %d (%s): %w", i+1, l.Digest.Hex[:12], err)
		}
		if zi != nil {
			zran[l.Digest.String()] = zi
		}
		oci.DecompressedHashByLayer[l.Digest.String()] = cfg.RootFS.DiffIDs[i].Hex
	}
	ociManifest := imgspecv1.Manifest{}
	ociConfig := imgspecv1.Image{}
	if err := convertJSON(m, &ociManifest); err != nil {
		return Indexed{}, err
	}
	if err := convertJSON(cfg, &ociConfig); err != nil {
		return Indexed{}, err
	}
	if req.Tag != "" {
		oci.Reference = req.Tag
	}
	md := ImageMetadata(req.Image, manifestDigest.String(), ociManifest, ociConfig)
	oci.ImageMetadata = md
	pinned := r.Context().String() + "@" + manifestDigest.String()
	t := archive.Trailer{Image: md, ImageRef: pinned, ManifestDigest: manifestDigest.String(), Tool: "clipbuild",
		PlainHTTP: x.Options.PlainHTTP(r.Context().RegistryStr()) && !registry.IsLoopback(r.Context().RegistryStr())}
	nodes := ix.Nodes()
	t.Xattrs = ix.Xattrs()
	if len(zran) > 0 {
		t.Zran = zran
	}
	var out Indexed
	out.Bytes, err = writeV2(req.Output, nodes, oci, t)
	if err != nil {
		return Indexed{}, err
	}
	out.Path = req.Output
	out.ImageRef = pinned
	out.ManifestDigest = manifestDigest.String()
	out.ImageBytes = imageBytes
	out.UncompressedBytes = uncompressedBytes
	return out, nil
}

// indexLayer streams one layer through the indexer, checking the
// uncompressed bytes against the config's diff ID, and returns how many
// uncompressed bytes the layer has and, for a gzip layer, the restart
// points found on the way, for reading it by range.
func indexLayer(ctx context.Context, ix *archive.Indexer, layer v1.Layer, desc v1.Descriptor, diffID v1.Hash, progress *progressCounter) (int64, *archive.ZranIndex, error) {
	n, zr, err := streamLayer(ctx, ix, layer, desc, diffID, progress)
	if err != nil || zr == nil {
		return n, nil, err
	}
	zi, err := zr.Index()
	if err != nil {
		return n, nil, fmt.Errorf("reading layer: %w", err)
	}
	return n, zi, nil
}

func streamLayer(ctx context.Context, ix *archive.Indexer, layer v1.Layer, desc v1.Descriptor, diffID v1.Hash, progress *progressCounter) (int64, *archive.ZranReader, error) {
	mt := string(desc.MediaType)
	gz := strings.HasSuffix(mt, "gzip") || mt == string(types.DockerLayer) || mt == string(types.DockerForeignLayer)
	plain := mt == imgspecv1.MediaTypeImageLayer || mt == string(types.DockerUncompressedLayer)
	if !gz && !plain {
		return 0, nil, fmt.Errorf("layer media type %s is not supported (v2 indexes gzip and uncompressed layers)", mt)
	}
	rc, err := layer.Compressed()
	if err != nil {
		return 0, nil, err
	}
	rc = progress.reader(rc)
	defer rc.Close()
	var stream io.Reader = rc
	if plain {
		// A compressed blob labelled uncompressed failed deep in the tar
		// reader with "unexpected EOF"; name the real problem instead.
		br := bufio.NewReader(rc)
		if magic, _ := br.Peek(4); bytes.HasPrefix(magic, []byte{0x1f, 0x8b}) || bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
			return 0, nil, fmt.Errorf("layer is compressed (gzip or zstd) but its media type %s says uncompressed", mt)
		}
		stream = br
	}
	var zr *archive.ZranReader
	if gz {
		// One pass with zlib, recording restart points as it inflates.
		if zr, err = archive.NewZranReader(rc); err != nil {
			return 0, nil, fmt.Errorf("layer is not gzip: %w", err)
		}
		// Closing the blob first ends a read zlib's goroutine may be
		// blocked in, so Close does not wait on the network.
		defer func() {
			rc.Close()
			zr.Close()
		}()
		stream = zr
	}
	h := sha256.New()
	n := &countingWriter{w: h}
	tee := io.TeeReader(stream, n)
	if err := ix.AddLayer(ctx, desc.Digest.String(), tee, archive.WithContentHashes()); err != nil {
		return 0, nil, err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return 0, nil, fmt.Errorf("reading layer: %w", err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return 0, nil, fmt.Errorf("reading layer: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); diffID.Algorithm == "sha256" && got != diffID.Hex {
		return 0, nil, fmt.Errorf("uncompressed content sha256:%s does not match the config's diff ID %s", got, diffID)
	}
	return n.n, zr, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
