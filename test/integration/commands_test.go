package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	buildTimeout   = 10 * time.Minute
	commandTimeout = 2 * time.Minute
)

// result is the outcome of one command run.
type result struct {
	args     []string
	stdout   string
	stderr   string
	exitCode int
}

// lastStderrLine is the last non-empty line of stderr.
func (r result) lastStderrLine() string {
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	return lines[len(lines)-1]
}

// errorLines are the lines of stderr that start with "Error:".
func (r result) errorLines() []string {
	var out []string
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(line, "Error:") {
			out = append(out, line)
		}
	}
	return out
}

func (r result) String() string {
	return "`" + strings.Join(r.args, " ") + "`: exit " + strconv.Itoa(r.exitCode) +
		"\n--- stdout:\n" + r.stdout + "\n--- stderr:\n" + r.stderr
}

// run runs a command in dir (a fresh temporary directory when empty) and
// returns its result. It fails the test only when the command cannot be
// started or times out; a non-zero exit is returned for the caller to judge.
func run(t *testing.T, dir string, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	return runEnv(t, dir, timeout, nil, name, args...)
}

// runEnv is run with extra environment variables (KEY=VALUE).
func runEnv(t *testing.T, dir string, timeout time.Duration, env []string, name string, args ...string) result {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{
		args:   append([]string{filepath.Base(name)}, args...),
		stdout: stdout.String(),
		stderr: stderr.String(),
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("timed out after %v: %v", timeout, res)
	case errors.As(err, &exitErr):
		res.exitCode = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("cannot run %s: %v", name, err)
	}
	return res
}

// clipbuild runs the binary under test in a fresh temporary directory.
func clipbuild(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, "", commandTimeout, clipbuildBin, args...)
}

// mustSucceed fails the test unless res exited 0.
func mustSucceed(t *testing.T, res result) {
	t.Helper()
	if res.exitCode != 0 {
		t.Fatalf("command failed: %v", res)
	}
}

// assertCleanFailure checks the error contract: a non-zero exit and a last
// stderr line of the form "Error: <what failed>: <why>".
func assertCleanFailure(t *testing.T, res result) {
	t.Helper()
	if res.exitCode == 0 {
		t.Errorf("exit code: got 0, want non-zero\n%v", res)
		return
	}
	if last := res.lastStderrLine(); !strings.HasPrefix(last, "Error: ") {
		t.Errorf("last stderr line: got %q, want prefix %q\n%v", last, "Error: ", res)
	}
}

// buildahCmd runs buildah and fails the test if it fails.
func buildahCmd(t *testing.T, args ...string) string {
	t.Helper()
	res := run(t, "", commandTimeout, "buildah", args...)
	mustSucceed(t, res)
	return strings.TrimSpace(res.stdout)
}

