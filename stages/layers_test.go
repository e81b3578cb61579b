package stages

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/idtools"
	"go.podman.io/storage/pkg/reexec"
)

// TestMain lets containers-storage re-execute the test binary: vfs applies
// layers in a chrooted child, as the clipbuild binary's main allows.
func TestMain(m *testing.M) {
	if reexec.Init() {
		return
	}
	os.Exit(m.Run())
}

// storeEntry is one member of a layer put into a test store.
type storeEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

// storeTar makes an uncompressed layer tar of the entries.
func storeTar(t *testing.T, entries ...storeEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link,
			Size: int64(len(e.body)), Uid: os.Getuid(), Gid: os.Getgid(),
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testStore opens a fresh store with the given driver in temporary
// directories; it is shut down when the test ends.
func testStore(t *testing.T, driver string) (storage.Store, storage.StoreOptions) {
	t.Helper()
	opts := storage.StoreOptions{
		GraphRoot:       filepath.Join(t.TempDir(), "root"),
		RunRoot:         filepath.Join(t.TempDir(), "run"),
		GraphDriverName: driver,
	}
	store, release, err := OpenStore(context.Background(), WithStoreOptions(opts))
	if err != nil {
		t.Fatalf("OpenStore(%s) = %v", driver, err)
	}
	t.Cleanup(release)
	return store, opts
}

// putImage stores layers (bottom-up) and an image whose config lists
// diffIDs (the layers' own when nil), with an OCI manifest unless
// noManifest. It returns the image ID.
func putImage(t *testing.T, store storage.Store, name string, layers [][]byte, diffIDs []digest.Digest, noManifest bool) string {
	t.Helper()
	parent := ""
	var descs []imgspecv1.Descriptor
	own := []digest.Digest{}
	for _, l := range layers {
		layer, _, err := store.PutLayer("", parent, nil, "", false, nil, bytes.NewReader(l))
		if err != nil {
			t.Fatalf("PutLayer = %v", err)
		}
		parent = layer.ID
		d := digest.FromBytes(l)
		own = append(own, d)
		descs = append(descs, imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageLayer, Digest: d, Size: int64(len(l))})
	}
	if diffIDs == nil {
		diffIDs = own
	}
	config, err := json.Marshal(imgspecv1.Image{
		Platform: imgspecv1.Platform{OS: "linux", Architecture: "amd64"},
		RootFS:   imgspecv1.RootFS{Type: "layers", DiffIDs: diffIDs},
		Config:   imgspecv1.ImageConfig{Env: []string{"PATH=/bin"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	configDigest := digest.FromBytes(config)
	img, err := store.CreateImage(configDigest.Encoded(), []string{name}, parent, "", nil)
	if err != nil {
		t.Fatalf("CreateImage = %v", err)
	}
	if err := store.SetImageBigData(img.ID, configDigest.String(), config, manifest.Digest); err != nil {
		t.Fatalf("SetImageBigData(config) = %v", err)
	}
	if noManifest {
		return img.ID
	}
	m, err := json.Marshal(imgspecv1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: imgspecv1.MediaTypeImageManifest,
		Config:    imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageConfig, Digest: configDigest, Size: int64(len(config))},
		Layers:    descs,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{storage.ImageDigestBigDataKey, storage.ImageDigestManifestBigDataNamePrefix + "-" + digest.FromBytes(m).String()} {
		if err := store.SetImageBigData(img.ID, key, m, manifest.Digest); err != nil {
			t.Fatalf("SetImageBigData(%s) = %v", key, err)
		}
	}
	return img.ID
}

// testLayers are three layers with the entry kinds an image holds: modes,
// hard and symbolic links, a whiteout, an opaque directory, an empty
// layer.
func testLayers(t *testing.T) [][]byte {
	return [][]byte{
		storeTar(t,
			storeEntry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
			storeEntry{name: "bin/tool", typ: tar.TypeReg, mode: 0o4755, body: "#!tool\n"},
			storeEntry{name: "bin/alias", typ: tar.TypeLink, mode: 0o4755, link: "bin/tool"},
			storeEntry{name: "bin/sym", typ: tar.TypeSymlink, mode: 0o777, link: "tool"},
			storeEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
			storeEntry{name: "etc/conf", typ: tar.TypeReg, mode: 0o600, body: strings.Repeat("x", 70000)},
		),
		storeTar(t,
			storeEntry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
			storeEntry{name: "bin/.wh.sym", typ: tar.TypeReg, mode: 0o644},
			storeEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
			storeEntry{name: "etc/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
			storeEntry{name: "etc/new", typ: tar.TypeReg, mode: 0o644, body: "new\n"},
		),
		storeTar(t),
	}
}

// drivers are the graph drivers the store tests run on: vfs anywhere,
// overlay too as root (it needs mounts).
func drivers() []string {
	if os.Geteuid() == 0 {
		return []string{"vfs", "overlay"}
	}
	return []string{"vfs"}
}

func TestLayersRoundTrip(t *testing.T) {
	for _, driver := range drivers() {
		t.Run(driver, func(t *testing.T) {
			store, _ := testStore(t, driver)
			tars := testLayers(t)
			id := putImage(t, store, "localhost/roundtrip:latest", tars, nil, false)
			src := NewLayerSource(store)
			for _, ref := range []string{id, "@" + id, id[:12], "localhost/roundtrip:latest", "localhost/roundtrip"} {
				img, err := src.Layers(context.Background(), ref)
				if err != nil {
					t.Fatalf("Layers(%q) = %v", ref, err)
				}
				if img.ID != id {
					t.Errorf("Layers(%q).ID = %s, want %s", ref, img.ID, id)
				}
				if got, want := img.ConfigDigest, digest.FromBytes(img.ConfigBlob); got != want || got.Encoded() != id {
					t.Errorf("Layers(%q).ConfigDigest = %s, want %s (the image ID)", ref, got, want)
				}
				if img.Manifest == nil || img.ManifestMIMEType != imgspecv1.MediaTypeImageManifest || img.ManifestDigest != digest.FromBytes(img.Manifest) {
					t.Errorf("Layers(%q) manifest = %q (%s, %s), want the stored OCI manifest", ref, img.Manifest, img.ManifestMIMEType, img.ManifestDigest)
				}
				if got, want := len(img.Layers), len(tars); got != want {
					t.Fatalf("Layers(%q) = %d layers, want %d", ref, got, want)
				}
				var total int64
				for i, l := range img.Layers {
					total += int64(len(tars[i]))
					if got, want := l.DiffID, digest.FromBytes(tars[i]); got != want {
						t.Errorf("layer %d DiffID = %s, want %s", i, got, want)
					}
					if got, want := l.Size, int64(len(tars[i])); got != want {
						t.Errorf("layer %d Size = %d, want %d", i, got, want)
					}
					got := readLayer(t, l)
					if !bytes.Equal(got, tars[i]) {
						t.Errorf("layer %d: Open read %d bytes (%s), want the %d put (%s)", i, len(got), digest.FromBytes(got), len(tars[i]), digest.FromBytes(tars[i]))
					}
				}
				if got := img.UncompressedBytes(); got != total {
					t.Errorf("UncompressedBytes() = %d, want %d", got, total)
				}
			}
		})
	}
}

func readLayer(t *testing.T, l StoreLayer) []byte {
	t.Helper()
	rc, err := l.Open(context.Background())
	if err != nil {
		t.Fatalf("Open(%s) = %v", l.ID, err)
	}
	// Closed on every path: an open stream holds the layer lock that the
	// store's shutdown in the test's cleanup needs.
	b, err := io.ReadAll(rc)
	if cerr := rc.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("reading %s: %v", l.ID, err)
	}
	return b
}

func TestLayersZeroLayers(t *testing.T) {
	store, _ := testStore(t, "vfs")
	id := putImage(t, store, "localhost/empty:latest", nil, nil, false)
	img, err := NewLayerSource(store).Layers(context.Background(), id)
	if err != nil {
		t.Fatalf("Layers = %v", err)
	}
	if len(img.Layers) != 0 || img.UncompressedBytes() != 0 {
		t.Errorf("Layers = %d layers (%d bytes), want none", len(img.Layers), img.UncompressedBytes())
	}
}

func TestLayersWithoutManifest(t *testing.T) {
	store, _ := testStore(t, "vfs")
	tars := testLayers(t)[:1]
	id := putImage(t, store, "localhost/nomanifest:latest", tars, nil, true)
	img, err := NewLayerSource(store).Layers(context.Background(), id)
	if err != nil {
		t.Fatalf("Layers = %v", err)
	}
	if img.Manifest != nil || img.ManifestDigest != "" {
		t.Errorf("Manifest = %q (%s), want none", img.Manifest, img.ManifestDigest)
	}
	if got, want := img.ConfigDigest.Encoded(), id; got != want {
		t.Errorf("ConfigDigest = %s, want the image ID %s", got, want)
	}
	if len(img.Layers) != 1 || img.Layers[0].DiffID != digest.FromBytes(tars[0]) {
		t.Errorf("Layers = %+v, want the one layer put", img.Layers)
	}
}

func TestLayersDiffIDMismatch(t *testing.T) {
	tars := testLayers(t)[:2]
	other := digest.FromString("other")
	tests := []struct {
		name    string
		diffIDs []digest.Digest
	}{
		{"wrong digest", []digest.Digest{digest.FromBytes(tars[0]), other}},
		{"swapped", []digest.Digest{digest.FromBytes(tars[1]), digest.FromBytes(tars[0])}},
		{"too few", []digest.Digest{digest.FromBytes(tars[0])}},
		{"too many", []digest.Digest{digest.FromBytes(tars[0]), digest.FromBytes(tars[1]), other}},
		{"none", []digest.Digest{}},
	}
	store, _ := testStore(t, "vfs")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each image gets its own layers: the store keys images by
			// config digest and the configs differ.
			id := putImage(t, store, "localhost/mismatch:"+string(rune('a'+i)), tars, tt.diffIDs, false)
			_, err := NewLayerSource(store).Layers(context.Background(), id)
			if !errors.Is(err, ErrDiffIDMismatch) {
				t.Errorf("Layers = %v, want ErrDiffIDMismatch", err)
			}
		})
	}
}

func TestLayersErrors(t *testing.T) {
	store, _ := testStore(t, "vfs")
	id := putImage(t, store, "localhost/errors:latest", testLayers(t)[:1], nil, false)
	// A config whose bytes no longer match their digest.
	key := "sha256:" + id
	if err := store.SetImageBigData(id, key, []byte(`{"rootfs":{"type":"layers","diff_ids":[]}}`), manifest.Digest); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ref, want string
	}{
		{"unknown name", "localhost/nothere:latest", "finding localhost/nothere:latest"},
		{"bad reference", "UPPER:case:x", "parsing UPPER:case:x"},
		{"corrupt config", id, "config digest is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewLayerSource(store).Layers(context.Background(), tt.ref)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Layers(%q) = %v, want an error containing %q", tt.ref, err, tt.want)
			}
		})
	}
}

