package archive_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/clipbuild/clipbuild/archive"
)

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

var errWrite = errors.New("disk on fire")

func TestWriteFileAtomicSuccess(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.clip")
	err := archive.WriteFileAtomic(out, func(f *os.File) error {
		_, err := f.WriteString("payload")
		return err
	})
	if err != nil {
		t.Fatalf("WriteFileAtomic() = %v, want nil", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), "payload"; got != want {
		t.Errorf("contents = %q, want %q", got, want)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode(), os.FileMode(0o644); got != want {
		t.Errorf("mode = %v, want %v", got, want)
	}
	if got, want := dirNames(t, dir), []string{"out.clip"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
}

func TestWriteFileAtomicReplacesExisting(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.clip")
	if err := os.WriteFile(out, []byte("old old old"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := archive.WriteFileAtomic(out, func(f *os.File) error {
		_, err := f.WriteString("new")
		return err
	})
	if err != nil {
		t.Fatalf("WriteFileAtomic() = %v, want nil", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), "new"; got != want {
		t.Errorf("contents = %q, want %q", got, want)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode(), os.FileMode(0o644); got != want {
		t.Errorf("mode = %v, want %v", got, want)
	}
	if got, want := dirNames(t, dir), []string{"out.clip"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
}

func TestWriteFileAtomicWriteError(t *testing.T) {
	tests := []struct {
		name     string
		existing []byte // nil: no output before the call
	}{
		{"no existing output", nil},
		{"existing output", []byte("precious archive")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.clip")
			if tt.existing != nil {
				if err := os.WriteFile(out, tt.existing, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			err := archive.WriteFileAtomic(out, func(f *os.File) error {
				if _, err := f.WriteString("half an archive"); err != nil {
					return err
				}
				return errWrite
			})
			if !errors.Is(err, errWrite) {
				t.Fatalf("WriteFileAtomic() = %v, want %v", err, errWrite)
			}
			var want []string
			if tt.existing != nil {
				want = []string{"out.clip"}
			}
			if got := dirNames(t, dir); !slices.Equal(got, want) {
				t.Errorf("directory holds %q, want %q", got, want)
			}
			if tt.existing == nil {
				return
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != string(tt.existing) {
				t.Errorf("existing output = %q, want it untouched (%q)", data, tt.existing)
			}
			fi, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fi.Mode(), os.FileMode(0o640); got != want {
				t.Errorf("existing output mode = %v, want %v", got, want)
			}
		})
	}
}

func TestWriteFileAtomicRenameError(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.clip")
	// A non-empty directory where the output goes: the rename fails.
	if err := os.MkdirAll(filepath.Join(out, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := archive.WriteFileAtomic(out, func(f *os.File) error {
		_, err := f.WriteString("data")
		return err
	})
	if err == nil {
		t.Fatal("WriteFileAtomic(onto a directory) = nil, want an error")
	}
	if got, want := dirNames(t, dir), []string{"out.clip"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
	if got, want := dirNames(t, out), []string{"keep"}; !slices.Equal(got, want) {
		t.Errorf("existing directory holds %q, want %q", got, want)
	}
}

func TestWriteFileAtomicMissingDir(t *testing.T) {
	out := filepath.Join(t.TempDir(), "no", "such", "dir", "out.clip")
	called := false
	err := archive.WriteFileAtomic(out, func(f *os.File) error {
		called = true
		return nil
	})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("WriteFileAtomic(missing dir) = %v, want an error wrapping os.ErrNotExist", err)
	}
	if called {
		t.Error("write was called, want it not called when the temporary file cannot be made")
	}
}

func TestWriteFileAtomicRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	err := archive.WriteFileAtomic("rel.clip", func(f *os.File) error {
		_, err := f.WriteString("x")
		return err
	})
	if err != nil {
		t.Fatalf("WriteFileAtomic(relative) = %v, want nil", err)
	}
	if got, want := dirNames(t, dir), []string{"rel.clip"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want %q", got, want)
	}
}
