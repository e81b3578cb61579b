package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	helperclient "github.com/docker/docker-credential-helpers/client"
	"github.com/docker/docker-credential-helpers/credentials"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/docker/config"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage/pkg/homedir"
)

// Credentials are found once, here, for every client clipbuild has (the
// go-containerregistry one of index, mount and verify, and the
// containers/image one of push and fetch), with containers/image's own
// lookup (pkg/docker/config): docker.io and index.docker.io are one
// registry, a repository-scoped key ("quay.io/org") wins over a shorter one
// ("quay.io"), and credHelpers entries run docker-credential-NAME. Two
// differences, both deliberate: a default auth file that cannot be read is
// skipped (a root-only /run/containers/0/auth.json must not break every
// other user), and a file's credsStore, which containers/image ignores, is
// asked as docker asks it.

// Credentials returns the credentials for repo: --creds if given; else the
// auth file named by --authfile or $REGISTRY_AUTH_FILE, which must exist and
// be readable; else the first of the default auth files that has an entry
// for repo. No entry anywhere means anonymous (the zero value).
func (o Options) Credentials(repo name.Repository) (types.DockerAuthConfig, error) {
	if o.Creds != "" {
		user, pass, err := splitCreds(o.Creds)
		if err != nil {
			return types.DockerAuthConfig{}, err
		}
		return types.DockerAuthConfig{Username: user, Password: pass}, nil
	}
	named, err := reference.ParseNormalizedNamed(repo.Name())
	if err != nil {
		return types.DockerAuthConfig{}, fmt.Errorf("credentials for %s: %w", repo, err)
	}
	if f := o.authFile(); f != "" {
		if _, err := os.Stat(f); err != nil {
			return types.DockerAuthConfig{}, fmt.Errorf("--authfile: %w", err)
		}
		return lookupAuthFile(authPath{path: f}, named)
	}
	for _, p := range defaultAuthPaths() {
		if err := readable(p.path); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				// logrus's standard logger is where containers/image says
				// the rest of its credential lookup, and --log-level
				// debug shows it.
				logrus.Debugf("skipping auth file %s: %v", p.path, err)
			}
			continue
		}
		creds, err := lookupAuthFile(p, named)
		if err != nil || creds != (types.DockerAuthConfig{}) {
			return creds, err
		}
	}
	return types.DockerAuthConfig{}, nil
}

// authFile is the explicitly named auth file: --authfile, else
// $REGISTRY_AUTH_FILE (buildah's default for --authfile), else none.
func (o Options) authFile() string {
	if o.AuthFile != "" {
		return o.AuthFile
	}
	return os.Getenv("REGISTRY_AUTH_FILE")
}

// Authenticator returns the go-containerregistry authenticator for repo,
// from Credentials.
func (o Options) Authenticator(repo name.Repository) (authn.Authenticator, error) {
	c, err := o.Credentials(repo)
	if err != nil {
		return nil, err
	}
	if c == (types.DockerAuthConfig{}) {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Password, IdentityToken: c.IdentityToken}), nil
}

// SystemContext is the containers/image equivalent of RemoteOptions, for
// copies into or out of repo: the credentials Credentials found (so
// containers/image does not search again with its own, stricter, rules) and
// the same plain-HTTP decision. containers/image has one switch for both
// "plain HTTP allowed" and "certificate not verified", so it is on wherever
// plain HTTP is allowed; unverified TLS is no weaker than plain HTTP.
func (o Options) SystemContext(repo name.Repository) (*types.SystemContext, error) {
	creds, err := o.Credentials(repo)
	if err != nil {
		return nil, err
	}
	sc := &types.SystemContext{DockerAuthConfig: &creds}
	if o.PlainHTTP(repo.RegistryStr()) {
		sc.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	return sc, nil
}

// ContainersReference is ref as a containers/image docker reference.
func ContainersReference(ref name.Reference) (types.ImageReference, error) {
	named, err := reference.ParseNormalizedNamed(ref.Name())
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", ref, err)
	}
	r, err := docker.NewReference(named)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", ref, err)
	}
	return r, nil
}

