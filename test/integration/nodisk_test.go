package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// markerName is a file of the test image whose name nothing else uses: a
// copy of it anywhere in TMPDIR means the image was unpacked there.
const markerName = "v1-nodisk-marker"

// nodiskDockerfile makes an image with a file big enough that unpacking
// it takes a while, in a layer of its own, and a layer that deletes
// another file.
const nodiskDockerfile = busyboxBase +
	"RUN [\"/bin/busybox\", \"sh\", \"-c\", \"mkdir /data && busybox dd if=/dev/urandom of=/data/" + markerName + " bs=1M count=8 && echo gone > /data/deleted\"]\n" +
	"RUN [\"/bin/busybox\", \"rm\", \"/data/deleted\"]\n"

// tmpWatch records every entry created anywhere under a directory while
// it runs, with inotify: each new directory is watched as soon as its
// creation is read, then scanned, so what was made in it before the watch
// is seen too.
type tmpWatch struct {
	root string
	fd   int
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	dirs    map[int]string  // watch descriptor -> directory
	created map[string]bool // path relative to root -> is a directory
	err     error
}

func watchTmp(t *testing.T, root string) *tmpWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	w := &tmpWatch{root: root, fd: fd, stop: make(chan struct{}), done: make(chan struct{}),
		dirs: map[int]string{}, created: map[string]bool{}}
	w.add(root)
	go w.loop()
	return w
}

// add watches dir and records what is already in it, recursively.
func (w *tmpWatch) add(dir string) {
	wd, err := unix.InotifyAddWatch(w.fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			w.fail(err)
		}
		return // gone already: its creation is recorded
	}
	w.mu.Lock()
	w.dirs[wd] = dir
	w.mu.Unlock()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		w.record(p, e.IsDir())
		if e.IsDir() {
			w.add(p)
		}
	}
}

func (w *tmpWatch) record(p string, isDir bool) {
	rel, _ := filepath.Rel(w.root, p)
	w.mu.Lock()
	w.created[rel] = isDir
	w.mu.Unlock()
}

func (w *tmpWatch) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *tmpWatch) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-w.stop:
			w.read(buf) // what is queued still counts
			return
		default:
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 20); err != nil && !errors.Is(err, unix.EINTR) {
			w.fail(err)
			return
		}
		w.read(buf)
	}
}

// read handles the queued events.
func (w *tmpWatch) read(buf []byte) {
	for {
		n, err := unix.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) || n <= 0 {
			return
		}
		if err != nil {
			w.fail(err)
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.fail(errors.New("inotify queue overflow: events were lost"))
				continue
			}
			w.mu.Lock()
			dir, ok := w.dirs[int(ev.Wd)]
			w.mu.Unlock()
			if !ok || name == "" {
				continue
			}
			p := filepath.Join(dir, name)
			isDir := ev.Mask&unix.IN_ISDIR != 0
			w.record(p, isDir)
			if isDir {
				w.add(p)
			}
		}
	}
}

