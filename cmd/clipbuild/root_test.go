package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.podman.io/image/v5/docker/reference"

	"github.com/clipbuild/clipbuild/stages"
)

func TestDefaultToBuild(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"empty", []string{}, []string{}},
		{"nil", nil, nil},
		{"-f", []string{"-f", "Dockerfile"}, []string{"build", "-f", "Dockerfile"}},
		{"-f with context", []string{"-f", "Dockerfile", "."}, []string{"build", "-f", "Dockerfile", "."}},
		{"context only", []string{"."}, []string{"build", "."}},
		{"-t first", []string{"-t", "app", "."}, []string{"build", "-t", "app", "."}},
		{"--file=", []string{"--file=D"}, []string{"build", "--file=D"}},
		{"build", []string{"build", "-f", "D"}, []string{"build", "-f", "D"}},
		{"inspect", []string{"inspect", "x"}, []string{"inspect", "x"}},
		{"mount", []string{"mount", "x", "/mnt"}, []string{"mount", "x", "/mnt"}},
		{"verify", []string{"verify", "x", "--rootfs", "r"}, []string{"verify", "x", "--rootfs", "r"}},
		{"log level then inspect", []string{"--log-level", "debug", "inspect", "x"}, []string{"--log-level", "debug", "inspect", "x"}},
		{"log level= then inspect", []string{"--log-level=debug", "inspect", "x"}, []string{"--log-level=debug", "inspect", "x"}},
		{"log format then inspect", []string{"--log-format", "json", "inspect", "x"}, []string{"--log-format", "json", "inspect", "x"}},
		{"both globals then inspect", []string{"--log-level", "warn", "--log-format=json", "inspect", "x"},
			[]string{"--log-level", "warn", "--log-format=json", "inspect", "x"}},
		{"log level then -f", []string{"--log-level", "debug", "-f", "D"}, []string{"build", "--log-level", "debug", "-f", "D"}},
		{"log level then context", []string{"--log-level", "debug", "."}, []string{"build", "--log-level", "debug", "."}},
		{"help", []string{"help"}, []string{"help"}},
		{"help build", []string{"help", "build"}, []string{"help", "build"}},
		{"--help", []string{"--help"}, []string{"--help"}},
		{"-h", []string{"-h"}, []string{"-h"}},
		{"log level then --help", []string{"--log-level", "debug", "--help"}, []string{"--log-level", "debug", "--help"}},
		{"completion", []string{"completion", "bash"}, []string{"completion", "bash"}},
		{"__complete", []string{"__complete", "in"}, []string{"__complete", "in"}},
		{"unknown word", []string{"inspekt", "x"}, []string{"build", "inspekt", "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := NewRootCmd(io.Discard, io.Discard)
			in := append([]string(nil), tt.args...)
			got := defaultToBuild(root, tt.args)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("defaultToBuild(%q) (-want +got):\n%s", tt.args, d)
			}
			if !cmp.Equal(in, tt.args, cmpopts.EquateEmpty()) {
				t.Errorf("defaultToBuild changed its argument to %q", tt.args)
			}
		})
	}
}

// TestDefaultToBuildKnowsEverySubcommand: every subcommand (and alias) is
// passed through as it is.
func TestDefaultToBuildKnowsEverySubcommand(t *testing.T) {
	root := NewRootCmd(io.Discard, io.Discard)
	for _, c := range root.Commands() {
		for _, name := range append([]string{c.Name()}, c.Aliases...) {
			args := []string{name, "arg"}
			if got := defaultToBuild(root, args); !cmp.Equal(got, args) {
				t.Errorf("defaultToBuild(%q) = %q, want it unchanged", args, got)
			}
		}
	}
}

func TestImageBaseName(t *testing.T) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct{ in, want string }{
		{"app", "app"},
		{"app:1.0", "app"},
		{"localhost/app:latest", "app"},
		{"localhost/app-1a2b3c4d:latest", "app-1a2b3c4d"},
		{"quay.io/org/tool:v2", "tool"},
		{"quay.io/org/tool@" + dgst, "tool"},
		{"quay.io/org/tool:v2@" + dgst, "tool"},
		{"localhost:5000/x", "x"},
		{"localhost:5000/x:3", "x"},
		{"docker.io/library/alpine", "alpine"},
		{"my.app", "my.app"},
	}
	for _, tt := range tests {
		if got := imageBaseName(tt.in); got != tt.want {
			t.Errorf("imageBaseName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDefaultName(t *testing.T) {
	parent := t.TempDir()
	tests := []struct{ dir, want string }{
		{"app", "app"},
		{"My App", "my-app"},
		{"Project_X", "project_x"},
		{"web.v2", "web.v2"},
		{"--weird--", "weird"},
		{"a  b!!c", "a-b-c"},
		{"ünïcödé", "n-c-d"},
		{"日本", "image"},
		{"...", "image"},
	}
	for _, tt := range tests {
		if got := defaultName(filepath.Join(parent, tt.dir)); got != tt.want {
			t.Errorf("defaultName(%q) = %q, want %q", tt.dir, got, tt.want)
		}
	}
	if got := defaultName("/"); got != "image" {
		t.Errorf("defaultName(%q) = %q, want %q", "/", got, "image")
	}
}

func TestDefaultNameRelative(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Hello World")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	tests := []struct{ in, want string }{
		{".", "hello-world"},
		{"", "hello-world"},
		{"sub", "sub"},
		{"sub/..", "hello-world"},
	}
	for _, tt := range tests {
		if got := defaultName(tt.in); got != tt.want {
			t.Errorf("defaultName(%q) in %s = %q, want %q", tt.in, dir, got, tt.want)
		}
	}
}

// TestDefaultNameMakesValidReference: the image name built from a context
// directory must be a name buildah accepts.
func TestDefaultNameMakesValidReference(t *testing.T) {
	parent := t.TempDir()
	for _, dir := range []string{"app", "My App", "Project_X", "web.v2", "--weird--", "ünïcödé", "日本", "x", "__pycache__", "foo_", "_private",
		"a..b", "x.-y", "v1._x", "...", "-", "A-B_C.D"} {
		name := stages.UniqueName(defaultName(filepath.Join(parent, dir)))
		if _, err := reference.ParseNormalizedNamed(name); err != nil {
			t.Errorf("image name for directory %q = %q: %v", dir, name, err)
		}
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"two\nlines", "two lines"},
		{"  padded \n\n  text  \n", "padded text"},
		{"tabs\tand  spaces", "tabs and spaces"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
