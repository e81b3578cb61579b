package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// inlineContext writes a build context holding dockerfile and busybox.
func inlineContext(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "context")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(busyboxPath, filepath.Join(dir, "busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

const busyboxBase = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"

// buildV2 runs `clipbuild build --json` with the given flags (which select
// the version and registry), checks that it succeeded, and returns the
// parsed result and the run.
func buildV2(t *testing.T, ctx, image string, flags ...string) (buildOutput, result) {
	t.Helper()
	return buildV2Env(t, nil, ctx, image, flags...)
}

// buildV2Env is buildV2 with extra environment variables.
func buildV2Env(t *testing.T, env []string, ctx, image string, flags ...string) (buildOutput, result) {
	t.Helper()
	removeImageLater(t, image)
	archive := filepath.Join(t.TempDir(), "image.clip")
	args := buildArgs(append(append([]string{"--json", "-t", image, "-o", archive}, flags...), ctx)...)
	res := runEnv(t, "", buildTimeout, env, clipbuildBin, args...)
	mustSucceed(t, res)
	var out buildOutput
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%v", err, res)
	}
	fi, err := os.Stat(archive)
	if err != nil {
		t.Fatalf("archive not written: %v\n%v", err, res)
	}
	if out.ArchiveBytes != fi.Size() {
		t.Errorf("archiveBytes: got %d, want %d (the file size)", out.ArchiveBytes, fi.Size())
	}
	out.Archive = archive
	return out, res
}

// checkV2Result checks a v2 result: version 2, a digest-pinned reference in
// the registry, no fallback, and the happy-path log lines.
func checkV2Result(t *testing.T, out buildOutput, res result, repoPrefix string) {
	t.Helper()
	if out.ClipVersion != 2 {
		t.Errorf("clipVersion: got %d, want 2\n%v", out.ClipVersion, res)
	}
	if !strings.HasPrefix(out.ImageRef, repoPrefix) || !strings.Contains(out.ImageRef, "@"+out.ManifestDigest) || out.ManifestDigest == "" {
		t.Errorf("imageRef: got %q, want %s...@%s", out.ImageRef, repoPrefix, out.ManifestDigest)
	}
	if out.FallbackReason != "" || strings.Contains(res.stderr, "falling back") {
		t.Errorf("v2 run fell back: %q\n%v", out.FallbackReason, res)
	}
	for _, want := range []string{"Creating index-only archive", "v2 archive created"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr lacks %q\n%v", want, res)
		}
	}
}

// TestCorpusV2 builds every corpus image as a v2 archive through the
// embedded registry, mounts it and compares the mount with buildah's view.
func TestCorpusV2(t *testing.T) {
	requirePrerequisites(t)
	reg := startRegistry(t, "")
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			heavy(t)
			ctx := prepareContext(t, filepath.Join("corpus", tc.dir))
			image := imageName("v2-" + tc.name)
			flags := append([]string{"--clip-version", "2", "--registry", reg.addr + "/corpus"}, tc.flags...)
			out, res := buildV2(t, ctx, image, flags...)
			checkV2Result(t, out, res, reg.addr+"/corpus/")

			reference := buildahRootfs(t, image, namePrefix+"-v2-"+tc.name+"-ref")
			m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir())
			compareTrees(t, "buildah mount", reference, "clipbuild mount (v2)", m.dir)
			r := tree{t, "clipbuild mount (v2)", m.dir}
			r.common()
			tc.check(r)

			if res := clipbuild(t, "verify", out.Archive, "--rootfs", reference, "--cache-dir", t.TempDir()); res.exitCode != 0 {
				t.Errorf("verify v2 archive: %v", res)
			}
			if code, err := m.stop(syscall.SIGTERM); err != nil || code != 0 {
				t.Errorf("stopping mount: exit %d, %v", code, err)
			}
		})
	}
}

// TestV2ArchiveIsSmall checks the point of v2: the archive of an image with a
// 40 MB random file is under 1% of the image's compressed layer bytes.
func TestV2ArchiveIsSmall(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	ctx := inlineContext(t, busyboxBase+"RUN head -c 40000000 /dev/urandom > /big.bin && echo tiny > /tiny.txt\n")
	out, res := buildV2(t, ctx, imageName("v2-small"), "--registry", reg.addr+"/small")
	checkV2Result(t, out, res, reg.addr+"/small/")
	if out.ImageBytes < 40_000_000 {
		t.Errorf("imageBytes: got %d, want at least 40000000 (random data does not compress)", out.ImageBytes)
	}
	if ratio := float64(out.ArchiveBytes) / float64(out.ImageBytes); ratio >= 0.01 {
		t.Errorf("archive is %d bytes, %.4f of the %d image bytes; want under 1%%", out.ArchiveBytes, ratio, out.ImageBytes)
	}
	m := mountArchive(t, out.Archive, "--cache-dir", t.TempDir())
	tree{t, "clipbuild mount (v2)", m.dir}.file("tiny.txt", "tiny\n")
}

