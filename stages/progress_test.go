package stages

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type progressLog struct {
	mu    sync.Mutex
	calls [][2]int64
}

func (p *progressLog) fn(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, [2]int64{done, total})
}

func (p *progressLog) last() [2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) == 0 {
		return [2]int64{}
	}
	return p.calls[len(p.calls)-1]
}

func TestProgressCounterCountsReadsAndRewinds(t *testing.T) {
	var log progressLog
	c := newProgressCounter(log.fn, 10)
	c.add(2)
	mark := c.mark()
	if _, err := io.Copy(io.Discard, c.reader(io.NopCloser(strings.NewReader("abcdef")))); err != nil {
		t.Fatal(err)
	}
	if got, want := log.last(), [2]int64{8, 10}; got != want {
		t.Errorf("after a read of 6 bytes: progress = %v, want %v", got, want)
	}
	// A retried pass reads the same bytes again: they count once.
	c.rewind(mark)
	if _, err := io.Copy(io.Discard, c.reader(io.NopCloser(strings.NewReader("abcdef")))); err != nil {
		t.Fatal(err)
	}
	if got, want := log.last(), [2]int64{8, 10}; got != want {
		t.Errorf("after a retried read: progress = %v, want %v", got, want)
	}
}

func TestProgressCounterNil(t *testing.T) {
	var c *progressCounter
	c.add(5)
	c.rewind(c.mark())
	r := io.NopCloser(strings.NewReader("x"))
	if got := c.reader(r); got != r {
		t.Errorf("nil counter wrapped the reader")
	}
	if got := newProgressCounter(nil, 10).reader(r); got != r {
		t.Errorf("counter without a func wrapped the reader")
	}
}

// TestFirstReadCounted: the archive writer's second read of a layer (for
// the file bodies) is not counted again.
func TestFirstReadCounted(t *testing.T) {
	var log progressLog
	c := newProgressCounter(log.fn, 4)
	open := firstReadCounted(func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader("data")), nil
	}, c)
	for i := 0; i < 2; i++ {
		rc, err := open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatal(err)
		}
	}
	if d := cmp.Diff([][2]int64{{4, 4}}, log.calls); d != "" {
		t.Errorf("progress calls (-want +got):\n%s", d)
	}
}
