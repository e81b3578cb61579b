package integration

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// reliabilityDockerfile makes an image whose export, unpack, archive, push
// and index stages each take long enough to be interrupted in.
const reliabilityDockerfile = busyboxBase + `RUN mkdir -p /r && head -c 30000000 /dev/urandom > /r/big.bin
RUN mkdir -p /r/many && for i in $(seq 1 2000); do echo "file $i" > /r/many/f$i; done
`

// workingContainerRE matches the names buildah gives a build's working
// containers ("working-container", "<image-id>-working-container-3"); a
// test's own `buildah from --name` containers never match.
var workingContainerRE = regexp.MustCompile(`(^|-)working-container(-[0-9]+)?$`)

// leftoverWorkingContainers lists buildah working containers.
func leftoverWorkingContainers(t *testing.T) []string {
	t.Helper()
	out := buildahCmd(t, "containers", "--json")
	var cs []struct {
		ID   string `json:"id"`
		Name string `json:"containername"`
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("buildah containers --json: %v", err)
	}
	var ids []string
	for _, c := range cs {
		if workingContainerRE.MatchString(c.Name) {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// tmpEntries lists what a run left in its private TMPDIR.
func tmpEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// startBuild starts `clipbuild build` in the background with its own TMPDIR.
func startBuild(t *testing.T, tmp string, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	return startClipbuild(t, tmp, buildArgs(args...)...)
}

// startClipbuild starts clipbuild with args in the background with its own
// TMPDIR, its stdout and stderr in one buffer.
func startClipbuild(t *testing.T, tmp string, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(clipbuildBin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// checkOutputDir checks that dir holds nothing, or only a complete archive
// at want that inspect accepts.
func checkOutputDir(t *testing.T, dir, want string) (complete bool) {
	t.Helper()
	names := tmpEntries(t, dir)
	switch {
	case len(names) == 0:
		return false
	case len(names) == 1 && filepath.Join(dir, names[0]) == want:
		if res := clipbuild(t, "inspect", want); res.exitCode != 0 {
			t.Errorf("partial archive left at %s: %v", want, res)
		}
		return true
	default:
		t.Errorf("output directory holds %q, want nothing or only %s", names, filepath.Base(want))
		return false
	}
}

// scratchOf lists the entries of tmp that belong to the clipbuild process
// pid: its scratch tree, clipbuild-<pid>-N.
func scratchOf(t *testing.T, tmp string, pid int) []string {
	t.Helper()
	var names []string
	for _, n := range tmpEntries(t, tmp) {
		if strings.HasPrefix(n, fmt.Sprintf("clipbuild-%d-", pid)) {
			names = append(names, n)
		}
	}
	return names
}

// waitFor polls cond every 20ms until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestKillAtRandomLeavesNoPartialArchive SIGKILLs builds (v1 and v2
// alternately) at random moments and checks that the output directory never
// holds a partial archive, nor a temporary file. The trials share one
// TMPDIR: a killed run leaves its scratch tree there, and the next run must
// remove it, yet never the tree of a run that is still going. It runs
// alone, not in parallel, so that it can also count the working containers
// a killed buildah leaves behind and remove them.
func TestKillAtRandomLeavesNoPartialArchive(t *testing.T) {
	requirePrerequisites(t)
	const trials = 50
	reg := startRegistry(t, "")
	ctx := inlineContext(t, reliabilityDockerfile)
	image := imageName("kill")
	removeImageLater(t, image)

	// Warm buildah's layer cache and measure a whole run of each version.
	full := map[string]time.Duration{}
	for _, v := range []string{"1", "2"} {
		start := time.Now()
		out := filepath.Join(t.TempDir(), "warm.clip")
		mustSucceed(t, run(t, "", buildTimeout, clipbuildBin, buildArgs("--layers", "--clip-version", v,
			"--registry", reg.addr+"/kill", "-t", image, "-o", out, ctx)...))
		full[v] = time.Since(start)
	}
	t.Logf("full runs: v1 %v, v2 %v", full["1"], full["2"])

	rng := rand.New(rand.NewPCG(1, 2))
	var killedBefore, completed, leftScratch int
	tmp := t.TempDir()
	deadline := time.Now().Add(4 * time.Minute)
	for i := 0; i < trials; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d trials fit in the time bound", i, trials)
		}
		v := []string{"1", "2"}[i%2]
		dir := t.TempDir()
		out := filepath.Join(dir, "out.clip")
		delay := time.Duration(rng.Int64N(int64(full[v])))
		cmd, _ := startBuild(t, tmp, "--layers", "--clip-version", v, "--registry", reg.addr+"/kill", "-t", image, "-o", out, ctx)
		time.Sleep(delay)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if checkOutputDir(t, dir, out) {
			completed++
		} else {
			killedBefore++
		}
		if len(scratchOf(t, tmp, cmd.Process.Pid)) > 0 {
			leftScratch++
		}
	}
	checkStaleScratchRemoved(t, tmp, leftScratch, ctx, image)
	// A killed buildah is told to stop (parent-death signal) and may leave a
	// working container; clean those up so later tests start clean.
	time.Sleep(2 * time.Second)
	left := leftoverWorkingContainers(t)
	for _, id := range left {
		buildahCleanup(t, "rm", id)
	}
	if killedBefore == 0 {
		t.Errorf("no trial was killed before its archive was in place: the kills landed too late to test anything")
	}
	t.Logf("kill-at-random: %d trials, %d killed before the archive was in place, %d complete, 0 partial; %d scratch trees left by SIGKILL and removed by later runs; %d buildah working containers left by SIGKILL and removed",
		trials, killedBefore, completed, leftScratch, len(left))
}

// checkStaleScratchRemoved runs two builds in tmp, where killed runs left
// leftScratch scratch trees: a slow one, A, whose start must remove every
// tree of the killed runs, and while A runs a quick one, B, which must not
// remove A's tree. Both must succeed and leave tmp empty.
func checkStaleScratchRemoved(t *testing.T, tmp string, leftScratch int, ctx, image string) {
	t.Helper()
	if leftScratch == 0 {
		t.Fatalf("no killed run left a scratch tree in TMPDIR: the sweep was not exercised")
	}
	if len(tmpEntries(t, tmp)) == 0 {
		// The last trials left nothing: kill one more run once its tree is
		// there, so that A has a stale tree to remove.
		c, cOut := startBuild(t, tmp, "--clip-version", "1", "-t", image, "-o", filepath.Join(t.TempDir(), "c.clip"), ctx)
		made := waitFor(30*time.Second, func() bool { return len(scratchOf(t, tmp, c.Process.Pid)) > 0 })
		_ = c.Process.Signal(syscall.SIGKILL)
		_ = c.Wait()
		if !made || len(scratchOf(t, tmp, c.Process.Pid)) == 0 {
			t.Fatalf("a run killed after making its scratch tree left none in %s\n%s", tmp, cOut.String())
		}
	}
	t.Logf("before the sweep, TMPDIR holds %q", tmpEntries(t, tmp))
	slowImage := imageName("kill-slow")
	removeImageLater(t, slowImage)
	slowCtx := inlineContext(t, busyboxBase+"RUN sleep 15\n")
	a, aOut := startBuild(t, tmp, "--clip-version", "1", "-t", slowImage, "-o", filepath.Join(t.TempDir(), "a.clip"), slowCtx)
	aDone := make(chan error, 1)
	go func() { aDone <- a.Wait() }()
	running := func(done chan error) bool {
		select {
		case err := <-done:
			done <- err
			return false
		default:
			return true
		}
	}
	var aScratch []string
	if !waitFor(30*time.Second, func() bool { aScratch = scratchOf(t, tmp, a.Process.Pid); return len(aScratch) > 0 }) {
		t.Fatalf("run A made no scratch tree in %s (it holds %q)\n%s", tmp, tmpEntries(t, tmp), aOut.String())
	}
	if names := tmpEntries(t, tmp); len(names) != len(aScratch) {
		t.Errorf("after run A started, TMPDIR holds %q, want only A's %q: the trees of killed runs must go", names, aScratch)
	}
	b, bOut := startBuild(t, tmp, "--clip-version", "1", "-t", image, "-o", filepath.Join(t.TempDir(), "b.clip"), ctx)
	bDone := make(chan error, 1)
	go func() { bDone <- b.Wait() }()
	// B sweeps before it makes its own tree.
	if !waitFor(30*time.Second, func() bool { return len(scratchOf(t, tmp, b.Process.Pid)) > 0 || !running(bDone) }) {
		t.Fatalf("run B made no scratch tree in %s\n%s", tmp, bOut.String())
	}
	if !running(aDone) {
		t.Fatalf("run A ended before run B swept: the check of a live run's tree proves nothing\n%s", aOut.String())
	}
	if got := scratchOf(t, tmp, a.Process.Pid); len(got) != len(aScratch) {
		t.Errorf("run B removed the scratch tree of the live run A: A's entries %q, were %q", got, aScratch)
	}
	for name, done := range map[string]chan error{"B": bDone, "A": aDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run %s: %v\nA:\n%s\nB:\n%s", name, err, aOut.String(), bOut.String())
			}
		case <-time.After(buildTimeout):
			t.Fatalf("run %s did not finish", name)
		}
	}
	if names := tmpEntries(t, tmp); len(names) != 0 {
		t.Errorf("TMPDIR holds %q after the last runs ended, want nothing", names)
	}
}

// TestSignalStopsAndCleansUp interrupts builds with SIGINT and SIGTERM at
// random moments: each must stop within seconds, exit 130 with an Error line,
// and leave no archive, temporary directory or working container.
func TestSignalStopsAndCleansUp(t *testing.T) {
	requirePrerequisites(t)
	reg := startRegistry(t, "")
	ctx := inlineContext(t, reliabilityDockerfile)
	image := imageName("signal")
	removeImageLater(t, image)
	// Warm buildah's layer cache, then time a cached run of each version:
	// the signals land uniformly within such a run.
	full := map[string]time.Duration{}
	for _, v := range []string{"2", "1", "2"} {
		start := time.Now()
		mustSucceed(t, run(t, "", buildTimeout, clipbuildBin, buildArgs("--layers", "--clip-version", v,
			"--registry", reg.addr+"/sig", "-t", image, "-o", filepath.Join(t.TempDir(), "warm.clip"), ctx)...))
		full[v] = time.Since(start)
	}

	rng := rand.New(rand.NewPCG(3, 4))
	before := len(leftoverWorkingContainers(t))
	const wantInterrupted, maxTrials = 6, 30
	interrupted := 0
	for i := 0; interrupted < wantInterrupted && i < maxTrials; i++ {
		sig := []syscall.Signal{syscall.SIGINT, syscall.SIGTERM}[i%2]
		v := []string{"1", "2"}[(i/2)%2]
		dir, tmp := t.TempDir(), t.TempDir()
		out := filepath.Join(dir, "out.clip")
		started := time.Now()
		cmd, output := startBuild(t, tmp, "--layers", "--clip-version", v, "--registry", reg.addr+"/sig", "-t", image, "-o", out, ctx)
		delay := time.Duration(rng.Int64N(int64(full[v])))
		// A signal that lands before clipbuild has set up its handlers (in
		// the first milliseconds, while Go and its packages initialise)
		// kills it as it would any program: the signal waits for its first
		// output, which comes later.
		if !waitFor(10*time.Second, func() bool { return output.String() != "" }) {
			t.Fatalf("trial %d: no output within 10s\n%s", i, output.String())
		}
		time.Sleep(delay - time.Since(started))
		sent := time.Now()
		_ = cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("trial %d: still running 30s after %v\n%s", i, sig, output.String())
		}
		took := time.Since(sent)
		code := cmd.ProcessState.ExitCode()
		if code == 0 {
			checkOutputDir(t, dir, out) // finished before the signal landed
		} else {
			interrupted++
			if code != 130 {
				t.Errorf("trial %d (%v, v%s): exit code %d, want 130\n%s", i, sig, v, code, output.String())
			}
			lines := strings.Split(strings.TrimSpace(output.String()), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "Error: ") {
				t.Errorf("trial %d: last line %q, want an Error line", i, last)
			}
			if names := tmpEntries(t, dir); len(names) != 0 {
				t.Errorf("trial %d: output directory holds %q after %v", i, names, sig)
			}
		}
		if names := tmpEntries(t, tmp); len(names) != 0 {
			t.Errorf("trial %d (%v, v%s): temporary files left: %q", i, sig, v, names)
		}
		if now := len(leftoverWorkingContainers(t)); now != before {
			t.Errorf("trial %d (%v, v%s): %d working containers left behind", i, sig, v, now-before)
		}
		t.Logf("trial %d: %v, v%s, stopped in %v, exit %d", i, sig, v, took.Round(time.Millisecond), code)
	}
	if interrupted < wantInterrupted {
		t.Errorf("only %d runs were interrupted mid-run in %d trials, want %d: the signals landed after the runs ended", interrupted, maxTrials, wantInterrupted)
	}
}

