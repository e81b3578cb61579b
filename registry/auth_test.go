package registry_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"go.podman.io/image/v5/types"

	"github.com/clipbuild/clipbuild/registry"
)

// authHome isolates the credential lookup from the machine's own files: a
// fresh $HOME and $XDG_RUNTIME_DIR, no $REGISTRY_AUTH_FILE, $DOCKER_CONFIG
// or $XDG_CONFIG_HOME. It returns the default containers auth file
// ($XDG_RUNTIME_DIR/containers/auth.json) and docker config
// (~/.docker/config.json), neither written yet.
func authHome(t *testing.T) (containersAuth, dockerConfig string) {
	t.Helper()
	home, run := t.TempDir(), t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_RUNTIME_DIR", run)
	for _, v := range []string{"REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	for _, d := range []string{filepath.Join(run, "containers"), filepath.Join(home, ".docker")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(run, "containers", "auth.json"), filepath.Join(home, ".docker", "config.json")
}

// authJSON is an auth file with entries key -> user (password "pw-" + user),
// plus any extra top-level fields.
func authJSON(t *testing.T, path string, entries map[string]string, extra map[string]any) {
	t.Helper()
	auths := map[string]any{}
	for k, user := range entries {
		auths[k] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":pw-" + user))}
	}
	f := map[string]any{"auths": auths}
	for k, v := range extra {
		f[k] = v
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// ggcrUser is the user name the go-containerregistry authenticator of the
// v2 path sends for ref ("" for anonymous).
func ggcrUser(t *testing.T, o registry.Options, ref string) string {
	t.Helper()
	r, err := o.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	a, err := o.Authenticator(r.Context())
	if err != nil {
		t.Fatalf("Authenticator(%s) = %v", ref, err)
	}
	if a == authn.Anonymous {
		return ""
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatalf("Authorization() for %s = %v", ref, err)
	}
	return cfg.Username
}

func TestCredentialsDockerHubIsOneRegistry(t *testing.T) {
	refs := []string{"index.docker.io/library/x:1", "docker.io/library/x:1", "x:1", "library/x:1"}
	for _, key := range []string{"docker.io", "index.docker.io", "https://index.docker.io/v1/", "docker.io/library"} {
		t.Run(key, func(t *testing.T) {
			auth, _ := authHome(t)
			authJSON(t, auth, map[string]string{key: "hub"}, nil)
			for _, ref := range refs {
				if got := ggcrUser(t, registry.DefaultOptions(), ref); got != "hub" {
					t.Errorf("saved under %q: user for %s = %q, want %q", key, ref, got, "hub")
				}
			}
		})
	}
}

func TestCredentialsLongestMatchWins(t *testing.T) {
	auth, _ := authHome(t)
	authJSON(t, auth, map[string]string{"quay.io/org1": "one", "quay.io/org2": "two", "quay.io": "any", "quay.io/org1/deep/img": "deep"}, nil)
	tests := []struct{ ref, want string }{
		{"quay.io/org1/img:1", "one"},
		{"quay.io/org2/img:1", "two"},
		{"quay.io/org3/img:1", "any"},
		{"quay.io/org1/deep/img:1", "deep"},
		{"quay.io/org1/deep/other:1", "one"},
		{"quay.io/org10/img:1", "any"}, // a prefix of the name, not of its path
		{"other.io/org1/img:1", ""},
	}
	// Map order is random in Go: many runs catch an order-dependent pick.
	for i := 0; i < 50; i++ {
		for _, tc := range tests {
			if got := ggcrUser(t, registry.DefaultOptions(), tc.ref); got != tc.want {
				t.Fatalf("run %d: user for %s = %q, want %q", i, tc.ref, got, tc.want)
			}
		}
	}
}

// fakeHelper installs docker-credential-fake first on PATH. It answers get
// per the credential-helper protocol: the server URL on stdin, a JSON
// {ServerURL, Username, Secret} on stdout, or "credentials not found in
// native keychain" and exit 1. Its user name is "helper:" plus the server
// URL it was asked for, so a test sees what was asked.
func fakeHelper(t *testing.T, servers ...string) {
	t.Helper()
	dir := t.TempDir()
	var cases strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&cases, "  %q) printf '{\"ServerURL\":\"%%s\",\"Username\":\"helper:%%s\",\"Secret\":\"s3cret\"}' \"$server\" \"$server\"; exit 0;;\n", s)
	}
	script := "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\ncase \"$server\" in\n" + cases.String() +
		"esac\necho 'credentials not found in native keychain'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-fake"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestCredentialsFromHelpers(t *testing.T) {
	tests := []struct {
		name  string
		file  func(t *testing.T, containersAuth, dockerConfig string)
		ref   string
		want  string
		asked []string
	}{
		{"credHelpers in the containers auth file", func(t *testing.T, auth, _ string) {
			authJSON(t, auth, nil, map[string]any{"credHelpers": map[string]string{"registry.example:5000": "fake"}})
		}, "registry.example:5000/team/img:1", "helper:registry.example:5000", []string{"registry.example:5000"}},
		{"credHelpers in the docker config", func(t *testing.T, _, cfg string) {
			authJSON(t, cfg, nil, map[string]any{"credHelpers": map[string]string{"registry.example:5000": "fake"}})
		}, "registry.example:5000/team/img:1", "helper:registry.example:5000", []string{"registry.example:5000"}},
		{"credsStore", func(t *testing.T, _, cfg string) {
			// docker leaves empty markers in auths when a store holds the secret
			authJSON(t, cfg, nil, map[string]any{"credsStore": "fake", "auths": map[string]any{"registry.example:5000": map[string]string{}}})
		}, "registry.example:5000/team/img:1", "helper:registry.example:5000", []string{"registry.example:5000"}},
		{"credsStore for Docker Hub", func(t *testing.T, _, cfg string) {
			authJSON(t, cfg, nil, map[string]any{"credsStore": "fake"})
		}, "index.docker.io/library/x:1", "helper:https://index.docker.io/v1/", []string{"https://index.docker.io/v1/"}},
		{"credsStore without an entry", func(t *testing.T, _, cfg string) {
			authJSON(t, cfg, nil, map[string]any{"credsStore": "fake"})
		}, "elsewhere.example/img:1", "", []string{"registry.example:5000"}},
		{"credHelpers win over the auth file's own entry", func(t *testing.T, auth, _ string) {
			authJSON(t, auth, map[string]string{"registry.example:5000": "file"}, map[string]any{"credHelpers": map[string]string{"registry.example:5000": "fake"}})
		}, "registry.example:5000/img:1", "helper:registry.example:5000", []string{"registry.example:5000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			auth, cfg := authHome(t)
			fakeHelper(t, tc.asked...)
			tc.file(t, auth, cfg)
			if got := ggcrUser(t, registry.DefaultOptions(), tc.ref); got != tc.want {
				t.Errorf("user for %s = %q, want %q", tc.ref, got, tc.want)
			}
		})
	}
}

