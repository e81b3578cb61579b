package harness

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStatOf(t *testing.T) {
	if got := *statOf([]float64{3, 1, 2}); got != (Stat{Min: 1, Median: 2, Max: 3}) {
		t.Fatalf("odd: %+v", got)
	}
	if got := *statOf([]float64{4, 1, 2, 3}); got != (Stat{Min: 1, Median: 2.5, Max: 4}) {
		t.Fatalf("even: %+v", got)
	}
	if statOf(nil) != nil {
		t.Fatal("empty samples gave a stat")
	}
}

func TestSamplesRowOmitsWhatDoesNotApply(t *testing.T) {
	s := newSamples("gzip-dc", "gzip -dc $BLOBS")
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
		s.process(Measured{Wall: d, PeakRSS: int64(d / time.Millisecond)})
		s.time(d)
	}
	r := s.row()
	if r.Seconds.Median != 2 || r.WallSeconds != nil || r.BytesFetched != nil || *r.PeakRSSBytes != 3000 {
		t.Fatalf("row %+v", r)
	}
}

func TestAddStagesLeavesOutBuild(t *testing.T) {
	s := newSamples("v2-build-after-bud", "")
	r, err := parseResult([]byte(`{"clipVersion":2,"stages":[{"name":"build","seconds":9},{"name":"push","seconds":2},{"name":"index","seconds":1}]}`), 2)
	if err != nil {
		t.Fatal(err)
	}
	addStages(s, r)
	if s.seconds[0] != 3 || len(s.stageOrder) != 3 {
		t.Fatalf("seconds %v, stages %v", s.seconds, s.stageOrder)
	}
	if _, err := parseResult([]byte(`{"clipVersion":1,"fallbackReason":"x"}`), 2); err == nil {
		t.Fatal("a fallback to v1 was accepted as v2")
	}
}

