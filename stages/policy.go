package stages

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/google/go-containerregistry/pkg/name"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/signature"
	"go.podman.io/storage/pkg/configfile"

	"github.com/clipbuild/clipbuild/registry"
)

// ErrSignaturePolicy marks a pull that the signature policy refused, or
// whose policy could not be read. v1 applies the same policy, so falling
// back to it would not help.
var ErrSignaturePolicy = errors.New("signature policy")

// Policy is the signature policy (containers' policy.json) a registry image
// must satisfy before it is archived, as skopeo and buildah apply it.
type Policy struct {
	// Path is the policy file (--signature-policy). The default is
	// containers' own lookup ($CONTAINERS_POLICY_JSON,
	// ~/.config/containers/policy.json, /etc/containers/policy.json), and
	// any image is accepted when there is none, as v1 always did.
	Path string
}

// context loads the policy.
func (p Policy) context() (*signature.PolicyContext, error) {
	var pol *signature.Policy
	var err error
	if p.Path != "" {
		if pol, err = signature.NewPolicyFromFile(p.Path); err != nil {
			return nil, fmt.Errorf("reading %w %s: %w", ErrSignaturePolicy, p.Path, err)
		}
	} else if pol, err = signature.DefaultPolicy(nil); err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, configfile.ErrConfigFileNotFound) {
			return nil, fmt.Errorf("reading %w: %w", ErrSignaturePolicy, err)
		}
		return insecureAcceptAnything()
	}
	pc, err := signature.NewPolicyContext(pol)
	if err != nil {
		return nil, fmt.Errorf("reading %w: %w", ErrSignaturePolicy, err)
	}
	return pc, nil
}

// policyDenied reports whether err is a signature policy's refusal, rather
// than, say, a registry that could not be reached for the signatures.
func policyDenied(err error) bool {
	var denied signature.PolicyRequirementError
	return errors.As(err, &denied)
}

// checkPolicy evaluates pc for the image repo@dg: the digest pins what is
// checked to exactly what is then indexed, so a tag moved in between cannot
// slip another image past the policy. containers/image reads the manifest
// and signatures it needs with the same credentials and TLS rules as the
// indexer.
func checkPolicy(ctx context.Context, pc *signature.PolicyContext, opts registry.Options, repo name.Repository, dg string) error {
	pinned, err := name.NewDigest(repo.Name()+"@"+dg, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("pinning %s: %w", repo, err)
	}
	ref, err := registry.ContainersReference(pinned)
	if err != nil {
		return err
	}
	sc, err := opts.SystemContext(repo)
	if err != nil {
		return err
	}
	src, err := ref.NewImageSource(ctx, sc)
	if err != nil {
		return fmt.Errorf("reading %s for the %s: %w", pinned, ErrSignaturePolicy, err)
	}
	defer src.Close()
	allowed, err := pc.IsRunningImageAllowed(ctx, image.UnparsedInstance(src, nil))
	if policyDenied(err) {
		return fmt.Errorf("%s rejected by %w: %w", pinned, ErrSignaturePolicy, err)
	}
	if err != nil {
		return fmt.Errorf("evaluating the %s for %s: %w", ErrSignaturePolicy, pinned, err)
	}
	if !allowed {
		return fmt.Errorf("%s rejected by %w", pinned, ErrSignaturePolicy)
	}
	return nil
}

// insecureAcceptAnything is the signature policy for copying an image we
// just built ourselves: there is nothing to verify.
func insecureAcceptAnything() (*signature.PolicyContext, error) {
	return signature.NewPolicyContext(&signature.Policy{
		Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()},
	})
}
