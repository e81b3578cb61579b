package stages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/registry"
)

// policyRegistry starts the embedded registry on loopback for one test and
// returns its address and registry options that read no credentials of the
// machine's.
func policyRegistry(t *testing.T) (string, registry.Options) {
	t.Helper()
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	registry.RouteLogs(quiet)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := registry.Start(ctx, "127.0.0.1:0", t.TempDir())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// go-containerregistry's HTTPS attempt leaves a connection that
		// never sends a request, which Shutdown would wait 5 s for.
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		s.Shutdown(sctx)
		cancel()
	})
	o := registry.DefaultOptions()
	o.AuthFile = filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(o.AuthFile, []byte(`{"auths":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return s.Addr, o
}

// pushImage pushes a small random image for this host's platform to ref
// and returns its manifest digest.
func pushImage(t *testing.T, o registry.Options, ref string) (v1.Image, v1.Hash) {
	t.Helper()
	img, err := random.Image(256, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ParsePlatform("")
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg.OS, cfg.Architecture, cfg.Variant = want.OS, want.Architecture, want.Variant
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := o.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	ropts, err := o.RemoteOptions(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, ropts...); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	dg, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return img, dg
}

// policyFile writes a policy.json.
func policyFile(t *testing.T, policy string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(p, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	rejectPolicy = `{"default":[{"type":"reject"}]}`
	acceptPolicy = `{"default":[{"type":"insecureAcceptAnything"}]}`
)

// onlyDigest accepts repo@dg and rejects everything else: a scope the
// docker transport matches only when that digest is what is evaluated.
func onlyDigest(repo string, dg v1.Hash) string {
	return fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{%q:[{"type":"insecureAcceptAnything"}]}}}`, repo+"@"+dg.String())
}

func TestIndexAppliesSignaturePolicy(t *testing.T) {
	addr, o := policyRegistry(t)
	repo := addr + "/policy/img"
	_, dg := pushImage(t, o, repo+":1")
	_, other := pushImage(t, o, repo+":other")
	tests := []struct {
		name   string
		policy *Policy
		env    string // $CONTAINERS_POLICY_JSON, read by containers' default lookup
		ok     bool
	}{
		{"reject", &Policy{Path: policyFile(t, rejectPolicy)}, "", false},
		{"insecureAcceptAnything", &Policy{Path: policyFile(t, acceptPolicy)}, "", true},
		{"the indexed digest only", &Policy{Path: policyFile(t, onlyDigest(repo, dg))}, "", true},
		{"another digest only", &Policy{Path: policyFile(t, onlyDigest(repo, other))}, "", false},
		{"default lookup rejects", &Policy{}, policyFile(t, rejectPolicy), false},
		{"default lookup accepts", &Policy{}, policyFile(t, acceptPolicy), true},
		{"no policy for a build's own image", nil, policyFile(t, rejectPolicy), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CONTAINERS_POLICY_JSON", tc.env)
			out := filepath.Join(t.TempDir(), "img.clip")
			got, err := Indexer{Options: o, Policy: tc.policy}.Index(context.Background(), IndexRequest{Ref: repo + ":1", Image: "img", Output: out})
			_, statErr := os.Stat(out)
			if tc.ok {
				if err != nil {
					t.Fatalf("Index() = %v, want success", err)
				}
				if got.ManifestDigest != dg.String() {
					t.Errorf("Index() indexed %s, want %s", got.ManifestDigest, dg)
				}
				return
			}
			if !errors.Is(err, ErrSignaturePolicy) {
				t.Fatalf("Index() = %v, want an ErrSignaturePolicy error", err)
			}
			if statErr == nil {
				t.Errorf("Index() failed but left %s", out)
			}
		})
	}
}

// TestIndexPolicyEvaluatesTheIndexedInstance checks that for a manifest
// list the digest evaluated is that of the platform's image, the one
// indexed, as containers/image evaluates the instance it copies.
func TestIndexPolicyEvaluatesTheIndexedInstance(t *testing.T) {
	addr, o := policyRegistry(t)
	repo := addr + "/policy/multi"
	img, dg := pushImage(t, o, repo+":single")
	want, _ := ParsePlatform("")
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &want}})
	r, err := name.ParseReference(repo+":list", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ropts, err := o.RemoteOptions(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx, ropts...); err != nil {
		t.Fatal(err)
	}
	listDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		accept v1.Hash
		ok     bool
	}{{dg, true}, {listDigest, false}} {
		x := Indexer{Options: o, Policy: &Policy{Path: policyFile(t, onlyDigest(repo, tc.accept))}}
		_, err := x.Index(context.Background(), IndexRequest{Ref: repo + ":list", Image: "multi", Output: filepath.Join(t.TempDir(), "m.clip")})
		if (err == nil) != tc.ok {
			t.Errorf("Index(list) with only %s accepted (image %s, list %s, %s) = %v, want success %v", tc.accept, dg, listDigest, runtime.GOARCH, err, tc.ok)
		}
	}
}

func TestFetchAppliesSignaturePolicy(t *testing.T) {
	addr, o := policyRegistry(t)
	ref := addr + "/policy/fetched:1"
	pushImage(t, o, ref)
	for _, tc := range []struct {
		name   string
		policy string
		ok     bool
	}{{"reject", rejectPolicy, false}, {"insecureAcceptAnything", acceptPolicy, true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := Fetcher{Options: o, Policy: Policy{Path: policyFile(t, tc.policy)}}
			_, err := f.Fetch(context.Background(), ref, filepath.Join(t.TempDir(), "layout"))
			if tc.ok && err != nil {
				t.Fatalf("Fetch() = %v, want success", err)
			}
			if !tc.ok && !errors.Is(err, ErrSignaturePolicy) {
				t.Fatalf("Fetch() = %v, want an ErrSignaturePolicy error", err)
			}
		})
	}
	t.Run("missing policy file", func(t *testing.T) {
		f := Fetcher{Options: o, Policy: Policy{Path: filepath.Join(t.TempDir(), "missing.json")}}
		if _, err := f.Fetch(context.Background(), ref, filepath.Join(t.TempDir(), "layout")); !errors.Is(err, ErrSignaturePolicy) {
			t.Fatalf("Fetch() with a missing --signature-policy = %v, want an ErrSignaturePolicy error, not acceptance", err)
		}
	})
}