func TestLayerOpenChecksDigest(t *testing.T) {
	store, _ := testStore(t, "vfs")
	tars := testLayers(t)[:1]
	id := putImage(t, store, "localhost/verify:latest", tars, nil, false)
	img, err := NewLayerSource(store).Layers(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		layer func(StoreLayer) StoreLayer
	}{
		{"digest", func(l StoreLayer) StoreLayer { l.DiffID = digest.FromString("x"); return l }},
		{"size", func(l StoreLayer) StoreLayer { l.Size++; return l }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := tt.layer(img.Layers[0]).Open(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if _, err := io.ReadAll(rc); !errors.Is(err, ErrDiffIDMismatch) {
				t.Errorf("reading to EOF = %v, want ErrDiffIDMismatch", err)
			}
		})
	}
}

// TestLayerOpenCancel checks that cancelling the context fails the stream
// and releases the store's layer lock without Close: another Open, which
// needs that lock, then goes through.
func TestLayerOpenCancel(t *testing.T) {
	store, _ := testStore(t, "vfs")
	id := putImage(t, store, "localhost/cancel:latest", testLayers(t)[:2], nil, false)
	img, err := NewLayerSource(store).Layers(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := img.Layers[0].Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 512)); err != nil {
		t.Fatalf("first read = %v", err)
	}

	second := make(chan error, 1)
	go func() {
		rc2, err := img.Layers[1].Open(context.Background())
		if err == nil {
			err = rc2.Close()
		}
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("second Open while the first is open = %v, want it to wait for the layer lock", err)
	case <-time.After(200 * time.Millisecond):
	}

	cancel()
	select {
	case err := <-second:
		if err != nil {
			t.Errorf("second Open after cancel = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second Open still waits 10s after the first stream's context was cancelled")
	}
	if _, err := rc.Read(make([]byte, 512)); !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %v, want context.Canceled", err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close after cancel = %v", err)
	}
	if _, err := img.Layers[0].Open(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestLayerReadAfterClose(t *testing.T) {
	store, _ := testStore(t, "vfs")
	id := putImage(t, store, "localhost/closed:latest", testLayers(t)[:1], nil, false)
	img, err := NewLayerSource(store).Layers(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := img.Layers[0].Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Read after Close = %v, want io.ErrClosedPipe", err)
	}
}

func TestOpenStoreExplicitOptions(t *testing.T) {
	store, opts := testStore(t, "vfs")
	got := EffectiveStoreOptions(store)
	if diff := cmp.Diff(opts, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("EffectiveStoreOptions mismatch (-want +got):\n%s", diff)
	}
	// Only the named driver's directories exist: no second driver's.
	entries, err := os.ReadDir(opts.GraphRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), "vfs") {
			t.Errorf("graph root holds %s, want only vfs directories", e.Name())
		}
	}
}