// TestV2ReadsAfterTagRepointed re-points the tag an archive was pushed under
// at another image, and checks the archive still reads its own bytes.
func TestV2ReadsAfterTagRepointed(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	a, res := buildV2(t, inlineContext(t, busyboxBase+"RUN echo original > /id.txt\n"), imageName("repoint-a"),
		"--clip-version", "2", "--registry", reg.addr+"/rp")
	checkV2Result(t, a, res, reg.addr+"/rp/")
	var info struct {
		Registry, Repository, Reference string
	}
	ins := clipbuild(t, "inspect", "--json", a.Archive)
	mustSucceed(t, ins)
	if err := json.Unmarshal([]byte(ins.stdout), &info); err != nil || info.Reference == "" {
		t.Fatalf("inspect --json: want registry, repository and reference (%v)\n%v", err, ins)
	}

	b := imageName("repoint-b")
	removeImageLater(t, b)
	mustSucceed(t, run(t, "", buildTimeout, "buildah", append([]string{"bud"}, append(isolationArgs(), "-t", b,
		inlineContext(t, busyboxBase+"RUN echo impostor > /id.txt\n"))...)...))
	tagRef := fmt.Sprintf("docker://%s/%s:%s", info.Registry, info.Repository, info.Reference)
	mustSucceed(t, run(t, "", commandTimeout, "buildah", "push", "--tls-verify=false", b, tagRef))

	m := mountArchive(t, a.Archive, "--cache-dir", t.TempDir())
	tree{t, "clipbuild mount (v2)", m.dir}.file("id.txt", "original\n")
}