func TestCredentialsUnreadableDefaultIsSkipped(t *testing.T) {
	auth, cfg := authHome(t)
	// Tests run as root, who reads a chmod 000 file: a directory where the
	// file should be cannot be read by anyone.
	if err := os.Mkdir(auth, 0o700); err != nil {
		t.Fatal(err)
	}
	authJSON(t, cfg, map[string]string{"registry.example": "docker"}, nil)
	if got := ggcrUser(t, registry.DefaultOptions(), "registry.example/img:1"); got != "docker" {
		t.Errorf("user with %s unreadable = %q, want %q from %s", auth, got, "docker", cfg)
	}
	if got := ggcrUser(t, registry.DefaultOptions(), "nowhere.example/img:1"); got != "" {
		t.Errorf("user for a registry without credentials = %q, want anonymous", got)
	}
	sc, err := registry.DefaultOptions().SystemContext(name.MustParseReference("registry.example/img:1").Context())
	if err != nil {
		t.Fatalf("SystemContext() with %s unreadable = %v, want the file skipped", auth, err)
	}
	if sc.DockerAuthConfig == nil || sc.DockerAuthConfig.Username != "docker" {
		t.Errorf("SystemContext().DockerAuthConfig = %+v, want user docker", sc.DockerAuthConfig)
	}
}

func TestCredentialsExplicitFileMustBeReadable(t *testing.T) {
	dir := t.TempDir()
	unreadable := filepath.Join(dir, "is-a-directory")
	if err := os.Mkdir(unreadable, 0o700); err != nil {
		t.Fatal(err)
	}
	malformed := filepath.Join(dir, "malformed.json")
	if err := os.WriteFile(malformed, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	ref := name.MustParseReference("registry.example/img:1").Context()
	for _, tc := range []struct{ name, file, env string }{
		{"--authfile unreadable", unreadable, ""},
		{"--authfile missing", filepath.Join(dir, "missing.json"), ""},
		{"--authfile malformed", malformed, ""},
		{"$REGISTRY_AUTH_FILE unreadable", "", unreadable},
		{"$REGISTRY_AUTH_FILE missing", "", filepath.Join(dir, "missing.json")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authHome(t)
			t.Setenv("REGISTRY_AUTH_FILE", tc.env)
			o := registry.DefaultOptions()
			o.AuthFile = tc.file
			if _, err := o.Authenticator(ref); err == nil {
				t.Errorf("Authenticator() = nil error, want the named auth file's error")
			}
			if _, err := o.SystemContext(ref); err == nil {
				t.Errorf("SystemContext() = nil error, want the named auth file's error")
			}
		})
	}
}