// buildahCleanup runs buildah from a t.Cleanup and only logs failures
// (the object may legitimately not exist, e.g. after a failed build).
func buildahCleanup(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("buildah", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("cleanup: buildah %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// imageName is the buildah tag used for a test case.
func imageName(name string) string { return namePrefix + "-" + name + ":latest" }

// removeImageLater removes the image when the test ends, if it exists.
func removeImageLater(t *testing.T, image string) {
	t.Cleanup(func() {
		if exec.Command("buildah", "inspect", "--type", "image", image).Run() != nil {
			return
		}
		buildahCleanup(t, "rmi", image)
	})
}

// buildahRootfs creates a working container from image and returns buildah's
// mount of its root filesystem. Both are removed when the test ends.
func buildahRootfs(t *testing.T, image, container string) string {
	t.Helper()
	buildahCmd(t, "from", "--quiet", "--pull=never", "--name", container, image)
	t.Cleanup(func() { buildahCleanup(t, "rm", container) })
	dir := buildahCmd(t, "mount", container)
	t.Cleanup(func() { buildahCleanup(t, "umount", container) })
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("buildah mount %s: %q is not a directory (%v)", container, dir, err)
	}
	return dir
}

// prepareContext copies testdata/<rel> into a temporary build context and
// adds the busybox binary next to the Dockerfile.
func prepareContext(t *testing.T, rel string) string {
	t.Helper()
	src := filepath.Join(repoRoot, "testdata", filepath.FromSlash(rel))
	dst := filepath.Join(t.TempDir(), "context")
	if err := copyPlainTree(src, dst); err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
	if err := copyFile(busyboxPath, filepath.Join(dst, "busybox"), 0o755); err != nil {
		t.Fatalf("copying busybox: %v", err)
	}
	return dst
}

// copyPlainTree copies a tree of directories and regular files.
func copyPlainTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		default:
			return errors.New(path + ": not a regular file or directory")
		}
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// isolationArgs selects buildah's isolation for every build; chroot works
// inside containers and on hosts without a usable OCI runtime.
func isolationArgs() []string {
	iso := os.Getenv("CLIPBUILD_TEST_ISOLATION")
	if iso == "" {
		iso = "chroot"
	}
	return []string{"--isolation", iso}
}

// buildArgs is the argument list of `clipbuild build`, with the isolation
// flag added.
func buildArgs(flags ...string) []string {
	args := append([]string{"build"}, isolationArgs()...)
	return append(args, flags...)
}

// buildOutput is the JSON object `clipbuild build --json` prints.
type buildOutput struct {
	Archive        string  `json:"archive"`
	ClipVersion    int     `json:"clipVersion"`
	Image          string  `json:"image"`
	ImageRef       string  `json:"imageRef"`
	ManifestDigest string  `json:"manifestDigest"`
	ArchiveBytes   int64   `json:"archiveBytes"`
	ImageBytes     int64   `json:"imageBytes"`
	FallbackReason string  `json:"fallbackReason"`
	Stages         []stage `json:"stages"`

	UncompressedBytes int64 `json:"uncompressedBytes"`
}

type stage struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// buildArchive runs `clipbuild build --clip-version 1 --json` on ctx with the
// given image tag and extra flags, checks the JSON it prints, and returns
// the path of the archive. The image is removed when the test ends.
func buildArchive(t *testing.T, ctx, image string, extra ...string) string {
	t.Helper()
	removeImageLater(t, image)
	workdir := t.TempDir()
	archive := filepath.Join(t.TempDir(), "image.clip")
	flags := append([]string{"--clip-version", "1", "--json", "-t", image, "-o", archive}, extra...)
	res := run(t, workdir, buildTimeout, clipbuildBin, buildArgs(append(flags, ctx)...)...)
	mustSucceed(t, res)

	var out buildOutput
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%v", err, res)
	}
	checkBuildOutput(t, out, workdir, archive, image)
	return archive
}

func checkBuildOutput(t *testing.T, out buildOutput, workdir, archive, image string) {
	t.Helper()
	reported := out.Archive
	if reported != "" && !filepath.IsAbs(reported) {
		reported = filepath.Join(workdir, reported)
	}
	want, err := os.Stat(archive)
	if err != nil {
		t.Fatalf("archive not written: %v", err)
	}
	if got, err := os.Stat(reported); err != nil || !os.SameFile(got, want) {
		t.Errorf("archive: got %q, want the file at %q (%v)", out.Archive, archive, err)
	}
	if out.ClipVersion != 1 {
		t.Errorf("clipVersion: got %d, want 1", out.ClipVersion)
	}
	if out.ArchiveBytes != want.Size() {
		t.Errorf("archiveBytes: got %d, want %d (the file size)", out.ArchiveBytes, want.Size())
	}
	if wantImage := "localhost/" + image; out.Image != wantImage {
		t.Errorf("image: got %q, want %q", out.Image, wantImage)
	}
	if !strings.HasPrefix(out.ManifestDigest, "sha256:") || len(out.ManifestDigest) != len("sha256:")+64 {
		t.Errorf("manifestDigest: got %q, want sha256:<64 hex digits>", out.ManifestDigest)
	}
	if out.ImageBytes <= 0 {
		t.Errorf("imageBytes: got %d, want > 0", out.ImageBytes)
	}
	if out.UncompressedBytes != out.ImageBytes {
		t.Errorf("uncompressedBytes: got %d, want imageBytes %d (v1 layers are uncompressed)", out.UncompressedBytes, out.ImageBytes)
	}
	if out.FallbackReason != "" {
		t.Errorf("fallbackReason: got %q, want empty for an explicit --clip-version 1", out.FallbackReason)
	}
	if len(out.Stages) == 0 {
		t.Errorf("stages: got none, want at least one")
	}
	for i, s := range out.Stages {
		if s.Name == "" || s.Seconds < 0 {
			t.Errorf("stages[%d]: got %+v, want a name and seconds >= 0", i, s)
		}
	}
}

// assertDirEmpty fails the test if dir has any entries.
func assertDirEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("files left in %s: got %q, want none", dir, names)
	}
}
