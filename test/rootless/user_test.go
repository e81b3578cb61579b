package rootless

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// userHalf skips a test of the user half unless the lane runs it in the
// given phase, and returns the clipbuild binary.
func userHalf(t *testing.T, phase string) string {
	t.Helper()
	if got := os.Getenv(envPhase); got != phase {
		t.Skipf("the user half of the rootless lane (phase %s): TestRootlessLane runs it as its user", phase)
	}
	if os.Geteuid() == 0 || os.Getuid() == 0 {
		t.Fatalf("the user half runs as root (uid %d, euid %d), want an ordinary user", os.Getuid(), os.Geteuid())
	}
	bin := os.Getenv("CLIPBUILD_BIN")
	if bin == "" {
		t.Fatal("CLIPBUILD_BIN is not set")
	}
	return bin
}

// result is a finished command.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("%q: exit %d\nstdout:\n%s\nstderr:\n%s", r.args, r.code, r.stdout, r.stderr)
}

// lastLine is the last line of stderr, where clipbuild puts its error.
func (r result) lastLine() string {
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	return lines[len(lines)-1]
}

// run runs a command with extra environment variables and a timeout.
func run(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: append([]string{name}, args...), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running %s: %v", name, err)
	}
	return r
}

func mustRun(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	r := run(t, env, name, args...)
	if r.code != 0 {
		t.Fatalf("want exit 0, got %v", r)
	}
	return r
}

// issueDockerfile is the image of issue 11: setuid files, a FIFO, hard
// links, files owned by uid 1000 and a root-owned file only root may read.
const issueDockerfile = `FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /d/user && cd /d && \
    echo suid > setuid && chmod 4755 setuid && \
    echo sgid > setgid && chmod 2755 setgid && \
    mkfifo fifo && chmod 0640 fifo && \
    echo linked > link-a && ln link-a link-b && ln link-a user/link-c && \
    echo mine > user/file && chown -R 1000:1000 user link-a && \
    echo secret > secret && chmod 0600 secret
`

