package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	s3Bucket    = "clipbuild-test"
	s3AccessKey = "clipbuildtestaccess"
	s3SecretKey = "clipbuildtestsecret"
)

// s3Gateway is a running versitygw serving a POSIX directory as S3 on a
// loopback port, with one bucket (s3Bucket).
type s3Gateway struct {
	endpoint string
	root     string // the POSIX directory holding the buckets
	cmd      *exec.Cmd
	output   lockedBuffer
	done     chan struct{}
}

// versitygwBin is $CLIPBUILD_VERSITYGW, else <repo>/bin/versitygw (which
// `make deps` installs). Without one the test skips, or fails under CI=true.
func versitygwBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CLIPBUILD_VERSITYGW")
	if bin == "" {
		bin = filepath.Join(repoRoot, "bin", "versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("versitygw not found (%v): run `make deps` or set CLIPBUILD_VERSITYGW", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// freeLoopbackPort returns a loopback port that was free a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startS3 starts versitygw with its POSIX backend in a temporary directory
// and waits until it accepts connections. It is stopped by its PID when the
// test ends.
func startS3(t *testing.T) *s3Gateway {
	t.Helper()
	bin := versitygwBin(t)
	dir := t.TempDir()
	// The metadata sidecar must be neither inside the root nor share a name
	// prefix with it.
	root, meta := filepath.Join(dir, "objects"), filepath.Join(dir, "sidecar")
	for _, d := range []string{filepath.Join(root, s3Bucket), meta} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	g := &s3Gateway{endpoint: "http://" + addr, root: root, done: make(chan struct{})}
	g.cmd = exec.Command(bin, "--port", addr, "--access", s3AccessKey, "--secret", s3SecretKey, "--quiet",
		"posix", "--sidecar", meta, root)
	g.cmd.Env = withoutEnvPrefix(os.Environ(), "VGW_", "ROOT_ACCESS_KEY", "ROOT_SECRET")
	g.cmd.Stdout, g.cmd.Stderr = &g.output, &g.output
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("starting versitygw: %v", err)
	}
	go func() {
		_ = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		select {
		case <-g.done:
			return
		default:
		}
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(10 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return g
		}
		select {
		case <-g.done:
			t.Fatalf("versitygw exited before serving:\n%s", g.output.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw not serving on %s after 15s:\n%s", addr, g.output.String())
		}
	}
}

func withoutEnvPrefix(env []string, prefixes ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// env is the AWS environment a client of the gateway needs, with the given
// secret key; the user's own AWS files are kept out.
func (g *s3Gateway) env(secretKey string) []string {
	return []string{
		"AWS_ENDPOINT_URL=" + g.endpoint,
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=" + s3AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + secretKey,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// serveS3Registry serves a registry on the gateway's bucket under prefix.
func serveS3Registry(t *testing.T, g *s3Gateway, prefix, secret string, flags ...string) *registryServer {
	t.Helper()
	env := append(g.env(s3SecretKey), "CLIPBUILD_REGISTRY_SECRET="+secret)
	return serveRegistry(t, env, append([]string{"--storage", "s3://" + s3Bucket + "/" + prefix}, flags...)...)
}

// noRedirects is a client that reports redirects instead of following them.
var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// firstLayer returns the repository path and the first layer's digest and
// size of the image at ref (HOST:PORT/REPO@DIGEST) in reg.
func firstLayer(t *testing.T, reg *registryServer, ref string) (repo, digest string, size int64) {
	t.Helper()
	name, manifestDigest, ok := strings.Cut(strings.TrimPrefix(ref, reg.addr+"/"), "@")
	if !ok {
		t.Fatalf("imageRef %q is not %s/REPO@DIGEST", ref, reg.addr)
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+reg.addr+"/v2/"+name+"/manifests/"+manifestDigest, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("getting manifest: %v", err)
	}
	defer resp.Body.Close()
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK || len(m.Layers) == 0 {
		t.Fatalf("manifest of %s: status %d, %d layers, %v", ref, resp.StatusCode, len(m.Layers), err)
	}
	return name, m.Layers[0].Digest, m.Layers[0].Size
}

// checkBlobRead checks how reg answers a blob GET (a redirect to the
// gateway, or the bytes themselves) and that a single-range read, with
// redirects followed, returns exactly the bytes asked for.
func checkBlobRead(t *testing.T, reg *registryServer, g *s3Gateway, repo, digest string, size int64, redirect bool) {
	t.Helper()
	blobURL := "http://" + reg.addr + "/v2/" + repo + "/blobs/" + digest
	resp, err := noRedirects.Get(blobURL)
	if err != nil {
		t.Fatalf("GET blob: %v", err)
	}
	resp.Body.Close()
	if redirect {
		loc, err := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusTemporaryRedirect || err != nil || "http://"+loc.Host != g.endpoint || loc.Query().Get("X-Amz-Signature") == "" {
			t.Errorf("GET blob: got %d to %q, want 307 to a presigned URL on %s", resp.StatusCode, resp.Header.Get("Location"), g.endpoint)
		}
	} else if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		t.Errorf("GET blob: got %d with %d bytes, want 200 with %d bytes from the registry itself", resp.StatusCode, resp.ContentLength, size)
	}

	full := getRange(t, blobURL, "")
	if int64(len(full)) != size {
		t.Fatalf("full blob: got %d bytes, want %d", len(full), size)
	}
	first, last := size/3, size/3+99
	part := getRange(t, blobURL, fmt.Sprintf("bytes=%d-%d", first, last))
	if want := full[first : last+1]; string(part) != string(want) {
		t.Errorf("range %d-%d: got %d bytes, want the blob's %d bytes there", first, last, len(part), len(want))
	}
}

// getRange GETs url, following redirects, with the Range header rng (none
// when empty), and returns the body; a range must be answered with 206.
func getRange(t *testing.T, u, rng string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := http.StatusOK
	if rng != "" {
		req.Header.Set("Range", rng)
		want = http.StatusPartialContent
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s (%s): %v", u, rng, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s (%s): %v", u, rng, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s (%s): got status %d, want %d", u, rng, resp.StatusCode, want)
	}
	return body
}

const s3Dockerfile = busyboxBase + "RUN head -c 3000000 /dev/urandom > /big.bin && echo on-s3 > /hello.txt\n"

// TestS3RegistryPushAndRangeReads pushes a v2 build to a registry on S3,
// with blob reads redirected to presigned URLs and served through the
// registry, and reads it back through HTTP ranges, pull (index) and a mount.
func TestS3RegistryPushAndRangeReads(t *testing.T) {
	requirePrerequisites(t)
	g := startS3(t)
	for _, tc := range []struct {
		name     string
		redirect bool
	}{
		{"redirect", true},
		{"no-redirect", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			heavy(t)
			reg := serveS3Registry(t, g, tc.name, "shared-secret", fmt.Sprintf("--redirect=%t", tc.redirect))
			out, res := buildV2(t, inlineContext(t, s3Dockerfile), imageName("s3-"+tc.name),
				"--clip-version", "2", "--registry", reg.addr+"/s3")
			checkV2Result(t, out, res, reg.addr+"/s3/")
			if entries, err := os.ReadDir(filepath.Join(g.root, s3Bucket, tc.name)); err != nil || len(entries) == 0 {
				t.Errorf("bucket has nothing under %s/ after the push (%v)", tc.name, err)
			}

			repo, digest, size := firstLayer(t, reg, out.ImageRef)
			checkBlobRead(t, reg, g, repo, digest, size, tc.redirect)

			m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir())
			tree{t, "mount of the build", m.dir}.file("hello.txt", "on-s3\n")

			pulled := filepath.Join(t.TempDir(), "pulled.clip")
			mustSucceed(t, clipbuild(t, "pull", out.ImageRef, "--clip-version", "2", "-o", pulled))
			pm := mountArchive(t, pulled, "--cache-dir", t.TempDir())
			tree{t, "mount of the pull", pm.dir}.file("hello.txt", "on-s3\n")
			if got, err := os.ReadFile(filepath.Join(pm.dir, "big.bin")); err != nil || len(got) != 3000000 {
				t.Errorf("big.bin through the mount: got %d bytes (%v), want 3000000", len(got), err)
			}
		})
	}
}

// TestS3RegistryWrongCredentials checks that a wrong secret key stops
// `registry serve` at start with one clear error line.
func TestS3RegistryWrongCredentials(t *testing.T) {
	requirePrerequisites(t)
	g := startS3(t)
	env := append(g.env("not-the-secret"), "CLIPBUILD_REGISTRY_SECRET=x")
	res := runEnv(t, "", commandTimeout, env, clipbuildBin, "registry", "serve", "--addr", "127.0.0.1:0",
		"--storage", "s3://"+s3Bucket+"/wrong")
	if res.exitCode == 0 {
		t.Fatalf("registry serve with a wrong secret key: exit 0, want an error\n%v", res)
	}
	errorLines := res.errorLines()
	if len(errorLines) != 1 || errorLines[0] != res.lastStderrLine() {
		t.Fatalf("stderr: got %d Error: lines, want one, last\n%v", len(errorLines), res)
	}
	for _, want := range []string{"s3://" + s3Bucket + "/wrong", "SignatureDoesNotMatch"} {
		if !strings.Contains(errorLines[0], want) {
			t.Errorf("error line %q lacks %q", errorLines[0], want)
		}
	}
	if strings.Contains(res.stderr, "panic") || strings.Contains(res.stderr, "goroutine ") {
		t.Errorf("stderr has a panic\n%v", res)
	}
}

// TestS3RegistriesShareBucket runs two registries on the same bucket and
// secret: an upload begun on A is finished on B, and an image pushed
// through A is pulled and mounted through B after A has stopped.
func TestS3RegistriesShareBucket(t *testing.T) {
	heavy(t)
	g := startS3(t)
	a := serveS3Registry(t, g, "shared", "one-secret-for-both")
	b := serveS3Registry(t, g, "shared", "one-secret-for-both")

	t.Run("upload across replicas", func(t *testing.T) {
		crossReplicaUpload(t, a, b)
	})

	out, res := buildV2(t, inlineContext(t, s3Dockerfile), imageName("s3-shared"),
		"--clip-version", "2", "--registry", a.addr+"/share")
	checkV2Result(t, out, res, a.addr+"/share/")
	a.stop(t)

	ref := b.addr + strings.TrimPrefix(out.ImageRef, a.addr)
	pulled := filepath.Join(t.TempDir(), "via-b.clip")
	mustSucceed(t, clipbuild(t, "pull", ref, "--clip-version", "2", "-o", pulled))
	m := mountArchive(t, pulled, "--cache-dir", t.TempDir())
	tree{t, "mount through B", m.dir}.file("hello.txt", "on-s3\n")
	if got, err := os.ReadFile(filepath.Join(m.dir, "big.bin")); err != nil || len(got) != 3000000 {
		t.Errorf("big.bin through B: got %d bytes (%v), want 3000000", len(got), err)
	}
}

// crossReplicaUpload starts a blob upload on a and completes it on b, which
// works only when both sign upload state with the same secret.
func crossReplicaUpload(t *testing.T, a, b *registryServer) {
	t.Helper()
	resp, err := noRedirects.Post("http://"+a.addr+"/v2/share/cross/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("starting an upload on A: got %d, Location %q, want 202 with a Location", resp.StatusCode, loc)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme, u.Host = "http", b.addr
	body := "a blob uploaded across replicas\n"
	q := u.Query()
	q.Set("digest", "sha256:"+sha256Hex(body))
	u.RawQuery = q.Encode()
	req, err := http.NewRequest(http.MethodPut, u.String(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finishing A's upload on B: got %d %s, want 201", resp.StatusCode, msg)
	}
	got := getRange(t, "http://"+b.addr+"/v2/share/cross/blobs/sha256:"+sha256Hex(body), "")
	if string(got) != body {
		t.Errorf("blob through B: got %q, want %q", got, body)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
