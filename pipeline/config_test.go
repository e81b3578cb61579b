package pipeline_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clipbuild/clipbuild/pipeline"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    pipeline.Version
		wantErr bool
	}{
		{"auto", pipeline.VersionAuto, false},
		{"AUTO", pipeline.VersionAuto, false},
		{"", pipeline.VersionAuto, false},
		{"  ", pipeline.VersionAuto, false},
		{"1", pipeline.Version1, false},
		{"v1", pipeline.Version1, false},
		{"V1", pipeline.Version1, false},
		{" 1\n", pipeline.Version1, false},
		{"2", pipeline.Version2, false},
		{"v2", pipeline.Version2, false},
		{"V2", pipeline.Version2, false},
		{"3", "", true},
		{"v3", "", true},
		{"0", "", true},
		{"1.0", "", true},
		{"one", "", true},
		{"vv1", "", true},
		{"auto2", "", true},
		{"-1", "", true},
	}
	for _, tt := range tests {
		got, err := pipeline.ParseVersion(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseVersion(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "\""+tt.in+"\"") {
			t.Errorf("ParseVersion(%q) error = %q, want it to quote the input", tt.in, err)
		}
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func config(version, registry string, insecure bool) *pipeline.Config {
	c := &pipeline.Config{}
	c.ImageService.ClipVersion = version
	c.ImageService.BuildRegistry = registry
	c.ImageService.BuildRegistryInsecure = insecure
	return c
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name string
		text string
		want *pipeline.Config
	}{
		{"empty file", "", config("", "", false)},
		{"comment only", "# nothing here\n", config("", "", false)},
		{"version as number", "imageService:\n  clipVersion: 2\n", config("2", "", false)},
		{"version as string", "imageService:\n  clipVersion: \"1\"\n", config("1", "", false)},
		{"version v2", "imageService:\n  clipVersion: v2\n", config("v2", "", false)},
		{"version auto", "imageService:\n  clipVersion: auto\n", config("auto", "", false)},
		{"everything", "imageService:\n  clipVersion: 1\n  buildRegistry: localhost:5000/scratch\n  buildRegistryInsecure: true\n",
			config("1", "localhost:5000/scratch", true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pipeline.LoadConfig(writeConfig(t, tt.text))
			if err != nil {
				t.Fatalf("LoadConfig() = %v, want nil", err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("LoadConfig() (-want +got):\n%s", d)
			}
		})
	}
}

func TestLoadConfigNoPath(t *testing.T) {
	got, err := pipeline.LoadConfig("")
	if err != nil {
		t.Fatalf("LoadConfig(\"\") = %v, want nil", err)
	}
	if d := cmp.Diff(config("", "", false), got); d != "" {
		t.Errorf("LoadConfig(\"\") (-want +got):\n%s", d)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		wantMsg string // a substring of the error
	}{
		{"bad version number", "imageService:\n  clipVersion: 3\n", "clipVersion"},
		{"bad version string", "imageService:\n  clipVersion: latest\n", "clipVersion"},
		{"version as float", "imageService:\n  clipVersion: 1.5\n", "clipVersion"},
		{"version as list", "imageService:\n  clipVersion: [1]\n", "config"},
		{"bad boolean", "imageService:\n  buildRegistryInsecure: maybe\n", "config"},
		{"not YAML", "imageService: [unclosed\n", "config"},
		{"access key without secret", "s3:\n  accessKeyId: AK\n", "secretAccessKey"},
		{"secret without access key", "s3:\n  secretAccessKey: SK\n", "accessKeyId"},
		{"endpoint without scheme", "s3:\n  endpoint: 127.0.0.1:9000\n", "s3.endpoint"},
		{"endpoint of another scheme", "s3:\n  endpoint: ftp://127.0.0.1:9000\n", "s3.endpoint"},
		{"unknown s3 key", "s3:\n  bucket: b\n", "bucket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.text)
			got, err := pipeline.LoadConfig(p)
			if err == nil {
				t.Fatalf("LoadConfig() = %+v, nil; want an error", got)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), p) {
				t.Errorf("LoadConfig() = %q, want it to mention %q and %s", err, tt.wantMsg, p)
			}
		})
	}
}

