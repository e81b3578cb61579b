package harness

import (
	"slices"
	"time"
)

// Results is bench/results.json: one run of the suite at one scale.
type Results struct {
	Machine     Machine  `json:"machine"`
	Scale       string   `json:"scale"`
	Date        string   `json:"date"`
	Command     string   `json:"command"`
	Runs        int      `json:"runs"`
	WallSeconds float64  `json:"wallSeconds"`
	Software    Software `json:"software"`
	Images      []Image  `json:"images"`
}

// Machine is the host the run was on.
type Machine struct {
	CPUs     int    `json:"cpus"`
	MemBytes int64  `json:"memBytes"`
	CPUModel string `json:"cpuModel,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	// LoadAvgStart and LoadAvgEnd are /proc/loadavg's 1-minute figure
	// before and after the run: other work on the host shows there.
	LoadAvgStart float64 `json:"loadAvgStart"`
	LoadAvgEnd   float64 `json:"loadAvgEnd"`
}

// Software are the versions the numbers are for.
type Software struct {
	Buildah   string `json:"buildah,omitempty"`
	Go        string `json:"go,omitempty"`
	Gzip      string `json:"gzip,omitempty"`
	Clipbuild string `json:"clipbuild,omitempty"`
	SOCI      string `json:"soci,omitempty"`
	Estargz   string `json:"estargz,omitempty"`
}

// Image is one benchmarked image.
type Image struct {
	Name string `json:"name"`
	// ImageBytes is the uncompressed size of the layers (their tar streams).
	ImageBytes int64 `json:"imageBytes"`
	// CompressedBytes is the size of the gzip layer blobs in the registry.
	CompressedBytes int64   `json:"compressedBytes"`
	Layers          []layer `json:"layers"`
	Files           int     `json:"files"`
	// FileBytes is the size of the image's regular files.
	FileBytes int64 `json:"fileBytes,omitempty"`
	// BuiltLayers are the layers of the v2 build the lazy-built rows
	// mount (clipbuild's seekable gzip), BuiltBytes their size.
	BuiltLayers []layer  `json:"builtLayers,omitempty"`
	BuiltBytes  int64    `json:"builtBytes,omitempty"`
	OneFile     string   `json:"oneFile"`
	Whiteout    string   `json:"whiteout,omitempty"`
	Dockerfile  string   `json:"dockerfile"`
	Rows        []Row    `json:"rows"`
	Notes       []string `json:"notes,omitempty"`
}

// Row is one measurement. Fields that do not apply are omitted.
type Row struct {
	Name    string `json:"name"`
	Command string `json:"command,omitempty"`
	Runs    int    `json:"runs,omitempty"`
	// Seconds is the measured time (see the report for what it covers).
	Seconds *Stat `json:"seconds,omitempty"`
	// WallSeconds is the whole process, start to exit, where Seconds is
	// narrower (stage sums).
	WallSeconds *Stat `json:"wallSeconds,omitempty"`
	// TTFBSeconds is the time to the first byte of the first file read.
	TTFBSeconds *Stat `json:"ttfbSeconds,omitempty"`
	// StartSeconds is, for a mount row, the time from starting `clipbuild
	// mount` to the end of the last read: the mount's setup and what it
	// fetches in the background before the reads are counted too.
	StartSeconds *Stat       `json:"startSeconds,omitempty"`
	Stages       []StageStat `json:"stages,omitempty"`
	BytesFetched *int64      `json:"bytesFetched,omitempty"`
	BytesSent    *int64      `json:"bytesSent,omitempty"`
	ArchiveBytes *int64      `json:"archiveBytes,omitempty"`
	// OutBytes is what a baseline or peer wrote (layout, zTOCs, blobs).
	OutBytes *int64 `json:"outBytes,omitempty"`
	// CacheBytes is the uncompressed layer data a mount put in its cache.
	CacheBytes *int64 `json:"cacheBytes,omitempty"`
	// LayerBytes is the compressed size of the layers a read fetched.
	LayerBytes *int64 `json:"layerBytes,omitempty"`
	// BlobBytes is the sum of the layer blob sizes in the manifest a build
	// pushed.
	BlobBytes *int64 `json:"blobBytes,omitempty"`
	// LayersPushed is how many of the image's layers a build compressed
	// and uploaded, as clipbuild logs it ("1 of 7").
	LayersPushed string `json:"layersPushed,omitempty"`
	FilesRead    int    `json:"filesRead,omitempty"`
	// BytesRead is the size of the files read.
	BytesRead *int64 `json:"bytesRead,omitempty"`
	// S3Sent and S3Fetched are body bytes to and from the S3 gateway,
	// through the proxy in front of it, for rows against the registry on
	// S3: the registry's own traffic and the blob reads it redirected there.
	S3Sent    *int64 `json:"s3Sent,omitempty"`
	S3Fetched *int64 `json:"s3Fetched,omitempty"`
	// Mount is what `clipbuild mount --stats` wrote, in the run whose
	// stats fetched the median bytes; nil when the mount wrote none
	// (layers read whole keep no statistics).
	Mount        *MountStats `json:"mountStats,omitempty"`
	PeakRSSBytes *int64      `json:"peakRSSBytes,omitempty"`
	// Skipped says why a row has no numbers.
	Skipped string `json:"skipped,omitempty"`
}

// MountStats is the part of `clipbuild mount --stats` the report shows.
type MountStats struct {
	Requests      int64 `json:"requests"`
	BytesFetched  int64 `json:"bytes_fetched"`
	SpansFetched  int64 `json:"spans_fetched"`
	CacheHits     int64 `json:"cache_hits"`
	CacheMisses   int64 `json:"cache_misses"`
	TraceSpans    int64 `json:"trace_spans"`
	PrefetchSpans int64 `json:"prefetch_spans"`
	PrefillFiles  int64 `json:"prefill_files"`
	PrefillBytes  int64 `json:"prefill_bytes"`
	FallbackReads int64 `json:"fallback_reads"`
	Latency       struct {
		P50 int64 `json:"p50_ns"`
		P99 int64 `json:"p99_ns"`
	} `json:"latency"`
}

// StageStat is one clipbuild stage across runs.
type StageStat struct {
	Name    string `json:"name"`
	Seconds Stat   `json:"seconds"`
}

// Stat summarizes runs.
type Stat struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// statOf summarizes samples (at least one).
func statOf(samples []float64) *Stat {
	if len(samples) == 0 {
		return nil
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return &Stat{Min: s[0], Median: med, Max: s[n-1]}
}

// secondsOf converts durations to seconds.
func secondsOf(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}

// medianInt is the median of integer samples (the lower middle one).
func medianInt(samples []int64) *int64 {
	if len(samples) == 0 {
		return nil
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	v := s[(len(s)-1)/2]
	return &v
}

// maxInt is the largest sample.
func maxInt(samples []int64) *int64 {
	if len(samples) == 0 {
		return nil
	}
	v := slices.Max(samples)
	return &v
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// row finds a row by name.
func (im *Image) row(name string) *Row {
	for i := range im.Rows {
		if im.Rows[i].Name == name {
			return &im.Rows[i]
		}
	}
	return nil
}
