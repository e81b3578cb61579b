package registry_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/clipbuild/clipbuild/registry"
)

// gcFixture is a registry root holding, in repository gc/app, images tagged
// id-old, id-new and latest (latest is id-old's image, pushed under a name
// clipbuild never makes) and in gc/other an image tagged id-aged; every
// image has the shared layer and one of its own.
type gcFixture struct {
	root   string
	shared v1.Hash
	unique map[string]v1.Hash // tag -> its image's own layer
	images map[string]v1.Hash // tag -> manifest digest
}

func newGCFixture(t *testing.T) gcFixture {
	t.Helper()
	ctx := context.Background()
	f := gcFixture{root: t.TempDir(), unique: map[string]v1.Hash{}, images: map[string]v1.Hash{}}
	s, err := registry.Start(ctx, "127.0.0.1:0", f.root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)
	shared, err := random.Layer(4096, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	if f.shared, err = shared.Digest(); err != nil {
		t.Fatal(err)
	}
	push := func(repo, tag string) v1.Image {
		own, err := random.Layer(4096, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(empty.Image, shared, own)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.NewTag(s.Addr+"/"+repo+":"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("pushing %s: %v", ref, err)
		}
		if f.unique[tag], err = own.Digest(); err != nil {
			t.Fatal(err)
		}
		if f.images[tag], err = img.Digest(); err != nil {
			t.Fatal(err)
		}
		return img
	}
	old := push("gc/app", "id-old")
	push("gc/app", "id-new")
	push("gc/other", "id-aged")
	latest, err := name.NewTag(s.Addr+"/gc/app:latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(latest, old); err != nil {
		t.Fatal(err)
	}
	f.images["latest"] = f.images["id-old"]
	aged := time.Now().Add(-2 * time.Hour)
	for _, rt := range []string{"gc/app/_manifests/tags/id-old", "gc/app/_manifests/tags/latest", "gc/other/_manifests/tags/id-aged"} {
		if err := os.Chtimes(f.linkPath(rt), aged, aged); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f gcFixture) linkPath(repoTag string) string {
	return filepath.Join(f.root, "docker/registry/v2/repositories", repoTag, "current/link")
}

// blobExists says whether the blob's data is still in storage.
func (f gcFixture) blobExists(t *testing.T, h v1.Hash) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(f.root, "docker/registry/v2/blobs", h.Algorithm, h.Hex[:2], h.Hex, "data"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

// tags lists the tags of repo left in storage.
func (f gcFixture) tags(t *testing.T, repo string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(f.root, "docker/registry/v2/repositories", repo, "_manifests/tags"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var tags []string
	for _, e := range ents {
		tags = append(tags, e.Name())
	}
	sort.Strings(tags)
	return tags
}

func TestGC(t *testing.T) {
	f := newGCFixture(t)
	res, err := registry.GC(context.Background(), f.root, registry.WithKeep(time.Hour))
	if err != nil {
		t.Fatalf("GC = %v", err)
	}
	var removed []string
	for _, c := range res.Removed {
		removed = append(removed, c.Repository+":"+c.Tag)
	}
	if want := []string{"gc/app:id-old", "gc/other:id-aged"}; !cmp.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if res.Kept != 1 {
		t.Errorf("kept %d scratch tags, want 1", res.Kept)
	}
	if got, want := f.tags(t, "gc/app"), []string{"id-new", "latest"}; !cmp.Equal(got, want) {
		t.Errorf("gc/app tags %v, want %v", got, want)
	}
	if got := f.tags(t, "gc/other"); len(got) != 0 {
		t.Errorf("gc/other tags %v, want none", got)
	}
	for _, c := range []struct {
		what string
		blob v1.Hash
		want bool
	}{
		{"shared layer", f.shared, true},
		{"id-new's layer", f.unique["id-new"], true},
		{"id-new's manifest", f.images["id-new"], true},
		{"id-old's layer (latest names its image)", f.unique["id-old"], true},
		{"id-aged's layer", f.unique["id-aged"], false},
		{"id-aged's manifest", f.images["id-aged"], false},
	} {
		if got := f.blobExists(t, c.blob); got != c.want {
			t.Errorf("%s %s exists = %v, want %v", c.what, c.blob, got, c.want)
		}
	}
	if res.BlobsRemoved < 2 {
		t.Errorf("removed %d blobs, want at least 2 (id-aged's layer, config and manifest)", res.BlobsRemoved)
	}

	// What stays still serves.
	s, err := registry.Start(context.Background(), "127.0.0.1:0", f.root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	ref, err := name.NewTag(s.Addr+"/gc/app:id-new", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("reading %s after GC: %v", ref, err)
	}
	if _, err := img.RawConfigFile(); err != nil {
		t.Errorf("reading %s's config after GC: %v", ref, err)
	}
}

func TestGCDryRun(t *testing.T) {
	f := newGCFixture(t)
	res, err := registry.GC(context.Background(), f.root, registry.WithKeep(time.Hour), registry.WithDryRun(true))
	if err != nil {
		t.Fatalf("GC = %v", err)
	}
	if len(res.Removed) != 2 || res.BlobsRemoved != 0 {
		t.Errorf("dry run: would remove %v and removed %d blobs, want 2 tags and no blobs", res.Removed, res.BlobsRemoved)
	}
	if got, want := f.tags(t, "gc/app"), []string{"id-new", "id-old", "latest"}; !cmp.Equal(got, want) {
		t.Errorf("gc/app tags %v, want %v", got, want)
	}
	if got, want := f.tags(t, "gc/other"), []string{"id-aged"}; !cmp.Equal(got, want) {
		t.Errorf("gc/other tags %v, want %v", got, want)
	}
	if !f.blobExists(t, f.unique["id-aged"]) {
		t.Errorf("dry run removed id-aged's layer")
	}
}

func TestGCKeepsYoungTags(t *testing.T) {
	f := newGCFixture(t)
	res, err := registry.GC(context.Background(), f.root, registry.WithKeep(3*time.Hour))
	if err != nil {
		t.Fatalf("GC = %v", err)
	}
	if len(res.Removed) != 0 || res.Kept != 3 {
		t.Errorf("removed %v, kept %d, want none removed and 3 kept", res.Removed, res.Kept)
	}
	if !f.blobExists(t, f.unique["id-aged"]) {
		t.Errorf("id-aged's layer removed with its tag kept")
	}
}

func TestGCOptions(t *testing.T) {
	if _, err := registry.GC(context.Background(), t.TempDir(), registry.WithKeep(-time.Hour)); err == nil {
		t.Error("GC with a negative keep succeeded")
	}
	if _, err := registry.GC(context.Background(), filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("GC of a missing root succeeded")
	}
	if res, err := registry.GC(context.Background(), t.TempDir()); err != nil || len(res.Removed) != 0 {
		t.Errorf("GC of an empty root = %+v, %v, want nothing removed and no error", res, err)
	}
}

// TestReadCollectedBlob reads a blob GC collected, by range and whole: the
// error is ErrBlobMissing and names the digest.
func TestReadCollectedBlob(t *testing.T) {
	f := newGCFixture(t)
	if _, err := registry.GC(context.Background(), f.root, registry.WithKeep(time.Hour)); err != nil {
		t.Fatalf("GC = %v", err)
	}
	s, err := registry.Start(context.Background(), "127.0.0.1:0", f.root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	repo := s.Addr + "/gc/other"
	collected := f.unique["id-aged"].String()

	rr, err := registry.NewRangeReader(repo, registry.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, rerr := rr.ReadRange(context.Background(), collected, 0, 16)
	blobs, err := registry.NewBlobs(repo, registry.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	rc, oerr := blobs.Open(context.Background(), collected)
	if oerr == nil {
		rc.Close()
	}
	for _, c := range []struct {
		what string
		err  error
	}{{"ReadRange", rerr}, {"Open", oerr}} {
		if !errors.Is(c.err, registry.ErrBlobMissing) || !strings.Contains(c.err.Error(), collected) {
			t.Errorf("%s of a collected blob = %v, want ErrBlobMissing naming %s", c.what, c.err, collected)
		}
	}
	if _, err := rr.ReadRange(context.Background(), f.shared.String(), 0, 16); err != nil {
		t.Errorf("ReadRange of a kept blob = %v", err)
	}
}
