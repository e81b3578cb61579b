package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sirupsen/logrus"
)

// ErrRangeUnsupported reports a registry, or the storage it redirects blob
// reads to, that answered a ranged read with the whole blob when the range
// starts too far into it to read up to (see WithMaxDiscard). A caller that
// needs those bytes has to read the blob whole.
var ErrRangeUnsupported = errors.New("registry ignores byte ranges")

// Range defaults. A ranged read of a seekable layer asks for whole gzip
// members of about 1 MiB; reads of at least four of them go out as
// member-sized parts in parallel, which is what fills a fast link.
const (
	DefaultPartSize         = 1 << 20
	DefaultSplitThreshold   = 4 << 20
	DefaultRangeConcurrency = 4
	DefaultMaxDiscard       = 16 << 20
)

// RangeReader reads byte ranges of the blobs of one repository by digest,
// each with single-range GETs (Range: bytes=FIRST-LAST, never a list). It
// authenticates for pulling on its first read, so opening one costs
// nothing when everything it would read is cached; a failed handshake is
// tried again on the next read. A bearer token that expires is renewed by
// go-containerregistry's transport when the registry answers 401.
//
// Redirects are followed, to presigned storage URLs for example, and the
// redirected request carries no Authorization header: the transport adds it
// only for the registry's own host, and plain HTTP is refused on every hop
// where Options do not allow it.
//
// Nothing here checks the bytes against the blob's digest, which covers
// the whole blob: callers verify what they read (a seekable layer's
// members each have their own SHA-256). A RangeReader is safe for
// concurrent use.
type RangeReader struct {
	repo name.Repository
	opts Options
	ro   rangeOptions

	mu     sync.Mutex
	client *http.Client

	// ignored is set once the registry has answered a range with the whole
	// blob, so that it is reported once.
	ignored atomic.Bool
}

type rangeOptions struct {
	backoff     Backoff
	log         *logrus.Entry
	maxDiscard  int64
	splitAt     int64
	partSize    int64
	concurrency int
}

// RangeOption configures a RangeReader.
type RangeOption func(*rangeOptions) error

// WithRangeBackoff is how often, and how patiently, a range request is
// retried when it fails transiently (see IsTransient), including a body
// cut short. The default is 4 attempts waiting 250 ms, then twice as long
// each time.
func WithRangeBackoff(b Backoff) RangeOption {
	return func(o *rangeOptions) error {
		if b.Attempts < 1 {
			return fmt.Errorf("backoff of %d attempts: want at least 1", b.Attempts)
		}
		o.backoff = b
		return nil
	}
}

// WithRangeLog is where retries, and a registry that ignores ranges, are
// reported. The default is logrus's standard logger.
func WithRangeLog(l *logrus.Entry) RangeOption {
	return func(o *rangeOptions) error {
		o.log = l
		return nil
	}
}

// WithMaxDiscard bounds how much of a blob is read and thrown away when
// the server ignores the Range header and sends the blob from its start
// (200 instead of 206): a range that starts within n bytes is read past
// them and served correctly; one that starts later fails with
// ErrRangeUnsupported before more is read. The default is
// DefaultMaxDiscard (16 MiB).
func WithMaxDiscard(n int64) RangeOption {
	return func(o *rangeOptions) error {
		if n < 0 {
			return fmt.Errorf("max discard %d: must not be negative", n)
		}
		o.maxDiscard = n
		return nil
	}
}

// WithParallelRanges sets how a large read is split: a read of at least
// threshold bytes goes out as parts of partSize bytes (the last may be
// shorter), at most concurrency of them at once, each its own single-range
// GET. The default is DefaultSplitThreshold (4 MiB), DefaultPartSize
// (1 MiB) and DefaultRangeConcurrency (4).
func WithParallelRanges(threshold, partSize int64, concurrency int) RangeOption {
	return func(o *rangeOptions) error {
		if threshold <= 0 || partSize <= 0 || concurrency < 1 {
			return fmt.Errorf("parallel ranges (threshold %d, part %d, concurrency %d): want all positive", threshold, partSize, concurrency)
		}
		o.splitAt, o.partSize, o.concurrency = threshold, partSize, concurrency
		return nil
	}
}

// NewRangeReader reads blobs of repository repo ("host[:port]/path"),
// reached and authenticated as o says. It does not contact the registry.
func NewRangeReader(repo string, o Options, opts ...RangeOption) (*RangeReader, error) {
	ref, err := o.ParseReference(repo + ":latest")
	if err != nil {
		return nil, err
	}
	ro := rangeOptions{
		backoff:     Backoff{Attempts: 4, Initial: 250 * time.Millisecond},
		log:         logrus.NewEntry(logrus.StandardLogger()),
		maxDiscard:  DefaultMaxDiscard,
		splitAt:     DefaultSplitThreshold,
		partSize:    DefaultPartSize,
		concurrency: DefaultRangeConcurrency,
	}
	for _, opt := range opts {
		if err := opt(&ro); err != nil {
			return nil, fmt.Errorf("reading ranges of %s: %w", repo, err)
		}
	}
	return &RangeReader{repo: ref.Context(), opts: o, ro: ro}, nil
}