// faultProxy is a loopback reverse proxy in front of a registry that can
// fail requests on purpose.
type faultProxy struct {
	addr  string
	fault atomic.Value // func(*http.Request) (status int, drop bool)
	hits  atomic.Int64
}

func startFaultProxy(t *testing.T, backend string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse("http://" + backend)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &faultProxy{addr: ln.Addr().String()}
	p.fault.Store(func(*http.Request) (int, bool) { return 0, false })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, drop := p.fault.Load().(func(*http.Request) (int, bool))(r)
		if status != 0 || drop {
			p.hits.Add(1)
		}
		switch {
		case drop:
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case status != 0:
			_, _ = io.Copy(io.Discard, r.Body)
			http.Error(w, "injected fault", status)
		default:
			rp.ServeHTTP(w, r)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// isUpload reports whether r writes to the registry.
func isUpload(r *http.Request) bool {
	return r.Method == http.MethodPost || r.Method == http.MethodPatch || r.Method == http.MethodPut
}

// TestRegistryFaults makes the registry answer 500s, drop connections, or
// die in the middle of a push: auto mode falls back to v1 with the reason,
// strict v2 fails cleanly, and a transient fault is retried (and logged)
// until the push goes through.
func TestRegistryFaults(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	proxy := startFaultProxy(t, reg.addr)
	ctx := inlineContext(t, busyboxBase+"RUN echo faults > /f.txt\n")
	image := imageName("faults")
	removeImageLater(t, image)
	build := func(args ...string) (result, string) {
		dir := t.TempDir()
		out := filepath.Join(dir, "out.clip")
		res := run(t, "", buildTimeout, clipbuildBin, buildArgs(append([]string{"--json", "-t", image, "-o", out,
			"--registry", proxy.addr + "/faults"}, append(args, ctx)...)...)...)
		return res, dir
	}
	type resultJSON struct {
		ClipVersion    int
		FallbackReason string
	}
	parse := func(res result) resultJSON {
		var r resultJSON
		if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%v", err, res)
		}
		return r
	}

	faults := map[string]func(*http.Request) (int, bool){
		"500 on every upload":        func(r *http.Request) (int, bool) { return statusIf(isUpload(r), 500), false },
		"dropped upload connections": func(r *http.Request) (int, bool) { return 0, isUpload(r) },
	}
	for name, fault := range faults {
		proxy.fault.Store(fault)
		res, _ := build() // auto
		mustSucceed(t, res)
		if r := parse(res); r.ClipVersion != 1 || r.FallbackReason == "" {
			t.Errorf("%s, auto: got clipVersion %d, fallbackReason %q; want v1 with a reason", name, r.ClipVersion, r.FallbackReason)
		}
		if !strings.Contains(res.stderr, "retrying") || !strings.Contains(res.stderr, "falling back to v1: ") {
			t.Errorf("%s, auto: want logged retries and the fallback\n%v", name, res)
		}
		res, dir := build("--clip-version", "2")
		assertCleanFailure(t, res)
		assertDirEmpty(t, dir)
	}

	// Transient: the first two uploads fail, then the registry recovers.
	var n atomic.Int64
	proxy.fault.Store(func(r *http.Request) (int, bool) {
		if isUpload(r) && n.Add(1) <= 2 {
			return 503, false
		}
		return 0, false
	})
	res, _ := build("--clip-version", "2")
	mustSucceed(t, res)
	if !strings.Contains(res.stderr, "retrying") {
		t.Errorf("transient fault: want a logged retry\n%v", res)
	}

	// The registry dies in the middle of the push.
	var once sync.Once
	proxy.fault.Store(func(r *http.Request) (int, bool) {
		if r.Method == http.MethodPatch || r.Method == http.MethodPut {
			once.Do(func() { _ = reg.cmd.Process.Kill() })
		}
		return 0, false
	})
	res, _ = build()
	mustSucceed(t, res)
	if r := parse(res); r.ClipVersion != 1 || r.FallbackReason == "" {
		t.Errorf("registry died mid-push, auto: got clipVersion %d, fallbackReason %q; want v1 with a reason", r.ClipVersion, r.FallbackReason)
	}
}

func statusIf(cond bool, status int) int {
	if cond {
		return status
	}
	return 0
}

// TestMountRegistryGone stops the registry under a v2 mount: data already
// fetched keeps being served, unfetched data fails with EIO in bounded time,
// and the mount still unmounts cleanly.
func TestMountRegistryGone(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	ctx := inlineContext(t, busyboxBase+"RUN echo first > /first.txt\nRUN echo second > /second.txt\n")
	out, res := buildV2(t, ctx, imageName("gone"), "--layers", "--clip-version", "2", "--registry", reg.addr+"/gone")
	checkV2Result(t, out, res, reg.addr+"/gone/")
	m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir())
	tree{t, "v2 mount", m.dir}.file("first.txt", "first\n")
	reg.stop(t)

	start := time.Now()
	_, err := os.ReadFile(filepath.Join(m.dir, "second.txt"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("reading unfetched data with the registry gone: got %v, want EIO", err)
	}
	if took := time.Since(start); took > 90*time.Second {
		t.Errorf("the failing read took %v, want it bounded", took)
	}
	tree{t, "v2 mount", m.dir}.file("first.txt", "first\n")
	if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
		t.Errorf("unmount with the registry gone: exit %d, %v", code, err)
	}
}

