package stages

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func boolPtr(b bool) *bool { return &b }

func TestBudArgs(t *testing.T) {
	base := []string{"bud", "--iidfile", "/tmp/iid", "-f", "/ctx/Dockerfile"}
	args := func(extra ...string) []string {
		return append(append(append([]string(nil), base...), extra...), "/ctx")
	}
	tests := []struct {
		name string
		opts BudOptions
		want []string
	}{
		{"minimal", BudOptions{ContextDir: "/ctx"}, args()},
		{"one tag", BudOptions{ContextDir: "/ctx", Tags: []string{"app"}}, args("-t", "app")},
		{"tags in order", BudOptions{ContextDir: "/ctx", Tags: []string{"app", "quay.io/x/app:1"}},
			args("-t", "app", "-t", "quay.io/x/app:1")},
		{"build args", BudOptions{ContextDir: "/ctx", BuildArgs: []string{"A=1", "B=two words"}},
			args("--build-arg", "A=1", "--build-arg", "B=two words")},
		{"target", BudOptions{ContextDir: "/ctx", Target: "builder"}, args("--target", "builder")},
		{"platform", BudOptions{ContextDir: "/ctx", Platform: "linux/arm64/v8"}, args("--platform", "linux/arm64/v8")},
		{"layers unset", BudOptions{ContextDir: "/ctx", Layers: nil}, args()},
		// With --layers, buildah keeps a failed build's container unless told.
		{"layers true", BudOptions{ContextDir: "/ctx", Layers: boolPtr(true)}, args("--layers=true", "--force-rm")},
		{"layers false", BudOptions{ContextDir: "/ctx", Layers: boolPtr(false)}, args("--layers=false")},
		{"isolation", BudOptions{ContextDir: "/ctx", Isolation: "chroot"}, args("--isolation", "chroot")},
		{"secrets", BudOptions{ContextDir: "/ctx", Secrets: []string{"id=a,src=/a", "id=b,src=/b"}},
			args("--secret", "id=a,src=/a", "--secret", "id=b,src=/b")},
		{"ssh", BudOptions{ContextDir: "/ctx", SSH: []string{"default", "git=/run/agent.sock"}},
			args("--ssh", "default", "--ssh", "git=/run/agent.sock")},
		{"labels", BudOptions{ContextDir: "/ctx", Labels: []string{"a=1", "b=two words"}},
			args("--label", "a=1", "--label", "b=two words")},
		{"annotations", BudOptions{ContextDir: "/ctx", Annotations: []string{"org.opencontainers.image.source=x"}},
			args("--annotation", "org.opencontainers.image.source=x")},
		{"build contexts", BudOptions{ContextDir: "/ctx", BuildContexts: []string{"extra=/dir", "base=docker-image://img"}},
			args("--build-context", "extra=/dir", "--build-context", "base=docker-image://img")},
		// Secrets never become build arguments: buildah records those in
		// the image's history.
		{"secret is not a build arg", BudOptions{ContextDir: "/ctx", Secrets: []string{"id=s,src=/s"}, SSH: []string{"default"}},
			args("--secret", "id=s,src=/s", "--ssh", "default")},
		{"everything", BudOptions{
			ContextDir: "/ctx",
			File:       "/elsewhere/Dockerfile.dev", // BudArgs takes the resolved path argument, not File
			Tags:       []string{"app"},
			BuildArgs:  []string{"A=1"},
			Target:     "final",
			Platform:   "linux/amd64",
			Layers:     boolPtr(true),
			Isolation:  "oci",
			Secrets:    []string{"id=s,src=/s"},
		}, args("-t", "app", "--build-arg", "A=1", "--target", "final", "--platform", "linux/amd64",
			"--layers=true", "--force-rm", "--isolation", "oci", "--secret", "id=s,src=/s")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := BudArgs(tt.opts, "/ctx/Dockerfile", "/tmp/iid")
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("BudArgs() (-want +got):\n%s", d)
			}
			if last := got[len(got)-1]; last != tt.opts.ContextDir {
				t.Errorf("BudArgs() ends with %q, want the context dir %q", last, tt.opts.ContextDir)
			}
		})
	}
}

