package harness

import (
	"cmp"
	"slices"
	"time"
)

// samples gathers one row's measurements across runs.
type samples struct {
	name, command string

	seconds, wall, ttfb, start []float64
	stageOrder                 []string
	stages                     map[string][]float64

	fetched, sent, archive, out, cache, layer, rss, blob []int64
	s3Sent, s3Fetched, bytesRead                         []int64
	mount                                                []*MountStats
	filesRead                                            int
	pushed                                               string
}

func newSamples(name, command string) *samples {
	return &samples{name: name, command: command, stages: map[string][]float64{}}
}

// stage records one stage's time in one run.
func (s *samples) stage(name string, seconds float64) {
	if _, ok := s.stages[name]; !ok {
		s.stageOrder = append(s.stageOrder, name)
	}
	s.stages[name] = append(s.stages[name], seconds)
}

// process records a process's wall time and peak RSS.
func (s *samples) process(m Measured) {
	s.wall = append(s.wall, m.Wall.Seconds())
	s.rss = append(s.rss, m.PeakRSS)
}

// time records the row's measured time.
func (s *samples) time(d time.Duration) { s.seconds = append(s.seconds, d.Seconds()) }

// row summarizes: times as min/median/max, byte counts as the median run
// (they do not vary between runs of a deterministic command), peak RSS as
// the largest of the runs.
func (s *samples) row() Row {
	r := Row{
		Name:         s.name,
		Command:      s.command,
		Runs:         len(s.seconds),
		Seconds:      statOf(s.seconds),
		TTFBSeconds:  statOf(s.ttfb),
		StartSeconds: statOf(s.start),
		BytesFetched: medianInt(s.fetched),
		BytesSent:    medianInt(s.sent),
		ArchiveBytes: medianInt(s.archive),
		OutBytes:     medianInt(s.out),
		CacheBytes:   medianInt(s.cache),
		LayerBytes:   medianInt(s.layer),
		BlobBytes:    medianInt(s.blob),
		LayersPushed: s.pushed,
		FilesRead:    s.filesRead,
		BytesRead:    medianInt(s.bytesRead),
		S3Sent:       medianInt(s.s3Sent),
		S3Fetched:    medianInt(s.s3Fetched),
		Mount:        medianStats(s.mount),
		PeakRSSBytes: maxInt(s.rss),
	}
	// Wall time is worth a field only where Seconds is something narrower.
	if w := statOf(s.wall); w != nil && (r.Seconds == nil || *w != *r.Seconds) {
		r.WallSeconds = w
	}
	for _, n := range s.stageOrder {
		r.Stages = append(r.Stages, StageStat{Name: n, Seconds: *statOf(s.stages[n])})
	}
	return r
}

// medianStats is the run's stats whose bytes fetched are the median of
// the runs that wrote any.
func medianStats(runs []*MountStats) *MountStats {
	var have []*MountStats
	for _, m := range runs {
		if m != nil {
			have = append(have, m)
		}
	}
	if len(have) == 0 {
		return nil
	}
	slices.SortStableFunc(have, func(a, b *MountStats) int { return cmp.Compare(a.BytesFetched, b.BytesFetched) })
	return have[(len(have)-1)/2]
}
