package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"

	"github.com/clipbuild/clipbuild/registry"
)

// Fetcher copies registry images into local OCI layouts, for the v1 path of
// `clipbuild pull`.
type Fetcher struct {
	Options registry.Options
	// Platform is OS/ARCH[/VARIANT]; the default is the host's.
	Platform string
}

// Fetch copies the image at ref into a new OCI layout at dir.
func (f Fetcher) Fetch(ctx context.Context, ref, dir string) (*Layout, error) {
	want, err := ParsePlatform(f.Platform)
	if err != nil {
		return nil, err
	}
	r, err := f.Options.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	sc, err := f.Options.SystemContext(r.Context().RegistryStr())
	if err != nil {
		return nil, err
	}
	sc.OSChoice, sc.ArchitectureChoice, sc.VariantChoice = want.OS, want.Architecture, want.Variant
	src, err := docker.ParseReference("//" + strings.TrimPrefix(r.Name(), "index.docker.io/"))
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", ref, err)
	}
	dst, err := layout.NewReference(dir, "latest")
	if err != nil {
		return nil, fmt.Errorf("opening layout %s: %w", dir, err)
	}
	policy, err := systemPolicy(sc)
	if err != nil {
		return nil, err
	}
	defer policy.Destroy()
	if _, err := copy.Image(ctx, policy, dst, src, &copy.Options{SourceCtx: sc, ReportWriter: io.Discard}); err != nil {
		return nil, fmt.Errorf("copying %s: %w", ref, err)
	}
	l, err := ReadLayout(dir)
	if err != nil {
		return nil, err
	}
	if l.Config.OS != want.OS || l.Config.Architecture != want.Architecture {
		return nil, fmt.Errorf("%w: %s is %s/%s, want %s", ErrPlatformMismatch, ref, l.Config.OS, l.Config.Architecture, want.String())
	}
	return l, nil
}

// systemPolicy is the host's signature policy (/etc/containers/policy.json),
// as skopeo applies it to pulls; without one, images are accepted as they are.
func systemPolicy(sc *types.SystemContext) (*signature.PolicyContext, error) {
	p, err := signature.DefaultPolicy(sc)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return insecureAcceptAnything()
		}
		return nil, fmt.Errorf("reading signature policy: %w", err)
	}
	return signature.NewPolicyContext(p)
}
