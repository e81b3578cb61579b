// Package testsupport holds what the test suites under test/ share.
package testsupport

import (
	"errors"
	"os"
	"path/filepath"
)

// RepoRoot walks up from the working directory to the directory that holds
// go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find go.mod above the working directory")
		}
		dir = parent
	}
}