// TestPullV2AndV1 pulls an image that buildah pushed, as a v2 index and as a
// v1 copy, and compares both mounts with buildah's tree.
func TestPullV2AndV1(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	image := imageName("pull-src")
	removeImageLater(t, image)
	ctx := prepareContext(t, filepath.Join("corpus", "hardlinks"))
	mustSucceed(t, run(t, "", buildTimeout, "buildah", append(append([]string{"bud", "--layers"}, isolationArgs()...), "-t", image, ctx)...))
	remote := reg.addr + "/pulled/hardlinks:1"
	mustSucceed(t, run(t, "", commandTimeout, "buildah", "push", "--tls-verify=false", image, "docker://"+remote))
	reference := buildahRootfs(t, image, namePrefix+"-pull-ref")

	for _, version := range []string{"2", "1"} {
		archive := filepath.Join(t.TempDir(), "pulled.clip")
		res := clipbuild(t, "pull", remote, "--clip-version", version, "-o", archive, "--json")
		mustSucceed(t, res)
		var out buildOutput
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("pull --json: %v\n%v", err, res)
		}
		if fmt.Sprint(out.ClipVersion) != version {
			t.Errorf("pull --clip-version %s: clipVersion %d", version, out.ClipVersion)
		}
		if version == "2" && !strings.HasPrefix(out.ImageRef, reg.addr+"/pulled/hardlinks@sha256:") {
			t.Errorf("pull v2: imageRef %q, want the source repository pinned by digest", out.ImageRef)
		}
		m := mountArchive(t, archive, "--cache-dir", t.TempDir())
		compareTrees(t, "buildah mount", reference, "clipbuild mount (pull v"+version+")", m.dir)
		tree{t, "pull v" + version, m.dir}.hardlinked(3, "links/a/original", "links/a/second", "links/b/third")
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAutoFallsBackToV1 gives auto mode an unreachable registry: it must
// produce a v1 archive and say why.
func TestAutoFallsBackToV1(t *testing.T) {
	heavy(t)
	out, res := buildV2(t, inlineContext(t, busyboxBase), imageName("fallback"), "--registry", closedPort(t)+"/x")
	if out.ClipVersion != 1 || out.FallbackReason == "" || out.ImageRef != "" {
		t.Errorf("got clipVersion %d, fallbackReason %q, imageRef %q; want 1, a reason, none", out.ClipVersion, out.FallbackReason, out.ImageRef)
	}
	if !strings.Contains(res.stderr, "falling back to v1: ") {
		t.Errorf("stderr lacks %q\n%v", "falling back to v1: ", res)
	}
}

// TestStrictV2FailsCleanly gives --clip-version 2 an unreachable registry:
// it must fail with an Error line and leave nothing behind.
func TestStrictV2FailsCleanly(t *testing.T) {
	heavy(t)
	image := imageName("strict")
	removeImageLater(t, image)
	outDir := t.TempDir()
	res := run(t, "", buildTimeout, clipbuildBin, buildArgs("--clip-version", "2", "--registry", closedPort(t)+"/x",
		"-t", image, "-o", filepath.Join(outDir, "strict.clip"), inlineContext(t, busyboxBase))...)
	assertCleanFailure(t, res)
	assertDirEmpty(t, outDir)
	if strings.Contains(res.stderr, "falling back") {
		t.Errorf("strict v2 fell back\n%v", res)
	}
}

// TestRegistryRestartKeepsImages stops the registry and starts it again on
// the same root: what was pushed is still there and indexes.
func TestRegistryRestartKeepsImages(t *testing.T) {
	heavy(t)
	root := t.TempDir()
	reg := startRegistry(t, root)
	out, res := buildV2(t, inlineContext(t, busyboxBase+"RUN echo persisted > /p.txt\n"), imageName("restart"),
		"--clip-version", "2", "--registry", reg.addr+"/keep")
	checkV2Result(t, out, res, reg.addr+"/keep/")
	reg.stop(t)

	reg2 := startRegistry(t, root)
	ref := strings.Replace(out.ImageRef, reg.addr, reg2.addr, 1)
	archive := filepath.Join(t.TempDir(), "again.clip")
	mustSucceed(t, clipbuild(t, "pull", ref, "--clip-version", "2", "-o", archive))
	m := mountArchive(t, archive, "--cache-dir", t.TempDir())
	tree{t, "after restart", m.dir}.file("p.txt", "persisted\n")
}

// TestRegistryCredentials runs a registry that requires a password: the right
// one works, a wrong one fails with an Error line, and the password is never
// printed.
func TestRegistryCredentials(t *testing.T) {
	heavy(t)
	const user, pass, wrong = "ci-user", "right-Pa55word", "wrong-Pa55word-xyz"
	reg := startRegistry(t, "", "--htpasswd", writeHtpasswd(t, user, pass))
	image := imageName("creds")
	removeImageLater(t, image)
	mustSucceed(t, run(t, "", buildTimeout, "buildah", append(append([]string{"bud"}, isolationArgs()...), "-t", image, inlineContext(t, busyboxBase))...))
	remote := reg.addr + "/private/img:1"
	mustSucceed(t, run(t, "", commandTimeout, "buildah", "push", "--tls-verify=false", "--creds", user+":"+pass, image, "docker://"+remote))

	noSecret := func(res result) {
		t.Helper()
		for _, secret := range []string{pass, wrong} {
			if strings.Contains(res.stdout+res.stderr, secret) {
				t.Errorf("output contains a password\n%v", res)
			}
		}
	}
	outDir := t.TempDir()
	for _, version := range []string{"2", "1"} {
		res := clipbuild(t, "pull", remote, "--clip-version", version, "--creds", user+":"+wrong, "-o", filepath.Join(outDir, "bad.clip"))
		assertCleanFailure(t, res)
		noSecret(res)
	}
	res := clipbuild(t, "pull", remote, "--creds", user+":"+wrong, "-o", filepath.Join(outDir, "bad.clip"), "--log-level", "debug")
	assertCleanFailure(t, res)
	noSecret(res)
	assertDirEmpty(t, outDir)

	good := filepath.Join(t.TempDir(), "good.clip")
	res = clipbuild(t, "pull", remote, "--clip-version", "2", "--creds", user+":"+pass, "-o", good, "--log-level", "debug")
	mustSucceed(t, res)
	noSecret(res)
	if raw, err := os.ReadFile(good); err != nil || strings.Contains(string(raw), pass) {
		t.Errorf("archive contains the password (or cannot be read: %v)", err)
	}
	m := mountArchive(t, good, "--cache-dir", t.TempDir(), "--creds", user+":"+pass)
	tree{t, "private v2", m.dir}.mode("bin/busybox", "file", 0o755)
}

// TestVersionPrecedence checks flag over environment over config file.
func TestVersionPrecedence(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	cfg := filepath.Join(t.TempDir(), "clipbuild.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("imageService:\n  clipVersion: 2\n  buildRegistry: %s/cfg\n", reg.addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := inlineContext(t, busyboxBase)
	out, res := buildV2(t, ctx, imageName("prec-config"), "--config", cfg)
	checkV2Result(t, out, res, reg.addr+"/cfg/")

	out, _ = buildV2Env(t, []string{"CLIP_VERSION=1"}, ctx, imageName("prec-env"), "--config", cfg)
	if out.ClipVersion != 1 || out.FallbackReason != "" {
		t.Errorf("CLIP_VERSION=1 over config: got clipVersion %d (fallback %q), want 1", out.ClipVersion, out.FallbackReason)
	}
	out, res = buildV2(t, ctx, imageName("prec-flag"), "--config", cfg, "--clip-version", "2")
	checkV2Result(t, out, res, reg.addr+"/cfg/")
}
