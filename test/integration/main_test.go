package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/clipbuild/clipbuild/stages"
	"github.com/clipbuild/clipbuild/test/testsupport"
)

const busyboxPath = "/bin/busybox"

var (
	// repoRoot is the directory holding go.mod.
	repoRoot string

	// clipbuildBin is the binary under test. It is empty when the
	// prerequisites are missing and no binary was given, in which case every
	// test that needs it skips (or fails under CI=true).
	clipbuildBin string

	// namePrefix makes buildah image and container names unique to this
	// test process, so concurrent runs and leftovers do not collide.
	namePrefix = fmt.Sprintf("cbtest-%d", os.Getpid())

	// slots bounds how many heavy tests (builds, mounts) run at once.
	slots = make(chan struct{}, 2)
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	root, err := testsupport.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	repoRoot = root

	// Keep every cache and data directory the tool defaults to inside this
	// run, so tests neither share state with the user nor leave any behind.
	home, err := os.MkdirTemp("", "clipbuild-integration-home-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(home)
	os.Setenv("XDG_CACHE_HOME", filepath.Join(home, "cache"))
	os.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))

	bin, cleanup, err := locateBinary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer cleanup()
	clipbuildBin = bin

	// Builds with --layers, and rebuilds of one tag, leave images without a
	// name behind (the layer cache, the image the tag moved from), and a
	// buildah killed mid-build (the reliability tests kill builds at
	// random) may leave its working container after the test that killed
	// it has looked: those the run made go with it, containers first.
	images, containers := untaggedImages(), buildahContainers()
	code := m.Run()
	removeNewContainers(containers)
	removeNewUntaggedImages(images)
	return code
}

// buildahIDs is the set of IDs that buildah with args lists, one per
// field, or nil when buildah cannot list them.
func buildahIDs(args ...string) map[string]bool {
	out, err := exec.Command("buildah", args...).Output()
	if err != nil {
		return nil
	}
	ids := map[string]bool{}
	for _, id := range strings.Fields(string(out)) {
		ids[id] = true
	}
	return ids
}

// buildahContainers is the set of IDs of the containers in buildah's
// store (buildah's own and others'), or nil when buildah cannot list them.
func buildahContainers() map[string]bool {
	return buildahIDs("containers", "--all", "--quiet", "--notruncate")
}

// removeNewContainers removes the containers that are not in before:
// every test has removed its own by now, so these are what killed builds
// left. buildah cannot remove a working container of a FROM scratch build
// killed before it recorded its builder data ("imageID is empty"): those
// are deleted from containers-storage directly.
func removeNewContainers(before map[string]bool) {
	if before == nil {
		return
	}
	var stuck []string
	for id := range buildahContainers() {
		if before[id] {
			continue
		}
		if exec.Command("buildah", "rm", id).Run() != nil {
			stuck = append(stuck, id)
		}
	}
	if len(stuck) == 0 {
		return
	}
	store, release, err := stages.OpenStore(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: cleanup: %v\n", err)
		return
	}
	defer release()
	for _, id := range stuck {
		_, _ = store.Unmount(id, true)
		if err := store.DeleteContainer(id); err != nil {
			fmt.Fprintf(os.Stderr, "integration: cleanup: deleting container %s: %v\n", id, err)
		}
	}
}

// untaggedImages is the set of IDs of the images without a name in
// buildah's store, or nil when buildah cannot list them.
func untaggedImages() map[string]bool {
	return buildahIDs("images", "--quiet", "--no-trunc", "--filter", "dangling=true")
}

// removeNewUntaggedImages removes the images without a name that are not
// in before (those this run made); one still used by a container stays.
func removeNewUntaggedImages(before map[string]bool) {
	if before == nil {
		return
	}
	for id := range untaggedImages() {
		if before[id] {
			continue
		}
		if out, err := exec.Command("buildah", "rmi", id).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: cleanup: buildah rmi %s: %v: %s\n", id, err, strings.TrimSpace(string(out)))
		}
	}
}

// locateBinary returns the clipbuild binary to test: $CLIPBUILD_BIN, else
// <repo>/bin/clipbuild, else one built now into a temporary directory. It
// builds nothing when the prerequisites are missing, since no test could
// use the binary then.
func locateBinary() (bin string, cleanup func(), err error) {
	cleanup = func() {}
	if env := os.Getenv("CLIPBUILD_BIN"); env != "" {
		abs, err := filepath.Abs(env)
		if err != nil {
			return "", cleanup, err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", cleanup, fmt.Errorf("CLIPBUILD_BIN: %w", err)
		}
		return abs, cleanup, nil
	}
	inRepo := filepath.Join(repoRoot, "bin", "clipbuild")
	if _, err := os.Stat(inRepo); err == nil {
		return inRepo, cleanup, nil
	}
	if len(missingPrerequisites()) > 0 {
		return "", cleanup, nil
	}

	dir, err := os.MkdirTemp("", "clipbuild-bin-")
	if err != nil {
		return "", cleanup, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, "clipbuild")
	cmd := exec.Command(goTool(), "build",
		"-tags", "containers_image_openpgp exclude_graphdriver_btrfs",
		"-o", bin, "./cmd/clipbuild")
	cmd.Dir = repoRoot
	fmt.Fprintf(os.Stderr, "integration: %s not found, building %s\n", inRepo, bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", func() {}, fmt.Errorf("building clipbuild: %v\n%s", err, out)
	}
	return bin, cleanup, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// missingPrerequisites lists what this machine lacks to run the tests.
var missingPrerequisites = sync.OnceValue(func() []string {
	var missing []string
	if uid := os.Geteuid(); uid != 0 {
		missing = append(missing, fmt.Sprintf("root (running as uid %d)", uid))
	}
	for _, tool := range []string{"buildah", "fusermount3"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" in PATH")
		}
	}
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		missing = append(missing, "/dev/fuse")
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		missing = append(missing, "static busybox at "+busyboxPath)
	}
	return missing
})

// requirePrerequisites skips the test when the machine cannot run it, or
// fails it when CI=true.
func requirePrerequisites(t *testing.T) {
	t.Helper()
	if missing := missingPrerequisites(); len(missing) > 0 {
		msg := "integration test prerequisites missing: " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if clipbuildBin == "" {
		t.Fatal("no clipbuild binary to test")
	}
}

// heavy marks a test that builds or mounts images: it checks the
// prerequisites, runs the test in parallel with others, and holds one of
// the limited slots until the test and its cleanups are done. Call it only
// from leaf tests: a test holding a slot must not wait for subtests that
// need one too.
func heavy(t *testing.T) {
	t.Helper()
	requirePrerequisites(t)
	t.Parallel()
	slots <- struct{}{}
	t.Cleanup(func() { <-slots })
}
