package stages

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"go.podman.io/storage"
)

// storeOptions configure OpenStore.
type storeOptions struct {
	store *storage.StoreOptions
	log   *logrus.Entry
}

// StoreOption configures OpenStore.
type StoreOption func(*storeOptions) error

// WithStoreOptions opens the store o describes instead of buildah's
// default one. The default is StoreOptionsInUse.
func WithStoreOptions(o storage.StoreOptions) StoreOption {
	return func(so *storeOptions) error {
		if o.GraphRoot == "" || o.RunRoot == "" {
			return fmt.Errorf("store options: graph root and run root must both be set")
		}
		so.store = &o
		return nil
	}
}

// WithStoreLog sets where the release func reports a failed shutdown. The
// default is logrus's standard logger.
func WithStoreLog(log *logrus.Entry) StoreOption {
	return func(so *storeOptions) error {
		if log != nil {
			so.log = log
		}
		return nil
	}
}

// DefaultStoreOptions are the store options buildah resolves when it is
// given no global storage flags. buildah takes them from containers-storage
// unchanged (storage.DefaultStoreOptions, then only its --root, --runroot,
// --storage-driver and --storage-opt flags on top): storage.conf or
// $CONTAINERS_STORAGE_CONF, the per-user paths when rootless, and the
// STORAGE_DRIVER and STORAGE_OPTS environment variables, which
// containers-storage itself applies.
func DefaultStoreOptions() (storage.StoreOptions, error) {
	o, err := storage.DefaultStoreOptions()
	if err != nil {
		return storage.StoreOptions{}, fmt.Errorf("reading storage configuration: %w", err)
	}
	return o, nil
}

// OpenStore opens containers-storage: the one place clipbuild does. The
// returned release func shuts the store down; call it once, when no layer
// stream is open any more.
func OpenStore(ctx context.Context, opts ...StoreOption) (storage.Store, func(), error) {
	so := storeOptions{log: logrus.NewEntry(logrus.StandardLogger())}
	for _, o := range opts {
		if err := o(&so); err != nil {
			return nil, nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if so.store == nil {
		o, err := StoreOptionsInUse()
		if err != nil {
			return nil, nil, err
		}
		so.store = &o
	}
	store, err := storage.GetStore(*so.store)
	if err != nil {
		return nil, nil, fmt.Errorf("opening containers-storage at %s: %w", so.store.GraphRoot, err)
	}
	release := func() {
		// Shutdown(false) refuses while any layer of the store is mounted,
		// buildah's working containers included; nothing is lost then.
		if _, err := store.Shutdown(false); err != nil && !errors.Is(err, storage.ErrLayerUsedByContainer) {
			so.log.WithError(err).Warn("shutting down containers-storage")
		}
	}
	return store, release, nil
}

// EffectiveStoreOptions are the options an open store runs with, its
// driver resolved: with no driver configured containers-storage picks one
// when the store is opened, and a later buildah left to pick on its own
// might pick another and fill a second driver's directory.
func EffectiveStoreOptions(store storage.Store) storage.StoreOptions {
	return storage.StoreOptions{
		GraphRoot:          store.GraphRoot(),
		RunRoot:            store.RunRoot(),
		ImageStore:         store.ImageStore(),
		TransientStore:     store.TransientStore(),
		GraphDriverName:    store.GraphDriverName(),
		GraphDriverOptions: store.GraphOptions(),
		UIDMap:             store.UIDMap(),
		GIDMap:             store.GIDMap(),
	}
}

// BuildahStoreArgs are the global buildah flags that make buildah open
// exactly the store o describes, whatever its own storage.conf says. Give
// it EffectiveStoreOptions of the store clipbuild reads, so the driver is
// named; an empty driver is left for buildah to pick.
//
// buildah drops the configured driver options once --storage-driver is
// given and takes --storage-opt instead, so the options are always passed
// in full. --imagestore and --transient-store appear only when set: a
// buildah too old to know them then fails rather than silently using
// another store.
func BuildahStoreArgs(o storage.StoreOptions) []string {
	args := []string{"--root", o.GraphRoot, "--runroot", o.RunRoot}
	if o.GraphDriverName != "" {
		args = append(args, "--storage-driver", o.GraphDriverName)
	}
	for _, opt := range o.GraphDriverOptions {
		if opt != "" {
			args = append(args, "--storage-opt", csvField(opt))
		}
	}
	if o.ImageStore != "" {
		args = append(args, "--imagestore", o.ImageStore)
	}
	if o.TransientStore {
		args = append(args, "--transient-store")
	}
	for _, m := range o.UIDMap {
		args = append(args, "--userns-uid-map", idMap(m.ContainerID, m.HostID, m.Size))
	}
	for _, m := range o.GIDMap {
		args = append(args, "--userns-gid-map", idMap(m.ContainerID, m.HostID, m.Size))
	}
	return args
}

// csvField quotes a value for a pflag string-slice flag, which splits its
// value as one CSV record: a driver option such as
// overlay.mountopt=nodev,metacopy=on must stay one option.
func csvField(s string) string {
	if !strings.ContainsAny(s, ",\"\r\n") {
		return s
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{s}) // a bytes.Buffer does not fail
	w.Flush()
	return strings.TrimSuffix(strings.TrimSuffix(b.String(), "\n"), "\r")
}

func idMap(container, host, size int) string {
	return strconv.Itoa(container) + ":" + strconv.Itoa(host) + ":" + strconv.Itoa(size)
}
