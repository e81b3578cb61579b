package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrBuildahMissing is returned when buildah is not installed.
var ErrBuildahMissing = errors.New("buildah not found: run `make deps` or apt-get install buildah")

// ExitError is a child process that exited non-zero. Its message carries the
// tail of the child's stderr, and ExitCode passes the status through.
type ExitError struct {
	Cmd  string
	Code int
	Tail string
}

func (e *ExitError) Error() string {
	if e.Tail == "" {
		return fmt.Sprintf("%s exited with status %d", e.Cmd, e.Code)
	}
	return fmt.Sprintf("%s exited with status %d: %s", e.Cmd, e.Code, e.Tail)
}

// ExitCode is the child's exit status.
func (e *ExitError) ExitCode() int { return e.Code }

// Buildah runs the buildah CLI.
type Buildah struct {
	path   string
	stderr io.Writer
	log    *logrus.Entry
}

// NewBuildah finds buildah on PATH. Its progress output is streamed to
// stderr as it runs.
func NewBuildah(stderr io.Writer, log *logrus.Entry) (*Buildah, error) {
	p, err := exec.LookPath("buildah")
	if err != nil {
		return nil, ErrBuildahMissing
	}
	return &Buildah{path: p, stderr: stderr, log: log}, nil
}

// tailWriter keeps the last lines written to it.
type tailWriter struct {
	buf bytes.Buffer
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if t.buf.Len() > 64<<10 {
		b := t.buf.Bytes()
		t.buf = *bytes.NewBuffer(append([]byte(nil), b[len(b)-16<<10:]...))
	}
	return len(p), nil
}

// last returns the last non-empty line, which is where buildah puts its
// reason for failing.
func (t *tailWriter) last() string {
	lines := strings.Split(strings.TrimSpace(t.buf.String()), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return strings.TrimPrefix(l, "Error: ")
		}
	}
	return ""
}

// run executes buildah with args, streaming its stderr (and, when stream is
// set, its stdout) to the user, and returns its stdout.
func (b *Buildah) run(ctx context.Context, stream bool, args ...string) (string, error) {
	return b.runIn(ctx, "", stream, args...)
}

// runIn is run with buildah's TMPDIR set to tmpdir (unless it is empty):
// what buildah writes there goes when the caller removes tmpdir, even if
// clipbuild was killed and buildah never got to remove it itself.
func (b *Buildah) runIn(ctx context.Context, tmpdir string, stream bool, args ...string) (string, error) {
	// buildah opens exactly the store clipbuild opens (StoreOptionsInUse).
	store, err := StoreOptionsInUse()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, b.path, append(BuildahStoreArgs(store), args...)...)
	// On cancellation buildah gets SIGTERM and time to remove its working
	// container and mounts; only then is it killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	// If clipbuild itself dies (SIGKILL included), buildah is told to stop
	// rather than finish a build nobody will archive.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if tmpdir != "" {
		cmd.Env = append(os.Environ(), "TMPDIR="+tmpdir)
	}
	var stdout bytes.Buffer
	tail := &tailWriter{}
	// One filter per stream, so partial lines of the two never mix.
	shared := &lockedWriter{w: b.stderr}
	userErr, userOut := &unusedArgFilter{w: shared}, &unusedArgFilter{w: shared}
	defer userErr.Flush()
	defer userOut.Flush()
	cmd.Stderr = io.MultiWriter(userErr, tail)
	cmd.Stdout = &stdout
	if stream {
		cmd.Stdout = io.MultiWriter(userOut, &stdout)
	}
	b.log.Debugf("running %s", strings.Join(cmd.Args, " "))
	err = cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return "", &ExitError{Cmd: "buildah " + args[0], Code: ee.ExitCode(), Tail: tail.last()}
	}
	return "", fmt.Errorf("running buildah %s: %w", args[0], err)
}

// BudOptions are the `buildah bud` flags clipbuild passes through.
type BudOptions struct {
	ContextDir string
	File       string   // Dockerfile path; the default is ContextDir/Dockerfile.
	Tags       []string // The default is one generated unique local name.
	BuildArgs  []string
	Target     string
	Platform   string
	Layers     *bool // nil leaves buildah's default.
	Isolation  string
	// Secrets (id=ID,src=PATH) and SSH (default|ID[=SOCKET|KEY[,KEY]])
	// reach buildah as its own --secret and --ssh, never as build
	// arguments: buildah keeps build arguments in the image's history.
	Secrets []string
	SSH     []string
	// Labels and Annotations are K=V; labels go into the image config,
	// annotations into its manifest.
	Labels      []string
	Annotations []string
	// BuildContexts are NAME=VALUE: a directory, an image or a URL that
	// COPY --from=NAME and FROM NAME read.
	BuildContexts []string
}

