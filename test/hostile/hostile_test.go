package hostile

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/registry"
	"github.com/clipbuild/clipbuild/stages"
)

var resultsFile = flag.String("results", "", "write every case's v1 and v2 outcome to this file")

// requireRoot skips t when not running as root, or fails it under CI=true,
// where every test is expected to run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI=true")
	}
	t.Skip("this test needs root")
}

// outcome is what one path made of one case.
type outcome struct {
	err     error
	entries int
}

func (o outcome) String() string {
	if o.err != nil {
		return "rejected: " + o.err.Error()
	}
	return fmt.Sprintf("contained: correct tree (%d entries)", o.entries)
}

type result struct {
	name, about string
	v1, v2      string
	skipped     string
}

// TestHostileLayers runs every hostile case through v1 (ArchiveLayout of
// the OCI layout's blobs) and v2 (Index of the image pushed to the
// embedded registry).
func TestHostileLayers(t *testing.T) {
	ctx := context.Background()
	quiet := logrus.New()
	quiet.SetOutput(os.Stderr)
	quiet.SetLevel(logrus.WarnLevel)
	registry.RouteLogs(quiet)
	srv, err := registry.Start(ctx, "127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})

	var results []result
	for i, c := range Cases("/outside") {
		r := result{name: c.Name, about: c.About}
		t.Run(c.Name, func(t *testing.T) {
			if c.NeedsRoot && os.Geteuid() != 0 {
				r.skipped = "needs root"
			}
			if c.NeedsRoot {
				requireRoot(t)
			}
			v1, v2, scrub := runCase(t, srv.Addr, i)
			r.v1, r.v2 = scrub(v1.String()), scrub(v2.String())
		})
		results = append(results, r)
	}
	if *resultsFile != "" {
		if t.Failed() {
			t.Fatalf("not writing %s: the run failed", *resultsFile)
		}
		if err := writeResults(*resultsFile, results); err != nil {
			t.Fatal(err)
		}
	}
}

// runCase checks case i of Cases and returns both outcomes, with a function
// that takes run-specific paths out of messages.
func runCase(t *testing.T, addr string, i int) (v1, v2 outcome, scrub func(string) string) {
	ctx := context.Background()
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, outside)
	c := Cases(outside)[i]

	img, err := Build(c)
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	layoutDir := filepath.Join(t.TempDir(), "layout")
	if err := WriteLayout(layoutDir, img); err != nil {
		t.Fatalf("WriteLayout() = %v", err)
	}

	// v1: the archive straight from the layout's blobs, into a directory
	// that holds nothing else: nothing may be written but the archive.
	l, err := stages.ReadLayout(layoutDir)
	if err != nil {
		t.Fatalf("ReadLayout() = %v", err)
	}
	v1Dir := filepath.Join(t.TempDir(), "v1")
	if err := os.Mkdir(v1Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v1Out := filepath.Join(v1Dir, "out.clip")
	start := time.Now()
	_, v1.err = stages.ArchiveLayout(ctx, l, "x", v1Out)
	t.Logf("v1 (%v): %v", time.Since(start).Round(time.Millisecond), errOrOK(v1.err))
	if v1.err == nil {
		checkContained(t, "v1", v1Dir, "out.clip")
	} else {
		checkContained(t, "v1", v1Dir)
	}
	checkUnchanged(t, "v1", outside, before)
	var v1Tree archive.Tree
	if v1.err == nil {
		v1Tree = v1ArchiveTree(t, v1Out)
		v1.entries = len(v1Tree)
	}
	judge(t, "v1", c, v1.err, v1Tree)

	// v2: index the same image from the embedded registry.
	repo := "hostile/" + c.Name
	pushImage(t, addr, repo, img)
	outDir := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "out.clip")
	cwdBefore := dirNames(t, ".")
	start = time.Now()
	_, v2.err = stages.Indexer{Options: registryOptions(t)}.Index(ctx, stages.IndexRequest{Ref: addr + "/" + repo + ":1", Image: "x", Output: out})
	t.Logf("v2 (%v): %v", time.Since(start).Round(time.Millisecond), errOrOK(v2.err))
	if v2.err == nil {
		checkContained(t, "v2", outDir, "out.clip")
	} else {
		checkContained(t, "v2", outDir)
	}
	checkUnchanged(t, "v2", outside, before)
	checkContained(t, "v2", v1Dir, "out.clip") // what v1 left, untouched
	if got := dirNames(t, "."); got != cwdBefore {
		t.Errorf("v2 changed the working directory: %s, was %s", got, cwdBefore)
	}
	var v2Tree archive.Tree
	if v2.err == nil {
		v2Tree = archiveTree(t, out, img)
		v2.entries = len(v2Tree)
	}
	judge(t, "v2", c.ForV2(), v2.err, v2Tree)

	if v1.err == nil && v2.err == nil {
		if d := archive.Diff(normalize(v1Tree), normalize(v2Tree)); len(d) > 0 {
			t.Errorf("v1 and v2 trees differ:\n  %s", strings.Join(d, "\n  "))
		}
	}
	scrub = func(s string) string {
		s = strings.ReplaceAll(s, strings.TrimPrefix(outside, "/"), "$OUTSIDE")
		s = strings.ReplaceAll(s, addr, "$REGISTRY")
		s = layerDigest.ReplaceAllString(s, "layer $1") // varies with the outside path in some layers
		s = hexRun.ReplaceAllStringFunc(s, func(h string) string { return h[:8] + "…" })
		s = repeatedDirs.ReplaceAllString(s, "d/d/…/")
		s = repeatedName.ReplaceAllStringFunc(s, func(m string) string { return fmt.Sprintf("n (×%d)", len(m)) })
		if len(s) > 240 {
			s = s[:240] + "…"
		}
		return s
	}
	return v1, v2, scrub
}

