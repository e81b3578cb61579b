package stages

import (
	"errors"
	"io"
	"sync"
)

// Read-ahead of a store's layer stream: containers-storage assembles the
// tar (tar-split metadata, file reads, a CRC-64 of every file) in a
// goroutine of its own behind a pipe, which hands over each write only when
// it is read. Reading it into a few buffers ahead lets that goroutine run
// on one core while the consumer (hashing, indexing, copying or
// compressing) runs on another, instead of the two taking turns.
const (
	readAheadBuffers = 4
	readAheadSize    = 1 << 20
)

// readAhead is an io.ReadCloser over rc that reads rc ahead in its own
// goroutine. Read and Close are for one goroutine at a time (diffReader
// serializes them); rc is only ever used by the read-ahead goroutine, and
// closed by Close after that goroutine has stopped.
type readAhead struct {
	rc    io.ReadCloser
	full  chan chunk
	free  chan []byte
	stop  chan struct{}
	ended chan struct{} // closed when the goroutine has returned

	cur  []byte // unread part of the current chunk
	buf  []byte // the current chunk's buffer, to give back
	err  error  // the error after the last chunk
	once sync.Once
}

type chunk struct {
	b   []byte
	n   int
	err error
}

func newReadAhead(rc io.ReadCloser) *readAhead {
	r := &readAhead{rc: rc, full: make(chan chunk, readAheadBuffers), free: make(chan []byte, readAheadBuffers),
		stop: make(chan struct{}), ended: make(chan struct{})}
	for range readAheadBuffers {
		r.free <- make([]byte, readAheadSize)
	}
	go r.run()
	return r
}

func (r *readAhead) run() {
	defer close(r.ended)
	defer close(r.full)
	// The first read is made even when Close comes at once: the store's
	// stream must not be closed before its tar assembly has read its
	// metadata once. containers-storage closes the metadata's pgzip
	// reader without waiting for that goroutine, and pgzip (v1.2.7) hangs
	// for ever in Close when it comes between a first Read's start of its
	// read-ahead and the read-ahead's set-up (TestLayerReadAfterClose hung
	// there about once in a few hundred runs).
	b := <-r.free
	for {
		n, err := io.ReadFull(r.rc, b)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		r.full <- chunk{b, n, err} // never blocks: one chunk per buffer
		if err != nil {
			return
		}
		select {
		case b = <-r.free:
		case <-r.stop:
			return
		}
	}
}

func (r *readAhead) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.buf != nil {
			r.free <- r.buf // never blocks: one slot per buffer
			r.buf = nil
		}
		if r.err != nil {
			return 0, r.err
		}
		c, ok := <-r.full
		if !ok {
			return 0, io.ErrClosedPipe
		}
		r.buf, r.cur, r.err = c.b, c.b[:c.n], c.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close stops the read-ahead and closes rc once the goroutine has
// returned: the store's reader is not safe for a Close during a Read, so a
// read of rc in progress (at most one buffer's worth, which the store's
// goroutine is producing) is waited for.
func (r *readAhead) Close() error {
	var err error
	r.once.Do(func() {
		close(r.stop)
		<-r.ended
		err = r.rc.Close()
	})
	return err
}
