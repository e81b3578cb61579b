package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// registryServer is a running `clipbuild registry serve`.
type registryServer struct {
	addr   string
	root   string
	cmd    *exec.Cmd
	stderr lockedBuffer
	done   chan struct{}
}

var servingRE = regexp.MustCompile(`registry serving on http://([0-9.]+:[0-9]+)`)

// startRegistry serves an embedded registry on a free loopback port with
// its data in root (a new temporary directory when empty). It is stopped by
// its PID when the test ends.
func startRegistry(t *testing.T, root string, extra ...string) *registryServer {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	r := serveRegistry(t, nil, append([]string{"--root", root}, extra...)...)
	r.root = root
	return r
}

// serveRegistry runs `clipbuild registry serve --addr 127.0.0.1:0` with the
// given flags and extra environment variables (KEY=VALUE), and waits until
// it serves. It is stopped by its PID when the test ends.
func serveRegistry(t *testing.T, env []string, flags ...string) *registryServer {
	t.Helper()
	r := &registryServer{done: make(chan struct{})}
	args := append([]string{"registry", "serve", "--addr", "127.0.0.1:0"}, flags...)
	r.cmd = exec.Command(clipbuildBin, args...)
	if env != nil {
		r.cmd.Env = append(os.Environ(), env...)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = pw, pw
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting registry: %v", err)
	}
	pw.Close()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			r.stderr.Write([]byte(line + "\n"))
			if m := servingRE.FindStringSubmatch(line); m != nil && !sent {
				addr <- m[1]
				sent = true
			}
		}
	}()
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() { r.stop(t) })
	select {
	case r.addr = <-addr:
	case <-r.done:
		t.Fatalf("registry exited before serving:\n%s", r.stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("registry did not start within 20s:\n%s", r.stderr.String())
	}
	return r
}

// stop sends SIGTERM and checks the registry exits 0.
func (r *registryServer) stop(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		t.Errorf("registry did not exit within 15s of SIGTERM")
		return
	}
	if code := r.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("registry exit code after SIGTERM: got %d, want 0\n%s", code, r.stderr.String())
	}
}

// writeHtpasswd writes an htpasswd file with one bcrypt user.
func writeHtpasswd(t *testing.T, user, pass string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