// Repository is the repository r reads from, as "host[:port]/path".
func (r *RangeReader) Repository() string { return r.repo.Name() }

// ReadRange returns the n bytes of blob dg at off. A read of at least the
// split threshold goes out as parallel parts (see WithParallelRanges).
func (r *RangeReader) ReadRange(ctx context.Context, dg string, off, n int64) ([]byte, error) {
	if off < 0 || n <= 0 {
		return nil, fmt.Errorf("reading blob %s: invalid range of %d bytes at %d", dg, n, off)
	}
	buf := make([]byte, n)
	if n < r.ro.splitAt {
		if err := r.readInto(ctx, dg, off, buf); err != nil {
			return nil, err
		}
		return buf, nil
	}
	if err := r.readParts(ctx, dg, off, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// readParts fills buf from off with parts read in parallel, stopping the
// others at the first failure.
func (r *RangeReader) readParts(ctx context.Context, dg string, off int64, buf []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, r.ro.concurrency)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for start := int64(0); start < int64(len(buf)); start += r.ro.partSize {
		end := min(start+r.ro.partSize, int64(len(buf)))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := r.readInto(ctx, dg, off+start, buf[start:end]); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("reading blob %s: %w", dg, ctx.Err())
	}
	return firstErr
}

// readInto fills buf with the bytes of blob dg at off, with one GET
// retried as the backoff says.
func (r *RangeReader) readInto(ctx context.Context, dg string, off int64, buf []byte) error {
	last := off + int64(len(buf)) - 1
	what := fmt.Sprintf("reading bytes %d-%d of blob %s", off, last, dg)
	err := Retry(ctx, r.ro.backoff, r.ro.log.Warnf, what, func() error {
		c, err := r.httpClient(ctx)
		if err != nil {
			return err
		}
		return r.get(ctx, c, dg, off, buf)
	})
	if err != nil {
		return fmt.Errorf("%s from %s: %w", what, r.repo.Name(), missingBlob(err))
	}
	return nil
}

// get is one GET of the range, which it reads whole into buf.
func (r *RangeReader) get(ctx context.Context, c *http.Client, dg string, off int64, buf []byte) error {
	n := int64(len(buf))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.blobURL(dg).String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
	resp, err := do(c, req, http.StatusPartialContent, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.Reader(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if off > r.ro.maxDiscard {
			return fmt.Errorf("the answer is the whole blob, and the range starts %d bytes in, past the %d read through at most: %w", off, r.ro.maxDiscard, ErrRangeUnsupported)
		}
		if r.ignored.CompareAndSwap(false, true) {
			r.ro.log.Warnf("%s answers byte ranges with whole blobs: reading through up to %d bytes for each", resp.Request.URL.Host, r.ro.maxDiscard)
		}
		if _, err := io.CopyN(io.Discard, body, off); err != nil {
			return fmt.Errorf("reading up to the range: %w", unexpectedEOF(err))
		}
	} else if err := checkContentRange(resp.Header.Get("Content-Range"), off, n); err != nil {
		return err
	}
	if _, err := io.ReadFull(body, buf); err != nil {
		return fmt.Errorf("reading the range: %w", unexpectedEOF(err))
	}
	return nil
}

// unexpectedEOF turns a body that ends early into io.ErrUnexpectedEOF,
// which IsTransient retries.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkContentRange checks that a 206 answer holds exactly the n bytes at
// off that were asked for ("bytes FIRST-LAST/SIZE", SIZE possibly "*").
func checkContentRange(cr string, off, n int64) error {
	spec, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return fmt.Errorf("partial content with Content-Range %q, want bytes %d-%d", cr, off, off+n-1)
	}
	rng, _, _ := strings.Cut(spec, "/")
	a, b, ok := strings.Cut(rng, "-")
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || first != off || last != off+n-1 {
		return fmt.Errorf("partial content with Content-Range %q, want bytes %d-%d", cr, off, off+n-1)
	}
	return nil
}

// blobURL is where blob dg is read from.
func (r *RangeReader) blobURL(dg string) *url.URL {
	return &url.URL{
		Scheme: r.repo.Registry.Scheme(),
		Host:   r.repo.RegistryStr(),
		Path:   "/v2/" + r.repo.RepositoryStr() + "/blobs/" + dg,
	}
}

// httpClient returns the authenticated client, doing the handshake the
// first time (and again after one that failed).
func (r *RangeReader) httpClient(ctx context.Context) (*http.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, nil
	}
	auth, err := r.opts.Authenticator(r.repo)
	if err != nil {
		return nil, err
	}
	rt, err := r.handshake(ctx, auth)
	if err != nil {
		return nil, err
	}
	r.client = &http.Client{Transport: rt}
	return r.client, nil
}

func (r *RangeReader) handshake(ctx context.Context, auth authn.Authenticator) (http.RoundTripper, error) {
	rt, err := transport.NewWithContext(ctx, r.repo.Registry, auth, r.opts.Transport(), []string{r.repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("authenticating to %s: %w", r.repo.RegistryStr(), redactURL(err))
	}
	return rt, nil
}
