// Command clipbuild turns a Dockerfile, or an image already in a registry,
// into a clip archive that a container runtime mounts lazily.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"go.podman.io/storage/pkg/reexec"
)

// exitCoder is an error that carries the exit status to use, such as a
// child process's.
type exitCoder interface{ ExitCode() int }

func main() {
	if reexec.Init() {
		return
	}
	root := NewRootCmd(os.Stdout, os.Stderr)
	args := defaultToBuild(root, os.Args[1:])
	enterUserNamespace(root, args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err == nil {
		return
	}
	jsonErrors := logFormatArg(args) == "json"
	if interrupted && errors.Is(err, context.Canceled) {
		// The run stopped because of SIGINT/SIGTERM and has cleaned up.
		fmt.Fprint(os.Stderr, errorLine(jsonErrors, "interrupted: stopped and cleaned up"))
		os.Exit(130)
	}
	fmt.Fprint(os.Stderr, errorLine(jsonErrors, err.Error()))
	os.Exit(exitCode(err))
}

// defaultMemoryLimit is the Go runtime's soft memory limit of a build or a
// pull unless $GOMEMLIMIT sets one. Their live heap is the tree plus
// bounded buffers (tens of MB for 50k files); without a limit the collector
// lets the heap grow to twice that before it runs, which measured 155 MB
// peak RSS on a 50k-file image, and 116 MB with the limit, at no cost in
// time. A mount is not limited: its live heap (the tree, the kernel's
// inodes, the span memory tier) sits near such a limit, where the
// collector would run without pause (measured: half the CPU of a warm
// read of every file of a 30k-file image, and 6× its time).
const defaultMemoryLimit = 80 << 20

// limitMemory sets the soft memory limit of the commands that write an
// archive.
func limitMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}

// oneLine keeps the error on the single last line of stderr that scripts read.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
