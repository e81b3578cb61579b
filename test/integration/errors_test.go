package integration

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountFailTimeout is how long `clipbuild mount` may take to reject a bad
// archive.
const mountFailTimeout = 15 * time.Second

// TestBuildErrors checks that failed builds exit non-zero with an
// "Error: " line last on stderr and leave no output behind.
func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		context string // directory under testdata; "" for an empty context
		// args returns the build flags and context argument, given the
		// prepared context dir and the output path.
		args func(ctx, out string) []string
		// wantInError, if set, returns text the last stderr line must contain.
		wantInError func(ctx string) string
	}{
		{
			name:    "missing Dockerfile",
			context: "corpus/empty",
			args: func(ctx, out string) []string {
				return []string{"-f", filepath.Join(ctx, "missing", "Dockerfile"), "-o", out, ctx}
			},
			wantInError: func(ctx string) string { return filepath.Join(ctx, "missing", "Dockerfile") },
		},
		{
			name:        "no Dockerfile in context",
			args:        func(ctx, out string) []string { return []string{"-o", out, ctx} },
			wantInError: func(ctx string) string { return ctx },
		},
		{
			name:    "RUN fails",
			context: "bad/run-fails",
			args:    func(ctx, out string) []string { return []string{"-o", out, ctx} },
		},
		{
			name:    "syntax error",
			context: "bad/syntax-error",
			args:    func(ctx, out string) []string { return []string{"-o", out, ctx} },
		},
		{
			name:        "unknown clip version",
			context:     "corpus/empty",
			args:        func(ctx, out string) []string { return []string{"--clip-version", "7", "-o", out, ctx} },
			wantInError: func(string) string { return "7" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			heavy(t)
			var ctx string
			if tt.context != "" {
				ctx = prepareContext(t, tt.context)
			} else {
				ctx = filepath.Join(t.TempDir(), "context")
				mustDo(t, os.Mkdir(ctx, 0o755))
			}
			image := imageName("bad-" + strings.ReplaceAll(strings.ToLower(tt.name), " ", "-"))
			removeImageLater(t, image)
			outDir := t.TempDir()
			out := filepath.Join(outDir, "out.clip")

			args := buildArgs(append([]string{"-t", image}, tt.args(ctx, out)...)...)
			res := run(t, "", buildTimeout, clipbuildBin, args...)

			assertCleanFailure(t, res)
			t.Logf("last stderr line: %s", res.lastStderrLine())
			if tt.wantInError != nil {
				if want, last := tt.wantInError(ctx), res.lastStderrLine(); !strings.Contains(last, want) {
					t.Errorf("last stderr line: got %q, want it to contain %q", last, want)
				}
			}
			assertDirEmpty(t, outDir)
		})
	}
}

// TestArchiveErrors checks inspect and mount on a valid archive, then on
// corrupt ones: random bytes, an empty file and a valid archive cut in half.
func TestArchiveErrors(t *testing.T) {
	heavy(t)
	ctx := prepareContext(t, "corpus/symlinks")
	valid := buildArchive(t, ctx, imageName("archive-errors"))

	t.Run("valid archive", func(t *testing.T) {
		checkInspect(t, valid)
		m := mountArchive(t, valid)
		code, err := m.stop(syscall.SIGINT)
		if err != nil {
			t.Error(err)
		}
		if code != 0 {
			t.Errorf("clipbuild mount exit code after SIGINT: got %d, want 0", code)
		}
	})

	data, err := os.ReadFile(valid)
	mustDo(t, err)
	random := make([]byte, len(data))
	_, _ = rand.Read(random)

	for _, bad := range []struct {
		name string
		data []byte
	}{
		{"random bytes", random},
		{"empty file", nil},
		{"truncated to half", data[:len(data)/2]},
		{"truncated by one byte", data[:len(data)-1]},
		{"bit-flipped header", flipAt(data, 20)},
		{"bit-flipped index", flipAt(data, len(data)-200)},
	} {
		t.Run(bad.name, func(t *testing.T) {
			archive := filepath.Join(t.TempDir(), "bad.clip")
			mustDo(t, os.WriteFile(archive, bad.data, 0o644))

			t.Run("inspect", func(t *testing.T) {
				assertCleanFailure(t, clipbuild(t, "inspect", archive))
				assertCleanFailure(t, clipbuild(t, "inspect", archive, "--json"))
			})
			t.Run("mount", func(t *testing.T) {
				mountShouldFail(t, archive)
			})
			t.Run("verify", func(t *testing.T) {
				res := clipbuild(t, "verify", archive, "--rootfs", t.TempDir())
				assertCleanFailure(t, res)
				if strings.Contains(res.stderr, "panic:") {
					t.Errorf("verify panicked\n%v", res)
				}
			})
		})
	}
}

// mountShouldFail runs `clipbuild mount` on a bad archive and checks that it
// exits non-zero within mountFailTimeout without leaving a mount.
func mountShouldFail(t *testing.T, archive string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	mustDo(t, os.Mkdir(dir, 0o755))

	ctx, cancel := context.WithTimeout(context.Background(), mountFailTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, clipbuildBin, "mount", archive, dir)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("cannot run clipbuild mount: %v", err)
	}
	res := result{
		args:     []string{"clipbuild", "mount", archive, dir},
		stdout:   stdout.String(),
		stderr:   stderr.String(),
		exitCode: cmd.ProcessState.ExitCode(),
	}
	if ctx.Err() != nil {
		t.Errorf("clipbuild mount of a bad archive still running after %v (killed): %v", mountFailTimeout, res)
	} else {
		assertCleanFailure(t, res)
	}

	if isMounted(t, dir) {
		t.Errorf("%s is still mounted after clipbuild mount exited", dir)
		if out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err != nil {
			t.Errorf("fusermount3 -u -z %s: %v: %s", dir, err, out)
		}
	}
}

// TestDefaultCommand runs clipbuild without a subcommand, from inside the
// build context, and expects a .clip archive there.
func TestDefaultCommand(t *testing.T) {
	heavy(t)
	ctx := prepareContext(t, "corpus/empty")
	t.Cleanup(func() { removeImagesOfArchives(t, ctx) })

	args := append([]string{"-f", "Dockerfile"}, isolationArgs()...)
	res := run(t, ctx, buildTimeout, clipbuildBin, args...)
	mustSucceed(t, res)

	archives, err := filepath.Glob(filepath.Join(ctx, "*.clip"))
	mustDo(t, err)
	if len(archives) != 1 {
		t.Fatalf(".clip files in the context dir: got %q, want exactly one\n%v", archives, res)
	}
	checkInspect(t, archives[0])
}

// removeImagesOfArchives removes the images that the archives in dir were
// built from. Without -t the image gets a generated name, which is read back
// from the "image" field of `clipbuild inspect --json`.
func removeImagesOfArchives(t *testing.T, dir string) {
	archives, _ := filepath.Glob(filepath.Join(dir, "*.clip"))
	for _, archive := range archives {
		out, err := exec.Command(clipbuildBin, "inspect", archive, "--json").Output()
		var info struct {
			Image string `json:"image"`
		}
		if err != nil || json.Unmarshal(out, &info) != nil || info.Image == "" {
			t.Logf("cleanup: cannot tell which image %s came from; it may be left in buildah's storage", archive)
			continue
		}
		buildahCleanup(t, "rmi", info.Image)
	}
}

// flipAt returns a copy of data with the byte at i inverted.
func flipAt(data []byte, i int) []byte {
	out := append([]byte(nil), data...)
	if i >= 0 && i < len(out) {
		out[i] ^= 0xff
	}
	return out
}
