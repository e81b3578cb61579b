package integration

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The CI-shaped behaviour of issue 11: heartbeats during silent steps,
// JSON logs, exit statuses, and the build inputs a CI job passes.

// heartbeats counts the heartbeat lines of stage in stderr.
func heartbeats(stderr, stage string) int {
	return strings.Count(stderr, "still building ("+stage+", ")
}

// TestCIHeartbeatDuringSilentStep is the case as it is: a build
// whose step prints nothing for 25 s, no terminal, the default interval of
// 10 s: at least two heartbeats, naming the build stage.
func TestCIHeartbeatDuringSilentStep(t *testing.T) {
	heavy(t)
	ctx := inlineContext(t, busyboxBase+"RUN sleep 25\n")
	image := imageName("ci-heartbeat")
	removeImageLater(t, image)
	out := filepath.Join(t.TempDir(), "hb.clip")
	res := runEnv(t, "", buildTimeout, []string{"CLIPBUILD_HEARTBEAT="}, clipbuildBin,
		buildArgs("--clip-version", "1", "-t", image, "-o", out, ctx)...)
	mustSucceed(t, res)
	if n := heartbeats(res.stderr, "build"); n < 2 {
		t.Errorf("got %d `still building (build, ...)` lines during a silent 25 s step, want at least 2\n%v", n, res)
	}
}

// TestCIHeartbeatInterval: CLIPBUILD_HEARTBEAT sets the interval, and a
// stage with output flowing gets none.
func TestCIHeartbeatInterval(t *testing.T) {
	heavy(t)
	ctx := inlineContext(t, busyboxBase+"RUN sleep 4\n")
	image := imageName("ci-heartbeat-1s")
	removeImageLater(t, image)
	out := filepath.Join(t.TempDir(), "hb.clip")
	res := runEnv(t, "", buildTimeout, []string{"CLIPBUILD_HEARTBEAT=1s"}, clipbuildBin,
		buildArgs("--clip-version", "1", "-t", image, "-o", out, ctx)...)
	mustSucceed(t, res)
	if n := heartbeats(res.stderr, "build"); n < 2 || n > 6 {
		t.Errorf("got %d heartbeats during a silent 4 s step at a 1 s interval, want 2 to 6\n%v", n, res)
	}
}

// jsonLines checks that every stderr line is one JSON object with time,
// level and msg, and returns them.
func jsonLines(t *testing.T, res result) []map[string]any {
	t.Helper()
	var entries []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("stderr line %d is not a JSON object: %q: %v", i+1, line, err)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := e[k].(string); !ok {
				t.Errorf("stderr line %d lacks a string %q: %q", i+1, k, line)
			}
		}
		entries = append(entries, e)
	}
	return entries
}

