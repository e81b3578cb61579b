package harness

import (
	"fmt"
	"strings"
	"time"
)

// rowMeaning says what each row's time covers, for the report.
var rowMeaning = []struct{ name, what string }{
	{"v1-build-after-bud", "`clipbuild build --clip-version 1`: its stages other than `build` (from `--json`; today one, `archive`, written straight from the layers in containers-storage). The `build` stage (buildah bud, a layer-cache hit after the first bud: it still hashes the context) is shown with the stages but left out of the time."},
	{"v2-build-after-bud", "`clipbuild build --clip-version 2`: its stages other than `build` (today one, `publish`: each layer compressed, hashed, uploaded and indexed in one pass), into a new empty registry each run, with an empty publish cache (`$XDG_CACHE_HOME/clipbuild/publish`, under the run's directory). Bytes: sent = uploaded, fetched = everything the registry sent back (manifests, blobs, error bodies). Blobs = the sum of the layer sizes in the manifest it pushed."},
	{"v2-rebuild-last-layer", "After each `v2-build-after-bud` run, into the same registry with the publish cache that run left: the Dockerfile's last RUN also writes a small file (`bench/imagegen` `Revise`), `buildah bud --layers` builds it (only the last layer is new; its time is the first stage shown), then the same `clipbuild build --clip-version 2`; the time is its stages other than `build`. Pushed = layers it compressed and uploaded (from its log). The original Dockerfile is then restored and built again (cache hits) before anything else is measured."},
	{"buildah-push-registry", "`buildah push` of the same image (OCI manifest, gzip layers, as clipbuild pushes) to a new empty registry each run, whole process. Blobs = the sum of the layer sizes in the manifest it pushed."},
	{"buildah-push-oci", "`buildah push` of the same image to a new `oci:` layout each run (gzip layers), whole process. Out = the layout's bytes."},
	{"v2-pull-index", "`clipbuild pull --clip-version 2`: its `index` stage (manifest, then every layer streamed from the registry, gunzipped, read as tar, archive written)."},
	{"v1-pull", "`clipbuild pull --clip-version 1`: sum of `fetch` (registry → OCI layout), `unpack` and `archive`."},
	{"gzip-dc", "`gzip -dc` of the image's layer blobs (read from the registry's storage directory) to /dev/null, whole process: the floor for any gzip indexer."},
	{"soci-ztoc", "SOCI zTOC (github.com/awslabs/soci-snapshotter/ztoc, cgo + zlib) built and serialized for every layer blob, 4 MiB spans (soci's default; soci itself skips layers under 10 MiB, here every layer is indexed), whole helper process. Out = serialized zTOC bytes."},
	{"estargz-convert", "eStargz conversion (github.com/containerd/stargz-snapshotter/estargz `Build`, library defaults: gzip level 9, 4 MiB chunks, one worker per CPU) of every layer blob, output read to the end, whole helper process. Out = eStargz blob bytes."},
	{"fetch-inflate", "The floor for reading every file cold: each of the image's layer blobs (as buildah pushed them) fetched from the registry once, one GET each, through the proxy, and inflated by `gzip -dc` to /dev/null as it arrives, one blob after another (`bench/out/clipbench fetch-inflate`), whole helper process."},
	{"fetch-inflate-built", "As `fetch-inflate`, over the blobs of the v2 build that the `lazy-built-*` rows mount (clipbuild's seekable gzip: many gzip members, which `gzip -dc` reads as one stream)."},
	{"lazy-one-file-cold", "Fresh `clipbuild mount` of the pulled v2 archive (`clipbuild pull` of what `buildah push` pushed: plain gzip layers) with an empty span cache (`--span-cache-dir`, with its read traces) and an empty `--cache-dir` (layers read whole); time from open to the end of reading the 6-byte file (time to first byte is the same read). Fetched = body bytes the registry sent from the mount command's start to its exit; cache = bytes in both caches afterwards (spans, and layers read whole); layer = compressed size of the layers read whole. Start = from starting `clipbuild mount` to the end of the reads."},
	{"lazy-built-one-file-cold", "As `lazy-one-file-cold`, of the archive of the last `v2-build-after-bud` run (seekable gzip layers, read by range a span at a time), from that run's registry, kept up."},
	{"lazy-s3-one-file-cold", "As `lazy-built-one-file-cold`, of the archive of the last `v2-build-s3` run, from its registry on S3: blob reads are redirected to presigned S3 URLs (the registry's default), so most bytes come from the gateway (S3 column: its proxy), the registry sending the manifest and the redirects."},
	{"lazy-10pct-cold", "As above, reading every tenth regular file in path order (the 1st, 11th, 21st, …) to the end, one after another. Seconds = all of them; TTFB = first byte of the first file (`/bin/busybox`). In path order the few large files sit between picks, so at medium scale it reads busybox and text files only; read = their bytes."},
	{"lazy-built-10pct-cold", "`lazy-10pct-cold` through the built archive."},
	{"lazy-all-cold", "As above, reading every regular file."},
	{"lazy-built-all-cold", "`lazy-all-cold` through the built archive."},
	{"lazy-one-file-warm", "A fresh mount over the caches the cold read just filled, reading the same file."},
	{"lazy-built-one-file-warm", "`lazy-one-file-warm` through the built archive."},
	{"lazy-s3-one-file-warm", "`lazy-one-file-warm` through the archive built on S3."},
	{"lazy-10pct-warm", "Warm, every tenth file."},
	{"lazy-built-10pct-warm", "`lazy-10pct-warm` through the built archive."},
	{"lazy-all-warm", "Warm, every file. The warm mount finds the cold mount's read trace, so it puts the files the cold read read (those up to 1 MiB) in the kernel's page cache while the harness reads them (`prefill` in the mount statistics)."},
	{"lazy-built-all-warm", "`lazy-all-warm` through the built archive."},
	{"lazy-all-warm-noprefetch", "`lazy-all-warm` with `--no-prefetch`, after it: no prefetch and no prefill, every small file costs a lookup and a read request to the mount process."},
	{"lazy-built-all-warm-noprefetch", "`lazy-all-warm-noprefetch` through the built archive."},
	{"lazy-all-reread", "The warm mount of `lazy-all-warm`, every file read a second time: served from what the kernel kept of the first read (page cache across opens, entries and attributes)."},
	{"lazy-10pct-trace", "A second cold start with a learned trace: after `lazy-10pct-warm`, a fresh mount with the span cache emptied (`spans/sha256`) and `--cache-dir` emptied but the read trace kept (`spans/traces/<manifest>.json`, written when the warm mount ended: the spans it read in its first `--prefetch-window`), so the mount prefetches those spans in the background while the same files are read. Its target compares start times (from starting `clipbuild mount` to the end of the reads) with `lazy-10pct-cold`, the first start."},
	{"lazy-built-10pct-trace", "`lazy-10pct-trace` through the built archive."},
	{"native-10pct", "The files of `lazy-10pct-warm`, in the same order, read the same way from the image's own tree: `buildah mount` of a working container of the built image (overlay over the run's containers-storage), after one unmeasured read so the page cache is warm, as the warm rows' layer data is."},
	{"native-all", "As `native-10pct`, every regular file: the floor for `lazy-all-warm`."},
	{"v2-build-s3", "`v2-build-after-bud` against clipbuild's registry keeping its data in S3 (`registry serve --storage s3://BUCKET/PREFIX`, a new prefix and an empty publish cache each run) on versitygw (POSIX backend, loopback), with a counting proxy in front of the gateway too (the registry's `AWS_ENDPOINT_URL`): S3 sent / fetched = the registry's traffic to and from S3. No rebuild follows."},
	{"buildah-bud", "The one `buildah bud --layers` per image that the build-path rows come after (one run, not a median)."},
}

