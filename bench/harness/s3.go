package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/clipbuild/clipbuild/bench/proxy"
)

// The S3 gateway's bucket and root credentials (loopback only).
const (
	s3Bucket = "clipbuild-bench"
	s3Access = "clipbenchaccess"
	s3Secret = "clipbenchsecret"
)

// Commands of the registry-on-S3 rows, as the report shows them. The
// gateway gets ROOT_ACCESS_KEY and ROOT_SECRET_KEY in its environment, the
// registry AWS_ENDPOINT_URL (the counting proxy in front of the gateway),
// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// CLIPBUILD_REGISTRY_SECRET.
const (
	cmdGateway    = "bin/versitygw --port 127.0.0.1:$S3PORT --keep-alive --quiet posix --sidecar $WORK/s3/sidecar $WORK/s3/objects"
	cmdRegistryS3 = "$CLIPBUILD registry serve --addr 127.0.0.1:0 --storage s3://" + s3Bucket + "/build-$N"
)

// onS3 measures, against clipbuild's registry keeping its data in S3 (a
// loopback versitygw over a directory), the v2 build (v2-build-s3, each run
// into a new prefix with an empty publish cache) and a one-file read of
// the last build's archive, cold and warm (lazy-s3-one-file-*), beside the
// filesystem-backed rows.
func (s *suite) onS3(ctx context.Context) error {
	build := newSamples("v2-build-s3", display(cmdGateway+"; "+cmdRegistryS3+"; "+cmdV2))
	if _, err := os.Stat(s.o.Versitygw); err != nil {
		why := fmt.Sprintf("versitygw not found (%v); `make deps` installs it", err)
		for _, n := range []string{"v2-build-s3", "lazy-s3-one-file-cold", "lazy-s3-one-file-warm"} {
			s.im.Rows = append(s.im.Rows, Row{Name: n, Skipped: why})
		}
		return nil
	}
	g, err := startGateway(s.o.Versitygw, filepath.Join(s.work, "s3"), filepath.Join(s.work, "logs", "versitygw.log"))
	if err != nil {
		return err
	}
	s.defer_(g.stop)
	secret, err := randomHex(16)
	if err != nil {
		return err
	}
	var last *registry
	for i := 0; i < s.o.Runs; i++ {
		reg, err := serveRegistry(s.o.Clipbuild, filepath.Join(s.work, "logs", fmt.Sprintf("registry-s3-%d.log", i)),
			append(g.env(), "CLIPBUILD_REGISTRY_SECRET="+secret), "--storage", fmt.Sprintf("s3://%s/build-%d", s3Bucket, i))
		if err != nil {
			return err
		}
		keepAs := ""
		if i == s.o.Runs-1 {
			keepAs = filepath.Join(s.work, "s3-v2.clip")
		}
		if err := os.RemoveAll(s.publishCache()); err != nil {
			reg.stop()
			return err
		}
		reg.Proxy.Reset()
		if _, err := s.measureV2(ctx, reg, build, keepAs, g.proxy); err != nil {
			reg.stop()
			return err
		}
		s.logf("   v2 build on S3 %d: %.1fs after bud, %d bytes sent (%d to S3), %d fetched (%d from S3)", i+1, build.seconds[i],
			build.sent[i], build.s3Sent[i], build.fetched[i], build.s3Fetched[i])
		if keepAs == "" {
			reg.stop()
			continue
		}
		last = reg
		s.defer_(reg.stop)
	}
	s.im.Rows = append(s.im.Rows, build.row())
	t := lazyTarget{prefix: "lazy-s3", tmpl: cmdMountS3, reg: last, s3: g.proxy}
	return s.lazySet(ctx, t, readSet{"one-file", []string{s.gen.OneFile}}, false, false)
}

// gateway is versitygw serving a directory as S3 on a loopback port, with
// the counting proxy in front: the registry is given the proxy's address,
// so its presigned URLs point there too.
type gateway struct {
	addr   string
	proxy  *proxy.Proxy
	cmd    *exec.Cmd
	waited chan error
}

// startGateway serves dir/objects (with one bucket, s3Bucket) and its
// metadata in dir/sidecar, which is neither inside the root nor shares a
// name prefix with it.
func startGateway(bin, dir, logPath string) (*gateway, error) {
	root, meta := filepath.Join(dir, "objects"), filepath.Join(dir, "sidecar")
	for _, d := range []string{filepath.Join(root, s3Bucket), meta, filepath.Dir(logPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	addr, err := freeLoopback()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", addr, "--keep-alive", "--quiet", "posix", "--sidecar", meta, root)
	cmd.Env = append(withoutEnv(os.Environ(), "VGW_", "ROOT_"), "ROOT_ACCESS_KEY="+s3Access, "ROOT_SECRET_KEY="+s3Secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	g := &gateway{addr: addr, cmd: cmd, waited: make(chan error, 1)}
	go func() { g.waited <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-g.waited:
			g.waited <- err
			return nil, fmt.Errorf("versitygw exited: %v%s", err, tail(logPath))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, fmt.Errorf("versitygw not serving on %s after 15s%s", addr, tail(logPath))
		}
	}
	if g.proxy, err = proxy.Start("http://" + addr); err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

// env is what a registry on the gateway needs in its environment; the
// user's own AWS settings are kept out.
func (g *gateway) env() []string {
	return []string{
		"AWS_ENDPOINT_URL=http://" + g.proxy.Addr,
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=" + s3Access,
		"AWS_SECRET_ACCESS_KEY=" + s3Secret,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// stop stops the proxy and the gateway (SIGTERM to its PID, then SIGKILL
// if it lingers).
func (g *gateway) stop() {
	if g.proxy != nil {
		_ = g.proxy.Close()
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-g.waited:
		g.waited <- err
	case <-time.After(10 * time.Second):
		_ = g.cmd.Process.Kill()
	}
}

// freeLoopback is a loopback address whose port was free a moment ago.
func freeLoopback() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// withoutEnv drops the variables whose names start with any of prefixes.
func withoutEnv(env []string, prefixes ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, p := range prefixes {
			keep = keep && !strings.HasPrefix(kv, p)
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
