package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/clipbuild/clipbuild/bench/proxy"
)

// registry is clipbuild's embedded registry on a loopback port, with the
// byte-counting proxy in front. Clients are pointed at Proxy.Addr.
type registry struct {
	Root  string // the storage directory; empty for S3 storage
	Addr  string // the registry itself
	Proxy *proxy.Proxy

	cmd    *exec.Cmd
	waited chan error
}

var servingOn = regexp.MustCompile(`registry serving on http://([0-9.]+:[0-9]+)`)

// startRegistry serves a new, empty registry under root (filesystem
// storage).
func startRegistry(clipbuild, root string) (*registry, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	return serveRegistry(clipbuild, root+".log", nil, "--root", root)
}

// serveRegistry runs `clipbuild registry serve` on a loopback port with
// the storage flags given, env added to the environment, and its output in
// logPath, and puts a counting proxy in front of it.
func serveRegistry(clipbuild, logPath string, env []string, storage ...string) (*registry, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(clipbuild, append([]string{"registry", "serve", "--addr", "127.0.0.1:0"}, storage...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	r := &registry{cmd: cmd, waited: make(chan error, 1)}
	if len(storage) == 2 && storage[0] == "--root" {
		r.Root = storage[1]
	}
	go func() { r.waited <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(20 * time.Second)
	for r.Addr == "" {
		b, _ := os.ReadFile(logPath)
		if m := servingOn.FindSubmatch(b); m != nil {
			r.Addr = string(m[1])
			break
		}
		select {
		case err := <-r.waited:
			r.waited <- err
			return nil, fmt.Errorf("registry exited: %v%s", err, tail(logPath))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("registry did not start%s", tail(logPath))
		}
	}
	p, err := proxy.Start("http://" + r.Addr)
	if err != nil {
		r.stop()
		return nil, err
	}
	r.Proxy = p
	return r, nil
}

// stop stops the proxy and the registry (SIGTERM to its PID, then SIGKILL
// if it lingers).
func (r *registry) stop() {
	if r.Proxy != nil {
		_ = r.Proxy.Close()
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.waited:
		r.waited <- err
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
	}
}

// layer is one layer of a manifest.
type layer struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
}

// manifest fetches repo:tag's OCI manifest straight from the registry
// (not through the proxy, so it is not counted).
func (r *registry) manifest(ctx context.Context, repo, tag string) ([]layer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v2/%s/manifests/%s", r.Addr, repo, tag), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("manifest %s:%s: %s", repo, tag, resp.Status)
	}
	var m struct {
		Layers []layer `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest %s:%s: %w", repo, tag, err)
	}
	return m.Layers, nil
}

// blobPath is where the registry's filesystem storage keeps a blob.
func (r *registry) blobPath(digest string) string {
	hex := digest[len("sha256:"):]
	return filepath.Join(r.Root, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}
