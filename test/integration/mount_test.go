package integration

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	mountReadyTimeout = 20 * time.Second
	mountStopTimeout  = 15 * time.Second
)

// fuseMount is a running `clipbuild mount` process.
type fuseMount struct {
	dir    string
	cmd    *exec.Cmd
	stderr lockedBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's error, valid after done is closed

	stopOnce sync.Once
	stopCode int
	stopErr  error
}

// mountArchive starts `clipbuild mount archive <dir>` and waits until the
// mount appears in /proc/self/mountinfo. The process is stopped and the
// mount removed when the test ends.
func mountArchive(t *testing.T, archive string, extra ...string) *fuseMount {
	t.Helper()
	return mountArchiveEnv(t, nil, archive, extra...)
}

// mountArchiveEnv is mountArchive with env added to the mount's
// environment.
func mountArchiveEnv(t *testing.T, env []string, archive string, extra ...string) *fuseMount {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &fuseMount{dir: dir, done: make(chan struct{})}
	m.cmd = exec.Command(clipbuildBin, append([]string{"mount", archive, dir}, extra...)...)
	if env != nil {
		m.cmd.Env = append(os.Environ(), env...)
	}
	m.cmd.Stdout = &m.stderr
	m.cmd.Stderr = &m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting clipbuild mount: %v", err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		if _, err := m.stop(syscall.SIGTERM); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	deadline := time.Now().Add(mountReadyTimeout)
	for !isMounted(t, dir) {
		select {
		case <-m.done:
			t.Fatalf("clipbuild mount exited before mounting (%v):\n%s", m.err, m.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after %v:\n%s", dir, mountReadyTimeout, m.stderr.String())
		}
	}
	return m
}

// stop sends sig to the mount process, waits for it to exit and makes sure
// the mount is gone. It returns the exit code and an error describing
// anything that went wrong (no exit, or a leftover mount, which is then
// removed with fusermount3). Only the first call does anything.
func (m *fuseMount) stop(sig os.Signal) (int, error) {
	m.stopOnce.Do(func() {
		m.stopCode, m.stopErr = m.doStop(sig)
	})
	return m.stopCode, m.stopErr
}

func (m *fuseMount) doStop(sig os.Signal) (int, error) {
	var problems []string
	select {
	case <-m.done:
	default:
		_ = m.cmd.Process.Signal(sig)
		select {
		case <-m.done:
		case <-time.After(mountStopTimeout):
			problems = append(problems, "clipbuild mount did not exit within "+mountStopTimeout.String()+" of "+sig.String())
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
	if mounted, err := mountedAt(m.dir); err != nil || mounted {
		problems = append(problems, m.dir+" still mounted after clipbuild mount exited")
		if out, err := exec.Command("fusermount3", "-u", "-z", m.dir).CombinedOutput(); err != nil {
			problems = append(problems, "fusermount3 -u -z: "+err.Error()+": "+string(bytes.TrimSpace(out)))
		}
	}
	code := m.cmd.ProcessState.ExitCode()
	if len(problems) > 0 {
		return code, errors.New(strings.Join(problems, "; ") + "\nclipbuild mount output:\n" + m.stderr.String())
	}
	return code, nil
}

// isMounted reports whether dir is a mount point of this mount namespace.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	mounted, err := mountedAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	return mounted
}

func mountedAt(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	want := filepath.Clean(dir)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint options ...
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == want {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMountinfo decodes the \ooo octal escapes the kernel uses for
// space, tab, newline and backslash in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
