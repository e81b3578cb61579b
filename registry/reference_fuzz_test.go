package registry_test

import (
	"strings"
	"testing"

	"go.podman.io/image/v5/docker"

	"github.com/clipbuild/clipbuild/registry"
	"github.com/clipbuild/clipbuild/stages"
)

// FuzzParseReference parses arbitrary image references the way pull and the
// v2 indexer do (registry.Options.ParseReference) and arbitrary registries
// and image names the way push does (stages.Publisher.Repository). Errors are
// fine; a panic is not, and neither is a result that the next step, which
// re-parses it, would refuse.
func FuzzParseReference(f *testing.F) {
	for _, s := range [][2]string{
		{"registry.example.com/team/app:1", "localhost/app:latest"},
		{"127.0.0.1:5000/hostile/case@sha256:" + strings.Repeat("ab", 32), "app"},
		{"localhost:5000/a/b/c:tag", "localhost:5000/ns/App@sha256:" + strings.Repeat("0", 64)},
		{"[::1]:5000/x", "x:y:z"},
		{"ubuntu", ""},
		{"http://127.0.0.1:5000/scratch/", "/"},
		{"https://r.example:443/ns", "a/b/"},
		{"UPPER/case:TAG", "Image:Tag"},
		{"r:99999/x", "@"},
		{"a/b:c@sha256:zz", "..."},
		{"", "img"},
	} {
		f.Add(s[0], s[1])
	}
	opts := []registry.Options{
		registry.DefaultOptions(),
		{TLSVerify: true, Insecure: true},
		{TLSVerify: false},
	}
	f.Fuzz(func(t *testing.T, ref, image string) {
		for _, o := range opts {
			r, err := o.ParseReference(ref)
			if err != nil {
				continue
			}
			host, repo := r.Context().RegistryStr(), r.Context().RepositoryStr()
			if host == "" || repo == "" {
				t.Fatalf("ParseReference(%q) = %q: empty registry or repository", ref, r.Name())
			}
			// The archive pins the image as repository@digest and reads
			// blobs from registry/repository: both must parse again.
			// Known limit, not checked: go-containerregistry takes a short
			// Docker Hub name whose "library/" form is over 255 bytes, and
			// then refuses that form.
			if len(repo) > 255 {
				continue
			}
			pinned := r.Context().String() + "@sha256:" + strings.Repeat("0", 64)
			if _, err := o.ParseReference(pinned); err != nil {
				t.Fatalf("ParseReference(%q) = %q, but the pinned %q does not parse: %v", ref, r.Name(), pinned, err)
			}
			if _, err := registry.NewBlobs(host+"/"+repo, o); err != nil {
				t.Fatalf("ParseReference(%q) = %q, but NewBlobs(%q) = %v", ref, r.Name(), host+"/"+repo, err)
			}
			if _, err := o.ParseReference(r.Name()); err != nil {
				t.Fatalf("ParseReference(%q) = %q, which does not parse again: %v", ref, r.Name(), err)
			}
		}

		pub, err := stages.NewPublisher(ref, registry.DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		repo, err := pub.Repository(image)
		if err != nil {
			return
		}
		i := strings.Index(repo, "/")
		if i <= 0 {
			t.Fatalf("Repository(%q) with registry %q = %q: no host part", image, ref, repo)
		}
		if _, err := registry.DefaultOptions().ParseReference(repo + ":id-0123456789ab"); err != nil {
			t.Fatalf("Repository(%q) with registry %q = %q, which does not parse as a reference: %v", image, ref, repo, err)
		}
		if _, err := docker.ParseReference("//" + repo + ":id-0123456789ab"); err != nil {
			t.Fatalf("Repository(%q) with registry %q = %q, which push cannot use: %v", image, ref, repo, err)
		}
	})
}
