package stages

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/unshare"
)

func TestDefaultIsolation(t *testing.T) {
	for _, tc := range []struct {
		name      string
		isolation string // "" leaves BUILDAH_ISOLATION unset
		userns    bool
		fromUser  bool // set before clipbuild's own re-exec
		want      string
	}{
		{"unset", "", false, false, "chroot"},
		{"unset in a user namespace", "", true, false, "chroot"},
		{"rootless outside a user namespace", "rootless", false, false, "rootless"},
		{"rootless set by buildah unshare", "rootless", true, false, "chroot"},
		{"rootless set by the user before the re-exec", "rootless", true, true, "rootless"},
		{"oci in a user namespace", "oci", true, false, "oci"},
		{"chroot", "chroot", false, false, "chroot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("BUILDAH_ISOLATION", tc.isolation)
			if tc.isolation == "" {
				os.Unsetenv("BUILDAH_ISOLATION")
			}
			t.Setenv(unshare.UsernsEnvName, "")
			if tc.userns {
				t.Setenv(unshare.UsernsEnvName, "done")
			} else {
				os.Unsetenv(unshare.UsernsEnvName)
			}
			t.Setenv(isolationFromUser, "")
			if tc.fromUser {
				t.Setenv(isolationFromUser, "1")
			} else {
				os.Unsetenv(isolationFromUser)
			}
			if got := DefaultIsolation(); got != tc.want {
				t.Errorf("DefaultIsolation(): got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestResolveDriver checks how the graph driver is named for buildah and
// for clipbuild's own store.
func TestResolveDriver(t *testing.T) {
	quiet := logrus.New()
	quiet.SetOutput(os.Stderr)
	quiet.SetLevel(logrus.WarnLevel)
	mkdirs := func(t *testing.T, root string, dirs ...string) {
		t.Helper()
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name       string
		configured string
		dirs       []string // under the graph root
		files      []string
		want       string
		wantErr    bool
		wantGone   []string // directories resolveDriver removes
		wantKept   []string
	}{
		{name: "configured driver is kept", configured: "overlay", dirs: []string{"vfs", "vfs-layers"}, want: "overlay"},
		{name: "existing vfs state is used", dirs: []string{"vfs", "vfs-layers", "vfs-images"}, want: "vfs"},
		{name: "existing overlay state is used", dirs: []string{"overlay/l", "overlay-layers"}, want: "overlay"},
		{
			name: "empty overlay directory beside vfs state is removed",
			dirs: []string{"vfs", "vfs-layers", "overlay/l"}, files: []string{"overlay/.has-mount-program"},
			want: "vfs", wantGone: []string{"overlay"}, wantKept: []string{"vfs", "vfs-layers"},
		},
		{
			name: "overlay directory with content beside vfs state is kept",
			dirs: []string{"vfs", "vfs-layers", "overlay/l/ABC"},
			want: "vfs", wantKept: []string{"overlay/l/ABC"},
		},
		{name: "state of two drivers is refused", dirs: []string{"vfs-layers", "overlay-layers"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mkdirs(t, root, tc.dirs...)
			for _, f := range tc.files {
				if err := os.WriteFile(filepath.Join(root, f), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := resolveDriver(storage.StoreOptions{GraphRoot: root, RunRoot: t.TempDir(), GraphDriverName: tc.configured}, quiet)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("resolveDriver() = %q, want an error", got.GraphDriverName)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolveDriver() = %v", err)
			}
			if got.GraphDriverName != tc.want {
				t.Errorf("driver: got %q, want %q", got.GraphDriverName, tc.want)
			}
			for _, d := range tc.wantGone {
				if _, err := os.Stat(filepath.Join(root, d)); !os.IsNotExist(err) {
					t.Errorf("%s: got %v, want it removed", d, err)
				}
			}
			for _, d := range tc.wantKept {
				if _, err := os.Stat(filepath.Join(root, d)); err != nil {
					t.Errorf("%s: got %v, want it kept", d, err)
				}
			}
		})
	}
}

// TestResolveDriverNoState checks that a store with no state is opened
// once and the driver containers-storage picks is named, so that buildah
// is told the same one.
func TestResolveDriverNoState(t *testing.T) {
	root := t.TempDir()
	o := storage.StoreOptions{GraphRoot: root, RunRoot: t.TempDir(), GraphDriverPriority: []string{"vfs"}}
	got, err := resolveDriver(o, logrus.StandardLogger())
	if err != nil {
		t.Fatalf("resolveDriver() = %v", err)
	}
	if got.GraphDriverName != "vfs" {
		t.Errorf("driver: got %q, want vfs", got.GraphDriverName)
	}
	args := BuildahStoreArgs(got)
	want := []string{"--root", root, "--runroot", o.RunRoot, "--storage-driver", "vfs"}
	if len(args) < len(want) {
		t.Fatalf("BuildahStoreArgs: got %q, want it to start with %q", args, want)
	}
	for i := range want {
		if args[i] != want[i] {
			t.Fatalf("BuildahStoreArgs: got %q, want it to start with %q", args, want)
		}
	}
	if entries, err := os.ReadDir(root); err == nil {
		for _, e := range entries {
			if e.Name() == "overlay" {
				t.Errorf("%s: an overlay directory was created in a vfs store", root)
			}
		}
	}
}

// TestAskBuildah checks that the store buildah reports replaces the
// defaults' roots and driver, and that a buildah that fails is an error.
func TestAskBuildah(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := script("buildah-ok", `[ "$1" = info ] || exit 2
cat <<'JSON'
{"host": {"arch": "amd64"}, "store": {"ContainerStore": {"number": 0}, "GraphDriverName": "vfs", "GraphOptions": ["vfs.ignore_chown_errors=true"], "GraphRoot": "/home/u/.local/share/containers/storage", "GraphStatus": {}, "ImageStore": {"number": 0}, "RunRoot": "/var/tmp/containers-user-1001/containers"}}
JSON
`)
	defaults := storage.StoreOptions{GraphRoot: "/elsewhere", RunRoot: "/run/elsewhere", TransientStore: true}
	got, err := askBuildah(context.Background(), ok, defaults)
	if err != nil {
		t.Fatalf("askBuildah() = %v", err)
	}
	want := storage.StoreOptions{
		GraphRoot:          "/home/u/.local/share/containers/storage",
		RunRoot:            "/var/tmp/containers-user-1001/containers",
		GraphDriverName:    "vfs",
		GraphDriverOptions: []string{"vfs.ignore_chown_errors=true"},
		TransientStore:     true,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("askBuildah() (-want +got):\n%s", d)
	}
	for name, body := range map[string]string{
		"buildah-fails": "echo 'Error: no store' >&2; exit 125\n",
		"buildah-empty": "echo '{\"store\": {}}'\n",
		"buildah-junk":  "echo 'not json'\n",
	} {
		if _, err := askBuildah(context.Background(), script(name, body), defaults); err == nil {
			t.Errorf("%s: askBuildah() = nil error, want one", name)
		}
	}
}