func renderReport(sb *strings.Builder, all []*Results, missing []string) {
	w := func(format string, args ...any) { fmt.Fprintf(sb, format, args...) }
	w("# clipbuild benchmark results\n\n")
	w("Written by `make bench` (the harness is `bench/cmd/clipbench`, a separate Go module). Each section is the latest run of the suite at one `BENCH_SCALE`, on one machine, with its date and exact command. `bench/results-<scale>.json` holds each section's numbers; `bench/results.json` is the latest run of any scale.\n\n")
	w("Every number below was measured in the run its section names. Times are the median of the runs with min and max; byte counts are the same in every run (the median run's is shown); peak RSS is the largest of the runs (`/usr/bin/time -v`, \"Maximum resident set size\": the command or its largest child, e.g. buildah bud under `clipbuild build`). Nothing was tuned for these runs.\n\n")
	if len(missing) > 0 {
		w("Not run: scale %s. No numbers are recorded for it here; `make bench BENCH_SCALE=<scale>` runs it and adds its section.\n\n", strings.Join(missing, ", "))
	}
	w("## How it is measured\n\n")
	w("- The image is generated offline from a fixed seed (`bench/imagegen`): `FROM scratch`, the host's static busybox, large random files, ~2.4 KB text files, a file deleted by a later layer (a whiteout). It is built once with `buildah bud --layers --isolation chroot`; the build-path rows run `clipbuild build --layers` after that, so their `build` stage is a layer-cache hit and is not counted.\n")
	w("- Registries are clipbuild's embedded registry (`clipbuild registry serve`, filesystem storage) on 127.0.0.1, with a byte-counting reverse proxy (`bench/proxy`, in the harness process) in front; clients are given the proxy's address. Bytes are HTTP body bytes: *sent* = request bodies (uploads), *fetched* = response bodies (manifests, blobs). The proxy's copying shares the 2 CPUs with what is measured, for clipbuild and buildah alike.\n")
	w("- Push measurements use a new, empty registry per run (and v2 builds an empty publish cache: `XDG_CACHE_HOME` points into the run's directory); pull, peers and mounts read one registry holding the image, pushed once by `buildah push`.\n")
	w("- Cold mounts: empty caches (span cache with its read traces, and whole-layer cache) and a new mount per run; warm: a new mount over the caches the cold read left (its spans and its read trace). Files are read by the harness, sequentially, each to the end. Every mount writes `--stats`; the mount flags are otherwise the defaults (span cache bound, prefetch, dense threshold).\n")
	w("- The `-s3` rows run the registry with S3 storage on versitygw (`bin/versitygw`, POSIX backend) on 127.0.0.1, with a second counting proxy in front of the gateway; the filesystem-backed rows beside them are the same commands against the filesystem registry.\n")
	w("- Other processes on the host are not stopped; the 1-minute load average before and after each run is recorded.\n\n")
	w("| row | what its time is |\n|---|---|\n")
	for _, m := range rowMeaning {
		w("| `%s` | %s |\n", m.name, m.what)
	}
	w("\nCommands use: `$IMAGE` = `localhost/clipbuild-bench-<scale>-<pid>:latest`, `$REPO` = `bench/clipbuild-bench-<scale>-<pid>`, `$PROXY` = the counting proxy's `127.0.0.1:<port>`, `$WORK` = the run's temporary directory, `$BLOBS` = the layer blob files in the registry's storage, in manifest order, `$BLOBURLS` = their URLs through the proxy (`http://$PROXY/v2/$REPO/blobs/<digest>`), `$S3PORT` = the gateway's port, `$N` = the run.\n\n")
	for _, r := range all {
		renderScale(sb, r)
	}
}

