// Package integration holds end-to-end tests for the clipbuild command.
//
// The tests drive the compiled clipbuild binary and never import its
// packages. For every image in testdata/corpus they build a .clip archive
// with `clipbuild build`, mount it with `clipbuild mount`, and compare the
// mounted tree with buildah's own view of the same image (`buildah from` +
// `buildah mount`). The comparison is done by an independent tree snapshot
// (see snapshot_test.go), not by `clipbuild verify`, and each image also has
// hand-written checks of the facts it was built to exercise, so that a bug
// shared by both sides of the comparison still fails a test.
//
// Other tests cover bad input (missing or broken Dockerfiles, failing RUN
// steps, invalid flags, corrupt or truncated archives) and the default
// command (`clipbuild -f Dockerfile` without a subcommand).
//
// Prerequisites: root, buildah, /dev/fuse, fusermount3 and a statically
// linked /bin/busybox (it is copied into each build context). Without them
// the tests are skipped, unless CI=true, in which case they fail.
//
// The binary is taken from $CLIPBUILD_BIN, else from <repo>/bin/clipbuild;
// if neither exists it is built once, into a temporary directory, before the
// tests run.
//
// Typical use, from the repository root:
//
//	go test ./test/integration/ -v -timeout 30m
//	go test ./test/integration/ -v -run 'TestCorpus/hardlinks'
//
// Environment:
//
//	CLIPBUILD_BIN             clipbuild binary to test
//	CLIPBUILD_TEST_ISOLATION  value for `clipbuild build --isolation` (default "chroot")
//	CI=true                   missing prerequisites fail instead of skip
//
// Images and containers are named cbtest-<pid>-<case> and removed when each
// test finishes.
package integration
