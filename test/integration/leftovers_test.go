package integration

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// namedContext is inlineContext in a directory of the given name, which
// is what clipbuild names an image after when no -t is given.
func namedContext(t *testing.T, name, dockerfile string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	mustDo(t, os.Rename(inlineContext(t, dockerfile), dir))
	return dir
}

// localImage is an image in buildah's storage.
type localImage struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
}

func localImages(t *testing.T) []localImage {
	t.Helper()
	var imgs []localImage
	if err := json.Unmarshal([]byte(buildahCmd(t, "images", "--json", "--no-trunc")), &imgs); err != nil {
		t.Fatalf("buildah images --json: %v", err)
	}
	for i := range imgs {
		imgs[i].ID = strings.TrimPrefix(imgs[i].ID, "sha256:")
	}
	return imgs
}

// imagesWithPrefix lists the local image names that start with prefix.
func imagesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	var names []string
	for _, img := range localImages(t) {
		for _, n := range img.Names {
			if strings.HasPrefix(n, prefix) {
				names = append(names, n)
			}
		}
	}
	return names
}

func imageIDExists(t *testing.T, id string) bool {
	t.Helper()
	for _, img := range localImages(t) {
		if img.ID == id {
			return true
		}
	}
	return false
}

// removedImageRE is the debug line the build stage logs when it removes
// the image it named.
var removedImageRE = regexp.MustCompile(`removed image (\S+) \(([0-9a-f]{64})\)`)

