// Package rootless is the rootless lane: clipbuild used by an ordinary user
// with subordinate id ranges and nothing else set up.
//
// TestRootlessLane runs as root (as `make test` and CI run it). It creates a
// user with a unique name (cbrootless<pid>; useradd gives it its
// /etc/subuid and /etc/subgid ranges, which are added only when absent),
// copies this test binary, the clipbuild binary and a few corpus images
// where that user can read them, and runs the user half of the tests as
// that user with an empty environment (HOME, PATH, TMPDIR and the test's
// own variables only), twice, each time in a private mount namespace:
//
//   - with a usable /dev/fuse (a mode 0666 node bound over it, as udev
//     would have it) and an /etc/fuse.conf that says user_allow_other:
//     TestAsUser builds v1 and v2 archives of the corpus images and of an
//     image with setuid files, a FIFO, hard links, files owned by uid 1000
//     and a root-owned file only root may read; verifies them against the
//     image; pulls v1 and v2 from an embedded registry on loopback; mounts
//     and reads them (with and without --map-owner, and with
//     --allow-other); and builds under `buildah unshare`, whose
//     BUILDAH_ISOLATION=rootless must not become the default;
//   - with a /dev/fuse of mode 0600 and the stock fuse.conf:
//     TestAsUserFuseDenied checks the one-line errors of mount and of
//     mount --allow-other.
//
// Both halves must pass and none of their tests may skip. The user is then
// removed with its home, its containers-storage and its run directories;
// any process of it still alive is killed by PID first.
//
// Without root, or without useradd, runuser, unshare, newuidmap, buildah,
// fusermount3 or a static /bin/busybox, the lane skips, and fails under
// CI=true. The user half skips unless the lane runs it.
//
// Environment: CLIPBUILD_BIN is the clipbuild binary (the default builds
// one).
package rootless
