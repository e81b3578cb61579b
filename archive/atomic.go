package archive

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic creates output through write: the data goes to a temporary
// file beside output, which is renamed into place only when write succeeds.
// An existing output is untouched on failure, and no temporary file is left.
func WriteFileAtomic(output string, write func(f *os.File) error) (err error) {
	dir, base := filepath.Split(output)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating %s: %w", output, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), output); err != nil {
		return fmt.Errorf("renaming into place: %w", err)
	}
	return nil
}