// TestConcurrentBuilds runs eight builds at once on one host: two
// Dockerfiles, shared and distinct tags, v1 and v2, one output directory.
// All must succeed and each archive must match its own Dockerfile's tree.
func TestConcurrentBuilds(t *testing.T) {
	requirePrerequisites(t)
	reg := startRegistry(t, "")
	ctxs := []string{
		inlineContext(t, busyboxBase+"RUN mkdir /w && echo alpha > /w/which.txt && ln /w/which.txt /w/link\n"),
		inlineContext(t, busyboxBase+"RUN mkdir /w && echo beta > /w/which.txt && mkfifo /w/pipe\n"),
	}
	outDir := t.TempDir()
	type job struct {
		ctx, tag, version, out string
		which                  string
	}
	var jobs []job
	for i := 0; i < 8; i++ {
		tag := imageName(fmt.Sprintf("conc-shared-%d", i%2)) // pairs share a tag
		if i >= 4 {
			tag = imageName(fmt.Sprintf("conc-%d", i))
		}
		removeImageLater(t, tag)
		jobs = append(jobs, job{ctx: ctxs[i%2], tag: tag, version: []string{"1", "2"}[(i/2)%2],
			out: filepath.Join(outDir, fmt.Sprintf("build-%d.clip", i)), which: []string{"alpha", "beta"}[i%2]})
	}
	var wg sync.WaitGroup
	results := make([]result, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = run(t, "", buildTimeout, clipbuildBin, buildArgs("--clip-version", j.version,
				"--registry", reg.addr+"/conc", "-t", j.tag, "-o", j.out, j.ctx)...)
		}()
	}
	wg.Wait()
	refs := map[string]string{}
	for i, j := range jobs {
		if results[i].exitCode != 0 {
			t.Errorf("build %d failed: %v", i, results[i])
			continue
		}
		if refs[j.which] == "" {
			ref := imageName("conc-ref-" + j.which)
			removeImageLater(t, ref)
			mustSucceed(t, run(t, "", buildTimeout, "buildah", append(append([]string{"bud"}, isolationArgs()...), "-t", ref, j.ctx)...))
			refs[j.which] = buildahRootfs(t, ref, namePrefix+"-conc-ref-"+j.which)
		}
		res := clipbuild(t, "verify", j.out, "--rootfs", refs[j.which], "--cache-dir", t.TempDir())
		if res.exitCode != 0 {
			t.Errorf("build %d (v%s, %s): archive does not match its Dockerfile: %v", i, j.version, j.which, res)
		}
	}
	if names := tmpEntries(t, outDir); len(names) != len(jobs) {
		t.Errorf("output directory holds %q, want the %d archives only", names, len(jobs))
	}
}

