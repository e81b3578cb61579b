package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/pipeline"
)

// execute runs the command line as main does, without buildah on PATH.
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	t.Setenv("PATH", t.TempDir())
	t.Cleanup(func() { logrus.StandardLogger().SetOutput(os.Stderr) })
	var out, errOut bytes.Buffer
	root := NewRootCmd(&out, &errOut)
	root.SetArgs(defaultToBuild(root, args))
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// makeArchive writes a v1 archive of a small tree and returns the archive
// and the tree.
func makeArchive(t *testing.T) (clip, rootfs string) {
	t.Helper()
	rootfs = t.TempDir()
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "hostname"), []byte("box\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("etc/hostname", filepath.Join(rootfs, "hn")); err != nil {
		t.Fatal(err)
	}
	clip = filepath.Join(t.TempDir(), "box.clip")
	tr := archive.Trailer{Image: &common.ImageMetadata{Name: "localhost/box:latest", Os: "linux", Architecture: "amd64"}}
	err := archive.WriteFileAtomic(clip, func(f *os.File) error {
		_, err := archive.WriteV1(context.Background(), rootfs, f, tr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return clip, rootfs
}

func TestInspectJSON(t *testing.T) {
	clip, _ := makeArchive(t)
	stdout, _, err := execute(t, "inspect", "--json", clip)
	if err != nil {
		t.Fatalf("inspect = %v, want nil", err)
	}
	var s archive.Summary
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("inspect --json printed %q: %v", stdout, err)
	}
	if s.Version != 1 || s.Image != "localhost/box:latest" || s.Counts.Files != 1 || s.Counts.Dirs != 2 || s.Counts.Symlinks != 1 {
		t.Errorf("inspect --json = %+v, want version 1, image localhost/box:latest, 1 file, 2 dirs, 1 symlink", s)
	}
}

func TestInspectText(t *testing.T) {
	clip, _ := makeArchive(t)
	stdout, _, err := execute(t, "--log-level", "warn", "inspect", clip)
	if err != nil {
		t.Fatalf("inspect = %v, want nil", err)
	}
	for _, want := range []string{"Clip version:    1", "Image:           localhost/box:latest", "Platform:   linux/amd64"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect printed %q, want it to contain %q", stdout, want)
		}
	}
}

func TestInspectCorrupt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.clip")
	if err := os.WriteFile(p, []byte("definitely not a clip archive, but long enough for a header"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := execute(t, "inspect", p)
	if !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), p) {
		t.Errorf("inspect(corrupt) = %v, want an error wrapping ErrCorrupt naming %s", err, p)
	}
}

