package pipeline

import (
	"errors"
	"fmt"
	"io"
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
