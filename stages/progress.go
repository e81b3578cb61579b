package stages

import (
	"io"
	"sync"
)

// ProgressFunc is told how many bytes of a step's total are done; total is
// 0 when it is not known. It is called from the goroutine that reads the
// bytes, often: it must be cheap and must not block.
type ProgressFunc func(done, total int64)

// progressCounter adds up bytes read for a ProgressFunc. A nil counter, or
// one with no func, counts nothing.
type progressCounter struct {
	mu    sync.Mutex
	fn    ProgressFunc
	done  int64
	total int64
}

func newProgressCounter(fn ProgressFunc, total int64) *progressCounter {
	return &progressCounter{fn: fn, total: max(total, 0)}
}

// add counts n more bytes done.
func (c *progressCounter) add(n int64) {
	if c == nil || c.fn == nil || n == 0 {
		return
	}
	c.mu.Lock()
	c.done += n
	done := c.done
	c.mu.Unlock()
	c.fn(done, c.total)
}

// mark returns the count now, for rewind.
func (c *progressCounter) mark() int64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// rewind sets the count back to a mark: a retried pass reads its bytes
// again, and they are not done twice.
func (c *progressCounter) rewind(mark int64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.done = mark
	c.mu.Unlock()
}

// reader counts what is read through r.
func (c *progressCounter) reader(r io.ReadCloser) io.ReadCloser {
	if c == nil || c.fn == nil {
		return r
	}
	return progressReader{r, c}
}

type progressReader struct {
	io.ReadCloser
	c *progressCounter
}

func (r progressReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.c.add(int64(n))
	return n, err
}