// finish stops the watch and returns every entry created, relative to the
// root, directories with a trailing slash.
func (w *tmpWatch) finish(t *testing.T) []string {
	t.Helper()
	close(w.stop)
	<-w.done
	unix.Close(w.fd)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("watching %s: %v", w.root, w.err)
	}
	var out []string
	for p, isDir := range w.created {
		if isDir {
			p += "/"
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// buildahTmp matches the top-level entries buildah bud itself makes in
// TMPDIR (its run directories, its commit's layer blob, containers-storage's
// temporary files): not clipbuild's.
var buildahTmp = regexp.MustCompile(`^(buildah[0-9]+|storage[0-9]+|[0-9]+)(/|$)`)

// buildahScratch matches what buildah bud writes in its TMPDIR, which is
// the build stage's directory of a run's scratch tree.
var buildahScratch = regexp.MustCompile(`^clipbuild-[0-9]+-[0-9]+/build-[0-9]+/(buildah[0-9]+|storage[0-9]+|[0-9]+)(/|$)`)

// checkNoImageFiles fails t for anything named like a file of the image
// anywhere under TMPDIR, for each file in clipbuild's scratch tree
// (clipbuild-*/) that allowed does not allow, and for anything else that
// is neither in that tree nor buildah's own.
func checkNoImageFiles(t *testing.T, created []string, allowed func(rel string) bool) {
	t.Helper()
	scratch := false
	for _, p := range created {
		base := filepath.Base(strings.TrimSuffix(p, "/"))
		inScratch := strings.HasPrefix(p, "clipbuild-")
		scratch = scratch || inScratch
		switch {
		case base == markerName || base == "busybox" || base == "deleted":
			t.Errorf("TMPDIR got %s, a file of the image: the image was unpacked", p)
		case !inScratch && !buildahTmp.MatchString(p):
			t.Errorf("TMPDIR got %s, which is neither in clipbuild's scratch tree nor buildah's", p)
		case inScratch && !strings.HasSuffix(p, "/") && !allowed(p):
			t.Errorf("TMPDIR got %s in clipbuild's scratch tree, which is not the run's own bookkeeping", p)
		}
	}
	if !scratch {
		t.Errorf("the watch saw no scratch directory made in TMPDIR; want one (is the watch working?)")
	}
	t.Logf("created in TMPDIR: %q", created)
}

// TestV1WritesNoRootfs builds and pulls v1 archives with a private TMPDIR
// watched with inotify throughout, and checks that no file of the image was
// ever written there (no rootfs, no scratch copy of the layers for a
// build), that the archives equal buildah's mount of the image, and that
// they mount.
func TestV1WritesNoRootfs(t *testing.T) {
	heavy(t)
	image := imageName("nodisk")
	ctx := inlineContext(t, nodiskDockerfile)

	t.Run("build", func(t *testing.T) {
		tmp := filepath.Join(t.TempDir(), "tmp")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
		removeImageLater(t, image)
		out := filepath.Join(t.TempDir(), "nodisk.clip")
		w := watchTmp(t, tmp)
		res := runEnv(t, "", buildTimeout, []string{"TMPDIR=" + tmp}, clipbuildBin,
			buildArgs("--clip-version", "1", "--json", "-t", image, "-o", out, ctx)...)
		created := w.finish(t)
		mustSucceed(t, res)
		var got buildOutput
		if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
			t.Fatalf("stdout is not one JSON object: %v\n%v", err, res)
		}
		var names []string
		for _, s := range got.Stages {
			names = append(names, s.Name)
		}
		if strings.Join(names, " ") != "build archive" {
			t.Errorf("stages = %q, want build, archive", names)
		}
		// bud's image ID file is the one file of clipbuild's a build writes
		// there; buildah runs with its TMPDIR in the build's scratch
		// directory, so that its own files go with the tree.
		checkNoImageFiles(t, created, func(rel string) bool {
			return strings.HasPrefix(filepath.Base(rel), "iid-") || buildahScratch.MatchString(rel)
		})
		mustSucceed(t, clipbuild(t, "verify", out, "--image", image))
		m := mountArchive(t, out)
		if fi, err := os.Stat(filepath.Join(m.dir, "data", markerName)); err != nil || fi.Size() != 8<<20 {
			t.Errorf("Stat(mounted /data/%s) = %v, %v; want an 8 MiB file", markerName, fi, err)
		}
	})

	t.Run("pull", func(t *testing.T) {
		reg := startRegistry(t, "")
		removeImageLater(t, image)
		mustSucceed(t, run(t, "", buildTimeout, "buildah", append(append([]string{"bud"}, isolationArgs()...), "-t", image, ctx)...))
		remote := reg.addr + "/nodisk/img:1"
		mustSucceed(t, run(t, "", commandTimeout, "buildah", "push", "--tls-verify=false", image, "docker://"+remote))
		reference := buildahRootfs(t, image, namePrefix+"-nodisk-ref")

		tmp := filepath.Join(t.TempDir(), "tmp")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "pulled.clip")
		w := watchTmp(t, tmp)
		res := runEnv(t, "", commandTimeout, []string{"TMPDIR=" + tmp}, clipbuildBin, "pull", remote, "--clip-version", "1", "-o", out, "--json")
		created := w.finish(t)
		mustSucceed(t, res)
		// The fetched layout (its blobs, still compressed, and its
		// index) is the one thing a v1 pull keeps in TMPDIR.
		checkNoImageFiles(t, created, func(rel string) bool {
			parts := strings.Split(rel, string(filepath.Separator))
			return len(parts) >= 3 && strings.HasPrefix(parts[1], "layout-")
		})
		m := mountArchive(t, out, "--cache-dir", t.TempDir())
		compareTrees(t, "buildah mount", reference, "clipbuild mount (pull v1)", m.dir)
	})
}
