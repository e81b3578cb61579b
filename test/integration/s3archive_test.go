package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	awssession "github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// s3ArchiveDockerfile makes an image with a small file and one of about
// 2.5 MB whose bytes are known (seq), so reads spanning several ranges of
// the archive can be checked exactly.
const s3ArchiveDockerfile = busyboxBase + "RUN seq 1 400000 > /big.txt && echo on-s3 > /hello.txt\n"

// s3ArchiveBig is what /big.txt holds.
func s3ArchiveBig() string {
	var b strings.Builder
	for i := 1; i <= 400000; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}

// mountS3Archive is mountArchive with the gateway's AWS settings in the
// mount's environment.
func mountS3Archive(t *testing.T, g *s3Gateway, archive string, extra ...string) *fuseMount {
	t.Helper()
	return mountArchiveEnv(t, g.env(s3SecretKey), archive, extra...)
}

// s3Object is the file versitygw's POSIX backend keeps for key.
func (g *s3Gateway) object(key string) string {
	return filepath.Join(g.root, s3Bucket, filepath.FromSlash(key))
}

// s3Client is a client of the gateway, for checks behind clipbuild's back.
func (g *s3Gateway) client(t *testing.T) *s3.S3 {
	t.Helper()
	sess, err := awssession.NewSession(aws.NewConfig().WithEndpoint(g.endpoint).WithRegion("us-east-1").WithS3ForcePathStyle(true).
		WithCredentials(credentials.NewStaticCredentials(s3AccessKey, s3SecretKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	return s3.New(sess)
}

// checkNoUploads fails unless the bucket has no multipart upload pending.
func (g *s3Gateway) checkNoUploads(t *testing.T) {
	t.Helper()
	out, err := g.client(t).ListMultipartUploads(&s3.ListMultipartUploadsInput{Bucket: aws.String(s3Bucket)})
	if err != nil {
		t.Fatalf("listing multipart uploads: %v", err)
	}
	if len(out.Uploads) != 0 {
		var keys []string
		for _, u := range out.Uploads {
			keys = append(keys, aws.StringValue(u.Key))
		}
		t.Errorf("pending multipart uploads: got %v, want none", keys)
	}
}

// checkNoObject fails if key (or key.json) exists in the bucket.
func (g *s3Gateway) checkNoObject(t *testing.T, key string) {
	t.Helper()
	for _, k := range []string{key, key + ".json"} {
		_, err := g.client(t).HeadObject(&s3.HeadObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(k)})
		if err == nil {
			t.Errorf("object %s exists, want none", k)
		}
	}
}

// buildToS3 builds the s3ArchiveDockerfile image into s3://s3Bucket/key
// with --json, checks that the archive and its result are there, and
// returns the result.
func buildToS3(t *testing.T, g *s3Gateway, key, image string, flags ...string) buildOutput {
	t.Helper()
	removeImageLater(t, image)
	u := "s3://" + s3Bucket + "/" + key
	args := buildArgs(append(append([]string{"--json", "-t", image, "-o", u}, flags...), inlineContext(t, s3ArchiveDockerfile))...)
	res := runEnv(t, "", buildTimeout, g.env(s3SecretKey), clipbuildBin, args...)
	mustSucceed(t, res)
	var out buildOutput
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%v", err, res)
	}
	if out.Archive != u {
		t.Errorf("archive: got %q, want %q", out.Archive, u)
	}
	fi, err := os.Stat(g.object(key))
	if err != nil {
		t.Fatalf("no object at %s: %v\n%v", key, err, res)
	}
	if fi.Size() != out.ArchiveBytes {
		t.Errorf("object size: got %d, want %d (archiveBytes)", fi.Size(), out.ArchiveBytes)
	}
	b, err := os.ReadFile(g.object(key + ".json"))
	if err != nil {
		t.Fatalf("no result beside the archive: %v", err)
	}
	var stored buildOutput
	if err := json.Unmarshal(b, &stored); err != nil {
		t.Fatalf("%s.json is not JSON: %v\n%s", key, err, b)
	}
	if stored.Archive != u || stored.ClipVersion != out.ClipVersion || stored.ManifestDigest != out.ManifestDigest {
		t.Errorf("%s.json: got archive %q v%d %s, want %q v%d %s", key, stored.Archive, stored.ClipVersion, stored.ManifestDigest,
			u, out.ClipVersion, out.ManifestDigest)
	}
	return out
}

// checkS3Mount checks that the mount at dir holds the image's files exactly.
func checkS3Mount(t *testing.T, name, dir string) {
	t.Helper()
	tree{t, name, dir}.file("hello.txt", "on-s3\n")
	got, err := os.ReadFile(filepath.Join(dir, "big.txt"))
	if err != nil {
		t.Fatalf("%s: reading big.txt: %v", name, err)
	}
	if want := s3ArchiveBig(); string(got) != want {
		t.Errorf("%s: big.txt: got %d bytes, want %d, equal", name, len(got), len(want))
	}
}

// TestS3Archives builds v1 and v2 archives onto S3 (and pulls the v2
// image onto S3) and reads them back from there with inspect, verify and
// mount.
func TestS3Archives(t *testing.T) {
	heavy(t)
	g := startS3(t)
	reg := startRegistry(t, "")
	for _, tc := range []struct {
		version string
		flags   []string
	}{
		{"1", []string{"--clip-version", "1"}},
		{"2", []string{"--clip-version", "2", "--registry", reg.addr + "/s3a"}},
	} {
		t.Run("v"+tc.version, func(t *testing.T) {
			key := "x/v" + tc.version + "/app.clip"
			image := imageName("s3archive-v" + tc.version)
			out := buildToS3(t, g, key, image, tc.flags...)
			if fmt.Sprint(out.ClipVersion) != tc.version {
				t.Fatalf("clipVersion: got %d, want %s", out.ClipVersion, tc.version)
			}
			u := "s3://" + s3Bucket + "/" + key
			res := runEnv(t, "", commandTimeout, g.env(s3SecretKey), clipbuildBin, "inspect", u, "--json")
			mustSucceed(t, res)
			var s struct {
				Path    string `json:"path"`
				Version int    `json:"clipVersion"`
			}
			if err := json.Unmarshal([]byte(res.stdout), &s); err != nil {
				t.Fatalf("inspect --json: %v\n%v", err, res)
			}
			if s.Path != u || fmt.Sprint(s.Version) != tc.version {
				t.Errorf("inspect: got %q v%d, want %q v%s", s.Path, s.Version, u, tc.version)
			}
			res = runEnv(t, "", buildTimeout, g.env(s3SecretKey), clipbuildBin, "verify", u, "--image", image, "--cache-dir", t.TempDir())
			mustSucceed(t, res)
			if !strings.Contains(res.stdout, "matches") {
				t.Errorf("verify: stdout lacks %q\n%v", "matches", res)
			}
			m := mountS3Archive(t, g, u, "--cache-dir", t.TempDir(), "--span-cache-dir", t.TempDir())
			checkS3Mount(t, "mount of "+u, m.dir)
			if out.ImageRef == "" {
				return
			}
			pulled := "s3://" + s3Bucket + "/x/pulled/app.clip"
			res = runEnv(t, "", buildTimeout, g.env(s3SecretKey), clipbuildBin, "pull", out.ImageRef, "--clip-version", "2", "--json", "-o", pulled)
			mustSucceed(t, res)
			var p buildOutput
			if err := json.Unmarshal([]byte(res.stdout), &p); err != nil || p.Archive != pulled {
				t.Fatalf("pull --json: archive %q (%v), want %q\n%v", p.Archive, err, pulled, res)
			}
			if _, err := os.Stat(g.object("x/pulled/app.clip.json")); err != nil {
				t.Errorf("pull: no result beside the archive: %v", err)
			}
			pm := mountS3Archive(t, g, pulled, "--cache-dir", t.TempDir(), "--span-cache-dir", t.TempDir())
			checkS3Mount(t, "mount of "+pulled, pm.dir)
		})
	}
}

// faultyS3 is a proxy in front of the gateway that fails every
// CompleteMultipartUpload, or holds every UploadPart until the client
// gives up, telling parts when the first one arrives.
type faultyS3 struct {
	srv   *httptest.Server
	parts chan struct{}
	once  sync.Once
}

func startFaultyS3(t *testing.T, g *s3Gateway, holdParts bool) *faultyS3 {
	t.Helper()
	target, err := url.Parse(g.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyS3{parts: make(chan struct{})}
	proxy := httputil.NewSingleHostReverseProxy(target)
	stop := make(chan struct{})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		switch {
		case holdParts && r.Method == http.MethodPut && q.Has("partNumber"):
			// With the body read, the server notices the client hanging up.
			_, _ = io.Copy(io.Discard, r.Body)
			f.once.Do(func() { close(f.parts) })
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		case !holdParts && r.Method == http.MethodPost && q.Has("uploadId"):
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(stop) })
	return f
}

// TestS3ArchiveUploadInterrupted checks that an upload that fails at its
// completion, or is interrupted with SIGTERM while parts are in flight,
// leaves no object at the archive's key and no pending multipart upload.
func TestS3ArchiveUploadInterrupted(t *testing.T) {
	heavy(t)
	g := startS3(t)

	t.Run("completion fails", func(t *testing.T) {
		f := startFaultyS3(t, g, false)
		key := "x/fail/app.clip"
		image := imageName("s3archive-fail")
		removeImageLater(t, image)
		res := runEnv(t, "", buildTimeout, append(g.env(s3SecretKey), "AWS_ENDPOINT_URL="+f.srv.URL), clipbuildBin,
			buildArgs("--clip-version", "1", "-t", image, "-o", "s3://"+s3Bucket+"/"+key, inlineContext(t, s3ArchiveDockerfile))...)
		assertCleanFailure(t, res)
		if !strings.Contains(res.lastStderrLine(), "completing the upload") {
			t.Errorf("last stderr line: got %q, want it to say the upload's completion failed", res.lastStderrLine())
		}
		g.checkNoObject(t, key)
		g.checkNoUploads(t)
	})

	t.Run("SIGTERM during upload", func(t *testing.T) {
		f := startFaultyS3(t, g, true)
		key := "x/term/app.clip"
		image := imageName("s3archive-term")
		removeImageLater(t, image)
		cmd := exec.Command(clipbuildBin, buildArgs("--clip-version", "1", "-t", image, "-o", "s3://"+s3Bucket+"/"+key, inlineContext(t, s3ArchiveDockerfile))...)
		cmd.Env = append(append(os.Environ(), g.env(s3SecretKey)...), "AWS_ENDPOINT_URL="+f.srv.URL)
		var stderr lockedBuffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-f.parts:
		case err := <-done:
			t.Fatalf("build exited (%v) before uploading a part:\n%s", err, stderr.String())
		case <-time.After(buildTimeout):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("no part upload within %v:\n%s", buildTimeout, stderr.String())
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("build did not exit within a minute of SIGTERM:\n%s", stderr.String())
		}
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 130 {
			t.Errorf("build after SIGTERM: got %v, want exit status 130\n%s", err, stderr.String())
		}
		g.checkNoObject(t, key)
		g.checkNoUploads(t)
	})
}