func TestArgv(t *testing.T) {
	s := &suite{o: Options{Clipbuild: "/r/bin/clipbuild"}, work: "/w", image: "localhost/i:latest", repo: "bench/i", blobs: []string{"/b1", "/b2"}}
	got := strings.Join(s.argv("$CLIPBUILD pull $PROXY/$REPO:latest -o $WORK/x $BLOBS", "127.0.0.1:9"), " ")
	if want := "/r/bin/clipbuild pull 127.0.0.1:9/bench/i:latest -o /w/x /b1 /b2"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if d := display("$CLIPBUILD mount"); d != "bin/clipbuild mount" {
		t.Fatalf("display %q", d)
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	n := func(v int64) *int64 { return &v }
	res := &Results{Machine: Machine{CPUs: 2, MemBytes: 1 << 30}, Scale: "small", Date: "2026-01-01T00:00:00Z", Runs: 3,
		Images: []Image{{Name: "small", ImageBytes: 1000, CompressedBytes: 500, Rows: []Row{
			{Name: "v2-pull-index", Seconds: &Stat{1, 1, 1}, BytesFetched: n(500), ArchiveBytes: n(10)},
			{Name: "gzip-dc", Seconds: &Stat{0.5, 0.5, 0.5}},
			{Name: "soci-ztoc", Skipped: "not available"},
		}}}}
	if err := Write(dir, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Scale: small", "| v2 index / `gzip -dc` | 2.00× |", "not measured: not available", "Not run: scale medium, large.", "#### Targets (issue 10)",
		"| pulled archive / SOCI zTOC of the same image | ≤ 1.0× | n/a | not measured |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	for _, f := range []string{"results.json", "results-small.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestTargets(t *testing.T) {
	sec := func(v float64) *Stat { return &Stat{Min: v, Median: v, Max: v} }
	im := &Image{CompressedBytes: 1000, Rows: []Row{
		{Name: "v2-build-after-bud", Seconds: sec(2), BytesFetched: ptr[int64](5), BlobBytes: ptr[int64](1040), PeakRSSBytes: ptr[int64](140e6)},
		{Name: "v2-rebuild-last-layer", Seconds: sec(0.8), BytesFetched: ptr[int64](20), PeakRSSBytes: ptr[int64](90e6)},
		{Name: "buildah-push-registry", Seconds: sec(2.5), BlobBytes: ptr[int64](1000)},
		{Name: "buildah-push-oci", Seconds: sec(1)},
	}}
	got := map[string]string{}
	for _, tg := range targets(im, "medium") {
		got[tg.from+" "+tg.limit] = tg.result()
	}
	for _, c := range []struct{ from, limit, want string }{
		{"`v2-build-after-bud` / `buildah-push-registry`", "≤ 1.0× (0.7×)", "pass"},
		{"`v1-build-after-bud` / `buildah-push-oci`", "≤ 1.5× (1.0×)", "not measured"},
		{"`v2-build-after-bud` fetched / the image's gzip layer bytes", "≤ 1%", "pass"},
		{"`v2-rebuild-last-layer` fetched / the image's gzip layer bytes", "≤ 1%", "fail"},
		{"`v2-rebuild-last-layer` / `v2-build-after-bud`", "≤ 0.3×", "fail"},
		{"sum of the layer sizes in the manifests `v2-build-after-bud` and `buildah-push-registry` pushed", "≤ 1.05×", "pass"},
	} {
		if g := got[c.from+" "+c.limit]; g != c.want {
			t.Errorf("%s %s: got %q, want %q", c.from, c.limit, g, c.want)
		}
	}
	var rss []string
	for _, tg := range targets(im, "medium") {
		if tg.scale == "large" {
			rss = append(rss, tg.result())
		}
	}
	if want := []string{"pass (the limit is for large)", "pass (the limit is for large)", "not measured"}; strings.Join(rss, ",") != strings.Join(want, ",") {
		t.Errorf("peak RSS results: got %q, want %q", rss, want)
	}
}

func TestArgvBlobURLs(t *testing.T) {
	s := &suite{o: Options{Self: "/r/clipbench"}, repo: "bench/i"}
	got := strings.Join(s.argvLayers("$CLIPBENCH fetch-inflate $BLOBURLS", "127.0.0.1:9", []layer{{Digest: "sha256:aa"}, {Digest: "sha256:bb"}}), " ")
	if want := "/r/clipbench fetch-inflate http://127.0.0.1:9/v2/bench/i/blobs/sha256:aa http://127.0.0.1:9/v2/bench/i/blobs/sha256:bb"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestMedianStats(t *testing.T) {
	runs := []*MountStats{{BytesFetched: 30}, nil, {BytesFetched: 10}, {BytesFetched: 20}}
	if got := medianStats(runs); got == nil || got.BytesFetched != 20 {
		t.Fatalf("got %+v, want the run that fetched 20", got)
	}
	if got := medianStats([]*MountStats{nil, nil}); got != nil {
		t.Fatalf("got %+v, want nil when no run wrote stats", got)
	}
}

func TestTargets8(t *testing.T) {
	sec := func(v float64) *Stat { return &Stat{Min: v, Median: v, Max: v} }
	im := &Image{Rows: []Row{
		{Name: "native-all", Seconds: sec(0.3)},
		{Name: "lazy-built-all-warm", Seconds: sec(0.8)},
		{Name: "lazy-all-warm", Seconds: sec(1.2)},
	}}
	var got []string
	for _, tg := range targets8(im) {
		got = append(got, tg.result())
	}
	if want := []string{"pass", "fail"}; !slices.Equal(got, want) {
		t.Errorf("targets8 results %q, want %q", got, want)
	}
	for _, tg := range targets8(&Image{}) {
		if tg.result() != "not measured" {
			t.Errorf("%s with no rows: got %q, want \"not measured\"", tg.name, tg.result())
		}
	}
}

func TestTargets10(t *testing.T) {
	sec := func(v float64) *Stat { return &Stat{Min: v, Median: v, Max: v} }
	n := func(v int64) *int64 { return &v }
	im := &Image{CompressedBytes: 100 << 20, BuiltBytes: 100 << 20, FileBytes: 200 << 20, Rows: []Row{
		{Name: "v2-pull-index", ArchiveBytes: n(1 << 20)},
		{Name: "soci-ztoc", OutBytes: n(2 << 20)},
		{Name: "fetch-inflate", Seconds: sec(2)},
		{Name: "fetch-inflate-built", Seconds: sec(2)},
		{Name: "lazy-built-one-file-cold", Seconds: sec(0.02), TTFBSeconds: sec(0.02), BytesFetched: n(300 << 10)},
		{Name: "lazy-one-file-cold", Seconds: sec(0.2), TTFBSeconds: sec(0.2), BytesFetched: n(5 << 20)},
		// 10% of the file bytes is a 10 MiB share of the gzip bytes.
		{Name: "lazy-built-10pct-cold", Seconds: sec(1), StartSeconds: sec(1.2), BytesFetched: n(12 << 20), BytesRead: n(20 << 20)},
		{Name: "lazy-10pct-cold", Seconds: sec(1), StartSeconds: sec(1.2), BytesFetched: n(16 << 20), BytesRead: n(20 << 20)},
		{Name: "lazy-built-all-cold", Seconds: sec(5), BytesFetched: n(105 << 20)},
		{Name: "lazy-built-all-warm-noprefetch", Seconds: sec(1)},
		{Name: "lazy-all-cold", Seconds: sec(6), BytesFetched: n(120 << 20)},
		{Name: "lazy-all-warm-noprefetch", Seconds: sec(1)},
		{Name: "lazy-built-10pct-trace", StartSeconds: sec(0.5)},
		{Name: "lazy-10pct-trace", StartSeconds: sec(0.7)},
	}}
	got := map[string]string{}
	for _, tg := range targets10(im) {
		got[tg.from] = tg.result()
	}
	for _, c := range []struct{ from, want string }{
		{"`lazy-built-one-file-cold` fetched", "pass"},
		{"`lazy-built-one-file-cold` TTFB (open to first byte, loopback registry)", "pass"},
		{"`lazy-one-file-cold` fetched", "fail"},
		{"`v2-pull-index` archive / the image's gzip layer bytes", "pass"},
		{"`v2-pull-index` archive / `soci-ztoc` out", "pass"},
		{"`lazy-built-10pct-cold` fetched / (image gzip bytes × the files' bytes / all files' bytes)", "pass"},
		{"`lazy-10pct-cold` fetched / (image gzip bytes × the files' bytes / all files' bytes)", "fail"},
		{"`lazy-built-all-cold` fetched / the image's gzip layer bytes", "pass"},
		{"`lazy-all-cold` fetched / the image's gzip layer bytes", "fail"},
		{"(`lazy-built-all-cold` − `lazy-built-all-warm-noprefetch`) / `fetch-inflate-built`", "fail"},
		{"(`lazy-all-cold` − `lazy-all-warm-noprefetch`) / `fetch-inflate`", "fail"},
		{"start of `lazy-built-10pct-trace` / start of `lazy-built-10pct-cold`", "pass"},
		{"start of `lazy-10pct-trace` / start of `lazy-10pct-cold`", "fail"},
	} {
		if g, ok := got[c.from]; !ok || g != c.want {
			t.Errorf("%s: got %q, want %q", c.from, g, c.want)
		}
	}
	if n := len(got); n != 13 {
		t.Errorf("got %d targets, want 13", n)
	}
	for _, tg := range targets10(&Image{}) {
		if tg.result() != "not measured" {
			t.Errorf("%s with no rows: got %q, want \"not measured\"", tg.name, tg.result())
		}
	}
}