func renderScale(sb *strings.Builder, r *Results) {
	w := func(format string, args ...any) { fmt.Fprintf(sb, format, args...) }
	w("## Scale: %s\n\n", r.Scale)
	w("- Date: %s\n", r.Date)
	w("- Command: `%s`\n", r.Command)
	m := r.Machine
	w("- Machine: %d CPUs (`nproc`%s), %s memory (%d bytes), kernel %s\n", m.CPUs, paren(m.CPUModel), human(m.MemBytes), m.MemBytes, m.Kernel)
	w("- Load average (1 min): %.2f before, %.2f after\n", m.LoadAvgStart, m.LoadAvgEnd)
	sw := r.Software
	w("- Software: clipbuild %s; %s; %s; %s; soci-snapshotter %s; estargz %s\n", sw.Clipbuild, sw.Buildah, sw.Go, sw.Gzip, sw.SOCI, sw.Estargz)
	w("- Runs per row: %d; the whole suite took %.0f s\n\n", r.Runs, r.WallSeconds)
	for i := range r.Images {
		renderImage(sb, &r.Images[i], r.Scale)
	}
}

func renderImage(sb *strings.Builder, im *Image, scale string) {
	w := func(format string, args ...any) { fmt.Fprintf(sb, format, args...) }
	w("### Image `%s`\n\n", im.Name)
	w("%s uncompressed (%d bytes of layer tar), %s as gzip layers in the registry (%d bytes), %d layers, %d regular files. One-file reads read `%s` (6 bytes).", human(im.ImageBytes), im.ImageBytes, human(im.CompressedBytes), im.CompressedBytes, len(im.Layers), im.Files, im.OneFile)
	if im.Whiteout != "" {
		w(" `%s` is added and then deleted by a later layer.", im.Whiteout)
	}
	w("\n\n```dockerfile\n%s```\n\n", im.Dockerfile)
	w("| layer | gzip bytes |\n|---|---|\n")
	for _, l := range im.Layers {
		w("| `%s` | %d (%s) |\n", shortDigest(l.Digest), l.Size, human(l.Size))
	}
	if len(im.BuiltLayers) > 0 {
		w("\nThe v2 build's layers (clipbuild's seekable gzip, which the `lazy-built-*` rows read), %s (%d bytes):\n\n| layer | gzip bytes |\n|---|---|\n", human(im.BuiltBytes), im.BuiltBytes)
		for _, l := range im.BuiltLayers {
			w("| `%s` | %d (%s) |\n", shortDigest(l.Digest), l.Size, human(l.Size))
		}
	}
	w("\n#### Targets (issue 9)\n\nFrom this run's medians (peak RSS: the largest run).\n\n")
	renderTargets(sb, targets(im, scale))
	w("\n#### Targets (issue 10)\n\nLazy reads, from this run's medians. Fetched = body bytes the registry sent through its proxy, from the mount command's start to its exit. Built = the archive of `v2-build-after-bud` and its blobs; pulled = `clipbuild pull` of what `buildah push` pushed (plain gzip).\n\n")
	renderTargets(sb, targets10(im))
	w("\n#### Targets (issue 8)\n\nEvery file through a fresh mount over the caches the cold read left, against `buildah mount`, from this run's medians.\n\n")
	renderTargets(sb, targets8(im))
	w("\n#### Ratios\n\n| ratio | value | from (medians) |\n|---|---|---|\n")
	for _, rt := range ratios(im) {
		w("| %s | %s | %s |\n", rt.name, rt.value, rt.from)
	}
	w("\n#### Measurements\n\n")
	w("| row | seconds: median (min–max) | other time | fetched | sent | archive / out | cache | peak RSS |\n|---|---|---|---|---|---|---|---|\n")
	for _, row := range im.Rows {
		renderRow(sb, im, &row)
	}
	renderMountStats(sb, im)
	renderStages(sb, im)
	w("\n#### Commands\n\n| row | command |\n|---|---|\n")
	for _, row := range im.Rows {
		w("| `%s` | `%s` |\n", row.Name, row.Command)
	}
	for _, n := range im.Notes {
		w("\nNote: %s\n", n)
	}
	w("\n")
}

