package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/storage"

	"github.com/clipbuild/clipbuild/stages"
)

// layersDockerfile makes layers of every kind a build commits: a COPY, a
// RUN adding links, modes and a FIFO and deleting a file (a whiteout), and
// a COPY of a few incompressible megabytes.
const layersDockerfile = busyboxBase + `RUN mkdir -p /data && echo hello > /data/a && ln /data/a /data/b && ln -s a /data/c && chmod 4755 /data/a && mkfifo /data/fifo && rm /bin/ls
COPY big /data/big
`

// layersContext is a build context for layersDockerfile.
func layersContext(t *testing.T) string {
	t.Helper()
	dir := inlineContext(t, layersDockerfile)
	big := make([]byte, 8<<20)
	r := rand.NewChaCha8([32]byte{'c', 'l', 'i', 'p'})
	_, _ = r.Read(big)
	mustDo(t, os.WriteFile(filepath.Join(dir, "big"), big, 0o644))
	return dir
}

// ociLayout is what `buildah push` wrote to an oci: directory.
type ociLayout struct {
	dir      string
	manifest imgspecv1.Manifest
	config   []byte
}

func (l ociLayout) blob(t *testing.T, d digest.Digest) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded()))
	mustDo(t, err)
	return b
}

// uncompressedBlob is the layer desc describes, uncompressed. buildah
// 1.28 gzips layers pushed to oci: even with --disable-compression.
func (l ociLayout) uncompressedBlob(t *testing.T, desc imgspecv1.Descriptor) []byte {
	t.Helper()
	b := l.blob(t, desc.Digest)
	switch desc.MediaType {
	case imgspecv1.MediaTypeImageLayer:
		return b
	case imgspecv1.MediaTypeImageLayerGzip:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		mustDo(t, err)
		plain, err := io.ReadAll(zr)
		mustDo(t, err)
		return plain
	}
	t.Fatalf("pushed layer %s is %s, want a plain or gzip tar", desc.Digest, desc.MediaType)
	return nil
}

// readIndexDigest is the encoded digest of the one manifest in the
// layout's index.
func readIndexDigest(t *testing.T, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	mustDo(t, err)
	var index imgspecv1.Index
	mustDo(t, json.Unmarshal(raw, &index))
	if len(index.Manifests) != 1 {
		t.Fatalf("%s/index.json lists %d manifests, want 1", dir, len(index.Manifests))
	}
	return index.Manifests[0].Digest.Encoded()
}

// checkLayersMatchPush reads every layer of image from store through a
// LayerSource and checks it against the config's diff IDs and, byte for
// byte, against buildah's own uncompressed push of the image.
func checkLayersMatchPush(t *testing.T, store storage.Store, storeArgs []string, image string) {
	t.Helper()
	ctx := context.Background()
	img, err := stages.NewLayerSource(store).Layers(ctx, image)
	if err != nil {
		t.Fatalf("Layers(%s) = %v", image, err)
	}
	if len(img.Layers) < 3 {
		t.Fatalf("Layers(%s) = %d layers, want at least 3", image, len(img.Layers))
	}

	push := ociLayout{dir: filepath.Join(t.TempDir(), "oci")}
	buildahCmd(t, append(storeArgs, "push", "--quiet", "--disable-compression", image, "oci:"+push.dir+":latest")...)
	mustDo(t, json.Unmarshal(push.blob(t, digest.NewDigestFromEncoded(digest.SHA256, readIndexDigest(t, push.dir))), &push.manifest))
	push.config = push.blob(t, push.manifest.Config.Digest)

	if !bytes.Equal(img.ConfigBlob, push.config) {
		t.Errorf("config from the store (%s) differs from the pushed config (%s)", img.ConfigDigest, push.manifest.Config.Digest)
	}
	var pushedConfig imgspecv1.Image
	mustDo(t, json.Unmarshal(push.config, &pushedConfig))
	var diffIDs []digest.Digest
	for _, l := range img.Layers {
		diffIDs = append(diffIDs, l.DiffID)
	}
	if diff := cmp.Diff(pushedConfig.RootFS.DiffIDs, diffIDs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("layer diff IDs differ from the pushed config's diff_ids (-pushed +store):\n%s", diff)
	}
	if got, want := len(push.manifest.Layers), len(img.Layers); got != want {
		t.Fatalf("pushed manifest has %d layers, the store %d", got, want)
	}
	for i, l := range img.Layers {
		start := time.Now()
		rc, err := l.Open(ctx)
		if err != nil {
			t.Fatalf("Open(layer %d) = %v", i, err)
		}
		got, err := io.ReadAll(rc)
		mustDo(t, rc.Close())
		if err != nil {
			t.Fatalf("reading layer %d: %v", i, err)
		}
		t.Logf("layer %d: %d bytes in %v", i, len(got), time.Since(start))
		if d := digest.FromBytes(got); d != l.DiffID {
			t.Errorf("layer %d streams %s, want its diff ID %s", i, d, l.DiffID)
		}
		desc := push.manifest.Layers[i]
		if want := push.uncompressedBlob(t, desc); !bytes.Equal(got, want) {
			t.Errorf("layer %d: %d bytes (%s) from the store, buildah push wrote %d (%s uncompressed)", i, len(got), digest.FromBytes(got), len(want), digest.FromBytes(want))
		}
	}
}