// registryUncompressedBytes sums the uncompressed sizes of the layers of
// the image ref (host:port/repo@digest) in a loopback registry, reading
// the blobs over plain HTTP: an oracle independent of clipbuild's code.
func registryUncompressedBytes(t *testing.T, ref string) int64 {
	t.Helper()
	host, rest, _ := strings.Cut(ref, "/")
	repo, dgst, ok := strings.Cut(rest, "@")
	if !ok {
		t.Fatalf("imageRef %q is not HOST/REPO@DIGEST", ref)
	}
	get := func(path, accept string) io.ReadCloser {
		req, err := http.NewRequest("GET", "http://"+host+"/v2/"+repo+path, nil)
		mustDo(t, err)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		mustDo(t, err)
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			t.Fatalf("GET %s: %s", req.URL, resp.Status)
		}
		return resp.Body
	}
	body := get("/manifests/"+dgst, "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	var m struct {
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"layers"`
	}
	err := json.NewDecoder(body).Decode(&m)
	body.Close()
	mustDo(t, err)
	var total int64
	for _, l := range m.Layers {
		blob := get("/blobs/"+l.Digest, "*/*")
		var r io.Reader = blob
		if strings.Contains(l.MediaType, "gzip") || strings.HasSuffix(l.MediaType, "diff.tar.gzip") {
			zr, err := gzip.NewReader(blob)
			mustDo(t, err)
			r = zr
		}
		n, err := io.Copy(io.Discard, r)
		blob.Close()
		mustDo(t, err)
		total += n
	}
	if len(m.Layers) == 0 {
		t.Fatalf("manifest of %s has no layers", ref)
	}
	return total
}

// TestImageNamedByClipbuildIsRemoved: an image built without -t is a
// leftover once archived, so clipbuild removes it, after success and after
// failure, unless --keep-image; an image tagged with -t stays. It also
// checks the byte counts of the --json result.
func TestImageNamedByClipbuildIsRemoved(t *testing.T) {
	requirePrerequisites(t)
	base := namePrefix + "-unnamed"
	ctx := namedContext(t, base, busyboxBase+"RUN echo leftover > /l.txt\n")
	prefix := "localhost/" + base + "-"
	t.Cleanup(func() {
		for _, n := range imagesWithPrefix(t, prefix) {
			buildahCleanup(t, "rmi", n)
		}
	})
	reg := startRegistry(t, "")

	build := func(t *testing.T, flags ...string) (buildOutput, result) {
		t.Helper()
		args := append([]string{"--json", "--log-level", "debug", "-o", filepath.Join(t.TempDir(), "x.clip")}, flags...)
		res := run(t, "", buildTimeout, clipbuildBin, buildArgs(append(args, ctx)...)...)
		var out buildOutput
		if res.exitCode == 0 {
			if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%v", err, res)
			}
		}
		return out, res
	}
	// checkRemoved checks that the run removed the image it named, by name
	// and by ID, and returns the name.
	checkRemoved := func(t *testing.T, res result) string {
		t.Helper()
		m := removedImageRE.FindStringSubmatch(res.stderr)
		if m == nil {
			t.Fatalf("no %q line in the log\n%v", removedImageRE, res)
		}
		name, id := m[1], m[2]
		if !strings.HasPrefix(name, prefix) {
			t.Errorf("removed image %s, want a name starting %s", name, prefix)
		}
		if err := exec.Command("buildah", "inspect", "--type", "image", name).Run(); err == nil {
			t.Errorf("image %s is still in buildah's storage", name)
		}
		if imageIDExists(t, id) {
			t.Errorf("image %s (%s) lost its name but is still in buildah's storage", name, id[:12])
		}
		if left := imagesWithPrefix(t, prefix); len(left) != 0 {
			t.Errorf("images left: %q", left)
		}
		return name
	}

	t.Run("v1", func(t *testing.T) {
		out, res := build(t, "--clip-version", "1")
		mustSucceed(t, res)
		if name := checkRemoved(t, res); out.Image != name {
			t.Errorf("image: got %q, want the name it was built as, %q", out.Image, name)
		}
		if out.ImageBytes <= 0 || out.UncompressedBytes != out.ImageBytes {
			t.Errorf("v1: imageBytes %d, uncompressedBytes %d; want them equal and > 0 (v1 layers are uncompressed)", out.ImageBytes, out.UncompressedBytes)
		}
		if !strings.Contains(res.stdout, `"uncompressedBytes":`) {
			t.Errorf("the --json result has no uncompressedBytes: %s", res.stdout)
		}
	})
	t.Run("v2", func(t *testing.T) {
		out, res := build(t, "--clip-version", "2", "--registry", reg.addr+"/unnamed")
		mustSucceed(t, res)
		if name := checkRemoved(t, res); out.Image != name {
			t.Errorf("image: got %q, want %q", out.Image, name)
		}
		want := registryUncompressedBytes(t, out.ImageRef)
		if out.UncompressedBytes != want {
			t.Errorf("v2: uncompressedBytes %d, want %d (the registry's layers, gunzipped)", out.UncompressedBytes, want)
		}
		if out.ImageBytes <= 0 || out.ImageBytes >= out.UncompressedBytes {
			t.Errorf("v2: imageBytes %d, want it > 0 and below uncompressedBytes %d (gzip layers)", out.ImageBytes, out.UncompressedBytes)
		}
		// pull counts the same image the same way, on both paths.
		for _, v := range []string{"1", "2"} {
			res := clipbuild(t, "pull", out.ImageRef, "--clip-version", v, "--json", "-o", filepath.Join(t.TempDir(), "p.clip"))
			mustSucceed(t, res)
			var p buildOutput
			mustDo(t, json.Unmarshal([]byte(res.stdout), &p))
			if p.UncompressedBytes != want || p.ImageBytes != out.ImageBytes {
				t.Errorf("pull v%s: uncompressedBytes %d, imageBytes %d; want %d, %d", v, p.UncompressedBytes, p.ImageBytes, want, out.ImageBytes)
			}
		}
	})
	t.Run("failed run", func(t *testing.T) {
		// Nothing listens on port 1: the push fails after the build.
		_, res := build(t, "--clip-version", "2", "--registry", "127.0.0.1:1/unnamed")
		assertCleanFailure(t, res)
		checkRemoved(t, res)
	})
	t.Run("keep-image", func(t *testing.T) {
		out, res := build(t, "--clip-version", "1", "--keep-image")
		mustSucceed(t, res)
		if removedImageRE.MatchString(res.stderr) {
			t.Errorf("--keep-image: the run removed its image\n%v", res)
		}
		if !strings.HasPrefix(out.Image, prefix) {
			t.Fatalf("image: got %q, want a name starting %s", out.Image, prefix)
		}
		removeImageLater(t, out.Image)
		if err := exec.Command("buildah", "inspect", "--type", "image", out.Image).Run(); err != nil {
			t.Errorf("--keep-image: image %s is not in buildah's storage: %v", out.Image, err)
		}
	})
	t.Run("tagged", func(t *testing.T) {
		image := imageName("tagged-kept")
		removeImageLater(t, image)
		_, res := build(t, "--clip-version", "1", "-t", image)
		mustSucceed(t, res)
		if removedImageRE.MatchString(res.stderr) {
			t.Errorf("-t %s: the run removed its image\n%v", image, res)
		}
		if err := exec.Command("buildah", "inspect", "--type", "image", image).Run(); err != nil {
			t.Errorf("-t %s: image is not in buildah's storage: %v", image, err)
		}
	})
}