func TestVerifyRootfs(t *testing.T) {
	clip, rootfs := makeArchive(t)
	stdout, _, err := execute(t, "verify", clip, "--rootfs", rootfs)
	if err != nil {
		t.Fatalf("verify = %v, want nil", err)
	}
	if !strings.Contains(stdout, "matches") {
		t.Errorf("verify printed %q, want it to say the archive matches", stdout)
	}

	if err := os.WriteFile(filepath.Join(rootfs, "etc", "hostname"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, err = execute(t, "verify", clip, "--rootfs", rootfs)
	if !errors.Is(err, errDiffers) {
		t.Fatalf("verify(changed rootfs) = %v, want %v", err, errDiffers)
	}
	if !strings.Contains(stdout, "/etc/hostname: content is") || !strings.Contains(stdout, "/etc/hostname: size is") {
		t.Errorf("verify printed %q, want the content and size differences of /etc/hostname", stdout)
	}
}

func TestVerifyNeedsOneSource(t *testing.T) {
	clip, rootfs := makeArchive(t)
	for _, args := range [][]string{
		{"verify", clip},
		{"verify", clip, "--rootfs", rootfs, "--image", "x"},
	} {
		if _, _, err := execute(t, args...); err == nil || !strings.Contains(err.Error(), "exactly one of --image or --rootfs") {
			t.Errorf("%q = %v, want an error asking for exactly one source", args, err)
		}
	}
}

// The build errors below all happen before buildah would run.

func TestBuildMissingDockerfile(t *testing.T) {
	ctxDir := t.TempDir()
	missing := filepath.Join(ctxDir, "Nope.dockerfile")
	_, _, err := execute(t, "-f", missing, ctxDir)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("clipbuild -f %s = %v, want a not-exist error naming it", missing, err)
	}
}

func TestBuildBadClipVersion(t *testing.T) {
	ctxDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CLIP_VERSION", "")
	_, _, err := execute(t, "build", "--clip-version", "9", ctxDir)
	if err == nil || !strings.Contains(err.Error(), `unknown clip version "9"`) {
		t.Errorf("build --clip-version 9 = %v, want an unknown clip version error", err)
	}
}

// TestBuildBadClipVersionFromEnv: a bad $CLIP_VERSION is reported as such,
// not as a bad --clip-version flag the user never gave.
func TestBuildBadClipVersionFromEnv(t *testing.T) {
	ctxDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CLIP_VERSION", "9")
	_, _, err := execute(t, "build", ctxDir)
	if err == nil || !strings.Contains(err.Error(), "$CLIP_VERSION") {
		t.Fatalf("build with CLIP_VERSION=9 = %v, want an error naming $CLIP_VERSION", err)
	}
	if strings.Contains(err.Error(), "--clip-version") {
		t.Errorf("build with CLIP_VERSION=9 = %q, want it not to name the --clip-version flag, which was not given", err)
	}
}

func TestBuildMissingOutputDir(t *testing.T) {
	ctxDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "no", "such", "x.clip")
	t.Setenv("CLIP_VERSION", "")
	_, _, err := execute(t, "-f", filepath.Join(ctxDir, "Dockerfile"), "-o", out, ctxDir)
	if err == nil || !strings.Contains(err.Error(), filepath.Dir(out)) {
		t.Errorf("build -o %s = %v, want an error naming %s", out, err, filepath.Dir(out))
	}
}

func TestBuildBadLogLevel(t *testing.T) {
	_, _, err := execute(t, "--log-level", "loud", "inspect", "x.clip")
	if err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("--log-level loud = %v, want an error naming --log-level", err)
	}
}

// TestPrintResultJSON: the --json result has the fields the contract
// names, uncompressedBytes included, and nothing printed besides.
func TestPrintResultJSON(t *testing.T) {
	var out bytes.Buffer
	g := &globalOptions{stdout: &out}
	res := pipeline.Result{Archive: "a.clip", ClipVersion: 2, Image: "localhost/a:latest", ArchiveBytes: 10,
		ImageBytes: 100, UncompressedBytes: 300, Stages: []pipeline.StageTiming{{Name: "build", Seconds: 1}}}
	if err := (&archiveFlags{json: true}).printResult(g, res); err != nil {
		t.Fatalf("printResult() = %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("printResult() printed %q, not one JSON object: %v", out.String(), err)
	}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"archive", "archiveBytes", "clipVersion", "fallbackReason", "image", "imageBytes", "imageRef",
		"manifestDigest", "stages", "uncompressedBytes"}
	if !slices.Equal(keys, want) {
		t.Errorf("--json keys = %q, want %q", keys, want)
	}
	if got["uncompressedBytes"] != 300.0 || got["imageBytes"] != 100.0 {
		t.Errorf("uncompressedBytes, imageBytes = %v, %v; want 300, 100", got["uncompressedBytes"], got["imageBytes"])
	}
}

// TestBuildKeepImageFlag: --keep-image is a build flag, off by default.
func TestBuildKeepImageFlag(t *testing.T) {
	cmd := NewBuildCmd(&globalOptions{})
	f := cmd.Flags().Lookup("keep-image")
	if f == nil {
		t.Fatal("build has no --keep-image flag")
	}
	if f.DefValue != "false" || f.Value.Type() != "bool" {
		t.Errorf("--keep-image: %s, default %s; want bool, default false", f.Value.Type(), f.DefValue)
	}
}