// TestLayersFromBuildahStore reads a buildah-built image's layers straight
// from the store buildah uses by default.
func TestLayersFromBuildahStore(t *testing.T) {
	heavy(t)
	image := "localhost/" + imageName("layers-default")
	removeImageLater(t, image)
	buildahCmd(t, append(append([]string{"bud", "--quiet", "--layers"}, isolationArgs()...), "-t", image, layersContext(t))...)

	store, release, err := stages.OpenStore(context.Background())
	if err != nil {
		t.Fatalf("OpenStore = %v", err)
	}
	defer release()
	checkBuildahUsesStore(t, nil, store)
	checkLayersMatchPush(t, store, nil, image)
}

// TestLayersFromExplicitStore builds into a store of our choosing by
// giving buildah BuildahStoreArgs, then reads it: buildah and clipbuild
// use the one store and no second driver's directory appears.
func TestLayersFromExplicitStore(t *testing.T) {
	heavy(t)
	dir := t.TempDir()
	opts := storage.StoreOptions{
		GraphRoot:       filepath.Join(dir, "root"),
		RunRoot:         filepath.Join(dir, "run"),
		GraphDriverName: "vfs",
	}
	store, release, err := stages.OpenStore(context.Background(), stages.WithStoreOptions(opts))
	if err != nil {
		t.Fatalf("OpenStore = %v", err)
	}
	defer release()
	args := stages.BuildahStoreArgs(stages.EffectiveStoreOptions(store))
	image := "localhost/" + imageName("layers-explicit")
	t.Cleanup(func() { buildahCleanup(t, append(args, "rmi", "--all", "--force")...) })
	buildahCmd(t, append(append(append(args, "bud", "--quiet", "--layers"), isolationArgs()...), "-t", image, layersContext(t))...)

	checkBuildahUsesStore(t, args, store)
	checkLayersMatchPush(t, store, args, image)
	entries, err := os.ReadDir(opts.GraphRoot)
	mustDo(t, err)
	for _, e := range entries {
		// A driver keeps <driver>/ and <driver>-{layers,images,containers}/;
		// mounts/ and tmp/ belong to no driver.
		driver, _, _ := strings.Cut(e.Name(), "-")
		if e.IsDir() && driver != "vfs" && e.Name() != "mounts" && e.Name() != "tmp" {
			t.Errorf("graph root holds %s/, want only the vfs driver's directories", e.Name())
		}
	}
}

