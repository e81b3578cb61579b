package stages

import (
	"context"
	"fmt"
	"io"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/oci/layout"

	"github.com/clipbuild/clipbuild/registry"
)

// Fetcher copies registry images into local OCI layouts, for the v1 path of
// `clipbuild pull`.
type Fetcher struct {
	Options registry.Options
	// Platform is OS/ARCH[/VARIANT]; the default is the host's.
	Platform string
	// Policy is the signature policy the image must satisfy. The default is
	// containers' policy.json (see Policy).
	Policy Policy
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
	policy, err := f.Policy.context()
	if err != nil {
		return nil, err
	}
	defer policy.Destroy()
	sc, err := f.Options.SystemContext(r.Context())
	if err != nil {
		return nil, err
	}
	sc.OSChoice, sc.ArchitectureChoice, sc.VariantChoice = want.OS, want.Architecture, want.Variant
	src, err := registry.ContainersReference(r)
	if err != nil {
		return nil, err
	}
	dst, err := layout.NewReference(dir, "latest")
	if err != nil {
		return nil, fmt.Errorf("opening layout %s: %w", dir, err)
	}
	if _, err := copy.Image(ctx, policy, dst, src, &copy.Options{SourceCtx: sc, ReportWriter: io.Discard}); err != nil {
		if policyDenied(err) {
			return nil, fmt.Errorf("%s rejected by %w: %w", ref, ErrSignaturePolicy, err)
		}
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
