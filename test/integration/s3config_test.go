package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// s3ConfigEnv is an environment with no AWS settings of its own (every
// variable the config's keys stand for is empty) and the user's AWS files
// kept out: what reaches S3 must come from --config.
func s3ConfigEnv() []string {
	return []string{
		"AWS_ENDPOINT_URL=", "AWS_ENDPOINT_URL_S3=", "AWS_REGION=", "AWS_DEFAULT_REGION=",
		"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=",
		"AWS_CONFIG_FILE=" + os.DevNull, "AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true", "CLIPBUILD_REGISTRY_SECRET=",
	}
}

// writeS3Config writes a config file (mode 0600) with the gateway's
// endpoint and region, the given secret key and the registry secret.
func writeS3Config(t *testing.T, g *s3Gateway, secretKey, registrySecret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "clipbuild.yaml")
	text := fmt.Sprintf("s3:\n  endpoint: %s\n  region: us-east-1\n  accessKeyId: %s\n  secretAccessKey: %s\nregistry:\n  secret: %s\n",
		g.endpoint, s3AccessKey, secretKey, registrySecret)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestS3SettingsFromConfig runs everything that reaches S3 with its
// settings only in the --config file: two registries on one bucket share
// the file's HTTP secret (an upload begun on one finishes on the other), a
// build writes its archive to an s3:// URL, inspect reads it back; a wrong
// secret key in the file is one clear error; and the environment wins over
// the file.
func TestS3SettingsFromConfig(t *testing.T) {
	heavy(t)
	g := startS3(t)
	env := s3ConfigEnv()
	cfg := writeS3Config(t, g, s3SecretKey, "secret-from-config")

	t.Run("registries share the config's secret", func(t *testing.T) {
		storage := "s3://" + s3Bucket + "/from-config"
		a := serveRegistry(t, env, "--config", cfg, "--storage", storage)
		b := serveRegistry(t, env, "--config", cfg, "--storage", storage)
		crossReplicaUpload(t, a, b)
		for name, r := range map[string]*registryServer{"A": a, "B": b} {
			if strings.Contains(r.stderr.String(), "random HTTP secret") {
				t.Errorf("registry %s warned of a random HTTP secret despite registry.secret in the config:\n%s", name, r.stderr.String())
			}
		}
	})

	t.Run("archive written to and read from S3", func(t *testing.T) {
		image := imageName("s3-config")
		removeImageLater(t, image)
		key := "from-config/v1.clip"
		u := "s3://" + s3Bucket + "/" + key
		res := runEnv(t, "", buildTimeout, env, clipbuildBin, buildArgs("--config", cfg, "--clip-version", "1",
			"-t", image, "-o", u, inlineContext(t, s3ArchiveDockerfile))...)
		mustSucceed(t, res)
		if _, err := os.Stat(g.object(key)); err != nil {
			t.Fatalf("no object at %s after the build: %v\n%v", key, err, res)
		}
		res = runEnv(t, "", commandTimeout, env, clipbuildBin, "inspect", "--config", cfg, u)
		mustSucceed(t, res)
		if !strings.Contains(res.stdout, image) {
			t.Errorf("inspect %s: stdout lacks the image name %s\n%v", u, image, res)
		}
		// Without the config the same command has no way to S3.
		if res := runEnv(t, "", commandTimeout, env, clipbuildBin, "inspect", u); res.exitCode == 0 {
			t.Errorf("inspect %s without --config: exit 0, want an error (the settings must have come from the file)\n%v", u, res)
		}
	})

	t.Run("wrong secret key in the config", func(t *testing.T) {
		bad := writeS3Config(t, g, "not-the-secret", "x")
		res := runEnv(t, "", commandTimeout, env, clipbuildBin, "registry", "serve", "--addr", "127.0.0.1:0",
			"--config", bad, "--storage", "s3://"+s3Bucket+"/wrong")
		if res.exitCode == 0 {
			t.Fatalf("registry serve with a wrong secret key in the config: exit 0, want an error\n%v", res)
		}
		errorLines := res.errorLines()
		if len(errorLines) != 1 || errorLines[0] != res.lastStderrLine() || !strings.Contains(errorLines[0], "SignatureDoesNotMatch") {
			t.Errorf("stderr: got Error: lines %q, want one, last, naming SignatureDoesNotMatch\n%v", errorLines, res)
		}
	})

	t.Run("the environment wins over the config", func(t *testing.T) {
		bad := writeS3Config(t, g, "not-the-secret", "y")
		envKeys := append(append([]string{}, env...), "AWS_ACCESS_KEY_ID="+s3AccessKey, "AWS_SECRET_ACCESS_KEY="+s3SecretKey)
		r := serveRegistry(t, envKeys, "--config", bad, "--storage", "s3://"+s3Bucket+"/env-wins")
		r.stop(t)
	})

	t.Run("a config with secrets readable by others is warned of", func(t *testing.T) {
		if err := os.Chmod(cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		res := runEnv(t, "", commandTimeout, env, clipbuildBin, "registry", "gc", "--config", cfg,
			"--storage", "s3://"+s3Bucket+"/from-config", "--dry-run")
		mustSucceed(t, res)
		if !strings.Contains(res.stderr, "readable by others") {
			t.Errorf("registry gc with a 0644 config holding secrets: stderr lacks the warning\n%v", res)
		}
	})
}
