package pipeline

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Version is the archive version a run asks for.
type Version string

const (
	VersionAuto Version = "auto"
	Version1    Version = "1"
	Version2    Version = "2"
)

// ParseVersion accepts auto, 1 or 2 (and v1, v2).
func ParseVersion(s string) (Version, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auto", "":
		return VersionAuto, nil
	case "1", "v1":
		return Version1, nil
	case "2", "v2":
		return Version2, nil
	}
	return "", fmt.Errorf("unknown clip version %q: want auto, 1 or 2", s)
}

// Config is the YAML file given with --config.
type Config struct {
	ImageService struct {
		ClipVersion           string `yaml:"clipVersion"`
		BuildRegistry         string `yaml:"buildRegistry"`
		BuildRegistryInsecure bool   `yaml:"buildRegistryInsecure"`
	} `yaml:"imageService"`
	// S3 holds the settings of the S3 that registries on S3 and archives at
	// s3:// URLs use.
	S3       S3Config `yaml:"s3"`
	Registry struct {
		// Secret is the HTTP secret that every `registry serve` sharing one
		// storage must have ($CLIPBUILD_REGISTRY_SECRET).
		Secret string `yaml:"secret"`
	} `yaml:"registry"`
}

// S3Config are the config file's S3 settings. Each stands for the AWS SDK
// environment variable beside it, and, as for every setting, the
// environment wins over the file.
type S3Config struct {
	Endpoint        string `yaml:"endpoint"`        // AWS_ENDPOINT_URL (path-style addressing)
	Region          string `yaml:"region"`          // AWS_REGION
	Profile         string `yaml:"profile"`         // AWS_PROFILE
	AccessKeyID     string `yaml:"accessKeyId"`     // AWS_ACCESS_KEY_ID
	SecretAccessKey string `yaml:"secretAccessKey"` // AWS_SECRET_ACCESS_KEY
}

// HasSecrets reports whether the file holds a secret (an S3 secret key or
// the registry's HTTP secret), which only its owner should read.
func (c *Config) HasSecrets() bool {
	return c.S3.SecretAccessKey != "" || c.Registry.Secret != ""
}

// Environ is the environment the file's S3 and registry settings stand
// for, less what getenv (the process's environment) already decides:
// NAME=VALUE pairs for the caller to set. The environment decides a setting
// when any variable the AWS SDK reads for it is set: the endpoint
// (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), the region (AWS_REGION,
// AWS_DEFAULT_REGION); the credentials are one setting (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE), so that keys from the file never
// override a profile named in the environment, nor the reverse.
func (c *Config) Environ(getenv func(string) string) []string {
	set := func(names ...string) bool {
		for _, n := range names {
			if getenv(n) != "" {
				return true
			}
		}
		return false
	}
	var env []string
	add := func(name, value string) {
		if value != "" {
			env = append(env, name+"="+value)
		}
	}
	if !set("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") {
		add("AWS_ENDPOINT_URL", c.S3.Endpoint)
	}
	if !set("AWS_REGION", "AWS_DEFAULT_REGION") {
		add("AWS_REGION", c.S3.Region)
	}
	if !set("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_PROFILE") {
		add("AWS_PROFILE", c.S3.Profile)
		add("AWS_ACCESS_KEY_ID", c.S3.AccessKeyID)
		add("AWS_SECRET_ACCESS_KEY", c.S3.SecretAccessKey)
	}
	if !set("CLIPBUILD_REGISTRY_SECRET") {
		add("CLIPBUILD_REGISTRY_SECRET", c.Registry.Secret)
	}
	return env
}

// LoadConfig reads a config file. Unknown keys are an error, so a typo does
// not silently fall back to a default.
func LoadConfig(path string) (*Config, error) {
	c := &Config{}
	if path == "" {
		return c, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	// clipVersion may be written as a number (2) or a string ("auto"); yaml
	// decodes either into the string field.
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil
		}
		return nil, fmt.Errorf("parsing config %s: %w", path, err)
	}
	if c.ImageService.ClipVersion != "" {
		if _, err := ParseVersion(c.ImageService.ClipVersion); err != nil {
			return nil, fmt.Errorf("config %s: imageService.clipVersion: %w", path, err)
		}
	}
	if (c.S3.AccessKeyID == "") != (c.S3.SecretAccessKey == "") {
		return nil, fmt.Errorf("config %s: s3: give both accessKeyId and secretAccessKey, or neither", path)
	}
	if e := c.S3.Endpoint; e != "" {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("config %s: s3.endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", path, e)
		}
	}
	return c, nil
}

// Settings are the resolved choices for a run.
type Settings struct {
	Version          Version
	Registry         string
	RegistryInsecure bool
}

// Resolve applies the precedence flag, then environment (CLIP_VERSION,
// CLIPBUILD_REGISTRY), then config file, then default. flagVersion and
// flagRegistry are empty when the flag was not given.
func Resolve(flagVersion, flagRegistry string, c *Config) (Settings, error) {
	s := Settings{Version: VersionAuto, Registry: c.ImageService.BuildRegistry, RegistryInsecure: c.ImageService.BuildRegistryInsecure}
	pick := func(flag, env, file string) (string, string) {
		switch {
		case flag != "":
			return flag, "flag"
		case os.Getenv(env) != "":
			return os.Getenv(env), "$" + env
		default:
			return file, "imageService.clipVersion"
		}
	}
	v, from := pick(flagVersion, "CLIP_VERSION", c.ImageService.ClipVersion)
	if from == "flag" {
		from = "--clip-version"
	}
	ver, err := ParseVersion(v)
	if err != nil {
		return s, fmt.Errorf("%s: %w", from, err)
	}
	s.Version = ver
	s.Registry, _ = pick(flagRegistry, "CLIPBUILD_REGISTRY", c.ImageService.BuildRegistry)
	return s, nil
}