// Image is a built image in containers-storage.
type Image struct {
	Name string // the first tag, as buildah stores it (localhost/name:tag)
	ID   string
}

// StoreRef names the image in containers-storage by ID when it is known: a
// concurrent build may move the tag to another image meanwhile.
func (i Image) StoreRef() string {
	if len(i.ID) == 64 {
		return "@" + i.ID
	}
	return i.Name
}

// UniqueName returns a fresh local image name built from base.
func UniqueName(base string) string {
	return fmt.Sprintf("localhost/%s-%s:latest", base, randomHex(4))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// buildIDArg is a build argument clipbuild gives every build so that the
// build's working containers can be told from anyone else's: buildah keeps
// build arguments in each working container's metadata. No Dockerfile
// declares it, so it reaches neither the image nor its history.
const buildIDArg = "CLIPBUILD_BUILD_ID"

// removeWorkingContainers removes the working containers of the build
// with the given ID.
func (b *Buildah) removeWorkingContainers(ctx context.Context, buildID string) error {
	store, release, err := OpenStore(ctx)
	if err != nil {
		return err
	}
	containers, err := store.Containers()
	var ours []string
	if err == nil {
		for _, c := range containers {
			raw, err := store.FromContainerDirectory(c.ID, "buildah.json")
			if err != nil {
				continue // not a buildah container
			}
			var meta struct{ Args map[string]string }
			if json.Unmarshal(raw, &meta) == nil && meta.Args[buildIDArg] == buildID {
				ours = append(ours, c.ID)
			}
		}
	}
	release()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ours {
		b.log.Debugf("removing working container %s of the failed build", id[:12])
		if _, err := b.run(ctx, false, "rm", id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unusedArgFilter drops buildah's warning that our build ID argument was
// not consumed (it never is) from the stream the user sees.
type unusedArgFilter struct {
	mu      sync.Mutex
	w       io.Writer
	partial []byte
}

// lockedWriter serialises writes from buildah's two output streams.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var unusedArgWarning = []byte("[Warning] one or more build args were not consumed: [" + buildIDArg + "]")

func (f *unusedArgFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.partial = append(f.partial, p...)
	for {
		i := bytes.IndexByte(f.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := f.partial[:i+1]
		if !bytes.Equal(bytes.TrimSpace(line), unusedArgWarning) {
			if _, err := f.w.Write(line); err != nil {
				return len(p), err
			}
		}
		f.partial = f.partial[i+1:]
	}
}

// Flush writes what is left of an unterminated last line.
func (f *unusedArgFilter) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.partial) > 0 {
		_, _ = f.w.Write(f.partial)
		f.partial = nil
	}
}

// Dockerfile resolves the Dockerfile path the way buildah does and checks
// that it exists, so the error names the path.
func (o BudOptions) Dockerfile() (string, error) {
	f := o.File
	if f == "" {
		f = filepath.Join(o.ContextDir, "Dockerfile")
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			if _, err2 := os.Stat(filepath.Join(o.ContextDir, "Containerfile")); err2 == nil {
				f = filepath.Join(o.ContextDir, "Containerfile")
			}
		}
	}
	st, err := os.Stat(f)
	if err != nil {
		return "", fmt.Errorf("dockerfile %s: %w", f, errors.Unwrap(err))
	}
	if st.IsDir() {
		return "", fmt.Errorf("dockerfile %s is a directory", f)
	}
	return f, nil
}

// BudArgs is the buildah command line for o, writing the image ID to iidfile.
func BudArgs(o BudOptions, dockerfile, iidfile string) []string {
	args := []string{"bud", "--iidfile", iidfile, "-f", dockerfile}
	for _, t := range o.Tags {
		args = append(args, "-t", t)
	}
	for _, a := range o.BuildArgs {
		args = append(args, "--build-arg", a)
	}
	if o.Target != "" {
		args = append(args, "--target", o.Target)
	}
	if o.Platform != "" {
		args = append(args, "--platform", o.Platform)
	}
	if o.Layers != nil {
		args = append(args, fmt.Sprintf("--layers=%t", *o.Layers))
		if *o.Layers {
			// A failed build must not leave its working container; buildah
			// removes it by itself without --layers, and refuses the flag.
			args = append(args, "--force-rm")
		}
	}
	if o.Isolation != "" {
		args = append(args, "--isolation", o.Isolation)
	}
	for _, s := range o.Secrets {
		args = append(args, "--secret", s)
	}
	for _, s := range o.SSH {
		args = append(args, "--ssh", s)
	}
	for _, l := range o.Labels {
		args = append(args, "--label", l)
	}
	for _, a := range o.Annotations {
		args = append(args, "--annotation", a)
	}
	for _, c := range o.BuildContexts {
		args = append(args, "--build-context", c)
	}
	return append(args, o.ContextDir)
}

// Bud builds the image described by o. scratch is a directory for Bud's own
// files (the image ID file) and buildah's TMPDIR (its run directories, the
// layer blob of a commit), which the caller removes: a run that is killed
// then leaves nothing of Bud's or buildah's outside it.
func (b *Buildah) Bud(ctx context.Context, o BudOptions, scratch string) (Image, error) {
	dockerfile, err := o.Dockerfile()
	if err != nil {
		return Image{}, err
	}
	if st, err := os.Stat(o.ContextDir); err != nil || !st.IsDir() {
		return Image{}, fmt.Errorf("build context %s is not a directory", o.ContextDir)
	}
	if len(o.Tags) == 0 {
		return Image{}, errors.New("no image name given")
	}
	iid, err := os.CreateTemp(scratch, "iid-")
	if err != nil {
		return Image{}, fmt.Errorf("creating image id file: %w", err)
	}
	iid.Close()
	defer os.Remove(iid.Name())
	buildID := randomHex(8)
	args := BudArgs(o, dockerfile, iid.Name())
	args = append(args[:len(args)-1], "--build-arg", buildIDArg+"="+buildID, args[len(args)-1])
	if _, err := b.runIn(ctx, scratch, true, args...); err != nil {
		// buildah leaves its working containers behind when it is stopped
		// in some phases; ours carry the build ID, so only ours go.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := b.removeWorkingContainers(cctx, buildID); rerr != nil {
			b.log.Warnf("removing working containers of the failed build: %v", rerr)
		}
		return Image{}, err
	}
	id, err := os.ReadFile(iid.Name())
	if err != nil {
		return Image{}, fmt.Errorf("reading image id: %w", err)
	}
	return Image{Name: normalizeName(o.Tags[0]), ID: strings.TrimPrefix(strings.TrimSpace(string(id)), "sha256:")}, nil
}

// normalizeName spells a short name the way buildah stores it.
func normalizeName(name string) string {
	if strings.Contains(name, "@") {
		return name
	}
	first := strings.SplitN(name, "/", 2)[0]
	if !strings.Contains(name, "/") || !(strings.ContainsAny(first, ".:") || first == "localhost") {
		name = "localhost/" + name
	}
	last := name[strings.LastIndex(name, "/")+1:]
	if !strings.Contains(last, ":") && !strings.Contains(last, "@") {
		name += ":latest"
	}
	return name
}

// RemoveImage removes the local image name. An image that has other names
// only loses this one, and one that a container uses stays: neither belongs
// to the caller alone.
func (b *Buildah) RemoveImage(ctx context.Context, name string) error {
	_, err := b.run(ctx, false, "rmi", name)
	return err
}

// MountImage creates a working container from image and mounts its rootfs.
// release unmounts and removes the container.
func (b *Buildah) MountImage(ctx context.Context, image string) (dir string, release func(context.Context) error, err error) {
	name := "clipbuild-verify-" + randomHex(4)
	if _, err := b.run(ctx, false, "from", "--pull-never", "--name", name, image); err != nil {
		return "", nil, fmt.Errorf("creating container from %s: %w", image, err)
	}
	release = func(ctx context.Context) error {
		_, err := b.run(ctx, false, "rm", name)
		return err
	}
	out, err := b.run(ctx, false, "mount", name)
	if err != nil {
		_ = release(context.WithoutCancel(ctx))
		return "", nil, fmt.Errorf("mounting container %s: %w", name, err)
	}
	return strings.TrimSpace(out), release, nil
}
