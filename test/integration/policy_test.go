package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPullSignaturePolicy pulls an image from a loopback registry under a
// signature policy: "reject" fails every version (v2, v1 and auto, which
// must not fall back) with one Error line and no archive, whether the policy
// comes from --signature-policy or from containers' default lookup;
// insecureAcceptAnything, Debian's default, passes.
func TestPullSignaturePolicy(t *testing.T) {
	heavy(t)
	reg := startRegistry(t, "")
	image := imageName("policy-src")
	removeImageLater(t, image)
	mustSucceed(t, run(t, "", buildTimeout, "buildah", append(append([]string{"bud"}, isolationArgs()...), "-t", image,
		inlineContext(t, busyboxBase+"RUN echo signed-or-not > /policy.txt\n"))...))
	remote := reg.addr + "/policy/img:1"
	mustSucceed(t, run(t, "", commandTimeout, "buildah", "push", "--tls-verify=false", image, "docker://"+remote))

	dir := t.TempDir()
	reject := filepath.Join(dir, "reject.json")
	accept := filepath.Join(dir, "accept.json")
	for p, body := range map[string]string{
		reject: `{"default":[{"type":"reject"}]}`,
		accept: `{"default":[{"type":"insecureAcceptAnything"}]}`,
	} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, version := range []string{"2", "1", "auto"} {
		t.Run("reject/v"+version, func(t *testing.T) {
			for _, how := range []struct {
				name string
				env  []string
				args []string
			}{
				{"--signature-policy", nil, []string{"--signature-policy", reject}},
				{"$CONTAINERS_POLICY_JSON", []string{"CONTAINERS_POLICY_JSON=" + reject}, nil},
			} {
				out := filepath.Join(t.TempDir(), "pulled.clip")
				args := append([]string{"pull", remote, "--clip-version", version, "-o", out}, how.args...)
				res := runEnv(t, "", commandTimeout, how.env, clipbuildBin, args...)
				assertCleanFailure(t, res)
				t.Logf("%s: %s", how.name, res.lastStderrLine())
				if last := res.lastStderrLine(); !strings.Contains(last, "rejected by signature policy") {
					t.Errorf("%s: last stderr line %q, want the policy's rejection\n%v", how.name, last, res)
				}
				if strings.Contains(res.stderr, "falling back") {
					t.Errorf("%s: a rejected pull fell back to v1\n%v", how.name, res)
				}
				if _, err := os.Stat(out); err == nil {
					t.Errorf("%s: a rejected pull left %s", how.name, out)
				}
			}
		})
		t.Run("accept/v"+version, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "pulled.clip")
			res := clipbuild(t, "pull", remote, "--clip-version", version, "-o", out, "--json", "--signature-policy", accept)
			mustSucceed(t, res)
			var got buildOutput
			if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
				t.Fatalf("pull --json: %v\n%v", err, res)
			}
			want := map[string]int{"1": 1, "2": 2, "auto": 2}[version]
			if got.ClipVersion != want || got.FallbackReason != "" {
				t.Errorf("pull --clip-version %s: clipVersion %d, fallback %q; want %d without fallback", version, got.ClipVersion, got.FallbackReason, want)
			}
			if _, err := os.Stat(out); err != nil {
				t.Errorf("accepted pull wrote no archive: %v", err)
			}
		})
	}

	t.Run("missing --signature-policy", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "pulled.clip")
		res := clipbuild(t, "pull", remote, "-o", out, "--signature-policy", filepath.Join(dir, "missing.json"))
		assertCleanFailure(t, res)
		t.Log(res.lastStderrLine())
		if strings.Contains(res.stderr, "falling back") {
			t.Errorf("a missing policy file fell back to v1\n%v", res)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("a pull without its policy left %s", out)
		}
	})
}