func TestBudOptionsDockerfile(t *testing.T) {
	type setup struct {
		dockerfile, containerfile bool
		dockerfileIsDir           bool
	}
	tests := []struct {
		name    string
		setup   setup
		file    string // relative to the context dir; "" for the default
		want    string // relative to the context dir; "" when an error is expected
		wantErr string // relative path the error must name
	}{
		{"Dockerfile", setup{dockerfile: true}, "", "Dockerfile", ""},
		{"Containerfile only", setup{containerfile: true}, "", "Containerfile", ""},
		{"both prefers Dockerfile", setup{dockerfile: true, containerfile: true}, "", "Dockerfile", ""},
		{"neither", setup{}, "", "", "Dockerfile"},
		{"explicit file", setup{}, "build/Custom.df", "build/Custom.df", ""},
		{"explicit file missing", setup{dockerfile: true}, "nope/Dockerfile.x", "", "nope/Dockerfile.x"},
		{"explicit file missing ignores Containerfile", setup{containerfile: true}, "Dockerfile", "", "Dockerfile"},
		{"Dockerfile is a directory", setup{dockerfileIsDir: true}, "", "", "Dockerfile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctxDir := t.TempDir()
			touch := func(rel string) {
				p := filepath.Join(ctxDir, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("FROM scratch\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.setup.dockerfile {
				touch("Dockerfile")
			}
			if tt.setup.containerfile {
				touch("Containerfile")
			}
			if tt.setup.dockerfileIsDir {
				if err := os.Mkdir(filepath.Join(ctxDir, "Dockerfile"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			o := BudOptions{ContextDir: ctxDir}
			if tt.file != "" {
				o.File = filepath.Join(ctxDir, tt.file)
				if tt.want != "" {
					touch(tt.file)
				}
			}
			got, err := o.Dockerfile()
			if tt.want != "" {
				if err != nil {
					t.Fatalf("Dockerfile() = %v, want nil", err)
				}
				if want := filepath.Join(ctxDir, tt.want); got != want {
					t.Errorf("Dockerfile() = %q, want %q", got, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Dockerfile() = %q, nil; want an error", got)
			}
			if want := filepath.Join(ctxDir, tt.wantErr); !strings.Contains(err.Error(), want) {
				t.Errorf("Dockerfile() = %q, want it to name %s", err, want)
			}
			if !tt.setup.dockerfileIsDir && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Dockerfile() = %v, want an error wrapping os.ErrNotExist", err)
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in, want string
	}{
		{"app", "localhost/app:latest"},
		{"app:1.0", "localhost/app:1.0"},
		{"localhost/app", "localhost/app:latest"},
		{"localhost/app:dev", "localhost/app:dev"},
		{"quay.io/a/b:1", "quay.io/a/b:1"},
		{"quay.io/a/b", "quay.io/a/b:latest"},
		{"localhost:5000/x", "localhost:5000/x:latest"},
		{"localhost:5000/x:2", "localhost:5000/x:2"},
		{"registry:5000/ns/x", "registry:5000/ns/x:latest"},
		{"quay.io/a/b@" + dgst, "quay.io/a/b@" + dgst},
		// A name pinned by digest is spelt as given.
		{"a/b@" + dgst, "a/b@" + dgst},
		{"app@" + dgst, "app@" + dgst},
	}
	for _, tt := range tests {
		if got := normalizeName(tt.in); got != tt.want {
			t.Errorf("normalizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestExitError(t *testing.T) {
	tests := []struct {
		err  *ExitError
		want string
	}{
		{&ExitError{Cmd: "buildah bud", Code: 125}, "buildah bud exited with status 125"},
		{&ExitError{Cmd: "buildah bud", Code: 1, Tail: "building at STEP \"RUN false\": exit status 1"},
			"buildah bud exited with status 1: building at STEP \"RUN false\": exit status 1"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if got := tt.err.ExitCode(); got != tt.err.Code {
			t.Errorf("ExitCode() = %d, want %d", got, tt.err.Code)
		}
	}
	// Wrapped, it still gives its exit code to the caller.
	var err error = &ExitError{Cmd: "buildah bud", Code: 2}
	wrapped := errors.Join(errors.New("build failed"), err)
	var ec interface{ ExitCode() int }
	if !errors.As(wrapped, &ec) || ec.ExitCode() != 2 {
		t.Errorf("errors.As(wrapped ExitError) = %v, want an ExitCode of 2", ec)
	}
}

func TestTailWriterLast(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"nothing", nil, ""},
		{"blank lines only", []string{"\n\n  \n"}, ""},
		{"one line", []string{"Error: no such image\n"}, "no such image"},
		{"last of several", []string{"STEP 1/2: FROM x\n", "STEP 2/2: RUN false\n", "Error: building at STEP: exit status 1\n"},
			"building at STEP: exit status 1"},
		{"trailing blank lines", []string{"Error: boom\n\n   \n"}, "boom"},
		{"line split across writes", []string{"Error: par", "tial line"}, "partial line"},
		{"no Error prefix", []string{"plain failure\n"}, "plain failure"},
		{"CRLF", []string{"Error: windows\r\n"}, "windows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &tailWriter{}
			for _, s := range tt.writes {
				n, err := w.Write([]byte(s))
				if n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
				}
			}
			if got := w.last(); got != tt.want {
				t.Errorf("last() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTailWriterBounded(t *testing.T) {
	w := &tailWriter{}
	line := strings.Repeat("x", 99) + "\n"
	for i := 0; i < 10000; i++ { // 1 MB in all
		w.Write([]byte(line))
	}
	w.Write([]byte("Error: the real reason\n"))
	if got := w.buf.Len(); got > 64<<10 {
		t.Errorf("tailWriter holds %d bytes, want at most %d", got, 64<<10)
	}
	if got, want := w.last(), "the real reason"; got != want {
		t.Errorf("last() = %q, want %q", got, want)
	}
}

func TestUniqueName(t *testing.T) {
	re := regexp.MustCompile(`^localhost/my-app-[0-9a-f]{8}:latest$`)
	a, b := UniqueName("my-app"), UniqueName("my-app")
	for _, n := range []string{a, b} {
		if !re.MatchString(n) {
			t.Errorf("UniqueName(%q) = %q, want it to match %s", "my-app", n, re)
		}
	}
	if a == b {
		t.Errorf("UniqueName() = %q twice, want different names", a)
	}
	if got := normalizeName(a); got != a {
		t.Errorf("normalizeName(UniqueName()) = %q, want %q unchanged", got, a)
	}
}

func TestImageStoreRef(t *testing.T) {
	id := strings.Repeat("ab", 32)
	tests := []struct {
		img  Image
		want string
	}{
		{Image{Name: "localhost/app:latest", ID: id}, "@" + id},
		{Image{Name: "localhost/app:latest", ID: id[:12]}, "localhost/app:latest"},
		{Image{Name: "localhost/app:latest"}, "localhost/app:latest"},
	}
	for _, tt := range tests {
		if got := tt.img.StoreRef(); got != tt.want {
			t.Errorf("%+v.StoreRef() = %q, want %q", tt.img, got, tt.want)
		}
	}
}
