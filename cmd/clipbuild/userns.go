package main

import (
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/stages"
)

// enterUserNamespace re-executes clipbuild in a user namespace, as buildah
// does, when a user other than root runs a command that opens
// containers-storage or has buildah mount an image (stages.EnterUserNamespace):
// build (and the removal of its working containers), pull, and verify
// --image. mount stays outside: its mount must be where the user is, and
// the rest need no namespace.
func enterUserNamespace(root *cobra.Command, args []string) {
	if !needsUserNamespace(root, args) {
		return
	}
	if logFormatArg(args) == "json" {
		// The re-exec's own warnings (no subordinate ids, say) come
		// before any logger is set up.
		logrus.SetFormatter(&logrus.JSONFormatter{})
	}
	stages.EnterUserNamespace()
}

// needsUserNamespace reports whether the command args select is one of
// those enterUserNamespace names.
func needsUserNamespace(root *cobra.Command, args []string) bool {
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		return false
	}
	switch cmd.Name() {
	case "build", "pull":
		return true
	case "verify":
		for _, a := range rest {
			if a == "--" {
				break
			}
			if a == "--image" || strings.HasPrefix(a, "--image=") {
				return true
			}
		}
	}
	return false
}
