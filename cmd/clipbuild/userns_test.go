package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNeedsUserNamespace(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"build", "."}, true},
		{[]string{"--log-level", "debug", "build", "-f", "Dockerfile", "."}, true},
		{defaultToBuild(NewRootCmd(io.Discard, io.Discard), []string{"-f", "Dockerfile"}), true},
		{[]string{"pull", "127.0.0.1:5000/a:b"}, true},
		{[]string{"verify", "a.clip", "--image", "x"}, true},
		{[]string{"verify", "--image=x", "a.clip"}, true},
		{[]string{"verify", "a.clip", "--rootfs", "/d"}, false},
		{[]string{"verify", "a.clip", "--rootfs", "/d", "--", "--image"}, false},
		{[]string{"mount", "a.clip", "/mnt"}, false},
		{[]string{"inspect", "a.clip"}, false},
		{[]string{"registry", "serve"}, false},
		{[]string{}, false},
		{[]string{"no-such-command"}, false},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			root := NewRootCmd(io.Discard, io.Discard)
			if got := needsUserNamespace(root, tc.args); got != tc.want {
				t.Errorf("needsUserNamespace(%q): got %t, want %t", tc.args, got, tc.want)
			}
		})
	}
}

func TestFuseConfAllows(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, conf string
		want       bool
	}{
		{"debian default", "# user_allow_other - ...\n#user_allow_other\n\n#mount_max = 1000\n", false},
		{"enabled", "#mount_max = 1000\nuser_allow_other\n", true},
		{"enabled with blanks", "  user_allow_other \n", true},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(p, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := fuseConfAllows(p)
			if err != nil || got != tc.want {
				t.Errorf("fuseConfAllows(%q): got %t, %v, want %t, nil", tc.conf, got, err, tc.want)
			}
		})
	}
	if got, err := fuseConfAllows(filepath.Join(dir, "missing")); got || err != nil {
		t.Errorf("fuseConfAllows(missing file): got %t, %v, want false, nil", got, err)
	}
}

// TestCheckFuseDevice checks the errors for a device that is missing and
// one this user may not open (the latter only as a user other than root,
// who opens anything; the rootless lane runs it so).
func TestCheckFuseDevice(t *testing.T) {
	dir := t.TempDir()
	err := checkFuseDevice(filepath.Join(dir, "fuse"))
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing device: got %v, want an error saying it does not exist", err)
	}
	dev := filepath.Join(dir, "closed")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkFuseDevice(dev); err != nil {
		t.Errorf("openable device: got %v, want nil", err)
	}
	if os.Geteuid() == 0 {
		return
	}
	if err := os.Chmod(dev, 0); err != nil {
		t.Fatal(err)
	}
	err = checkFuseDevice(dev)
	for _, want := range []string{"cannot open " + dev, "(mode 0000 here)", "mode 0666", "run as root"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("device of mode 0000: got %v, want an error with %q", err, want)
		}
	}
}