func TestCredentialsExplicitFileReplacesDefaults(t *testing.T) {
	auth, _ := authHome(t)
	authJSON(t, auth, map[string]string{"registry.example": "default"}, nil)
	named := filepath.Join(t.TempDir(), "auth.json")
	authJSON(t, named, map[string]string{"registry.example/team": "named"}, nil)
	o := registry.DefaultOptions()
	o.AuthFile = named
	if got := ggcrUser(t, o, "registry.example/team/img:1"); got != "named" {
		t.Errorf("user with --authfile = %q, want %q", got, "named")
	}
	if got := ggcrUser(t, o, "registry.example/other/img:1"); got != "" {
		t.Errorf("user with --authfile and no entry there = %q, want anonymous (the defaults are not searched)", got)
	}
	t.Setenv("REGISTRY_AUTH_FILE", named)
	if got := ggcrUser(t, registry.DefaultOptions(), "registry.example/team/img:1"); got != "named" {
		t.Errorf("user with $REGISTRY_AUTH_FILE = %q, want %q", got, "named")
	}
}

func TestCredsFlagWins(t *testing.T) {
	auth, _ := authHome(t)
	authJSON(t, auth, map[string]string{"registry.example": "saved"}, nil)
	fakeHelper(t, "registry.example")
	o := registry.DefaultOptions()
	o.Creds = "cli:secret"
	o.AuthFile = filepath.Join(t.TempDir(), "missing.json") // not even looked at
	const ref = "registry.example/img:1"
	if got := ggcrUser(t, o, ref); got != "cli" {
		t.Errorf("user with --creds = %q, want %q", got, "cli")
	}
	sc, err := o.SystemContext(name.MustParseReference(ref).Context())
	if err != nil {
		t.Fatal(err)
	}
	if sc.DockerAuthConfig == nil || sc.DockerAuthConfig.Username != "cli" || sc.DockerAuthConfig.Password != "secret" {
		t.Errorf("SystemContext().DockerAuthConfig = %+v, want cli:secret", sc.DockerAuthConfig)
	}
	o.Creds = ":nouser"
	if _, err := o.Authenticator(name.MustParseReference(ref).Context()); err == nil {
		t.Error("Authenticator() with --creds :nouser = nil error, want an error")
	}
}

// TestSystemContextMatchesAuthenticator checks that both clients get the
// same credentials and the same plain-HTTP decision.
func TestSystemContextMatchesAuthenticator(t *testing.T) {
	auth, _ := authHome(t)
	authJSON(t, auth, map[string]string{"docker.io": "hub", "quay.io/org1": "one", "10.1.2.3:5000": "lan"}, nil)
	tests := []struct {
		ref       string
		opts      registry.Options
		wantUser  string
		plainHTTP bool
	}{
		{"index.docker.io/library/x:1", registry.DefaultOptions(), "hub", false},
		{"quay.io/org1/img:1", registry.DefaultOptions(), "one", false},
		{"10.1.2.3:5000/img:1", registry.DefaultOptions(), "lan", false},
		{"10.1.2.3:5000/img:1", registry.Options{TLSVerify: false}, "lan", true},
		{"10.1.2.3:5000/img:1", registry.Options{TLSVerify: true, Insecure: true}, "lan", true},
		{"127.0.0.1:5000/img:1", registry.DefaultOptions(), "", true},
	}
	for _, tc := range tests {
		r, err := name.ParseReference(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := tc.opts.SystemContext(r.Context())
		if err != nil {
			t.Fatalf("SystemContext(%s) = %v", tc.ref, err)
		}
		if got := sc.DockerAuthConfig.Username; got != tc.wantUser {
			t.Errorf("SystemContext(%s) user = %q, want %q", tc.ref, got, tc.wantUser)
		}
		if got := ggcrUser(t, tc.opts, tc.ref); got != tc.wantUser {
			t.Errorf("Authenticator(%s) user = %q, want %q", tc.ref, got, tc.wantUser)
		}
		if got := sc.DockerInsecureSkipTLSVerify == types.OptionalBoolTrue; got != tc.plainHTTP {
			t.Errorf("SystemContext(%s) insecure = %v, want %v", tc.ref, got, tc.plainHTTP)
		}
		if got := tc.opts.PlainHTTP(r.Context().RegistryStr()); got != tc.plainHTTP {
			t.Errorf("PlainHTTP(%s) = %v, want %v", tc.ref, got, tc.plainHTTP)
		}
	}
}