// TestLoadConfigUnknownKeys: a typo in a key must be an error, not a silent
// fallback to the default.
func TestLoadConfigUnknownKeys(t *testing.T) {
	tests := []struct {
		name string
		text string
	}{
		{"misspelt key", "imageService:\n  clipVersoin: 1\n"},
		{"unknown top-level key", "imageService:\n  clipVersion: 1\nregistry: x\n"},
		{"wrong case", "imageservice:\n  clipVersion: 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.text)
			got, err := pipeline.LoadConfig(p)
			if err == nil {
				t.Fatalf("LoadConfig(%q) = %+v, nil; want an error", tt.text, got)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("LoadConfig() = %q, want it to name %s", err, p)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := pipeline.LoadConfig(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadConfig(missing) = %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestResolvePrecedence(t *testing.T) {
	tests := []struct {
		name                string
		flagVersion, envVer string
		fileVersion         string
		flagReg, envReg     string
		fileReg             string
		wantVersion         pipeline.Version
		wantRegistry        string
	}{
		{name: "defaults", wantVersion: pipeline.VersionAuto},
		{name: "config", fileVersion: "1", fileReg: "file:5000",
			wantVersion: pipeline.Version1, wantRegistry: "file:5000"},
		{name: "env over config", envVer: "2", fileVersion: "1", envReg: "env:5000", fileReg: "file:5000",
			wantVersion: pipeline.Version2, wantRegistry: "env:5000"},
		{name: "flag over env and config", flagVersion: "1", envVer: "2", fileVersion: "2",
			flagReg: "flag:5000", envReg: "env:5000", fileReg: "file:5000",
			wantVersion: pipeline.Version1, wantRegistry: "flag:5000"},
		{name: "flag over config", flagVersion: "v2", fileVersion: "1", flagReg: "flag:5000", fileReg: "file:5000",
			wantVersion: pipeline.Version2, wantRegistry: "flag:5000"},
		{name: "env only", envVer: "v1", envReg: "env:5000",
			wantVersion: pipeline.Version1, wantRegistry: "env:5000"},
		{name: "version and registry independent", flagVersion: "1", envReg: "env:5000", fileVersion: "2",
			wantVersion: pipeline.Version1, wantRegistry: "env:5000"},
		{name: "explicit auto beats config", flagVersion: "auto", fileVersion: "1",
			wantVersion: pipeline.VersionAuto},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CLIP_VERSION", tt.envVer)
			t.Setenv("CLIPBUILD_REGISTRY", tt.envReg)
			got, err := pipeline.Resolve(tt.flagVersion, tt.flagReg, config(tt.fileVersion, tt.fileReg, false))
			if err != nil {
				t.Fatalf("Resolve() = %v, want nil", err)
			}
			want := pipeline.Settings{Version: tt.wantVersion, Registry: tt.wantRegistry}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("Resolve() (-want +got):\n%s", d)
			}
		})
	}
}

func TestResolveInsecureFromConfig(t *testing.T) {
	t.Setenv("CLIP_VERSION", "")
	t.Setenv("CLIPBUILD_REGISTRY", "")
	got, err := pipeline.Resolve("", "", config("", "r:5000", true))
	if err != nil {
		t.Fatalf("Resolve() = %v, want nil", err)
	}
	want := pipeline.Settings{Version: pipeline.VersionAuto, Registry: "r:5000", RegistryInsecure: true}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Resolve() (-want +got):\n%s", d)
	}
}

func TestResolveBadVersionNamesSource(t *testing.T) {
	tests := []struct {
		name            string
		flag, env, file string
		wantSource      string
	}{
		{"flag", "9", "", "", "--clip-version"},
		{"env", "", "9", "", "$CLIP_VERSION"},
		{"config", "", "", "9", "imageService.clipVersion"},
		{"bad env hidden by good flag", "1", "9", "", ""},
		{"bad config hidden by good env", "", "2", "9", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CLIP_VERSION", tt.env)
			t.Setenv("CLIPBUILD_REGISTRY", "")
			_, err := pipeline.Resolve(tt.flag, "", config(tt.file, "", false))
			if tt.wantSource == "" {
				if err != nil {
					t.Errorf("Resolve() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantSource+":") {
				t.Errorf("Resolve() = %v, want an error starting %q", err, tt.wantSource+":")
			}
		})
	}
}

func TestLoadConfigS3(t *testing.T) {
	got, err := pipeline.LoadConfig(writeConfig(t, `s3:
  endpoint: http://127.0.0.1:7070
  region: eu-west-1
  profile: ci
  accessKeyId: AK
  secretAccessKey: SK
registry:
  secret: shared
`))
	if err != nil {
		t.Fatalf("LoadConfig() = %v, want nil", err)
	}
	want := pipeline.S3Config{Endpoint: "http://127.0.0.1:7070", Region: "eu-west-1", Profile: "ci", AccessKeyID: "AK", SecretAccessKey: "SK"}
	if d := cmp.Diff(want, got.S3); d != "" {
		t.Errorf("LoadConfig().S3 (-want +got):\n%s", d)
	}
	if got.Registry.Secret != "shared" {
		t.Errorf("LoadConfig().Registry.Secret = %q, want %q", got.Registry.Secret, "shared")
	}
	if !got.HasSecrets() {
		t.Errorf("HasSecrets() = false, want true")
	}
}

// TestConfigEnviron: the file's S3 and registry settings become the AWS
// SDK's environment only where the environment decides nothing, and the
// credentials are decided as one.
func TestConfigEnviron(t *testing.T) {
	full := &pipeline.Config{S3: pipeline.S3Config{Endpoint: "http://127.0.0.1:7070", Region: "eu-west-1", AccessKeyID: "AK", SecretAccessKey: "SK"}}
	full.Registry.Secret = "shared"
	profile := &pipeline.Config{S3: pipeline.S3Config{Profile: "ci"}}
	tests := []struct {
		name string
		cfg  *pipeline.Config
		env  map[string]string
		want []string
	}{
		{"empty config", &pipeline.Config{}, nil, nil},
		{"nothing in the environment", full, nil, []string{
			"AWS_ENDPOINT_URL=http://127.0.0.1:7070", "AWS_REGION=eu-west-1",
			"AWS_ACCESS_KEY_ID=AK", "AWS_SECRET_ACCESS_KEY=SK", "CLIPBUILD_REGISTRY_SECRET=shared"}},
		{"environment wins", full, map[string]string{
			"AWS_ENDPOINT_URL": "http://other", "AWS_REGION": "us-east-2",
			"AWS_ACCESS_KEY_ID": "ENVAK", "AWS_SECRET_ACCESS_KEY": "ENVSK", "CLIPBUILD_REGISTRY_SECRET": "env"}, nil},
		{"the S3 endpoint variable decides the endpoint", full, map[string]string{"AWS_ENDPOINT_URL_S3": "http://other"}, []string{
			"AWS_REGION=eu-west-1", "AWS_ACCESS_KEY_ID=AK", "AWS_SECRET_ACCESS_KEY=SK", "CLIPBUILD_REGISTRY_SECRET=shared"}},
		{"the default region decides the region", full, map[string]string{"AWS_DEFAULT_REGION": "us-east-2"}, []string{
			"AWS_ENDPOINT_URL=http://127.0.0.1:7070", "AWS_ACCESS_KEY_ID=AK", "AWS_SECRET_ACCESS_KEY=SK", "CLIPBUILD_REGISTRY_SECRET=shared"}},
		{"a profile in the environment keeps the file's keys out", full, map[string]string{"AWS_PROFILE": "prod"}, []string{
			"AWS_ENDPOINT_URL=http://127.0.0.1:7070", "AWS_REGION=eu-west-1", "CLIPBUILD_REGISTRY_SECRET=shared"}},
		{"keys in the environment keep the file's profile out", profile, map[string]string{"AWS_ACCESS_KEY_ID": "ENVAK", "AWS_SECRET_ACCESS_KEY": "ENVSK"}, nil},
		{"the file's profile", profile, nil, []string{"AWS_PROFILE=ci"}},
		{"an empty variable decides nothing", full, map[string]string{"AWS_REGION": "", "AWS_PROFILE": ""}, []string{
			"AWS_ENDPOINT_URL=http://127.0.0.1:7070", "AWS_REGION=eu-west-1",
			"AWS_ACCESS_KEY_ID=AK", "AWS_SECRET_ACCESS_KEY=SK", "CLIPBUILD_REGISTRY_SECRET=shared"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.cfg.Environ(func(k string) string { return tt.env[k] })
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Environ() (-want +got):\n%s", d)
			}
		})
	}
}