func TestOpenStoreRejectsPartialOptions(t *testing.T) {
	_, _, err := OpenStore(context.Background(), WithStoreOptions(storage.StoreOptions{GraphRoot: t.TempDir()}))
	if err == nil {
		t.Error("OpenStore with no run root = nil error, want one")
	}
}

func TestBuildahStoreArgs(t *testing.T) {
	tests := []struct {
		name string
		opts storage.StoreOptions
		want []string
	}{
		{
			name: "roots only",
			opts: storage.StoreOptions{GraphRoot: "/g", RunRoot: "/r"},
			want: []string{"--root", "/g", "--runroot", "/r"},
		},
		{
			name: "driver and options",
			opts: storage.StoreOptions{
				GraphRoot: "/g", RunRoot: "/r", GraphDriverName: "overlay",
				GraphDriverOptions: []string{"overlay.mountopt=nodev,metacopy=on", "overlay.mount_program=/usr/bin/fuse-overlayfs", ""},
			},
			want: []string{"--root", "/g", "--runroot", "/r", "--storage-driver", "overlay",
				"--storage-opt", `"overlay.mountopt=nodev,metacopy=on"`,
				"--storage-opt", "overlay.mount_program=/usr/bin/fuse-overlayfs"},
		},
		{
			name: "image store, transient, id maps",
			opts: storage.StoreOptions{
				GraphRoot: "/g", RunRoot: "/r", GraphDriverName: "vfs", ImageStore: "/i", TransientStore: true,
				UIDMap: []idtools.IDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
				GIDMap: []idtools.IDMap{{ContainerID: 0, HostID: 200000, Size: 1}},
			},
			want: []string{"--root", "/g", "--runroot", "/r", "--storage-driver", "vfs",
				"--imagestore", "/i", "--transient-store",
				"--userns-uid-map", "0:100000:65536", "--userns-gid-map", "0:200000:1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := BuildahStoreArgs(tt.opts)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("BuildahStoreArgs mismatch (-want +got):\n%s", diff)
			}
			// buildah declares these as pflag flags; parsing our args the
			// same way must give back the options.
			fs := pflag.NewFlagSet("buildah", pflag.ContinueOnError)
			root := fs.String("root", "default-root", "")
			runroot := fs.String("runroot", "default-runroot", "")
			driver := fs.String("storage-driver", "", "")
			sopts := fs.StringSlice("storage-opt", []string{"from-config"}, "")
			fs.String("imagestore", "", "")
			fs.Bool("transient-store", false, "")
			fs.StringSlice("userns-uid-map", nil, "")
			fs.StringSlice("userns-gid-map", nil, "")
			if err := fs.Parse(got); err != nil {
				t.Fatalf("parsing %q as buildah's flags: %v", got, err)
			}
			wantOpts := slices.DeleteFunc(slices.Clone(tt.opts.GraphDriverOptions), func(s string) bool { return s == "" })
			if !fs.Changed("storage-opt") {
				// buildah clears the configured options when
				// --storage-driver is given and --storage-opt is not.
				*sopts = nil
			}
			gotOpts := storage.StoreOptions{GraphRoot: *root, RunRoot: *runroot, GraphDriverName: *driver, GraphDriverOptions: *sopts}
			wantParsed := storage.StoreOptions{GraphRoot: tt.opts.GraphRoot, RunRoot: tt.opts.RunRoot, GraphDriverName: tt.opts.GraphDriverName, GraphDriverOptions: wantOpts}
			if diff := cmp.Diff(wantParsed, gotOpts, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("buildah would parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDefaultStoreOptionsEnv checks the default resolution buildah shares:
// storage.conf from $CONTAINERS_STORAGE_CONF, then STORAGE_DRIVER and
// STORAGE_OPTS over it. The resolution is cached per process, so each case
// runs in a child process.
func TestDefaultStoreOptionsEnv(t *testing.T) {
	if os.Getenv("CLIPBUILD_STORE_OPTIONS_CHILD") == "1" {
		o, err := DefaultStoreOptions()
		if err != nil {
			t.Fatal(err)
		}
		if err := json.NewEncoder(os.Stdout).Encode(o); err != nil {
			t.Fatal(err)
		}
		return
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "storage.conf")
	if err := os.WriteFile(conf, []byte(`[storage]
driver = "overlay"
graphroot = "`+dir+`/graph"
runroot = "`+dir+`/run"
[storage.options.overlay]
mountopt = "nodev"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		want storage.StoreOptions
	}{
		{
			name: "storage.conf",
			want: storage.StoreOptions{GraphRoot: dir + "/graph", RunRoot: dir + "/run", GraphDriverName: "overlay", GraphDriverOptions: []string{"overlay.mountopt=nodev"}},
		},
		{
			name: "STORAGE_DRIVER and STORAGE_OPTS",
			env:  []string{"STORAGE_DRIVER=vfs", "STORAGE_OPTS=vfs.ignore_chown_errors=true"},
			want: storage.StoreOptions{GraphRoot: dir + "/graph", RunRoot: dir + "/run", GraphDriverName: "vfs", GraphDriverOptions: []string{"vfs.ignore_chown_errors=true"}},
		},
		{
			name: "empty STORAGE_OPTS clears the options",
			env:  []string{"STORAGE_OPTS="},
			want: storage.StoreOptions{GraphRoot: dir + "/graph", RunRoot: dir + "/run", GraphDriverName: "overlay"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestDefaultStoreOptionsEnv$", "-test.count=1")
			cmd.Env = append(withoutStorageEnv(os.Environ()), "CLIPBUILD_STORE_OPTIONS_CHILD=1", "CONTAINERS_STORAGE_CONF="+conf)
			cmd.Env = append(cmd.Env, tt.env...)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var got storage.StoreOptions
			line, _, _ := bytes.Cut(out, []byte("\n"))
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("child output %q: %v", out, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("DefaultStoreOptions mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func withoutStorageEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "STORAGE_DRIVER" || k == "STORAGE_OPTS" || k == "CONTAINERS_STORAGE_CONF"
	})
}
