package rootless

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment of the user half, set by the lane.
const (
	envPhase  = "CLIPBUILD_ROOTLESS_PHASE" // "fuse" or "fuse-denied"
	envCorpus = "CLIPBUILD_ROOTLESS_CORPUS"
)

// corpusCases are the corpus images the user half builds.
var corpusCases = []string{"hardlinks", "fifo", "modes", "owners"}

const busyboxPath = "/bin/busybox"

// laneTimeout bounds each run of the user half.
const laneTimeout = 8 * time.Minute

// TestRootlessLane creates a user and runs the user half of this package as
// that user (see the package documentation).
func TestRootlessLane(t *testing.T) {
	if os.Getenv(envPhase) != "" {
		t.Skip("this is the user half's process")
	}
	requireLane(t)
	shared := sharedDir(t)
	bin := clipbuildBinary(t, shared)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	testBin := filepath.Join(shared, "rootless.test")
	copyFile(t, self, testBin, 0o755)
	corpus := filepath.Join(shared, "corpus")
	for _, c := range corpusCases {
		copyTree(t, filepath.Join(repoRoot(t), "testdata", "corpus", c), filepath.Join(corpus, c))
	}

	u := createUser(t)
	work := filepath.Join(shared, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(work, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"HOME=" + u.home,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"TMPDIR=" + work,
		"CI=" + os.Getenv("CI"),
		"CLIPBUILD_BIN=" + bin,
		envCorpus + "=" + corpus,
	}
	phases := []struct {
		phase, test string
		fuseMode    os.FileMode
		allowOther  bool
	}{
		{"fuse", "TestAsUser", 0o666, true},
		{"fuse-denied", "TestAsUserFuseDenied", 0o600, false},
	}
	for _, p := range phases {
		t.Run(p.phase, func(t *testing.T) {
			out, err := runAsUser(t, u, p.fuseMode, p.allowOther, append(env, envPhase+"="+p.phase),
				testBin, "-test.run", "^"+p.test+"$", "-test.v", "-test.count=1", "-test.timeout", laneTimeout.String())
			checkUserHalf(t, p.test, out, err)
		})
	}
}

// requireLane skips the lane (fails it under CI=true) when this machine
// cannot run it.
func requireLane(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, fmt.Sprintf("root (running as uid %d)", os.Geteuid()))
	}
	for _, tool := range []string{"useradd", "userdel", "runuser", "unshare", "mount", "mknod", "newuidmap", "newgidmap", "buildah", "fusermount3"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" in PATH")
		}
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		missing = append(missing, "static busybox at "+busyboxPath)
	}
	if len(missing) > 0 {
		msg := "rootless lane prerequisites missing: " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// sharedDir is a directory that the lane's user can read: the test's own
// temporary directories are root's alone.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "clipbuild-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// clipbuildBinary copies $CLIPBUILD_BIN into dir, or builds clipbuild
// there.
func clipbuildBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "clipbuild")
	if env := os.Getenv("CLIPBUILD_BIN"); env != "" {
		copyFile(t, env, bin, 0o755)
		return bin
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		goTool = p
	}
	cmd := exec.Command(goTool, "build", "-buildvcs=false", "-tags", "containers_image_openpgp exclude_graphdriver_btrfs", "-o", bin, "./cmd/clipbuild")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building clipbuild: %v\n%s", err, out)
	}
	return bin
}

// repoRoot is the directory holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find go.mod above the working directory")
		}
		dir = parent
	}
}

func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, perm); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies a tree of directories and regular files, readable by all.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(target, 0o755)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		default:
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
	})
	if err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
}

// laneUser is the user the lane creates.
type laneUser struct {
	name     string
	uid, gid int
	home     string
}

// createUser creates a user with a unique name and subordinate id ranges,
// and removes it, and everything of it, when the test ends.
func createUser(t *testing.T) laneUser {
	t.Helper()
	name := fmt.Sprintf("cbrootless%d", os.Getpid())
	if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	u := laneUser{name: name}
	t.Cleanup(func() { removeUser(t, u) })
	pw, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	u.uid, _ = strconv.Atoi(pw.Uid)
	u.gid, _ = strconv.Atoi(pw.Gid)
	u.home = pw.HomeDir
	for _, f := range []struct{ file, flag string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		ranges, end := subIDRanges(t, f.file)
		if ranges[name] > 0 {
			continue // useradd gave it its range (Debian 12 does); a second one breaks newuidmap
		}
		start := max(end, 100000)
		r := fmt.Sprintf("%d-%d", start, start+65535)
		if out, err := exec.Command("usermod", f.flag, r, name).CombinedOutput(); err != nil {
			t.Fatalf("usermod %s %s %s: %v\n%s", f.flag, r, name, err, out)
		}
		t.Logf("%s: added %s (useradd added none)", f.file, r)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if ranges, _ := subIDRanges(t, f); ranges[name] != 1 {
			t.Fatalf("%s: %s has %d ranges, want 1", f, name, ranges[name])
		}
	}
	return u
}