// checkBuildahUsesStore compares the store buildah reports (`buildah info`
// with storeArgs) with the one we opened.
func checkBuildahUsesStore(t *testing.T, storeArgs []string, store storage.Store) {
	t.Helper()
	want := buildahStore(t, buildahCmd(t, append(storeArgs, "info")...))
	got := stages.EffectiveStoreOptions(store)
	got = storage.StoreOptions{GraphRoot: got.GraphRoot, RunRoot: got.RunRoot, GraphDriverName: got.GraphDriverName, GraphDriverOptions: got.GraphDriverOptions}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("opened store differs from buildah's (-buildah +ours):\n%s", diff)
	}
}

// buildahStore is the store `buildah info` reports, as store options.
func buildahStore(t *testing.T, info string) storage.StoreOptions {
	t.Helper()
	var v struct {
		Store struct {
			GraphRoot       string
			RunRoot         string
			GraphDriverName string
			GraphOptions    []string
		} `json:"store"`
	}
	mustDo(t, json.Unmarshal([]byte(info), &v))
	return storage.StoreOptions{
		GraphRoot:          v.Store.GraphRoot,
		RunRoot:            v.Store.RunRoot,
		GraphDriverName:    v.Store.GraphDriverName,
		GraphDriverOptions: v.Store.GraphOptions,
	}
}

// TestStoreOptionsResolveLikeBuildah checks that, with no flags, clipbuild
// resolves the store buildah does from the same storage.conf and
// environment. The resolution is cached per process, so ours runs in a
// child process.
func TestStoreOptionsResolveLikeBuildah(t *testing.T) {
	if os.Getenv("CLIPBUILD_STORE_OPTIONS_CHILD") == "1" {
		o, err := stages.DefaultStoreOptions()
		mustDo(t, err)
		fmt.Printf("store-options: %s\n", mustJSON(t, o))
		return
	}
	requirePrerequisites(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "storage.conf")
	mustDo(t, os.WriteFile(conf, []byte(`[storage]
driver = "vfs"
graphroot = "`+dir+`/graph"
runroot = "`+dir+`/run"
[storage.options.vfs]
ignore_chown_errors = "true"
`), 0o644))
	for _, env := range [][]string{
		nil,
		{"STORAGE_OPTS="},
		{"STORAGE_OPTS=vfs.ignore_chown_errors=false"},
		{"STORAGE_DRIVER=vfs", "STORAGE_OPTS=vfs.ignore_chown_errors=false,vfs.imagestore=" + dir + "/extra"},
	} {
		name := strings.Join(env, " ")
		if name == "" {
			name = "storage.conf alone"
		}
		t.Run(name, func(t *testing.T) {
			env = append([]string{"CONTAINERS_STORAGE_CONF=" + conf}, env...)
			res := runEnv(t, filepath.Join(repoRoot, "test", "integration"), commandTimeout, append(env, "CLIPBUILD_STORE_OPTIONS_CHILD=1"),
				os.Args[0], "-test.run=^TestStoreOptionsResolveLikeBuildah$", "-test.count=1")
			mustSucceed(t, res)
			_, line, ok := strings.Cut(res.stdout, "store-options: ")
			if !ok {
				t.Fatalf("child printed no options: %v", res)
			}
			line, _, _ = strings.Cut(line, "\n")
			var ours storage.StoreOptions
			mustDo(t, json.Unmarshal([]byte(line), &ours))
			if ours.GraphRoot != dir+"/graph" || ours.GraphDriverName != "vfs" {
				t.Fatalf("child resolved graph root %q, driver %q; want %s/graph, vfs from %s", ours.GraphRoot, ours.GraphDriverName, dir, conf)
			}
			t.Logf("resolved: driver %s, options %q", ours.GraphDriverName, ours.GraphDriverOptions)

			info := runEnv(t, "", commandTimeout, env, "buildah", "info")
			mustSucceed(t, info)
			buildah := buildahStore(t, info.stdout)
			ours = storage.StoreOptions{GraphRoot: ours.GraphRoot, RunRoot: ours.RunRoot, GraphDriverName: ours.GraphDriverName, GraphDriverOptions: ours.GraphDriverOptions}
			if diff := cmp.Diff(buildah, ours, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("store options differ (-buildah +ours):\n%s", diff)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	mustDo(t, err)
	return b
}