// TestCIJSONLogs: with --log-format json every stderr line is a JSON
// object, buildah's lines included (with "source": "buildah"), as are
// heartbeats, progress lines and, for a failed build, the last line.
func TestCIJSONLogs(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	dockerfile := busyboxBase + "COPY blob /blob\nRUN sleep 2\n"
	ctx := inlineContext(t, dockerfile)
	blob := make([]byte, 24<<20)
	_, _ = rand.Read(blob)
	mustDo(t, os.WriteFile(filepath.Join(ctx, "blob"), blob, 0o644))

	// A short interval, so that the push's progress lines show too.
	env := []string{"CLIPBUILD_HEARTBEAT=20ms"}
	out, res := buildV2Env(t, env, ctx, imageName("ci-json"), "--clip-version", "2", "--registry", reg.addr+"/ci", "--log-format", "json")
	if out.ClipVersion != 2 {
		t.Errorf("clipVersion %d, want 2", out.ClipVersion)
	}
	var fromBuildah, beats, progress int
	for _, e := range jsonLines(t, res) {
		msg, _ := e["msg"].(string)
		switch {
		case e["source"] == "buildah":
			fromBuildah++
		case strings.HasPrefix(msg, "still building (build, "):
			beats++
		case strings.HasPrefix(msg, "push: "):
			progress++
		}
		if strings.HasPrefix(msg, "STEP ") && e["source"] != "buildah" {
			t.Errorf("buildah's line %q has source %v, want buildah", msg, e["source"])
		}
	}
	if fromBuildah < 5 || beats == 0 || progress == 0 {
		t.Errorf("got %d buildah lines, %d heartbeats, %d push progress lines; want each (buildah's at least 5)\n%v", fromBuildah, beats, progress, res)
	}

	bad := inlineContext(t, busyboxBase+"RUN echo about to fail; exit 3\n")
	image := imageName("ci-json-fail")
	removeImageLater(t, image)
	fail := run(t, "", buildTimeout, clipbuildBin, buildArgs("--log-format", "json", "-t", image, "-o", filepath.Join(t.TempDir(), "x.clip"), bad)...)
	if fail.exitCode != 3 {
		t.Errorf("failed RUN (exit 3): clipbuild exited %d, want 3\n%v", fail.exitCode, fail)
	}
	entries := jsonLines(t, fail)
	if len(entries) == 0 {
		t.Fatalf("no stderr\n%v", fail)
	}
	last := entries[len(entries)-1]
	if msg, _ := last["msg"].(string); last["level"] != "error" || !strings.HasPrefix(msg, "Error: ") {
		t.Errorf("last stderr line %v, want level error and msg \"Error: ...\"", last)
	}
	if !strings.Contains(fail.stderr, `"msg":"about to fail","source":"buildah"`) {
		t.Errorf("the RUN's own output is not a buildah line\n%v", fail)
	}

	usage := clipbuild(t, "build", "--log-format", "json", "--bogus")
	if usage.exitCode != 2 {
		t.Errorf("unknown flag: exit %d, want 2\n%v", usage.exitCode, usage)
	}
	if e := jsonLines(t, usage); len(e) != 1 || e[0]["level"] != "error" {
		t.Errorf("usage error in json mode: got %v, want one error object", e)
	}
}

// TestCIExitStatus: 2 for a command line that cannot run, buildah's own
// status when buildah fails, 1 for any other failure.
func TestCIExitStatus(t *testing.T) {
	requirePrerequisites(t)
	ctx := inlineContext(t, busyboxBase)
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"build", "--no-such-flag", ctx}},
		{"extra argument", []string{"build", ctx, ctx}},
		{"bad --clip-version", []string{"build", "--clip-version", "9", ctx}},
		{"bad --tls-verify", []string{"build", "--tls-verify=maybe", ctx}},
		{"pull without image", []string{"pull"}},
		{"default command, unknown flag", []string{"--no-such-flag", ctx}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := clipbuild(t, tt.args...)
			if res.exitCode != 2 {
				t.Errorf("exit %d, want 2 (usage error)\n%v", res.exitCode, res)
			}
			assertCleanFailure(t, res)
		})
	}
	t.Run("failing RUN", func(t *testing.T) {
		heavy(t)
		bad := inlineContext(t, busyboxBase+"RUN exit 5\n")
		image := imageName("ci-exit-run")
		removeImageLater(t, image)
		direct := run(t, "", buildTimeout, "buildah", append(append([]string{"bud"}, isolationArgs()...), "-t", image, bad)...)
		if direct.exitCode == 0 {
			t.Fatalf("buildah built a failing RUN\n%v", direct)
		}
		res := run(t, "", buildTimeout, clipbuildBin, buildArgs("-t", image, "-o", filepath.Join(t.TempDir(), "x.clip"), bad)...)
		if res.exitCode != direct.exitCode {
			t.Errorf("clipbuild exit %d, buildah's own %d: want buildah's passed through\n%v", res.exitCode, direct.exitCode, res)
		}
		assertCleanFailure(t, res)
	})
	t.Run("other failure", func(t *testing.T) {
		heavy(t)
		image := imageName("ci-exit-other")
		removeImageLater(t, image)
		res := run(t, "", buildTimeout, clipbuildBin, buildArgs("--clip-version", "2", "--registry", closedPort(t)+"/x",
			"-t", image, "-o", filepath.Join(t.TempDir(), "x.clip"), inlineContext(t, busyboxBase))...)
		if res.exitCode != 1 {
			t.Errorf("unreachable registry: exit %d, want 1\n%v", res.exitCode, res)
		}
		assertCleanFailure(t, res)
	})
}