// buildContext makes a build context of dockerfile (or, when dockerfile is
// empty, a copy of the corpus image name) with busybox beside it.
func buildContext(t *testing.T, name, dockerfile string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if dockerfile == "" {
		b, err := os.ReadFile(filepath.Join(os.Getenv(envCorpus), name, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		dockerfile = string(b)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildResult is what `clipbuild build --json` prints.
type buildResult struct {
	Archive     string `json:"archive"`
	ClipVersion int    `json:"clipVersion"`
	ImageRef    string `json:"imageRef"`
}

// build builds ctx as image, with the given flags, into the archive out.
func build(t *testing.T, bin string, env []string, ctx, image, out string, flags ...string) buildResult {
	t.Helper()
	args := append([]string{"build", "--json", "-t", image, "-o", out}, flags...)
	r := mustRun(t, env, bin, append(args, ctx)...)
	var res buildResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("build --json: %v\n%v", err, r)
	}
	return res
}

// removeImages removes the named images from the user's store.
func removeImages(t *testing.T, images ...string) {
	t.Helper()
	if len(images) == 0 {
		return
	}
	if r := run(t, nil, "buildah", append([]string{"rmi", "-f"}, images...)...); r.code != 0 {
		t.Errorf("removing images: %v", r)
	}
}

// registry is an embedded registry on loopback, run as the user.
type registry struct {
	addr string
	cmd  *exec.Cmd
}

var servingRE = regexp.MustCompile(`registry serving on http://([0-9.]+:[0-9]+)`)

func startRegistry(t *testing.T, bin string) *registry {
	t.Helper()
	cmd := exec.Command(bin, "registry", "serve", "--addr", "127.0.0.1:0", "--root", t.TempDir())
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := &registry{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("registry: %v", err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("registry did not stop on SIGTERM")
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case r.addr = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatal("registry did not start within 20s")
	}
	return r
}

// mount is a running `clipbuild mount`.
type mount struct {
	dir string
	cmd *exec.Cmd
	out bytes.Buffer
}

// startMount mounts archive with flags and waits for the mount.
func startMount(t *testing.T, bin, archive string, flags ...string) *mount {
	t.Helper()
	m := &mount{dir: filepath.Join(t.TempDir(), "mnt")}
	if err := os.Mkdir(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(bin, append(append([]string{"mount"}, flags...), archive, m.dir)...)
	m.cmd.Stdout, m.cmd.Stderr = &m.out, &m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	t.Cleanup(func() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("clipbuild mount: %v\n%s", err, m.out.String())
			}
		case <-time.After(20 * time.Second):
			_ = m.cmd.Process.Kill()
			t.Errorf("clipbuild mount did not stop on SIGTERM")
		}
		if line, _ := mountLine(m.dir); line != "" {
			t.Errorf("%s is still mounted", m.dir)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if line, _ := mountLine(m.dir); line != "" {
			return m
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("clipbuild mount exited (%v) before mounting:\n%s", err, m.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s not mounted within 20s:\n%s", m.dir, m.out.String())
	return nil
}

// mountLine is the line of /proc/self/mountinfo for the mount at dir.
func mountLine(dir string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == dir {
			return l, nil
		}
	}
	return "", nil
}

// lstat is what the checks look at of a path in a mount.
func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Errorf("lstat %s: %v", p, err)
		return nil
	}
	return &st
}

func checkOwner(t *testing.T, p string, uid, gid uint32) {
	t.Helper()
	if st := lstat(t, p); st != nil && (st.Uid != uid || st.Gid != gid) {
		t.Errorf("%s: owner: got %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
	}
}

func checkMode(t *testing.T, p string, kind, perm uint32) {
	t.Helper()
	if st := lstat(t, p); st != nil && (st.Mode&syscall.S_IFMT != kind || st.Mode&0o7777 != perm) {
		t.Errorf("%s: mode: got %o, want %o", p, st.Mode, kind|perm)
	}
}

func checkContent(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || string(b) != want {
		t.Errorf("%s: got %q, %v, want %q", p, b, err, want)
	}
}

// checkIssueTree checks the mounted tree of the issue image.
func checkIssueTree(t *testing.T, root string, v1 bool) {
	t.Helper()
	p := func(rel string) string { return filepath.Join(root, rel) }
	checkMode(t, p("d/setuid"), syscall.S_IFREG, 0o4755)
	checkMode(t, p("d/setgid"), syscall.S_IFREG, 0o2755)
	checkContent(t, p("d/setuid"), "suid\n")
	checkOwner(t, p("d/setuid"), 0, 0)
	if v1 {
		checkMode(t, p("d/fifo"), syscall.S_IFIFO, 0o640)
	}
	a, b, c := lstat(t, p("d/link-a")), lstat(t, p("d/link-b")), lstat(t, p("d/user/link-c"))
	if a != nil && b != nil && c != nil && (a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3) {
		t.Errorf("d/link-a, d/link-b, d/user/link-c: inodes %d %d %d, links %d: want one inode with 3 links", a.Ino, b.Ino, c.Ino, a.Nlink)
	}
	checkContent(t, p("d/user/link-c"), "linked\n")
	checkOwner(t, p("d/link-b"), 1000, 1000)
	checkOwner(t, p("d/user"), 1000, 1000)
	checkOwner(t, p("d/user/file"), 1000, 1000)
	checkContent(t, p("d/user/file"), "mine\n")
	checkMode(t, p("d/secret"), syscall.S_IFREG, 0o600)
}

// TestAsUser is the user half with a usable FUSE device.
func TestAsUser(t *testing.T) {
	bin := userHalf(t, "fuse")
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if os.Getenv("XDG_RUNTIME_DIR") != "" {
		t.Fatalf("XDG_RUNTIME_DIR=%s: the lane's user starts with none set", os.Getenv("XDG_RUNTIME_DIR"))
	}
	reg := startRegistry(t, bin)
	prefix := fmt.Sprintf("cbrootless-%d", os.Getpid())
	var images []string
	t.Cleanup(func() { removeImages(t, images...) })

	// The image of the issue, v1 and v2.
	issueCtx := buildContext(t, "issue", issueDockerfile)
	outDir := t.TempDir()
	issueImage := prefix + "-issue"
	images = append(images, issueImage)
	var v1, v2 buildResult
	t.Run("build-v1", func(t *testing.T) {
		v1 = build(t, bin, nil, issueCtx, issueImage, filepath.Join(outDir, "issue-v1.clip"), "--clip-version", "1")
		if v1.ClipVersion != 1 {
			t.Errorf("clip version: got %d, want 1", v1.ClipVersion)
		}
	})
	t.Run("build-v2", func(t *testing.T) {
		v2 = build(t, bin, nil, issueCtx, issueImage, filepath.Join(outDir, "issue-v2.clip"), "--clip-version", "2", "--registry", reg.addr+"/lane")
		if v2.ClipVersion != 2 || !strings.HasPrefix(v2.ImageRef, reg.addr+"/lane/") {
			t.Errorf("v2 result: got version %d, ref %q, want 2 and a ref in %s/lane", v2.ClipVersion, v2.ImageRef, reg.addr)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	t.Run("verify-image", func(t *testing.T) {
		for _, a := range []string{v1.Archive, v2.Archive} {
			r := mustRun(t, nil, bin, "verify", a, "--image", issueImage)
			if !strings.Contains(r.stdout, " matches ") {
				t.Errorf("verify %s: got %v, want a match", a, r)
			}
		}
	})
	t.Run("mount-read", func(t *testing.T) {
		for _, a := range []struct {
			archive string
			v1      bool
		}{{v1.Archive, true}, {v2.Archive, false}} {
			m := startMount(t, bin, a.archive)
			checkIssueTree(t, m.dir, a.v1)
			// Owners are the archive's, as host ids: root's file stays
			// root's, and only root may read it.
			checkOwner(t, filepath.Join(m.dir, "d/secret"), 0, 0)
			if _, err := os.ReadFile(filepath.Join(m.dir, "d/secret")); !errors.Is(err, os.ErrPermission) {
				t.Errorf("reading root's mode 0600 file without --map-owner: got %v, want permission denied", err)
			}
			if line, _ := mountLine(m.dir); strings.Contains(line, "allow_other") {
				t.Errorf("mount without --allow-other: got %q, want no allow_other", line)
			}
		}
	})
	t.Run("mount-map-owner", func(t *testing.T) {
		m := startMount(t, bin, v2.Archive, "--map-owner")
		checkOwner(t, filepath.Join(m.dir, "d/secret"), uid, gid)
		checkOwner(t, filepath.Join(m.dir, "d/setuid"), uid, gid)
		checkOwner(t, filepath.Join(m.dir, "bin/busybox"), uid, gid)
		checkOwner(t, filepath.Join(m.dir, "d/user/file"), 1000, 1000)
		checkContent(t, filepath.Join(m.dir, "d/secret"), "secret\n")
		checkMode(t, filepath.Join(m.dir, "d/setuid"), syscall.S_IFREG, 0o4755)
	})
	t.Run("mount-allow-other", func(t *testing.T) {
		m := startMount(t, bin, v1.Archive, "--allow-other")
		if line, _ := mountLine(m.dir); !strings.Contains(line, "allow_other") {
			t.Errorf("mount --allow-other: got %q, want allow_other", line)
		}
		checkContent(t, filepath.Join(m.dir, "d/user/file"), "mine\n")
	})
	t.Run("pull", func(t *testing.T) {
		for _, version := range []string{"1", "2"} {
			out := filepath.Join(t.TempDir(), "pulled.clip")
			r := mustRun(t, nil, bin, "pull", "--json", "--clip-version", version, "-o", out, v2.ImageRef)
			var res buildResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || fmt.Sprint(res.ClipVersion) != version {
				t.Errorf("pull --clip-version %s: got %+v (%v), want version %s", version, res, err, version)
			}
			mustRun(t, nil, bin, "verify", out, "--image", issueImage)
			m := startMount(t, bin, out)
			checkIssueTree(t, m.dir, version == "1")
		}
	})

	// Corpus images, v1 and v2, each verified against its image and read
	// through a mount.
	for _, c := range corpusCases {
		t.Run("corpus-"+c, func(t *testing.T) {
			ctx := buildContext(t, c, "")
			image := prefix + "-" + c
			images = append(images, image)
			flags := []string{"--layers"}
			for _, version := range [][]string{{"--clip-version", "1"}, {"--clip-version", "2", "--registry", reg.addr + "/corpus"}} {
				res := build(t, bin, nil, ctx, image, filepath.Join(t.TempDir(), c+".clip"), append(flags, version...)...)
				mustRun(t, nil, bin, "verify", res.Archive, "--image", image)
				m := startMount(t, bin, res.Archive, "--map-owner")
				checkContent(t, filepath.Join(m.dir, "bin/busybox"), mustRead(t, busyboxPath))
				checkCorpus(t, c, m.dir, res.ClipVersion, uid, gid)
			}
		})
	}

	// A build under `buildah unshare`, which sets BUILDAH_ISOLATION=rootless
	// (a runtime with cgroups this user lacks): clipbuild's default stays
	// chroot. Set by the user before clipbuild runs, the value is kept.
	t.Run("buildah-unshare-isolation", func(t *testing.T) {
		image := prefix + "-unshare"
		images = append(images, image)
		out := filepath.Join(t.TempDir(), "unshare.clip")
		r := mustRun(t, nil, "buildah", "unshare", "--", bin, "--log-level", "debug", "build", "-t", image, "--clip-version", "1", "-o", out, issueCtx)
		if !strings.Contains(r.stderr, "--isolation chroot") {
			t.Errorf("under buildah unshare: want buildah run with --isolation chroot, got:\n%s", r.stderr)
		}
		r = run(t, []string{"BUILDAH_ISOLATION=rootless"}, bin, "--log-level", "debug", "build", "-t", image, "--clip-version", "1", "-o", out, issueCtx)
		if !strings.Contains(r.stderr, "--isolation rootless") {
			t.Errorf("BUILDAH_ISOLATION=rootless set by the user: want buildah run with --isolation rootless, got %v", r)
		}
	})

	// The store: the one buildah uses, one driver's directory only; the
	// run root under $XDG_RUNTIME_DIR when it is set.
	t.Run("store", func(t *testing.T) {
		home, _ := os.UserHomeDir()
		graph := filepath.Join(home, ".local/share/containers/storage")
		var drivers []string
		for _, d := range []string{"overlay", "vfs"} {
			if _, err := os.Stat(filepath.Join(graph, d)); err == nil {
				drivers = append(drivers, d)
			}
		}
		if len(drivers) != 1 {
			t.Errorf("%s: driver directories %q, want exactly one", graph, drivers)
		}
		t.Logf("store %s, driver %s", graph, strings.Join(drivers, " "))
		runtimeDir := filepath.Join(t.TempDir(), "runtime")
		if err := os.Mkdir(runtimeDir, 0o700); err != nil {
			t.Fatal(err)
		}
		image := prefix + "-xdg"
		images = append(images, image)
		out := filepath.Join(t.TempDir(), "xdg.clip")
		r := mustRun(t, []string{"XDG_RUNTIME_DIR=" + runtimeDir}, bin, "--log-level", "debug", "build", "-t", image, "--clip-version", "1", "-o", out, issueCtx)
		want := "--root " + graph + " --runroot " + runtimeDir + "/containers --storage-driver " + strings.Join(drivers, "")
		if !strings.Contains(r.stderr, want) {
			t.Errorf("with XDG_RUNTIME_DIR set: want buildah run with %q, got:\n%s", want, r.stderr)
		}
	})

	// A failing build leaves no working container behind.
	t.Run("failed-build-cleanup", func(t *testing.T) {
		ctx := buildContext(t, "failing", "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"false\"]\n")
		r := run(t, nil, bin, "build", "--layers", "--clip-version", "1", "-o", filepath.Join(t.TempDir(), "x.clip"), ctx)
		if r.code == 0 || !strings.HasPrefix(r.lastLine(), "Error: ") {
			t.Errorf("failing build: want a non-zero exit and an Error: line, got %v", r)
		}
		if c := mustRun(t, nil, "buildah", "containers", "--quiet"); strings.TrimSpace(c.stdout) != "" {
			t.Errorf("working containers after the failed build: %q, want none", c.stdout)
		}
	})
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkCorpus checks facts of a mounted corpus image (mounted with
// --map-owner, so root's files are the caller's).
func checkCorpus(t *testing.T, name, root string, version int, uid, gid uint32) {
	t.Helper()
	p := func(rel string) string { return filepath.Join(root, rel) }
	switch name {
	case "hardlinks":
		a, b, c := lstat(t, p("links/a/original")), lstat(t, p("links/a/second")), lstat(t, p("links/b/third"))
		if a != nil && b != nil && c != nil && (a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3) {
			t.Errorf("hardlinks: inodes %d %d %d, links %d: want one inode with 3 links", a.Ino, b.Ino, c.Ino, a.Nlink)
		}
		checkOwner(t, p("links/a/original"), 1000, 1000)
		checkMode(t, p("links/a/original"), syscall.S_IFREG, 0o640)
		// Owned by uid 1000 on this host, mode 0640: only uid 1000 may
		// read it; --map-owner maps root alone.
		if uid == 1000 {
			checkContent(t, p("links/b/third"), "shared-content\n")
		} else if _, err := os.ReadFile(p("links/b/third")); !errors.Is(err, os.ErrPermission) {
			t.Errorf("links/b/third (uid 1000, mode 0640) read as uid %d: got %v, want permission denied", uid, err)
		}
		checkContent(t, p("links/pair-1"), mustRead(t, p("links/b/pair-2")))
	case "fifo":
		if version == 1 {
			checkMode(t, p("fifo/private"), syscall.S_IFIFO, 0o600)
			checkMode(t, p("fifo/public"), syscall.S_IFIFO, 0o644)
			checkOwner(t, p("fifo/private"), uid, gid)
		}
	case "modes":
		checkMode(t, p("modes/setuid"), syscall.S_IFREG, 0o4755)
		checkMode(t, p("modes/setgid-dir"), syscall.S_IFDIR, 0o2755)
		checkMode(t, p("modes/sticky-dir"), syscall.S_IFDIR, 0o1777)
		checkMode(t, p("modes/private-dir"), syscall.S_IFDIR, 0o700)
		checkContent(t, p("modes/private-dir/inside"), "secret\n")
		checkContent(t, p("modes/read-only"), "ro\n")
	case "owners":
		checkOwner(t, p("own/user/file"), 1000, 1000)
		checkOwner(t, p("own/nobody/file"), 65534, 65534)
		checkOwner(t, p("own/mixed/file"), 123, 456)
		checkOwner(t, p("own"), uid, gid)
	}
}

// TestAsUserFuseDenied is the user half with a FUSE device of mode 0600:
// mount fails with one Error: line that says what to do, and so does
// --allow-other without user_allow_other in /etc/fuse.conf.
func TestAsUserFuseDenied(t *testing.T) {
	bin := userHalf(t, "fuse-denied")
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("/dev/fuse: got %v, %v, want mode 0600", fi, err)
	}
	ctx := buildContext(t, "issue", issueDockerfile)
	res := build(t, bin, nil, ctx, fmt.Sprintf("cbrootless-%d-denied", os.Getpid()), filepath.Join(t.TempDir(), "denied.clip"), "--clip-version", "1")
	t.Cleanup(func() { removeImages(t, fmt.Sprintf("cbrootless-%d-denied", os.Getpid())) })
	mnt := t.TempDir()
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"device", nil, []string{"Error: mounting " + mnt + ": cannot open /dev/fuse (mode 0600 here) as uid", "mode 0666", "run as root"}},
		{"allow-other", []string{"--allow-other"}, []string{"Error: mounting " + mnt + ": --allow-other needs a line user_allow_other in /etc/fuse.conf"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, nil, bin, append(append([]string{"mount"}, tc.flags...), res.Archive, mnt)...)
			if r.code != 1 {
				t.Errorf("exit code: got %d, want 1\n%v", r.code, r)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 {
				t.Errorf("stderr: got %d lines, want the one Error: line:\n%s", len(lines), r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.lastLine(), w) {
					t.Errorf("stderr: got %q, want it to contain %q", r.lastLine(), w)
				}
			}
		})
	}
}