// authPath is an auth file and whether it is in docker's legacy .dockercfg
// format.
type authPath struct {
	path   string
	legacy bool
}

// defaultAuthPaths are the files containers/image searches when no file is
// named, in its order (pkg/docker/config getAuthFilePaths on Linux). They
// are listed here only so that one that cannot be read can be skipped.
func defaultAuthPaths() []authPath {
	home := homedir.Get()
	var paths []authPath
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		paths = append(paths, authPath{path: filepath.Join(d, "containers", "auth.json")})
	} else {
		paths = append(paths, authPath{path: fmt.Sprintf("/run/containers/%d/auth.json", os.Getuid())})
	}
	cfgHome := os.Getenv("XDG_CONFIG_HOME")
	if cfgHome == "" {
		cfgHome = filepath.Join(home, ".config")
	}
	paths = append(paths, authPath{path: filepath.Join(cfgHome, "containers", "auth.json")})
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		paths = append(paths, authPath{path: filepath.Join(d, "config.json")})
	} else {
		paths = append(paths, authPath{path: filepath.Join(home, ".docker", "config.json")})
	}
	return append(paths, authPath{path: filepath.Join(home, ".dockercfg"), legacy: true})
}

// readable reports why p cannot be read as an auth file, if it cannot.
func readable(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	return nil
}

// lookupAuthFile finds named's credentials in one auth file with
// containers/image's lookup, then asks the file's credsStore, if it names
// one. A missing file has no credentials; an unreadable or malformed one is
// an error.
func lookupAuthFile(p authPath, named reference.Named) (types.DockerAuthConfig, error) {
	sys := &types.SystemContext{AuthFilePath: p.path}
	if p.legacy {
		sys = &types.SystemContext{LegacyFormatAuthFilePath: p.path}
	}
	creds, err := config.GetCredentialsForRef(sys, named)
	if err != nil {
		return types.DockerAuthConfig{}, fmt.Errorf("reading credentials for %s from %s: %w", reference.Domain(named), p.path, err)
	}
	if creds != (types.DockerAuthConfig{}) || p.legacy {
		return creds, nil
	}
	return credsStoreLookup(p.path, reference.Domain(named))
}

// credsStoreLookup asks the credential store that the docker config file at
// path names in its credsStore, as docker does for registries without a
// credHelpers entry: docker-credential-NAME get, with the registry's host
// (docker's "https://index.docker.io/v1/" for Docker Hub).
func credsStoreLookup(path, host string) (types.DockerAuthConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return types.DockerAuthConfig{}, nil
		}
		return types.DockerAuthConfig{}, fmt.Errorf("reading auth file %s: %w", path, err)
	}
	var f struct {
		CredsStore string `json:"credsStore"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.CredsStore == "" {
		// containers/image has already parsed the file; a file it
		// accepted that is not an object has no credsStore.
		return types.DockerAuthConfig{}, nil
	}
	server := host
	if host == "docker.io" {
		server = "https://index.docker.io/v1/"
	}
	c, err := helperclient.Get(helperclient.NewShellProgramFunc("docker-credential-"+f.CredsStore), server)
	if credentials.IsErrCredentialsNotFound(err) {
		logrus.Debugf("no credentials for %s in credential store %s", host, f.CredsStore)
		return types.DockerAuthConfig{}, nil
	}
	if err != nil {
		return types.DockerAuthConfig{}, fmt.Errorf("asking credential store %s (credsStore in %s) for %s: %w", f.CredsStore, path, host, err)
	}
	logrus.Debugf("found credentials for %s in credential store %s", host, f.CredsStore)
	if c.Username == "<token>" {
		return types.DockerAuthConfig{IdentityToken: c.Secret}, nil
	}
	return types.DockerAuthConfig{Username: c.Username, Password: c.Secret}, nil
}
