package stages

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/pkg/compression"
	is "go.podman.io/image/v5/storage"
	"go.podman.io/storage"

	"github.com/clipbuild/clipbuild/registry"
)

// Pusher pushes local images to a scratch registry for v2 indexing.
type Pusher struct {
	// Registry is HOST[:PORT][/NAMESPACE].
	Registry string
	Options  registry.Options
	// StoreOptions selects the store; the default is buildah's.
	StoreOptions *storage.StoreOptions
}

// Pushed is an image in a registry, pinned by manifest digest.
type Pushed struct {
	Repository string // host[:port]/path
	Tag        string
	Digest     digest.Digest
}

// Ref is the tag reference the image was pushed under.
func (p Pushed) Ref() string { return p.Repository + ":" + p.Tag }

// Pinned is the digest reference, which no later push can re-point.
func (p Pushed) Pinned() string { return p.Repository + "@" + p.Digest.String() }

// Repository is where Push puts image: the registry's namespace plus the
// image's last name component.
func (p Pusher) Repository(image string) (string, error) {
	reg := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(p.Registry, "https://"), "http://"), "/")
	if reg == "" {
		return "", fmt.Errorf("no registry configured")
	}
	host, _, _ := strings.Cut(reg, "/")
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		// Without a dot or a port the first component would name a Docker
		// Hub namespace, and a scratch push would go to Docker Hub.
		return "", fmt.Errorf("registry %q: %q is not a registry host (want HOST[:PORT][/NAMESPACE])", p.Registry, host)
	}
	repo := reg + "/" + strings.ToLower(imageBase(image))
	if _, err := reference.ParseNormalizedNamed(repo); err != nil {
		return "", fmt.Errorf("registry %q: %w", p.Registry, err)
	}
	// Push goes through containers/image, and the archive pins the image
	// through go-containerregistry: both must take the name.
	if _, err := docker.ParseReference("//" + repo + ":latest"); err != nil {
		return "", fmt.Errorf("registry %q: %w", p.Registry, err)
	}
	if _, err := p.Options.ParseReference(repo + ":latest"); err != nil {
		return "", fmt.Errorf("registry %q: %w", p.Registry, err)
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

// Push copies the local image to the registry with gzip layers (what clip's
// v2 format indexes), under a tag made from the image ID. The tag is unique
// and never re-pointed, and the result is pinned by digest anyway.
func (p Pusher) Push(ctx context.Context, img Image) (Pushed, error) {
	repo, err := p.Repository(img.Name)
	if err != nil {
		return Pushed{}, err
	}
	tag := "id-" + img.ID
	if len(tag) > 128 {
		tag = tag[:128]
	}
	ref, err := p.Options.ParseReference(repo + ":" + tag)
	if err != nil {
		return Pushed{}, err
	}
	sc, err := p.Options.SystemContext(ref.Context())
	if err != nil {
		return Pushed{}, err
	}
	sc.CompressionFormat = &compression.Gzip
	var storeOpts []StoreOption
	if p.StoreOptions != nil {
		storeOpts = append(storeOpts, WithStoreOptions(*p.StoreOptions))
	}
	store, release, err := OpenStore(ctx, storeOpts...)
	if err != nil {
		return Pushed{}, err
	}
	defer release()
	src, err := is.Transport.ParseStoreReference(store, img.StoreRef())
	if err != nil {
		return Pushed{}, fmt.Errorf("parsing %s: %w", img.Name, err)
	}
	dst, err := docker.ParseReference("//" + repo + ":" + tag)
	if err != nil {
		return Pushed{}, fmt.Errorf("parsing %s: %w", repo, err)
	}
	policy, err := insecureAcceptAnything()
	if err != nil {
		return Pushed{}, err
	}
	defer policy.Destroy()
	manifest, err := copy.Image(ctx, policy, dst, src, &copy.Options{
		DestinationCtx:        sc,
		ReportWriter:          io.Discard,
		ForceManifestMIMEType: imgspecv1.MediaTypeImageManifest,
	})
	if err != nil {
		return Pushed{}, fmt.Errorf("pushing to %s: %w", repo, err)
	}
	return Pushed{Repository: repo, Tag: tag, Digest: digest.FromBytes(manifest)}, nil
}