// v1ArchiveTree opens a v1 archive and reads its tree back.
func v1ArchiveTree(t *testing.T, out string) archive.Tree {
	t.Helper()
	a, err := archive.Open(out)
	if err != nil {
		t.Fatalf("Open(v1 output) = %v", err)
	}
	if a.Version() != 1 {
		t.Errorf("v1 output is a version %d archive", a.Version())
	}
	s, err := archive.OpenStorage(a)
	if err != nil {
		t.Fatalf("OpenStorage(v1) = %v", err)
	}
	defer s.Cleanup()
	tr, err := archive.TreeFromArchive(context.Background(), a, s)
	if err != nil {
		t.Fatalf("TreeFromArchive(v1) = %v", err)
	}
	return tr
}

var (
	layerDigest  = regexp.MustCompile(`layer (\d+) \([0-9a-f]{12}\)`)
	hexRun       = regexp.MustCompile(`[0-9a-f]{16,}`)
	repeatedDirs = regexp.MustCompile(`(?:d/){8,}`)
	repeatedName = regexp.MustCompile(`n{32,}`)
)

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	s := err.Error()
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// judge checks one path's outcome: a rejection the case accepts, or its
// exact correct tree.
func judge(t *testing.T, which string, c Case, err error, got archive.Tree) {
	t.Helper()
	if err != nil {
		if c.Reject == nil {
			t.Errorf("%s failed on an image it must handle: %v", which, errOrOK(err))
		} else if !c.Reject.MatchString(err.Error()) {
			t.Errorf("%s error %q does not clearly reject the case (want a match for %q)", which, errOrOK(err), c.Reject)
		}
		return
	}
	if c.Want == nil {
		t.Errorf("%s succeeded; only an error is correct here. Tree:\n  %s", which, strings.Join(describe(got), "\n  "))
		return
	}
	if d := archive.Diff(normalize(c.Want), normalize(got)); len(d) > 0 {
		t.Errorf("%s tree is not the correct one:\n  %s", which, strings.Join(d, "\n  "))
	}
}

// normalize zeroes owners when not running as root: the layers then carry
// the current user, while the directories an indexer makes up are root's.
func normalize(tr archive.Tree) archive.Tree {
	if os.Geteuid() == 0 {
		return tr
	}
	out := archive.Tree{}
	for p, e := range tr {
		e.UID, e.GID = 0, 0
		out[p] = e
	}
	return out
}

func describe(tr archive.Tree) []string {
	var out []string
	for p, e := range tr {
		if len(p) > 100 {
			p = p[:100] + "…"
		}
		out = append(out, fmt.Sprintf("%s %s %04o %s", p, e.Type, e.Perm, e.Target))
	}
	sort.Strings(out)
	if len(out) > 30 {
		out = append(out[:30], fmt.Sprintf("… and %d more", len(out)-30))
	}
	return out
}

