package stages

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// trackedReader is a ReadCloser that fails a Read during or after Close,
// as containers-storage's diff reader must not be closed under a Read.
type trackedReader struct {
	r       io.Reader
	reading atomic.Bool
	closed  atomic.Bool
	bad     atomic.Bool
	err     error // returned instead of io.EOF at the end
}

func (t *trackedReader) Read(p []byte) (int, error) {
	t.reading.Store(true)
	defer t.reading.Store(false)
	if t.closed.Load() {
		t.bad.Store(true)
		return 0, errors.New("read after close")
	}
	n, err := t.r.Read(p)
	if err == io.EOF && t.err != nil {
		err = t.err
	}
	return n, err
}

func (t *trackedReader) Close() error {
	if t.reading.Load() {
		t.bad.Store(true)
	}
	t.closed.Store(true)
	return nil
}

func TestReadAhead(t *testing.T) {
	data := make([]byte, 5*readAheadSize+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}

	t.Run("reads the stream as it is", func(t *testing.T) {
		src := &trackedReader{r: iotestHalf{bytes.NewReader(data)}}
		ra := newReadAhead(src)
		got, err := io.ReadAll(ra)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("ReadAll() = %d bytes, %v; want the %d bytes of the stream", len(got), err, len(data))
		}
		if err := ra.Close(); err != nil || !src.closed.Load() || src.bad.Load() {
			t.Errorf("Close() = %v, source closed %v, closed under a read %v", err, src.closed.Load(), src.bad.Load())
		}
	})
	t.Run("passes the stream's error on after its bytes", func(t *testing.T) {
		boom := errors.New("boom")
		ra := newReadAhead(&trackedReader{r: bytes.NewReader(data[:100]), err: boom})
		got, err := io.ReadAll(ra)
		if !errors.Is(err, boom) || !bytes.Equal(got, data[:100]) {
			t.Errorf("ReadAll() = %d bytes, %v; want 100 bytes, then %v", len(got), err, boom)
		}
		ra.Close()
	})
	t.Run("closed early, never under a read", func(t *testing.T) {
		for i := range 50 {
			src := &trackedReader{r: iotestHalf{bytes.NewReader(data)}}
			ra := newReadAhead(src)
			p := make([]byte, 1000*i+1)
			if _, err := io.ReadFull(ra, p); err != nil {
				t.Fatal(err)
			}
			if err := ra.Close(); err != nil {
				t.Fatal(err)
			}
			if src.bad.Load() || !src.closed.Load() {
				t.Fatalf("source closed %v, closed under or read after close %v", src.closed.Load(), src.bad.Load())
			}
			if err := ra.Close(); err != nil {
				t.Errorf("second Close() = %v, want nil", err)
			}
		}
	})
}

// iotestHalf reads at most half of what is asked (and at least one byte),
// as pipes do.
type iotestHalf struct{ r io.Reader }

func (h iotestHalf) Read(p []byte) (int, error) {
	return h.r.Read(p[:(len(p)+1)/2])
}
