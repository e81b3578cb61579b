package harness

import "fmt"

// targets10 are issue 10's targets for lazy reads, for the built archive
// (the v2 build's seekable layers) and the pulled one (buildah's plain
// gzip layers) side by side.
func targets10(im *Image) []target {
	row := im.row
	fetched := func(r *Row) *int64 { return r.BytesFetched }
	archive := func(r *Row) *int64 { return r.ArchiveBytes }
	out := func(r *Row) *int64 { return r.OutBytes }
	num := func(n string, f func(*Row) *int64) (float64, bool) {
		if r := row(n); r != nil && f(r) != nil {
			return float64(*f(r)), true
		}
		return 0, false
	}
	median := func(n string, f func(*Row) *Stat) (float64, bool) {
		if r := row(n); r != nil && f(r) != nil {
			return f(r).Median, true
		}
		return 0, false
	}
	seconds := func(r *Row) *Stat { return r.Seconds }
	start := func(r *Row) *Stat { return r.StartSeconds }
	ttfb := func(r *Row) *Stat { return r.TTFBSeconds }

	// bytesT: a read's bytes fetched against a fixed bound.
	bytesT := func(name, n, limit string, max float64) target {
		v, ok := num(n, fetched)
		return target{name: name, limit: limit, max: max, got: v, ok: ok, value: fetchedText(v, ok),
			from: "`" + n + "` fetched"}
	}
	// shareT: bytes fetched against gz × the read files' share of the
	// image's file bytes.
	shareT := func(name, n string, gz float64) target {
		f, fok := num(n, fetched)
		rd, rok := num(n, func(r *Row) *int64 { return r.BytesRead })
		share := gz * rd / float64(im.FileBytes)
		t := target{name: name, limit: "≤ 1.5×", max: 1.5, value: "n/a",
			from: "`" + n + "` fetched / (image gzip bytes × the files' bytes / all files' bytes)"}
		if fok && rok && im.FileBytes > 0 && gz > 0 && share > 0 {
			t.got, t.ok = f/share, true
			t.value = fmt.Sprintf("%s (%s / %s: %s of the file bytes)", times(f, share), human(int64(f)), human(int64(share)), pct(rd, float64(im.FileBytes)))
		}
		return t
	}
	// allT: bytes fetched against the image's gzip bytes.
	allT := func(name, n string, gz float64) target {
		f, ok := num(n, fetched)
		t := target{name: name, limit: "≤ 1.1×", max: 1.1, value: "n/a", from: "`" + n + "` fetched / the image's gzip layer bytes"}
		if ok && gz > 0 {
			t.got, t.ok = f/gz, true
			t.value = fmt.Sprintf("%s (%s / %s)", times(f, gz), human(int64(f)), human(int64(gz)))
		}
		return t
	}
	// overT: (cold − warm) against the download and inflate of every blob.
	overT := func(name, cold, warm, base string) target {
		c, cok := median(cold, seconds)
		w, wok := median(warm, seconds)
		b, bok := median(base, seconds)
		t := target{name: name, limit: "≤ 1.5×", max: 1.5, value: "n/a", from: fmt.Sprintf("(`%s` − `%s`) / `%s`", cold, warm, base)}
		if cok && wok && bok && b > 0 {
			t.got, t.ok = (c-w)/b, true
			t.value = fmt.Sprintf("%.2f× ((%.3f − %.3f) s / %.3f s)", (c-w)/b, c, w, b)
		}
		return t
	}
	// traceT: the second start's time against the first's.
	traceT := func(name, trace, first string) target {
		a, aok := median(trace, start)
		b, bok := median(first, start)
		t := target{name: name, limit: "≤ 0.5×", max: 0.5, value: "n/a", from: fmt.Sprintf("start of `%s` / start of `%s`", trace, first)}
		if aok && bok && b > 0 {
			t.got, t.ok = a/b, true
			t.value = fmt.Sprintf("%s (%.3f s / %.3f s)", times(a, b), a, b)
		}
		return t
	}
	tt, tok := median("lazy-built-one-file-cold", ttfb)
	ar, aok := num("v2-pull-index", archive)
	zt, zok := num("soci-ztoc", out)
	gz, built := float64(im.CompressedBytes), float64(im.BuiltBytes)
	arShare := target{name: "pulled archive / the image's gzip layer bytes", limit: "≤ 2%", max: 0.02, value: "n/a",
		from: "`v2-pull-index` archive / the image's gzip layer bytes"}
	if aok && gz > 0 {
		arShare.got, arShare.ok = ar/gz, true
		arShare.value = fmt.Sprintf("%s (%s of %s)", pct(ar, gz), human(int64(ar)), human(int64(gz)))
	}
	arZtoc := target{name: "pulled archive / SOCI zTOC of the same image", limit: "≤ 1.0×", max: 1.0, value: "n/a",
		from: "`v2-pull-index` archive / `soci-ztoc` out"}
	if aok && zok && zt > 0 {
		arZtoc.got, arZtoc.ok = ar/zt, true
		arZtoc.value = fmt.Sprintf("%s (%s / %s)", times(ar, zt), human(int64(ar)), human(int64(zt)))
	}
	return []target{
		bytesT("built, fresh mount, cold: bytes fetched to read one 6-byte file", "lazy-built-one-file-cold", "≤ 1 MiB (256 KiB)", 1<<20),
		{name: "built, fresh mount, cold: first byte of that file", limit: "≤ 50 ms", max: 0.050, got: tt, ok: tok,
			value: fmt.Sprintf("%.1f ms", tt*1000), from: "`lazy-built-one-file-cold` TTFB (open to first byte, loopback registry)"},
		bytesT("pulled, fresh mount, cold: bytes fetched to read one 6-byte file", "lazy-one-file-cold", "≤ 4 MiB", 4<<20),
		arShare,
		arZtoc,
		shareT("built, 10% of the files cold: fetched / their share of the image", "lazy-built-10pct-cold", built),
		shareT("pulled, 10% of the files cold: fetched / their share of the image", "lazy-10pct-cold", gz),
		allT("built, every file cold: fetched / the image's compressed bytes", "lazy-built-all-cold", built),
		allT("pulled, every file cold: fetched / the image's compressed bytes", "lazy-all-cold", gz),
		// Warm here is the same read path as the cold read's: a fresh
		// mount over a warm span cache, without the kernel prefill that
		// the cold mount (no trace yet) cannot have either.
		overT("built, every file: (cold − warm) / download + inflate of every blob once", "lazy-built-all-cold", "lazy-built-all-warm-noprefetch", "fetch-inflate-built"),
		overT("pulled, every file: (cold − warm) / download + inflate of every blob once", "lazy-all-cold", "lazy-all-warm-noprefetch", "fetch-inflate"),
		traceT("built, second cold start with a learned trace / the first start", "lazy-built-10pct-trace", "lazy-built-10pct-cold"),
		traceT("pulled, second cold start with a learned trace / the first start", "lazy-10pct-trace", "lazy-10pct-cold"),
	}
}

// fetchedText shows a byte count exactly and in binary units.
func fetchedText(v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%s (%d B)", human(int64(v)), int64(v))
}

// targets8 is issue 8's target for the mount: reading every file through a
// fresh mount over warm caches (with the read trace the cold mount left,
// so with the kernel prefill) against the same read through `buildah
// mount`.
func targets8(im *Image) []target {
	warmT := func(name, warm string) target {
		t := target{name: name, limit: "≤ 3×", max: 3, value: "n/a", from: fmt.Sprintf("`%s` / `native-all`", warm)}
		w, n := im.row(warm), im.row("native-all")
		if w != nil && n != nil && w.Seconds != nil && n.Seconds != nil && n.Seconds.Median > 0 {
			t.got, t.ok = w.Seconds.Median/n.Seconds.Median, true
			t.value = fmt.Sprintf("%s (%.3f s / %.3f s)", times(w.Seconds.Median, n.Seconds.Median), w.Seconds.Median, n.Seconds.Median)
		}
		return t
	}
	return []target{
		warmT("built, every file, warm mount / native", "lazy-built-all-warm"),
		warmT("pulled, every file, warm mount / native", "lazy-all-warm"),
	}
}