// TestS3ArchiveWrongCredentials checks that a wrong secret key fails the
// run with one error line and leaves no object.
func TestS3ArchiveWrongCredentials(t *testing.T) {
	heavy(t)
	g := startS3(t)
	key := "x/creds/app.clip"
	image := imageName("s3archive-creds")
	removeImageLater(t, image)
	res := runEnv(t, "", buildTimeout, g.env("not-the-secret"), clipbuildBin,
		buildArgs("--clip-version", "1", "-t", image, "-o", "s3://"+s3Bucket+"/"+key, inlineContext(t, s3ArchiveDockerfile))...)
	assertCleanFailure(t, res)
	if n := len(res.errorLines()); n != 1 {
		t.Errorf("stderr: got %d Error: lines, want one\n%v", n, res)
	}
	if last := res.lastStderrLine(); !strings.Contains(last, "SignatureDoesNotMatch") || strings.Contains(last, "\n") {
		t.Errorf("error line %q lacks SignatureDoesNotMatch", last)
	}
	g.checkNoObject(t, key)
	g.checkNoUploads(t)
	if bytes.Contains([]byte(res.stderr), []byte("panic")) {
		t.Errorf("stderr has a panic\n%v", res)
	}
}

// TestS3ArchiveMountThroughOtherRegistry builds a v2 archive onto S3
// through registry A on a shared bucket, stops A, and mounts the archive
// with --registry B, a replica on the same bucket.
func TestS3ArchiveMountThroughOtherRegistry(t *testing.T) {
	heavy(t)
	g := startS3(t)
	a := serveS3Registry(t, g, "shared", "one-secret-for-both")
	b := serveS3Registry(t, g, "shared", "one-secret-for-both")
	key := "x/replica/app.clip"
	out := buildToS3(t, g, key, imageName("s3archive-replica"), "--clip-version", "2", "--registry", a.addr+"/share")
	if out.ClipVersion != 2 || !strings.HasPrefix(out.ImageRef, a.addr+"/share/") {
		t.Fatalf("result: got v%d %q, want v2 in %s/share", out.ClipVersion, out.ImageRef, a.addr)
	}
	a.stop(t)
	u := "s3://" + s3Bucket + "/" + key
	m := mountS3Archive(t, g, u, "--registry", b.addr, "--cache-dir", t.TempDir(), "--span-cache-dir", t.TempDir())
	checkS3Mount(t, "mount through B", m.dir)
}
