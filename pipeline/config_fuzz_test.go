package pipeline_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clipbuild/clipbuild/pipeline"
)

// FuzzLoadConfig loads arbitrary bytes as a --config file: LoadConfig must
// return an error or a config whose clipVersion parses (and which Resolve
// accepts), quickly, and never panic.
func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{
		"",
		"# nothing here\n",
		"imageService:\n  clipVersion: 2\n",
		"imageService:\n  clipVersion: \"1\"\n  buildRegistry: localhost:5000/scratch\n  buildRegistryInsecure: true\n",
		"imageService:\n  clipVersion: v2\n---\nimageService:\n  clipVersion: 9\n",
		"imageService: {clipVersion: auto, buildRegistry: 'r:1/ns'}\n",
		"imageService:\n  clipVersion: [1]\n",
		"imageService:\n  clipVersion: 1.5\n",
		"imageService:\n  buildRegistryInsecure: maybe\n",
		"a: &a [*a, *a]\nb: &b [*a, *a, *a]\nimageService: *b\n",
		"imageService: !!binary aGVsbG8=\n",
		"imageService:\n  clipVersoin: 1\n",
		"\xef\xbb\xbfimageService:\n  clipVersion: 1\n",
		"imageService: [unclosed\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c, err := pipeline.LoadConfig(p)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("LoadConfig took %v on %d bytes", d, len(data))
		}
		if err != nil {
			return
		}
		if c == nil {
			t.Fatal("LoadConfig() = nil, nil")
		}
		if v := c.ImageService.ClipVersion; v != "" {
			if _, err := pipeline.ParseVersion(v); err != nil {
				t.Fatalf("LoadConfig accepted clipVersion %q: %v", v, err)
			}
		}
		t.Setenv("CLIP_VERSION", "")
		t.Setenv("CLIPBUILD_REGISTRY", "")
		s, err := pipeline.Resolve("", "", c)
		if err != nil {
			t.Fatalf("Resolve() of a loaded config = %v", err)
		}
		if s.Registry != c.ImageService.BuildRegistry || s.RegistryInsecure != c.ImageService.BuildRegistryInsecure {
			t.Fatalf("Resolve() = %+v, want the config's registry settings", s)
		}
	})
}