func renderTargets(sb *strings.Builder, ts []target) {
	fmt.Fprintf(sb, "| target | limit (moonshot) | measured | result | from |\n|---|---|---|---|---|\n")
	for _, t := range ts {
		fmt.Fprintf(sb, "| %s | %s | %s | %s | %s |\n", t.name, t.limit, t.value, t.result(), t.from)
	}
}

// renderMountStats shows what the mounts' --stats reported.
func renderMountStats(sb *strings.Builder, im *Image) {
	var has bool
	for _, row := range im.Rows {
		has = has || row.Mount != nil
	}
	if !has {
		return
	}
	fmt.Fprintf(sb, "\n#### Mount statistics (`clipbuild mount --stats`, the run with the median bytes)\n\n")
	fmt.Fprintf(sb, "Rows whose layers were all read whole keep none and are not shown.\n\n")
	fmt.Fprintf(sb, "| row | range requests | fetched (compressed) | spans fetched | span hits / misses | trace spans / prefetched | files in the page cache ahead of reads (prefill) | reads of layers read whole | read latency p50 / p99 |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range im.Rows {
		m := row.Mount
		if m == nil {
			continue
		}
		fmt.Fprintf(sb, "| `%s` | %d | %s | %d | %d / %d | %d / %d | %d (%s) | %d | %s / %s |\n", row.Name, m.Requests, human(m.BytesFetched), m.SpansFetched,
			m.CacheHits, m.CacheMisses, m.TraceSpans, m.PrefetchSpans, m.PrefillFiles, human(m.PrefillBytes), m.FallbackReads,
			time.Duration(m.Latency.P50).Round(time.Microsecond), time.Duration(m.Latency.P99).Round(time.Microsecond))
	}
}