// buildahImage is what the test reads of `buildah inspect --type image`.
type buildahImage struct {
	FromImageID      string
	ImageAnnotations map[string]string
	OCIv1            struct {
		Config struct {
			Labels map[string]string
		} `json:"config"`
	}
}

func inspectImage(t *testing.T, image string) buildahImage {
	t.Helper()
	var img buildahImage
	if err := json.Unmarshal([]byte(buildahCmd(t, "inspect", "--type", "image", image)), &img); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestCIBuildInputs: --label, --annotation, --iidfile and --build-context
// reach buildah and the image, and .dockerignore keeps a file out of the
// context, so out of the archive.
func TestCIBuildInputs(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	ctx := inlineContext(t, busyboxBase+"COPY . /ctx/\nCOPY --from=extra note.txt /extra/note.txt\n")
	mustDo(t, os.WriteFile(filepath.Join(ctx, "kept.txt"), []byte("kept\n"), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(ctx, "ignored.txt"), []byte("ignored\n"), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(ctx, "build.log"), []byte("log\n"), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(ctx, ".dockerignore"), []byte("ignored.txt\n*.log\n"), 0o644))
	extra := t.TempDir()
	mustDo(t, os.WriteFile(filepath.Join(extra, "note.txt"), []byte("from the extra context\n"), 0o644))
	iidfile := filepath.Join(t.TempDir(), "image.id")

	image := imageName("ci-inputs")
	out, res := buildV2(t, ctx, image, "--clip-version", "2", "--registry", reg.addr+"/ci",
		"--label", "ci.label=yes", "--label", "ci.spaced=two words", "--annotation", "ci.annotation=present",
		"--iidfile", iidfile, "--build-context", "extra="+extra)
	checkV2Result(t, out, res, reg.addr+"/ci/")

	img := inspectImage(t, image)
	for k, want := range map[string]string{"ci.label": "yes", "ci.spaced": "two words"} {
		if got := img.OCIv1.Config.Labels[k]; got != want {
			t.Errorf("image label %s = %q, want %q", k, got, want)
		}
	}
	if got := img.ImageAnnotations["ci.annotation"]; got != "present" {
		t.Errorf("image annotation ci.annotation = %q, want present (annotations %v)", got, img.ImageAnnotations)
	}
	a := openArchive(t, out.Archive)
	if got := pushedManifest(t, reg.addr, a).Annotations["ci.annotation"]; got != "present" {
		t.Errorf("pushed manifest annotation ci.annotation = %q, want present", got)
	}
	var summary struct {
		Labels map[string]string `json:"labels"`
	}
	inspect := clipbuild(t, "inspect", "--json", out.Archive)
	mustSucceed(t, inspect)
	mustDo(t, json.Unmarshal([]byte(inspect.stdout), &summary))
	if summary.Labels["ci.label"] != "yes" {
		t.Errorf("archive labels %v, want ci.label=yes", summary.Labels)
	}
	id, err := os.ReadFile(iidfile)
	mustDo(t, err)
	if want := "sha256:" + img.FromImageID; string(id) != want {
		t.Errorf("--iidfile holds %q, want %q", id, want)
	}

	m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir())
	r := tree{t, "v2 mount", m.dir}
	r.file("ctx/kept.txt", "kept\n")
	r.file("extra/note.txt", "from the extra context\n")
	r.absent("ctx/ignored.txt")
	r.absent("ctx/build.log")
}

// TestCIContainerignore: .containerignore is honoured like .dockerignore,
// in a v1 archive too.
func TestCIContainerignore(t *testing.T) {
	heavy(t)
	ctx := inlineContext(t, busyboxBase+"COPY . /ctx/\n")
	mustDo(t, os.WriteFile(filepath.Join(ctx, "kept.txt"), []byte("kept\n"), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(ctx, "ignored.txt"), []byte("ignored\n"), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(ctx, ".containerignore"), []byte("ignored.txt\n"), 0o644))
	archive := buildArchive(t, ctx, imageName("ci-containerignore"))
	m := mountArchive(t, archive, "--cache-dir", t.TempDir())
	r := tree{t, "v1 mount", m.dir}
	r.file("ctx/kept.txt", "kept\n")
	r.absent("ctx/ignored.txt")
}
