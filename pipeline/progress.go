package pipeline

import (
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultInterval is how often a run without a terminal reports: at most
// one progress line per interval, and a heartbeat after an interval in
// which nothing else was printed.
const DefaultInterval = 10 * time.Second

// JobOption configures a Job.
type JobOption func(*Job)

// WithHeartbeat makes every stage that runs for a while log
// `still building (<stage>, <elapsed>)` whenever nothing reached the user
// for interval: a CI job that prints nothing for minutes looks hung, and
// some runners kill it. idle says how long ago output last reached the
// user (logs and buildah's lines alike). The default logs no heartbeat.
func WithHeartbeat(interval time.Duration, idle func() time.Duration) JobOption {
	return func(j *Job) {
		if interval > 0 && idle != nil {
			j.heartbeat = &heartbeat{interval: interval, idle: idle}
		}
	}
}

// heartbeat is the ticker runTimed starts for each stage.
type heartbeat struct {
	interval time.Duration
	idle     func() time.Duration
}

// start logs heartbeats for the stage name, started at start, until stop
// is called; stop returns once the ticker's goroutine is gone.
func (h *heartbeat) start(log *logrus.Entry, name string, start time.Time) (stop func()) {
	if h == nil {
		return func() {}
	}
	// Checking several times per interval keeps the silence close to the
	// interval, however the last output fell between two checks.
	t := time.NewTicker(max(h.interval/5, 10*time.Millisecond))
	done, gone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(gone)
		last := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				// Our own heartbeat is output too; counting from it as
				// well keeps one per interval if idle missed it.
				if h.idle() >= h.interval && now.Sub(last) >= h.interval {
					last = now
					log.Infof("still building (%s, %s)", name, now.Sub(start).Round(time.Second))
				}
			}
		}
	}()
	return func() {
		t.Stop()
		close(done)
		<-gone
	}
}

// Progress turns the byte counts of a stage (push, archive) into what the
// user sees: without a terminal, a log line at most once per interval; on
// one, a single status line rewritten in place.
type Progress struct {
	log      *logrus.Entry
	interval time.Duration
	status   func(line string)
	now      func() time.Time
}

// ProgressOption configures a Progress.
type ProgressOption func(*Progress)

// ProgressInterval is the shortest time between two progress log lines.
// The default is DefaultInterval.
func ProgressInterval(d time.Duration) ProgressOption {
	return func(p *Progress) {
		if d > 0 {
			p.interval = d
		}
	}
}

// terminalInterval is how often the terminal's status line is redrawn.
const terminalInterval = 250 * time.Millisecond

// ProgressOnTerminal shows progress as one status line, redrawn by status
// a few times a second and cleared with status("") when the stage is done.
// The default logs progress lines instead.
func ProgressOnTerminal(status func(line string)) ProgressOption {
	return func(p *Progress) { p.status = status }
}

// NewProgress reports progress through log.
func NewProgress(log *logrus.Entry, opts ...ProgressOption) *Progress {
	p := &Progress{log: log, interval: DefaultInterval, now: time.Now}
	for _, opt := range opts {
		opt(p)
	}
	if p.status != nil {
		p.interval = terminalInterval
	}
	return p
}

// Reporter returns the byte counter for the step named what, to hand to a
// stage (stages.ProgressFunc). A nil Progress reports nothing.
func (p *Progress) Reporter(what string) func(done, total int64) {
	if p == nil {
		return nil
	}
	var mu sync.Mutex
	var start, last time.Time
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		now := p.now()
		if start.IsZero() {
			// The first count starts the clock; a line right away would
			// say nothing, so the first comes an interval later.
			start, last = now, now
		}
		finished := total > 0 && done >= total
		if p.status != nil && finished {
			p.status("")
			return
		}
		if now.Sub(last) < p.interval {
			return
		}
		last = now
		line := progressLine(what, done, total, now.Sub(start))
		if p.status != nil {
			p.status(line)
			return
		}
		p.log.Info(line)
	}
}

// progressLine is `push: 12.0 MiB of 48.0 MiB (25%), 3.0 MiB/s, ETA 12s`;
// without a total, the bytes and the rate only.
func progressLine(what string, done, total int64, elapsed time.Duration) string {
	var rate float64
	if elapsed > 0 {
		rate = float64(done) / elapsed.Seconds()
	}
	if total <= 0 {
		return fmt.Sprintf("%s: %s, %s/s", what, humanBytes(float64(done)), humanBytes(rate))
	}
	line := fmt.Sprintf("%s: %s of %s (%d%%), %s/s", what, humanBytes(float64(done)), humanBytes(float64(total)), done*100/total, humanBytes(rate))
	if rate > 0 && done < total {
		eta := time.Duration(float64(total-done) / rate * float64(time.Second))
		line += ", ETA " + eta.Round(time.Second).String()
	}
	return line
}

// humanBytes is n in binary units with one decimal.
func humanBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
