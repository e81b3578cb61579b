package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// deadPID returns the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if processAlive(pid) {
		t.Fatalf("process %d is still alive after exiting (PID reused at once?)", pid)
	}
	return pid
}

// holdLock runs flock(1) in another process, holding dir's lock until the
// test ends.
func holdLock(t *testing.T, dir string) {
	t.Helper()
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Fatalf("flock(1) (util-linux) is needed to hold a lock from another process: %v", err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(flock, "--exclusive", "--nonblock", dir, "sh", "-c", "touch "+ready+" && exec sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flock %s did not take the lock", dir)
		}
	}
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(p, "layout-1", "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "layout-1", "blobs", "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func age(t *testing.T, p string, d time.Duration) {
	t.Helper()
	old := time.Now().Add(-d)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestSweepScratch(t *testing.T) {
	tmp := t.TempDir()
	dead, live := deadPID(t), os.Getpid()
	name := func(pid int, n int) string { return filepath.Join(tmp, fmt.Sprintf("clipbuild-%d-%d", pid, n)) }

	deadOwner := mkdir(t, name(dead, 1))
	deadOwnerOld := mkdir(t, name(dead, 2))
	age(t, deadOwnerOld, time.Hour)
	// A live process has the PID, but nobody holds the lock: a fresh tree
	// may be its owner's, between making and locking it; an old one is
	// left by a process whose PID was reused.
	liveFresh := mkdir(t, name(live, 3))
	liveOld := mkdir(t, name(live, 4))
	age(t, liveOld, time.Hour)
	// The lock decides over the PID: another process holds these.
	lockedDeadPID := mkdir(t, name(dead, 5))
	age(t, lockedDeadPID, time.Hour)
	holdLock(t, lockedDeadPID)
	lockedHere, err := newScratch(tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer lockedHere.remove()
	age(t, lockedHere.dir, time.Hour)
	// Not scratch trees of a run.
	target := mkdir(t, filepath.Join(t.TempDir(), "target"))
	symlink := name(dead, 6)
	if err := os.Symlink(target, symlink); err != nil {
		t.Fatal(err)
	}
	file := name(dead, 7)
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	others := []string{mkdir(t, filepath.Join(tmp, "clipbuild-bench-123")), mkdir(t, filepath.Join(tmp, "clipbuild-123")),
		mkdir(t, filepath.Join(tmp, fmt.Sprintf("clipbuild-%d-x", dead))), mkdir(t, filepath.Join(tmp, "other"))}
	if err := os.WriteFile(filepath.Join(tmp, "clipbuild-iid-123"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range others {
		age(t, p, time.Hour)
	}

	removed, err := sweepScratch(tmp)
	if err != nil {
		t.Fatalf("sweepScratch() = %v", err)
	}
	want := []string{deadOwner, deadOwnerOld, liveOld}
	slices.Sort(removed)
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("sweepScratch() removed %q, want %q", removed, want)
	}
	for _, p := range want {
		if exists(p) {
			t.Errorf("%s is still there, want it removed", p)
		}
	}
	for _, p := range append([]string{liveFresh, lockedDeadPID, lockedHere.dir, symlink, target, file}, others...) {
		if !exists(p) {
			t.Errorf("%s was removed, want it kept", p)
		}
	}
	if !exists(filepath.Join(target, "layout-1", "blobs", "x")) {
		t.Errorf("the symlink's target was emptied")
	}
}

// TestSweepScratchAfterOwnerExits: a tree kept while its owner holds it
// goes in a later sweep once the owner is gone.
func TestSweepScratchAfterOwnerExits(t *testing.T) {
	tmp := t.TempDir()
	s, err := newScratch(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if removed, _ := sweepScratch(tmp); len(removed) != 0 {
		t.Fatalf("sweepScratch() removed %q while its owner holds it", removed)
	}
	// The owner dies without cleaning up: its lock goes with its files.
	if err := s.lock.Close(); err != nil {
		t.Fatal(err)
	}
	age(t, s.dir, time.Hour)
	removed, err := sweepScratch(tmp)
	if err != nil || !slices.Equal(removed, []string{s.dir}) {
		t.Errorf("sweepScratch() = %q, %v; want [%s], nil", removed, err, s.dir)
	}
}

func TestNewScratchName(t *testing.T) {
	tmp := t.TempDir()
	s, err := newScratch(tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer s.remove()
	m := scratchPattern.FindStringSubmatch(filepath.Base(s.dir))
	if m == nil || m[1] != fmt.Sprint(os.Getpid()) || filepath.Dir(s.dir) != tmp {
		t.Errorf("newScratch() made %s, want %s/clipbuild-%d-N", s.dir, tmp, os.Getpid())
	}
	if l, err := tryLock(s.dir); l != nil || err != nil {
		t.Errorf("tryLock(%s) = %v, %v while newScratch holds it; want nil, nil", s.dir, l, err)
	}
	if err := s.remove(); err != nil {
		t.Fatalf("remove() = %v", err)
	}
	if exists(s.dir) {
		t.Errorf("%s is still there after remove()", s.dir)
	}
}

// TestJobScratchDirSweeps: a job's first scratch directory removes the
// trees killed runs left, and not the tree of another live job.
func TestJobScratchDirSweeps(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	stale := mkdir(t, filepath.Join(tmp, fmt.Sprintf("clipbuild-%d-1", deadPID(t))))
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.DebugLevel)
	live := NewJob(logrus.NewEntry(l), filepath.Join(t.TempDir(), "a.clip"))
	liveDir, err := live.ScratchDir("layout")
	if err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Errorf("%s survived the first ScratchDir, want it removed", stale)
	}
	if !bytes.Contains(buf.Bytes(), []byte(stale)) {
		t.Errorf("log = %q, want it to name the removed %s", buf.String(), stale)
	}
	age(t, filepath.Dir(liveDir), time.Hour)
	other := NewJob(logrus.NewEntry(l), filepath.Join(t.TempDir(), "b.clip"))
	otherDir, err := other.ScratchDir("build")
	if err != nil {
		t.Fatal(err)
	}
	if !exists(liveDir) {
		t.Errorf("another job's ScratchDir removed the live %s", liveDir)
	}
	pattern := regexp.MustCompile(fmt.Sprintf(`^%s/clipbuild-%d-[0-9]+/build-[0-9]+$`, regexp.QuoteMeta(tmp), os.Getpid()))
	if !pattern.MatchString(otherDir) {
		t.Errorf("ScratchDir() = %s, want it to match %s", otherDir, pattern)
	}
	for _, j := range []*Job{live, other} {
		if err := j.cleanup(context.Background()); err != nil {
			t.Errorf("cleanup() = %v", err)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("TMPDIR holds %d entries after both jobs, want 0", len(left))
	}
}