// registryOptions are the defaults with an empty auth file, so the test
// never reads (or trips over) the user's own registry credentials.
func registryOptions(t *testing.T) registry.Options {
	t.Helper()
	o := registry.DefaultOptions()
	o.AuthFile = filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(o.AuthFile, []byte(`{"auths":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return o
}

// archiveTree opens a v2 archive, checks its nodes cannot point outside the
// image, and reads its tree back through the registry.
func archiveTree(t *testing.T, out string, img *Image) archive.Tree {
	t.Helper()
	a, err := archive.Open(out)
	if err != nil {
		t.Fatalf("Open(v2 output) = %v", err)
	}
	plainLen := map[string]int64{}
	for i, l := range img.Layers {
		plainLen[l.Digest.String()] = int64(len(img.Plain[i]))
	}
	types := map[uint64]string{}
	for _, n := range a.Nodes() {
		if !strings.HasPrefix(n.Path, "/") || path.Clean(n.Path) != n.Path || strings.ContainsRune(n.Path, 0) {
			t.Errorf("node path %q is not a clean absolute path", n.Path)
		}
		if n.Remote != nil {
			size, ok := plainLen[n.Remote.LayerDigest]
			if !ok {
				t.Errorf("%s reads from %s, which is not a layer of the image", n.Path, n.Remote.LayerDigest)
			} else if n.Remote.UOffset < 0 || n.Remote.ULength < 0 || n.Remote.UOffset+n.Remote.ULength > size {
				t.Errorf("%s reads %d+%d, outside its %d-byte layer", n.Path, n.Remote.UOffset, n.Remote.ULength, size)
			}
		}
		if n.NodeType != common.DirNode {
			// Paths sharing an inode (hard links) must all be of one kind.
			kind := string(n.NodeType) + fmt.Sprint(n.Attr.Mode&syscall.S_IFMT)
			if k, ok := types[n.Attr.Ino]; ok && k != kind {
				t.Errorf("%s shares inode %d with a node of another kind", n.Path, n.Attr.Ino)
			}
			types[n.Attr.Ino] = kind
		}
	}
	s, err := archive.OpenStorage(a, archive.WithCacheDir(t.TempDir()), archive.WithRegistryOptions(registryOptions(t)))
	if err != nil {
		t.Fatalf("OpenStorage(v2) = %v", err)
	}
	defer s.Cleanup()
	tr, err := archive.TreeFromArchive(context.Background(), a, s)
	if err != nil {
		t.Fatalf("TreeFromArchive(v2) = %v", err)
	}
	return tr
}

// checkContained fails t if dir holds anything but the named entries and,
// for the first of them, what lies under it.
func checkContained(t *testing.T, which, dir string, allowed ...string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		for i, a := range allowed {
			if rel == a {
				return nil
			}
			if i == 0 && strings.HasPrefix(rel, a+"/") {
				return nil
			}
		}
		t.Errorf("%s created %s, outside its target", which, p)
		return nil
	})
	if err != nil {
		t.Errorf("walking %s: %v", dir, err)
	}
}

// dirNames lists dir's entries.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// snapshot describes every path under dir: type, mode, link count and
// contents.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode %o links %d", st.Mode, st.Nlink)
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", dir, err)
	}
	return out
}

func checkUnchanged(t *testing.T, which, dir string, before map[string]string) {
	t.Helper()
	after := snapshot(t, dir)
	for p, d := range after {
		if before[p] != d {
			t.Errorf("%s changed %s outside its target: %q, was %q", which, p, d, before[p])
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s removed %s outside its target", which, p)
		}
	}
}

// pushImage uploads img's blobs and manifest to repo:1 with the
// distribution API, as any client would.
func pushImage(t *testing.T, addr, repo string, img *Image) {
	t.Helper()
	base := "http://" + addr + "/v2/" + repo
	client := &http.Client{Timeout: 30 * time.Second}
	for _, b := range append([]Blob{img.Config}, img.Layers...) {
		resp, err := client.Post(base+"/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("starting upload: %s", resp.Status)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		u := (&url.URL{Scheme: "http", Host: addr}).ResolveReference(loc)
		q := u.Query()
		q.Set("digest", b.Digest.String())
		u.RawQuery = q.Encode()
		put(t, client, u.String(), "application/octet-stream", b.Data)
	}
	put(t, client, base+"/manifests/1", img.Manifest.MediaType, img.Manifest.Data)
}

func put(t *testing.T, client *http.Client, u, contentType string, data []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, u, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT %s: %s %s", u, resp.Status, body)
	}
}

func writeResults(file string, results []result) error {
	var b strings.Builder
	kind := func(o string) string { k, _, _ := strings.Cut(o, ":"); return k }
	counts := map[string]int{}
	ran := 0
	for _, r := range results {
		if r.skipped != "" || r.v1 == "" {
			continue
		}
		ran++
		counts["v1 "+kind(r.v1)]++
		counts["v2 "+kind(r.v2)]++
	}
	fmt.Fprintf(&b, "Hostile layers: %d cases (%d run), each through v1 (stages.ArchiveLayout of the\n", len(results), ran)
	fmt.Fprintf(&b, "OCI layout's blobs, nothing unpacked) and v2 (stages.Indexer.Index of the same\nimage pushed to the embedded registry). ")
	fmt.Fprintf(&b, "v1: %d rejected with an error, %d contained with the correct tree.\n", counts["v1 rejected"], counts["v1 contained"])
	fmt.Fprintf(&b, "v2: %d rejected with an error, %d contained with the correct tree.\n", counts["v2 rejected"], counts["v2 contained"])
	fmt.Fprintf(&b, "Nothing was created but the archive in any case; where both paths\n")
	fmt.Fprintf(&b, "produced a tree, the two trees were equal.\n")
	fmt.Fprintf(&b, "Generated by: go test ./test/hostile/ -run TestHostileLayers -args -results RESULTS.txt\n\n")
	fmt.Fprintf(&b, "%-38s %-10s %s\n", "case", "v1", "v2")
	for _, r := range results {
		if r.skipped != "" {
			fmt.Fprintf(&b, "%-38s skipped (%s)\n", r.name, r.skipped)
			continue
		}
		fmt.Fprintf(&b, "%-38s %-10s %s\n", r.name, kind(r.v1), kind(r.v2))
	}
	b.WriteString("\n")
	for _, r := range results {
		fmt.Fprintf(&b, "%s: %s\n", r.name, r.about)
		if r.skipped != "" {
			fmt.Fprintf(&b, "  skipped: %s\n\n", r.skipped)
			continue
		}
		fmt.Fprintf(&b, "  v1: %s\n  v2: %s\n\n", r.v1, r.v2)
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}