func renderRow(sb *strings.Builder, im *Image, row *Row) {
	if row.Skipped != "" {
		fmt.Fprintf(sb, "| `%s` | not measured: %s | | | | | | |\n", row.Name, row.Skipped)
		return
	}
	var others []string
	switch {
	case row.TTFBSeconds != nil:
		others = append(others, "TTFB "+statText(row.TTFBSeconds, 3))
	case row.WallSeconds != nil:
		others = append(others, "process "+statText(row.WallSeconds, 2))
	}
	if row.StartSeconds != nil {
		others = append(others, "start "+statText(row.StartSeconds, 3))
	}
	if row.FilesRead > 0 {
		f := fmt.Sprintf("%d file(s) read", row.FilesRead)
		if row.BytesRead != nil {
			f += " (" + human(*row.BytesRead) + ")"
		}
		others = append(others, f)
	}
	other := strings.Join(others, "; ")
	var outs []string
	switch {
	case row.ArchiveBytes != nil:
		outs = append(outs, bytesText(row.ArchiveBytes)+fmt.Sprintf(" (%s of image)", pct(float64(*row.ArchiveBytes), float64(im.ImageBytes))))
	case row.OutBytes != nil:
		outs = append(outs, bytesText(row.OutBytes))
	}
	if row.BlobBytes != nil {
		outs = append(outs, "blobs "+bytesText(row.BlobBytes))
	}
	if row.LayersPushed != "" {
		outs = append(outs, row.LayersPushed+" layers pushed")
	}
	out := strings.Join(outs, "; ")
	cache := bytesText(row.CacheBytes)
	if row.LayerBytes != nil && *row.LayerBytes > 0 && row.CacheBytes != nil {
		cache += fmt.Sprintf("; layers %s gzip", human(*row.LayerBytes))
	}
	fetched, sent := bytesText(row.BytesFetched), bytesText(row.BytesSent)
	if row.S3Fetched != nil {
		fetched += "; S3 " + human(*row.S3Fetched)
	}
	if row.S3Sent != nil {
		sent += "; S3 " + human(*row.S3Sent)
	}
	fmt.Fprintf(sb, "| `%s` | %s | %s | %s | %s | %s | %s | %s |\n", row.Name, statText(row.Seconds, 3), other,
		fetched, sent, out, cache, bytesText(row.PeakRSSBytes))
}

func renderStages(sb *strings.Builder, im *Image) {
	var has bool
	for _, row := range im.Rows {
		has = has || len(row.Stages) > 0
	}
	if !has {
		return
	}
	fmt.Fprintf(sb, "\n#### clipbuild stages (seconds: median (min–max))\n\n| row | stages |\n|---|---|\n")
	for _, row := range im.Rows {
		if len(row.Stages) == 0 {
			continue
		}
		var parts []string
		for _, st := range row.Stages {
			label := fmt.Sprintf("`%s`", st.Name)
			switch {
			case st.Name == "build":
				label += " (bud, layer-cache hit; not in the row's time)"
			case strings.HasPrefix(st.Name, "buildah "):
				label += " (before clipbuild; not in the row's time)"
			}
			parts = append(parts, label+" "+statText(&st.Seconds, 3))
		}
		fmt.Fprintf(sb, "| `%s` | %s |\n", row.Name, strings.Join(parts, ", "))
	}
}

// ratio is one line of the ratios table.
type ratio struct{ name, value, from string }

