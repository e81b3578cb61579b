package integration

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// archiveRef is what `clipbuild inspect --json` says of a v2 archive's image.
type archiveRef struct {
	Registry, Repository, Reference string
}

func inspectRef(t *testing.T, archive string) archiveRef {
	t.Helper()
	res := clipbuild(t, "inspect", "--json", archive)
	mustSucceed(t, res)
	var r archiveRef
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil || r.Repository == "" || !strings.HasPrefix(r.Reference, "id-") {
		t.Fatalf("inspect --json: want a repository and an id- tag (%v)\n%v", err, res)
	}
	return r
}

// gcStore is a registry's storage as the GC test drives it.
type gcStore struct {
	// name makes the test's image names unique.
	name string
	// serve starts a registry on the storage.
	serve func(t *testing.T) *registryServer
	// flags select the storage for `clipbuild registry gc`.
	flags []string
	// env is extra environment for gc (KEY=VALUE).
	env []string
	// dir is the directory holding the registry's docker/registry/v2 tree.
	dir string
}

// TestRegistryGCRemovesOldImages runs checkGC on a filesystem registry.
func TestRegistryGCRemovesOldImages(t *testing.T) {
	heavy(t)
	root := t.TempDir()
	checkGC(t, gcStore{
		name:  "gc-fs",
		serve: func(t *testing.T) *registryServer { return startRegistry(t, root) },
		flags: []string{"--root", root},
		dir:   root,
	})
}

// TestS3RegistryGCRemovesOldImages runs checkGC on a registry in S3
// (versitygw, whose POSIX backend reports a file's modification time as its
// object's, so a tag is aged on disk as on the filesystem).
func TestS3RegistryGCRemovesOldImages(t *testing.T) {
	heavy(t)
	g := startS3(t)
	const prefix = "gc"
	checkGC(t, gcStore{
		name:  "gc-s3",
		serve: func(t *testing.T) *registryServer { return serveS3Registry(t, g, prefix, "gc-secret") },
		flags: []string{"--storage", "s3://" + s3Bucket + "/" + prefix},
		env:   g.env(s3SecretKey),
		dir:   filepath.Join(g.root, s3Bucket, prefix),
	})
}

// checkGC builds two v2 archives through a registry on store, stops it,
// ages the first image's tag past --keep and runs `clipbuild registry gc`
// (dry, then for real). After a restart the young archive mounts and reads;
// the old one's own layer is gone, so reading a file from it fails with EIO
// and the mount's log names the missing blob.
func checkGC(t *testing.T, store gcStore) {
	reg := store.serve(t)
	old, res := buildV2(t, inlineContext(t, busyboxBase+"RUN echo old > /which.txt\n"), imageName(store.name+"-old"),
		"--clip-version", "2", "--registry", reg.addr+"/gc")
	checkV2Result(t, old, res, reg.addr+"/gc/")
	young, res := buildV2(t, inlineContext(t, busyboxBase+"RUN echo young > /which.txt\n"), imageName(store.name+"-young"),
		"--clip-version", "2", "--registry", reg.addr+"/gc")
	checkV2Result(t, young, res, reg.addr+"/gc/")
	reg.stop(t)

	oldRef, youngRef := inspectRef(t, old.Archive), inspectRef(t, young.Archive)
	link := filepath.Join(store.dir, "docker/registry/v2/repositories", oldRef.Repository, "_manifests/tags", oldRef.Reference, "current/link")
	aged := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(link, aged, aged); err != nil {
		t.Fatalf("ageing %s:%s: %v", oldRef.Repository, oldRef.Reference, err)
	}
	gcArgs := append([]string{"registry", "gc", "--keep", "1h"}, store.flags...)

	dry := runEnv(t, "", commandTimeout, store.env, clipbuildBin, append(gcArgs, "--dry-run")...)
	mustSucceed(t, dry)
	if want := "would remove " + oldRef.Repository + ":" + oldRef.Reference; !strings.Contains(dry.stdout, want) || strings.Contains(dry.stdout, youngRef.Reference) {
		t.Errorf("gc --dry-run: want %q and nothing of %s\n%v", want, youngRef.Reference, dry)
	}
	if _, err := os.Stat(link); err != nil {
		t.Fatalf("gc --dry-run removed the tag: %v", err)
	}

	gc := runEnv(t, "", commandTimeout, store.env, clipbuildBin, gcArgs...)
	mustSucceed(t, gc)
	if want := "removed " + oldRef.Repository + ":" + oldRef.Reference; !strings.Contains(gc.stdout, want) || strings.Contains(gc.stdout, youngRef.Reference) {
		t.Errorf("gc: want %q and nothing of %s\n%v", want, youngRef.Reference, gc)
	}
	if !strings.Contains(gc.stdout, "removed 1 scratch tags") {
		t.Errorf("gc: no summary of one removed tag\n%v", gc)
	}
	if _, err := os.Stat(link); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old tag's link after gc: %v, want it gone", err)
	}

	reg2 := store.serve(t)
	m := mountArchive(t, young.Archive, "--cache-dir", t.TempDir(), "--registry", reg2.addr)
	tree{t, "young archive after gc", m.dir}.file("which.txt", "young\n")

	a := openArchive(t, old.Archive)
	node := a.Metadata.Get("/which.txt")
	if node == nil || node.Remote == nil {
		t.Fatalf("old archive: /which.txt has no remote data")
	}
	missing := node.Remote.LayerDigest
	mo := mountArchive(t, old.Archive, "--cache-dir", t.TempDir(), "--registry", reg2.addr)
	_, err := os.ReadFile(filepath.Join(mo.dir, "which.txt"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("reading a file of a collected image: %v, want EIO", err)
	}
	if code, err := mo.stop(syscall.SIGTERM); err != nil || code != 0 {
		t.Errorf("stopping the old archive's mount: exit %d, %v", code, err)
	}
	log := mo.stderr.String()
	if !strings.Contains(log, missing) || !strings.Contains(log, "missing from the registry") {
		t.Errorf("mount log does not say blob %s is missing from the registry:\n%s", missing, log)
	}
}