// subIDRanges counts the ranges of each user in a subordinate id file, and
// returns the first id past all of them.
func subIDRanges(t *testing.T, file string) (map[string]int, int) {
	t.Helper()
	ranges := map[string]int{}
	end := 0
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 {
			continue
		}
		ranges[f[0]]++
		start, err1 := strconv.Atoi(f[1])
		size, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && start+size > end {
			end = start + size
		}
	}
	return ranges, end
}

// removeUser kills what is left of the user's processes, by PID, removes
// the user with its home (and so its containers-storage), its run
// directories, and checks that nothing of it is left.
func removeUser(t *testing.T, u laneUser) {
	t.Helper()
	if u.uid > 0 {
		for range 3 {
			pids := processesOf(u.uid)
			if len(pids) == 0 {
				break
			}
			t.Errorf("user %s still has processes %v: killing them", u.name, pids)
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if out, err := exec.Command("userdel", "--remove", u.name).CombinedOutput(); err != nil {
		t.Errorf("userdel --remove %s: %v\n%s", u.name, err, out)
	}
	if u.uid > 0 {
		for _, d := range []string{
			fmt.Sprintf("/tmp/storage-run-%d", u.uid),
			fmt.Sprintf("/var/tmp/containers-user-%d", u.uid),
			fmt.Sprintf("/run/user/%d", u.uid),
			fmt.Sprintf("/tmp/containers-user-%d", u.uid),
		} {
			if err := os.RemoveAll(d); err != nil {
				t.Errorf("removing %s: %v", d, err)
			}
		}
	}
	if u.home != "" {
		if _, err := os.Stat(u.home); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v after userdel, want it gone", u.home, err)
		}
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid", "/etc/passwd"} {
		b, err := os.ReadFile(f)
		if err == nil && regexp.MustCompile(`(?m)^`+u.name+`:`).Match(b) {
			t.Errorf("%s still names %s after userdel", f, u.name)
		}
	}
}

// processesOf lists the PIDs of uid's processes.
func processesOf(uid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name()), &st) == nil && int(st.Uid) == uid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// userScript runs, as root in a private mount namespace, the command in
// "$@" as $LANE_USER, with a FUSE device of mode $FUSE_MODE bound over
// /dev/fuse and, with $ALLOW_OTHER=1, an /etc/fuse.conf that says
// user_allow_other. The nodes live on a tmpfs of the namespace: nothing of
// it outlives the namespace.
const userScript = `set -e
dev=$(mktemp -d)
mount -t tmpfs -o mode=0755 clipbuild-rootless "$dev"
mknod "$dev/fuse" c 10 229
chmod "$FUSE_MODE" "$dev/fuse"
mount --bind "$dev/fuse" /dev/fuse
if [ "$ALLOW_OTHER" = 1 ]; then
	printf 'user_allow_other\n' > "$dev/fuse.conf"
	mount --bind "$dev/fuse.conf" /etc/fuse.conf
fi
runuser -u "$LANE_USER" -- env -i "$@"
`

// runAsUser runs args (an environment then a command, for env -i) as u, as
// userScript says.
func runAsUser(t *testing.T, u laneUser, fuseMode os.FileMode, allowOther bool, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), laneTimeout+time.Minute)
	defer cancel()
	allow := "0"
	if allowOther {
		allow = "1"
	}
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", userScript, "sh"}, append(env, args...)...)...)
	cmd.Env = append(os.Environ(), "LANE_USER="+u.name, fmt.Sprintf("FUSE_MODE=%04o", fuseMode), "ALLOW_OTHER="+allow)
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	return out.String(), err
}

var (
	passRE = regexp.MustCompile(`(?m)^\s*--- PASS: (\S+)`)
	skipRE = regexp.MustCompile(`(?m)^\s*--- SKIP: (\S+)`)
	failRE = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)`)
)

// checkUserHalf fails unless the user half ran test and it passed with no
// test skipped.
func checkUserHalf(t *testing.T, test, out string, err error) {
	t.Helper()
	passed := passRE.FindAllStringSubmatch(out, -1)
	skipped := skipRE.FindAllStringSubmatch(out, -1)
	failed := failRE.FindAllStringSubmatch(out, -1)
	ranTest := false
	for _, m := range passed {
		if m[1] == test {
			ranTest = true
		}
	}
	switch {
	case err != nil || len(failed) > 0:
		t.Errorf("user half %s: %v, %d failed:\n%s", test, err, len(failed), out)
	case len(skipped) > 0:
		t.Errorf("user half %s: %d skipped, want none:\n%s", test, len(skipped), out)
	case !ranTest:
		t.Errorf("user half %s: it did not pass:\n%s", test, out)
	default:
		names := make([]string, 0, len(passed))
		for _, m := range passed {
			names = append(names, m[1])
		}
		t.Logf("user half passed %d tests: %s", len(names), strings.Join(names, " "))
	}
	if testing.Verbose() {
		_, _ = io.WriteString(os.Stderr, out)
	}
}