// ratios are the comparisons the issue asks for, from medians.
func ratios(im *Image) []ratio {
	sec := func(n string) float64 {
		if r := im.row(n); r != nil && r.Seconds != nil {
			return r.Seconds.Median
		}
		return 0
	}
	stage := func(n, st string) float64 {
		if r := im.row(n); r != nil {
			for _, s := range r.Stages {
				if s.Name == st {
					return s.Seconds.Median
				}
			}
		}
		return 0
	}
	val := func(n string, f func(*Row) *int64) float64 {
		if r := im.row(n); r != nil && f(r) != nil {
			return float64(*f(r))
		}
		return 0
	}
	fetched := func(r *Row) *int64 { return r.BytesFetched }
	sent := func(r *Row) *int64 { return r.BytesSent }
	archive := func(r *Row) *int64 { return r.ArchiveBytes }
	rss := func(r *Row) *int64 { return r.PeakRSSBytes }
	layerB := func(r *Row) *int64 { return r.LayerBytes }
	img, gz := float64(im.ImageBytes), float64(im.CompressedBytes)
	return []ratio{
		{"v2 / v1, build after bud", times(sec("v2-build-after-bud"), sec("v1-build-after-bud")), "`v2-build-after-bud` / `v1-build-after-bud`"},
		{"v2 / v1, pull", times(sec("v2-pull-index"), sec("v1-pull")), "`v2-pull-index` / `v1-pull`"},
		{"v2 build after bud / `buildah push` (registry)", times(sec("v2-build-after-bud"), sec("buildah-push-registry")), "`v2-build-after-bud` / `buildah-push-registry`"},
		{"v2 `publish` stage alone / `buildah push` (registry)", times(stage("v2-build-after-bud", "publish"), sec("buildah-push-registry")), "publish stage of `v2-build-after-bud` / `buildah-push-registry`"},
		{"v2 build after bud / `buildah push` (oci layout)", times(sec("v2-build-after-bud"), sec("buildah-push-oci")), "`v2-build-after-bud` / `buildah-push-oci`"},
		{"v1 build after bud / `buildah push` (oci layout)", times(sec("v1-build-after-bud"), sec("buildah-push-oci")), "`v1-build-after-bud` / `buildah-push-oci`"},
		{"bytes sent, v2 build / `buildah push`", times(val("v2-build-after-bud", sent), val("buildah-push-registry", sent)), "uploads through the proxy"},
		{"v2 index / `gzip -dc`", times(sec("v2-pull-index"), sec("gzip-dc")), "`v2-pull-index` / `gzip-dc`"},
		{"ours (v2 index) / SOCI zTOC", times(sec("v2-pull-index"), sec("soci-ztoc")), "`v2-pull-index` / `soci-ztoc`"},
		{"ours (v2 index) / eStargz conversion", times(sec("v2-pull-index"), sec("estargz-convert")), "`v2-pull-index` / `estargz-convert`"},
		{"bytes fetched / layer bytes, one-file read", times(val("lazy-one-file-cold", fetched), val("lazy-one-file-cold", layerB)), "`lazy-one-file-cold`: fetched / gzip size of the layer(s) it fetched"},
		{"bytes fetched / image bytes (gzip), one-file read", pct(val("lazy-one-file-cold", fetched), gz), "`lazy-one-file-cold` fetched / all gzip layers"},
		{"bytes fetched / image bytes (gzip), 10% of files", pct(val("lazy-10pct-cold", fetched), gz), "`lazy-10pct-cold`"},
		{"bytes fetched / image bytes (gzip), every file", pct(val("lazy-all-cold", fetched), gz), "`lazy-all-cold`"},
		{"bytes fetched, warm one-file read", bytesText(ptrIf(im.row("lazy-one-file-warm"), fetched)), "`lazy-one-file-warm`"},
		{"one-file read, cold / warm", times(sec("lazy-one-file-cold"), sec("lazy-one-file-warm")), "`lazy-one-file-cold` / `lazy-one-file-warm`"},
		{"every file, warm mount / native (`buildah mount`)", times(sec("lazy-all-warm"), sec("native-all")), "`lazy-all-warm` / `native-all`"},
		{"every tenth file, warm mount / native (`buildah mount`)", times(sec("lazy-10pct-warm"), sec("native-10pct")), "`lazy-10pct-warm` / `native-10pct`"},
		{"every file, reread on the same mount / native", times(sec("lazy-all-reread"), sec("native-all")), "`lazy-all-reread` / `native-all`"},
		{"every file, warm mount without prefetch / native (`buildah mount`)", times(sec("lazy-all-warm-noprefetch"), sec("native-all")), "`lazy-all-warm-noprefetch` / `native-all`"},
		{"every file, warm built mount without prefetch / native (`buildah mount`)", times(sec("lazy-built-all-warm-noprefetch"), sec("native-all")), "`lazy-built-all-warm-noprefetch` / `native-all`"},
		{"one-file cold read, built / pulled archive", times(sec("lazy-built-one-file-cold"), sec("lazy-one-file-cold")), "`lazy-built-one-file-cold` / `lazy-one-file-cold`"},
		{"every file cold, built / pulled archive", times(sec("lazy-built-all-cold"), sec("lazy-all-cold")), "`lazy-built-all-cold` / `lazy-all-cold`"},
		{"every file, warm built mount / native (`buildah mount`)", times(sec("lazy-built-all-warm"), sec("native-all")), "`lazy-built-all-warm` / `native-all`"},
		{"every tenth file with a learned trace / without, reads only (built)", times(sec("lazy-built-10pct-trace"), sec("lazy-built-10pct-cold")), "`lazy-built-10pct-trace` / `lazy-built-10pct-cold`, from the first open (the issue 10 target counts from the mount's start)"},
		{"every tenth file with a learned trace / without, reads only (pulled)", times(sec("lazy-10pct-trace"), sec("lazy-10pct-cold")), "`lazy-10pct-trace` / `lazy-10pct-cold`, from the first open"},
		{"v2 build after bud, registry on S3 / on the filesystem", times(sec("v2-build-s3"), sec("v2-build-after-bud")), "`v2-build-s3` / `v2-build-after-bud`"},
		{"one-file cold read, registry on S3 / on the filesystem", times(sec("lazy-s3-one-file-cold"), sec("lazy-built-one-file-cold")), "`lazy-s3-one-file-cold` / `lazy-built-one-file-cold`"},
		{"v1 archive / image bytes", pct(val("v1-build-after-bud", archive), img), "archive bytes / uncompressed layer bytes"},
		{"v2 archive / image bytes", pct(val("v2-build-after-bud", archive), img), "archive bytes / uncompressed layer bytes"},
		{"v2 archive / gzip layer bytes", pct(val("v2-build-after-bud", archive), gz), "archive bytes / compressed layer bytes"},
		{"peak RSS, v2 / v1 pull", times(val("v2-pull-index", rss), val("v1-pull", rss)), "`v2-pull-index` / `v1-pull`"},
	}
}