// TestSecretsNeverLeak builds with a --secret file and registry credentials,
// and pulls with an auth file, at debug level, then looks for the secrets in
// everything clipbuild printed or wrote, and in the image.
func TestSecretsNeverLeak(t *testing.T) {
	heavy(t)
	const user, pass = "leak-user", "Pa55-never-print-7f3a"
	const secret = "secret-file-content-9c1e"
	reg := startRegistry(t, "", "--htpasswd", writeHtpasswd(t, user, pass))
	secretFile := filepath.Join(t.TempDir(), "token")
	mustDo(t, os.WriteFile(secretFile, []byte(secret), 0o600))
	authB64 := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	authFile := filepath.Join(t.TempDir(), "auth.json")
	mustDo(t, os.WriteFile(authFile, []byte(`{"auths":{"`+reg.addr+`":{"auth":"`+authB64+`"}}}`), 0o600))
	needles := []string{pass, secret, authB64}
	check := func(what, haystack string) {
		t.Helper()
		for _, n := range needles {
			if strings.Contains(haystack, n) {
				t.Errorf("%s contains a secret (%.6s...)", what, n)
			}
		}
	}

	ctx := inlineContext(t, busyboxBase+"RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /token-length\n")
	image := imageName("secrets")
	out, res := buildV2(t, ctx, image, "--clip-version", "2", "--registry", reg.addr+"/sec",
		"--creds", user+":"+pass, "--secret", "id=token,src="+secretFile, "--log-level", "debug")
	checkV2Result(t, out, res, reg.addr+"/sec/")
	check("build output", res.stdout+res.stderr)
	raw, err := os.ReadFile(out.Archive)
	mustDo(t, err)
	check("the v2 archive", string(raw))
	check("buildah inspect of the image", buildahCmd(t, "inspect", "--type", "image", image))

	m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir(), "--authfile", authFile)
	tree{t, "v2 mount", m.dir}.file("token-length", fmt.Sprintf("%d\n", len(secret)))
	checkTree := func(what, root string) {
		t.Helper()
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			check(what+" "+strings.TrimPrefix(p, root), string(b))
			return nil
		})
		mustDo(t, err)
	}
	checkTree("the v2 mount", m.dir)

	// The same build as v1, logging JSON: the self-contained archive, its
	// mount and the JSON logs hold no secret either.
	v1 := filepath.Join(t.TempDir(), "v1.clip")
	v1Image := imageName("secrets-v1")
	removeImageLater(t, v1Image)
	v1res := run(t, "", buildTimeout, clipbuildBin, buildArgs("--clip-version", "1", "-t", v1Image, "-o", v1,
		"--secret", "id=token,src="+secretFile, "--log-level", "debug", "--log-format", "json", ctx)...)
	mustSucceed(t, v1res)
	check("v1 build output", v1res.stdout+v1res.stderr)
	raw, err = os.ReadFile(v1)
	mustDo(t, err)
	check("the v1 archive", string(raw))
	check("buildah inspect of the v1 image", buildahCmd(t, "inspect", "--type", "image", v1Image))
	m1 := mountArchive(t, v1, "--cache-dir", t.TempDir())
	tree{t, "v1 mount", m1.dir}.file("token-length", fmt.Sprintf("%d\n", len(secret)))
	checkTree("the v1 mount", m1.dir)

	for _, version := range []string{"2", "1"} {
		archive := filepath.Join(t.TempDir(), "pulled.clip")
		res := clipbuild(t, "pull", out.ImageRef, "--clip-version", version, "--authfile", authFile, "-o", archive, "--log-level", "debug", "--json")
		mustSucceed(t, res)
		check("pull v"+version+" output", res.stdout+res.stderr)
		raw, err := os.ReadFile(archive)
		mustDo(t, err)
		check("the pulled v"+version+" archive", string(raw))
	}
	bad := clipbuild(t, "pull", out.ImageRef, "--creds", user+":"+pass+"x", "-o", filepath.Join(t.TempDir(), "x.clip"), "--log-level", "debug")
	assertCleanFailure(t, bad)
	check("a failed pull's output", bad.stdout+bad.stderr)
}
