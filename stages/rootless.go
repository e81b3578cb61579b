package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.podman.io/storage"
	"go.podman.io/storage/pkg/unshare"
)

// EnterUserNamespace re-executes clipbuild in a user namespace the way
// buildah does, when it runs as a user other than root: there the user is
// root, with its subordinate id ranges (/etc/subuid, /etc/subgid) mapped,
// so containers-storage can be opened in-process as buildah opens it, files
// of any owner and mode can be read, and the buildah processes clipbuild
// runs are already in the namespace. The re-executed process exits with
// the status of the child, so it returns only when no re-exec was needed:
// for root, and in the child.
func EnterUserNamespace() {
	if os.Getenv("BUILDAH_ISOLATION") != "" && !InUserNamespace() {
		// The user's own choice, which the re-exec keeps: DefaultIsolation
		// must not take it for the one the re-exec sets.
		os.Setenv(isolationFromUser, "1")
	}
	unshare.MaybeReexecUsingUserNamespace(false)
}

// isolationFromUser is set in the environment of the re-executed process
// when BUILDAH_ISOLATION was set before it entered the user namespace.
const isolationFromUser = "_CLIPBUILD_ISOLATION_FROM_USER"

// InUserNamespace reports whether the process runs in a user namespace
// that buildah's re-exec (ours, or `buildah unshare`) set up.
func InUserNamespace() bool {
	return os.Getenv(unshare.UsernsEnvName) != ""
}

// DefaultIsolation is the RUN isolation when no --isolation is given:
// $BUILDAH_ISOLATION, else chroot, which works as root and, in the user
// namespace, as any user. buildah's re-exec into a user namespace (and so
// `buildah unshare`) sets BUILDAH_ISOLATION=rootless when it was unset,
// which needs a runtime with cgroups that a user rarely has; in such a
// namespace that value is taken for buildah's and not the user's, and
// chroot is used, unless the user had set it before clipbuild entered the
// namespace. --isolation rootless always asks for it.
func DefaultIsolation() string {
	v := os.Getenv("BUILDAH_ISOLATION")
	if v == "" || (v == "rootless" && InUserNamespace() && os.Getenv(isolationFromUser) == "") {
		return "chroot"
	}
	return v
}

// storeInUse is the store this process and every buildah it runs use,
// resolved once (StoreOptionsInUse).
var storeInUse = sync.OnceValues(func() (storage.StoreOptions, error) {
	o, err := DefaultStoreOptions()
	if err != nil {
		return storage.StoreOptions{}, err
	}
	log := logrus.StandardLogger()
	if o.GraphDriverName == "" {
		removeStaleOverlayDir(o.GraphRoot, driversWithState(o.GraphRoot), log)
	}
	if p, err := exec.LookPath("buildah"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return askBuildah(ctx, p, o)
	}
	return resolveDriver(o, log)
})

// StoreOptionsInUse are the store options clipbuild opens when none are
// given, and the ones every buildah it runs is told to use
// (BuildahStoreArgs), so that the two always agree, and agree with a
// buildah that the user runs: the store `buildah info` reports (its graph
// root, run root, driver and driver options; a store with no state yet
// gets the driver buildah picks), on top of DefaultStoreOptions. Without
// buildah, DefaultStoreOptions with the driver resolved (resolveDriver).
func StoreOptionsInUse() (storage.StoreOptions, error) {
	return storeInUse()
}

// askBuildah is o with the graph root, run root, driver and driver options
// of the store that the buildah at path opens by default.
func askBuildah(ctx context.Context, path string, o storage.StoreOptions) (storage.StoreOptions, error) {
	cmd := exec.CommandContext(ctx, path, "info")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return storage.StoreOptions{}, fmt.Errorf("asking buildah for its store (buildah info): %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var info struct {
		Store struct {
			GraphRoot       string
			RunRoot         string
			GraphDriverName string
			GraphOptions    []string
		} `json:"store"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return storage.StoreOptions{}, fmt.Errorf("reading buildah info: %w", err)
	}
	st := info.Store
	if st.GraphRoot == "" || st.RunRoot == "" || st.GraphDriverName == "" {
		return storage.StoreOptions{}, fmt.Errorf("buildah info names no graph root, run root or driver: %s", out)
	}
	o.GraphRoot, o.RunRoot, o.GraphDriverName, o.GraphDriverOptions = st.GraphRoot, st.RunRoot, st.GraphDriverName, st.GraphOptions
	return o, nil
}

// graphDrivers are the drivers whose state resolveDriver looks for.
var graphDrivers = []string{"overlay", "vfs", "btrfs", "zfs", "aufs", "devicemapper"}

// resolveDriver names the driver of o when o names none.
func resolveDriver(o storage.StoreOptions, log *logrus.Logger) (storage.StoreOptions, error) {
	if o.GraphDriverName != "" {
		return o, nil
	}
	withState := driversWithState(o.GraphRoot)
	removeStaleOverlayDir(o.GraphRoot, withState, log)
	switch len(withState) {
	case 1:
		o.GraphDriverName = withState[0]
		return o, nil
	case 0:
	default:
		return storage.StoreOptions{}, fmt.Errorf("containers-storage at %s holds the state of several graph drivers (%v): name one in storage.conf or $STORAGE_DRIVER", o.GraphRoot, withState)
	}
	store, err := storage.GetStore(o)
	if err != nil {
		return storage.StoreOptions{}, fmt.Errorf("opening containers-storage at %s: %w", o.GraphRoot, err)
	}
	o.GraphDriverName = store.GraphDriverName()
	o.GraphDriverOptions = store.GraphOptions()
	if _, err := store.Shutdown(false); err != nil && !errors.Is(err, storage.ErrLayerUsedByContainer) {
		log.WithError(err).Warn("shutting down containers-storage")
	}
	return o, nil
}

// driversWithState are the drivers whose layer store the graph root holds.
func driversWithState(root string) []string {
	var withState []string
	for _, d := range graphDrivers {
		if _, err := os.Stat(filepath.Join(root, d+"-layers")); err == nil {
			withState = append(withState, d)
		}
	}
	return withState
}

// removeStaleOverlayDir removes the overlay directory that a failed
// attempt to use overlay leaves in a store whose only state is another
// driver's (an earlier clipbuild left one when it opened the store outside
// the user namespace): only its marker file and an empty link directory,
// no layer. containers-storage takes any driver directory for prior state,
// and buildah left to pick its driver then fails.
func removeStaleOverlayDir(root string, withState []string, log *logrus.Logger) {
	if len(withState) != 1 || withState[0] == "overlay" {
		return
	}
	driver := withState[0]
	dir := filepath.Join(root, "overlay")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		switch e.Name() {
		case ".has-mount-program":
		case "l":
			if sub, err := os.ReadDir(filepath.Join(dir, "l")); err != nil || len(sub) > 0 {
				return
			}
		default:
			return
		}
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return
		}
	}
	if os.Remove(dir) == nil {
		log.Infof("removed %s: an empty overlay directory in a %s store", dir, driver)
	}
}