// target is one of issue 9's targets: measured against a limit, with
// the moonshot shown beside it.
type target struct {
	name, limit, value, from string
	// got and max decide pass or fail; ok is false when a number is missing.
	got, max float64
	ok       bool
	// scale, when set, is the only scale the limit is set for; at is the
	// run's.
	scale, at string
}

func (t target) result() string {
	if !t.ok {
		return "not measured"
	}
	r := "fail"
	if t.got <= t.max {
		r = "pass"
	}
	if t.scale != "" && t.scale != t.at {
		r += fmt.Sprintf(" (the limit is for %s)", t.scale)
	}
	return r
}

// targets are issue 9's targets, from the same rows as the ratios.
func targets(im *Image, scale string) []target {
	row := im.row
	sec := func(n string) (float64, bool) {
		if r := row(n); r != nil && r.Seconds != nil {
			return r.Seconds.Median, true
		}
		return 0, false
	}
	num := func(n string, f func(*Row) *int64) (float64, bool) {
		if r := row(n); r != nil && f(r) != nil {
			return float64(*f(r)), true
		}
		return 0, false
	}
	quot := func(a, b float64, aok, bok bool) (float64, bool) {
		if !aok || !bok || b == 0 {
			return 0, false
		}
		return a / b, true
	}
	fetched := func(r *Row) *int64 { return r.BytesFetched }
	blobs := func(r *Row) *int64 { return r.BlobBytes }
	rss := func(r *Row) *int64 { return r.PeakRSSBytes }
	gz := float64(im.CompressedBytes)
	ratioT := func(name, limit string, max float64, a, b string) target {
		x, aok := sec(a)
		y, bok := sec(b)
		q, ok := quot(x, y, aok, bok)
		return target{name: name, limit: limit, max: max, got: q, ok: ok, value: times(x, y), from: fmt.Sprintf("`%s` / `%s`", a, b)}
	}
	fetchT := func(name, n string) target {
		f, fok := num(n, fetched)
		q, ok := quot(f, gz, fok, gz > 0)
		v := "n/a"
		if ok {
			v = fmt.Sprintf("%s (%s of %s)", pct(f, gz), human(int64(f)), human(int64(gz)))
		}
		return target{name: name, limit: "≤ 1%", max: 0.01, got: q, ok: ok, value: v, from: "`" + n + "` fetched / the image's gzip layer bytes"}
	}
	b2, b2ok := num("v2-build-after-bud", blobs)
	bp, bpok := num("buildah-push-registry", blobs)
	bq, bok := quot(b2, bp, b2ok, bpok)
	out := []target{
		ratioT("v2 build after bud / one `buildah push` to a fresh registry", "≤ 1.0× (0.7×)", 1.0, "v2-build-after-bud", "buildah-push-registry"),
		ratioT("v1 build after bud / one `buildah push` to an `oci:` layout", "≤ 1.5× (1.0×)", 1.5, "v1-build-after-bud", "buildah-push-oci"),
		fetchT("bytes the registry sent back during a v2 build", "v2-build-after-bud"),
		fetchT("bytes the registry sent back during a rebuild with a new last layer", "v2-rebuild-last-layer"),
		ratioT("rebuild with a new last layer after bud / first v2 build after bud", "≤ 0.3×", 0.3, "v2-rebuild-last-layer", "v2-build-after-bud"),
		{name: "v2 layer blobs / `buildah push`'s gzip of the same layers", limit: "≤ 1.05×", max: 1.05, got: bq, ok: bok,
			value: fmt.Sprintf("%s (%s / %s)", times(b2, bp), bytesText(ptrIf(row("v2-build-after-bud"), blobs)), bytesText(ptrIf(row("buildah-push-registry"), blobs))),
			from:  "sum of the layer sizes in the manifests `v2-build-after-bud` and `buildah-push-registry` pushed"},
	}
	for _, n := range []string{"v2-build-after-bud", "v2-rebuild-last-layer", "v1-build-after-bud"} {
		v, ok := num(n, rss)
		out = append(out, target{name: "peak RSS, `" + n + "`", limit: "≤ 150 MB at large", max: 150e6, got: v, ok: ok,
			value: fmt.Sprintf("%.0f MB", v/1e6), scale: "large", at: scale,
			from: "`time -v` of `clipbuild build`: the process or its largest child (buildah bud)"})
	}
	return out
}

func ptrIf(r *Row, f func(*Row) *int64) *int64 {
	if r == nil {
		return nil
	}
	return f(r)
}

// times formats a/b as a ratio.
func times(a, b float64) string {
	if a == 0 && b == 0 || b == 0 {
		return "n/a"
	}
	q := a / b
	switch {
	case q >= 100:
		return fmt.Sprintf("%.0f×", q)
	case q >= 10:
		return fmt.Sprintf("%.1f×", q)
	case q >= 0.01:
		return fmt.Sprintf("%.2f×", q)
	default:
		return fmt.Sprintf("%.4f×", q)
	}
}

// pct formats a/b as a percentage.
func pct(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	p := 100 * a / b
	if p != 0 && p < 0.1 {
		return fmt.Sprintf("%.4f%%", p)
	}
	return fmt.Sprintf("%.1f%%", p)
}

func statText(s *Stat, prec int) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, s.Median, prec, s.Min, prec, s.Max)
}

func bytesText(v *int64) string {
	if v == nil {
		return ""
	}
	return human(*v)
}

// human formats a byte count with binary units.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), 0
	for v >= unit && u < 4 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"B", "KiB", "MiB", "GiB", "TiB"}[u])
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "; " + s
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
