package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// DefaultChunkSize is how much of a blob UploadBlob sends per request, and
// so how much of it it holds in memory, unless told otherwise.
const DefaultChunkSize = 8 << 20

// Pusher writes blobs and manifests into one repository with the OCI
// distribution API's own requests, rather than go-containerregistry's
// remote.Write, because a v2 build streams each layer once: its digest is
// known only when the last byte has gone, and the layer is neither held
// whole nor read back. A Pusher is safe for concurrent use.
type Pusher struct {
	repo   name.Repository
	opts   Options
	auth   authn.Authenticator
	client *http.Client
	po     pushOptions

	mu sync.Mutex
	// mounters are clients whose bearer token also allows pulling from
	// another repository, by that repository's name.
	mounters map[string]*http.Client
}

type pushOptions struct {
	chunkSize int64
	backoff   Backoff
	log       *logrus.Entry
}

// PushOption configures a Pusher, or one upload.
type PushOption func(*pushOptions) error

// WithChunkSize sends a blob in requests of n bytes (the last may be
// shorter), raised to the registry's OCI-Chunk-Min-Length if it asks for
// more. Two chunks are what an upload holds in memory (one being sent, the
// next being read). The default is
// DefaultChunkSize (8 MiB).
func WithChunkSize(n int64) PushOption {
	return func(o *pushOptions) error {
		if n <= 0 {
			return fmt.Errorf("chunk size %d: must be positive", n)
		}
		o.chunkSize = n
		return nil
	}
}

// WithPushBackoff is how often, and how patiently, each request is retried
// when the registry fails transiently (see IsTransient). The default is 5
// attempts waiting 500 ms, then twice as long each time.
func WithPushBackoff(b Backoff) PushOption {
	return func(o *pushOptions) error {
		if b.Attempts < 1 {
			return fmt.Errorf("backoff of %d attempts: want at least 1", b.Attempts)
		}
		o.backoff = b
		return nil
	}
}

// WithPushLog is where retries and abandoned upload sessions are reported.
// The default is logrus's standard logger.
func WithPushLog(l *logrus.Entry) PushOption {
	return func(o *pushOptions) error {
		o.log = l
		return nil
	}
}

func (o pushOptions) with(opts []PushOption) (pushOptions, error) {
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// NewPusher pushes to repository repo ("host[:port]/path"), reached and
// authenticated as o says. It asks the registry how to authenticate, so it
// fails early if the registry cannot be reached.
func NewPusher(ctx context.Context, repo string, o Options, opts ...PushOption) (*Pusher, error) {
	ref, err := o.ParseReference(repo + ":latest")
	if err != nil {
		return nil, err
	}
	po, err := pushOptions{
		chunkSize: DefaultChunkSize,
		backoff:   Backoff{Attempts: 5, Initial: 500 * time.Millisecond},
		log:       logrus.NewEntry(logrus.StandardLogger()),
	}.with(opts)
	if err != nil {
		return nil, fmt.Errorf("pushing to %s: %w", repo, err)
	}
	auth, err := o.Authenticator(ref.Context())
	if err != nil {
		return nil, err
	}
	p := &Pusher{repo: ref.Context(), opts: o, auth: auth, po: po, mounters: map[string]*http.Client{}}
	if p.client, err = p.newClient(ctx, p.repo.Scope(transport.PushScope)); err != nil {
		return nil, err
	}
	return p, nil
}

// newClient does the authentication handshake for the given scopes, over
// the transport every registry request of clipbuild uses.
func (p *Pusher) newClient(ctx context.Context, scopes ...string) (*http.Client, error) {
	var rt http.RoundTripper
	err := Retry(ctx, p.po.backoff, p.po.log.Warnf, "authenticating to "+p.repo.RegistryStr(), func() (err error) {
		rt, err = transport.NewWithContext(ctx, p.repo.Registry, p.auth, p.opts.Transport(), scopes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("authenticating to %s: %w", p.repo.RegistryStr(), redactURL(err))
	}
	return &http.Client{Transport: rt}, nil
}

// Repository is the repository p pushes to, as "host[:port]/path".
func (p *Pusher) Repository() string { return p.repo.Name() }

// endpoint is the URL of path under the repository's /v2/NAME/.
func (p *Pusher) endpoint(path string) *url.URL {
	return &url.URL{
		Scheme: p.repo.Registry.Scheme(), // the handshake's transport corrects it
		Host:   p.repo.RegistryStr(),
		Path:   "/v2/" + p.repo.RepositoryStr() + "/" + path,
	}
}

// do sends req and returns the response if its status is one of want,
// else the registry's error as a *transport.Error (which IsTransient
// classifies). The caller closes the body.
func do(c *http.Client, req *http.Request, want ...int) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, redactURL(err)
	}
	if err := transport.CheckError(resp, want...); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// discard reads out and closes a body so its connection is reused.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// redactURL drops the query from a request error's URL: an upload URL's
// query is the registry's opaque (and long) upload state.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			ue.URL = u.String()
		}
	}
	return err
}

// BlobExists reports whether the repository has blob dg, and its size (-1
// if the registry does not say).
func (p *Pusher) BlobExists(ctx context.Context, dg digest.Digest) (size int64, ok bool, err error) {
	err = Retry(ctx, p.po.backoff, p.po.log.Warnf, "checking for blob "+dg.String(), func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, p.endpoint("blobs/"+dg.String()).String(), nil)
		if err != nil {
			return err
		}
		resp, err := do(p.client, req, http.StatusOK, http.StatusNotFound)
		if err != nil {
			return err
		}
		discard(resp)
		size, ok = resp.ContentLength, resp.StatusCode == http.StatusOK
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("checking for blob %s in %s: %w", dg, p.repo.Name(), err)
	}
	return size, ok, nil
}

// MountBlob links blob dg from repository fromRepo ("host[:port]/path", on
// the same registry) into p's repository without sending its bytes, and
// reports whether the registry did. A registry that does not have the
// blob there, or does not mount, starts an ordinary upload instead; that
// session is deleted and MountBlob reports false with no error.
func (p *Pusher) MountBlob(ctx context.Context, dg digest.Digest, fromRepo string) (bool, error) {
	wrap := func(err error) error {
		return fmt.Errorf("mounting blob %s from %s into %s: %w", dg, fromRepo, p.repo.Name(), err)
	}
	from, err := p.opts.ParseReference(fromRepo + ":latest")
	if err != nil {
		return false, wrap(err)
	}
	if from.Context().RegistryStr() != p.repo.RegistryStr() {
		return false, wrap(fmt.Errorf("%s is on another registry", fromRepo))
	}
	c, err := p.mounter(ctx, from.Context())
	if err != nil {
		return false, wrap(err)
	}
	u := p.endpoint("blobs/uploads/")
	u.RawQuery = url.Values{"mount": {dg.String()}, "from": {from.Context().RepositoryStr()}}.Encode()
	var resp *http.Response
	err = Retry(ctx, p.po.backoff, p.po.log.Warnf, "mounting blob "+dg.String(), func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
		if err != nil {
			return err
		}
		resp, err = do(c, req, http.StatusCreated, http.StatusAccepted)
		return err
	})
	if err != nil {
		return false, wrap(err)
	}
	discard(resp)
	if resp.StatusCode == http.StatusCreated {
		if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dg.String() {
			return false, wrap(fmt.Errorf("registry mounted %s", got))
		}
		return true, nil
	}
	s, err := p.newSession(resp, p.po)
	if err != nil {
		return false, wrap(err)
	}
	s.abort(ctx)
	return false, nil
}

// mounter is a client allowed to push to p's repository and pull from
// from. Registries with bearer tokens need both scopes in one token.
func (p *Pusher) mounter(ctx context.Context, from name.Repository) (*http.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.mounters[from.Name()]; ok {
		return c, nil
	}
	c, err := p.newClient(ctx, p.repo.Scope(transport.PushScope), from.Scope(transport.PullScope))
	if err != nil {
		return nil, err
	}
	p.mounters[from.Name()] = c
	return c, nil
}

// UploadBlob streams r into the repository as one blob and returns its
// sha256 digest and size, computed on the way. It sends one chunk at a
// time, reading the next meanwhile, and holds only those two: a chunk
// whose request fails transiently is sent again from wherever the registry
// says the upload stands. If the upload cannot be finished, its session on
// the registry is deleted; r may then still be read once, by the upload's
// reading goroutine, until its Read in progress returns (close a pipe's
// reader to end it), and is not to be read again by the caller.
// opts override the Pusher's for this upload.
func (p *Pusher) UploadBlob(ctx context.Context, r io.Reader, opts ...PushOption) (digest.Digest, int64, error) {
	wrap := func(err error) error { return fmt.Errorf("uploading blob to %s: %w", p.repo.Name(), err) }
	po, err := p.po.with(opts)
	if err != nil {
		return "", 0, wrap(err)
	}
	s, err := p.startUpload(ctx, po)
	if err != nil {
		return "", 0, wrap(err)
	}
	dg, err := s.stream(ctx, r)
	if err != nil {
		s.abort(ctx)
		return "", 0, wrap(err)
	}
	return dg, s.offset, nil
}

// UploadBlobKnown uploads a blob whose digest and size are known, such as
// an image config, in a single request. The request is retried only if r
// is an io.Seeker, so that it can be sent again from the start.
func (p *Pusher) UploadBlobKnown(ctx context.Context, dg digest.Digest, size int64, r io.Reader) error {
	wrap := func(err error) error { return fmt.Errorf("uploading blob %s to %s: %w", dg, p.repo.Name(), err) }
	s, err := p.startUpload(ctx, p.po)
	if err != nil {
		return wrap(err)
	}
	backoff := s.po.backoff
	seeker, rewind := r.(io.Seeker)
	if !rewind {
		backoff.Attempts = 1
	}
	first := true
	err = Retry(ctx, backoff, s.po.log.Warnf, "uploading blob "+dg.String(), func() error {
		if !first {
			if _, err := seeker.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("rewinding the blob: %w", err)
			}
		}
		first = false
		var body io.ReadCloser = http.NoBody
		if size > 0 {
			body = io.NopCloser(r)
		}
		return s.put(ctx, dg, body, size)
	})
	if err == nil {
		return nil
	}
	if got, ok, herr := p.BlobExists(ctx, dg); herr == nil && ok && got == size {
		// The registry committed it, and only its answer was lost.
		return nil
	}
	s.abort(ctx)
	return wrap(err)
}

// PutManifest stores manifest body of type mediaType under tag (or only by
// digest if tag is empty) and returns its digest.
func (p *Pusher) PutManifest(ctx context.Context, tag, mediaType string, body []byte) (digest.Digest, error) {
	dg := digest.FromBytes(body)
	ref := tag
	if ref == "" {
		ref = dg.String()
	} else if _, err := name.NewTag(p.repo.Name() + ":" + tag); err != nil {
		return "", fmt.Errorf("pushing manifest to %s: %w", p.repo.Name(), err)
	}
	err := Retry(ctx, p.po.backoff, p.po.log.Warnf, "pushing manifest "+ref, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.endpoint("manifests/"+ref).String(), bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", mediaType)
		resp, err := do(p.client, req, http.StatusCreated, http.StatusOK)
		if err != nil {
			return err
		}
		discard(resp)
		if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dg.String() {
			return fmt.Errorf("registry stored it as %s, want %s", got, dg)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("pushing manifest %s to %s: %w", ref, p.repo.Name(), err)
	}
	return dg, nil
}

// session is one upload in progress on the registry.
type session struct {
	p      *Pusher
	po     pushOptions
	loc    *url.URL // the last Location the registry gave: where the next request goes
	uuid   string   // Docker-Upload-UUID, for messages
	chunk  int64    // the chunk size, at least the registry's minimum
	offset int64    // how much of the blob the registry has acknowledged
}

// errOutOfStep says the registry holds a different part of the upload than
// the request assumed, which after a failed request is worth asking about
// again: distribution may still be writing the failed request's bytes.
var errOutOfStep = errors.New("registry is out of step with the upload")

// startUpload opens an upload session.
func (p *Pusher) startUpload(ctx context.Context, po pushOptions) (*session, error) {
	var resp *http.Response
	err := Retry(ctx, po.backoff, po.log.Warnf, "starting an upload", func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint("blobs/uploads/").String(), nil)
		if err != nil {
			return err
		}
		resp, err = do(p.client, req, http.StatusAccepted)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("starting an upload: %w", err)
	}
	discard(resp)
	return p.newSession(resp, po)
}

// newSession is the session a registry opened with resp.
func (p *Pusher) newSession(resp *http.Response, po pushOptions) (*session, error) {
	s := &session{p: p, po: po, uuid: resp.Header.Get("Docker-Upload-UUID"), chunk: po.chunkSize}
	if err := s.follow(resp); err != nil {
		return nil, err
	}
	if s.loc == nil {
		return nil, errors.New("registry opened an upload without a Location")
	}
	if v := resp.Header.Get("OCI-Chunk-Min-Length"); v != "" {
		minLen, err := strconv.ParseInt(v, 10, 64)
		if err != nil || minLen < 0 {
			return nil, fmt.Errorf("registry sent OCI-Chunk-Min-Length %q", v)
		}
		s.chunk = max(s.chunk, minLen)
	}
	s.po.log = po.log.WithField("upload", s.uuid)
	return s, nil
}

// follow moves the session to the Location of resp, which may be relative
// to the request's URL.
func (s *session) follow(resp *http.Response) error {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		return fmt.Errorf("registry sent Location %q: %w", loc, err)
	}
	s.loc = resp.Request.URL.ResolveReference(u)
	return nil
}

// stream sends r in chunks and commits the upload with the digest of what
// was sent. The next chunk is read from r while one is being sent, so that
// whatever produces r (a compressor) keeps working during each request
// instead of waiting for it; two chunks are held at a time.
func (s *session) stream(ctx context.Context, r io.Reader) (digest.Digest, error) {
	d := digest.SHA256.Digester()
	chunks, release, stop := readChunks(r, s.chunk)
	defer stop()
	for c := range chunks {
		if c.n > 0 {
			d.Hash().Write(c.buf[:c.n])
			if err := s.send(ctx, c.buf[:c.n]); err != nil {
				return "", err
			}
		}
		if c.err == io.EOF {
			break
		}
		if c.err != nil {
			return "", fmt.Errorf("reading the blob: %w", c.err)
		}
		release(c.buf)
	}
	dg := d.Digest()
	err := Retry(ctx, s.po.backoff, s.po.log.Warnf, "completing the upload", func() error {
		return s.put(ctx, dg, http.NoBody, 0)
	})
	if err != nil {
		if got, ok, herr := s.p.BlobExists(ctx, dg); herr == nil && ok && got == s.offset {
			return dg, nil // the registry committed it, and only its answer was lost
		}
		return "", fmt.Errorf("completing the upload as %s: %w", dg, err)
	}
	return dg, nil
}

// filledChunk is one chunk read by readChunks: buf[:n], then err (io.EOF
// at the end of r).
type filledChunk struct {
	buf []byte
	n   int
	err error
}

// readChunks reads r into chunks of size bytes in a goroutine of its own,
// one chunk ahead of the consumer: each chunk arrives on the channel, and
// its buffer must be given back with release before the one after next can
// be read. The channel is closed after the chunk that carries an error.
// stop ends the reading once r's Read in progress, if any, returns; r
// itself is never closed.
func readChunks(r io.Reader, size int64) (chunks <-chan filledChunk, release func([]byte), stop func()) {
	out := make(chan filledChunk)
	free := make(chan []byte, 2)
	free <- make([]byte, size)
	free <- make([]byte, size)
	done := make(chan struct{})
	go func() {
		defer close(out)
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-done:
				return
			}
			n, err := fill(r, buf)
			select {
			case out <- filledChunk{buf: buf, n: n, err: err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var once sync.Once
	return out, func(b []byte) { free <- b }, func() { once.Do(func() { close(done) }) }
}

// fill reads into buf until it is full (nil error), r ends (io.EOF) or r
// fails. Unlike io.ReadFull it tells a short last chunk from r's own
// io.ErrUnexpectedEOF.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// send delivers chunk, the bytes after s.offset. A transient failure is
// followed by asking the registry how much it holds, and sending the rest
// of the chunk from there.
func (s *session) send(ctx context.Context, chunk []byte) error {
	start, end := s.offset, s.offset+int64(len(chunk))
	zeroRefused := false
	wait := s.po.backoff.Initial
	for attempt := 1; ; attempt++ {
		var err error
		if attempt == 1 {
			err = s.patch(ctx, chunk, start)
		} else {
			err = s.resend(ctx, chunk, start, &zeroRefused)
		}
		if err == nil {
			s.offset = end
			return nil
		}
		if attempt >= s.po.backoff.Attempts || !retryableChunk(err) {
			return fmt.Errorf("sending bytes %d-%d: %w", start, end-1, err)
		}
		s.po.log.Warnf("sending bytes %d-%d of a blob to %s: attempt %d of %d failed, retrying in %v: %v",
			start, end-1, s.p.repo.Name(), attempt, s.po.backoff.Attempts, wait, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("sending bytes %d-%d: %w", start, end-1, err)
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// resend asks the registry how much of chunk (the bytes from start) it
// holds, and sends the rest. zeroRefused remembers that the registry
// refused the rest from 0 after answering "Range: 0-0", which is both
// "nothing" and "the first byte".
func (s *session) resend(ctx context.Context, chunk []byte, start int64, zeroRefused *bool) error {
	end := start + int64(len(chunk))
	held, ambiguous, err := s.status(ctx)
	if err != nil {
		return err
	}
	if ambiguous && (*zeroRefused || start >= 1) {
		held = 1
	}
	if held < start || held > end {
		return fmt.Errorf("registry holds %d bytes of the upload, having acknowledged %d and been sent %d", held, start, end)
	}
	if held == end {
		return nil
	}
	err = s.patch(ctx, chunk[held-start:], held)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		*zeroRefused = ambiguous
		return fmt.Errorf("%w: %w", errOutOfStep, err)
	}
	return err
}

// retryableChunk reports whether a chunk is worth sending again after err:
// a transient failure, the registry out of step with the upload, or any
// failure of the connection while the request was being written (which
// Go reports as well as "use of closed network connection").
func retryableChunk(err error) bool {
	var oerr *net.OpError
	return IsTransient(err) || errors.Is(err, errOutOfStep) || errors.Is(err, net.ErrClosed) ||
		(errors.As(err, &oerr) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded))
}

// patch sends data as the bytes from at, and checks that the registry then
// holds everything up to the end of data.
func (s *session) patch(ctx context.Context, data []byte, at int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, s.loc.String(), bytes.NewReader(data))
	if err != nil {
		return err
	}
	last := at + int64(len(data)) - 1
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", at, last))
	resp, err := do(s.p.client, req, http.StatusAccepted)
	if err != nil {
		return err
	}
	discard(resp)
	if err := s.follow(resp); err != nil {
		return err
	}
	if rng := resp.Header.Get("Range"); rng != "" {
		if got, ok := rangeEnd(rng); !ok || got != last {
			return fmt.Errorf("%w: after bytes %d-%d it reports Range %q", errOutOfStep, at, last, rng)
		}
	}
	return nil
}

// status asks the registry how many bytes of the upload it holds, and
// moves the session to the Location it answers with (distribution's
// Location carries the upload's state, and refuses an out-of-date one).
// ambiguous means the answer was "0-0", which is either 0 or 1 bytes.
func (s *session) status(ctx context.Context) (held int64, ambiguous bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.loc.String(), nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := do(s.p.client, req, http.StatusNoContent, http.StatusOK)
	if err != nil {
		return 0, false, fmt.Errorf("asking where the upload stands: %w", err)
	}
	discard(resp)
	if err := s.follow(resp); err != nil {
		return 0, false, err
	}
	rng := resp.Header.Get("Range")
	last, ok := rangeEnd(rng)
	if !ok {
		return 0, false, fmt.Errorf("asking where the upload stands: registry sent Range %q", rng)
	}
	if last == 0 {
		return 0, true, nil
	}
	return last + 1, false, nil
}

// rangeEnd parses an upload's Range header, "0-LAST" (with or without a
// "bytes=" prefix).
func rangeEnd(rng string) (int64, bool) {
	first, last, ok := strings.Cut(strings.TrimPrefix(rng, "bytes="), "-")
	if !ok || first != "0" {
		return 0, false
	}
	n, err := strconv.ParseInt(last, 10, 64)
	return n, err == nil && n >= 0
}

// put completes the upload as blob dg, with body (of length size) as its
// last bytes.
func (s *session) put(ctx context.Context, dg digest.Digest, body io.ReadCloser, size int64) error {
	u := *s.loc
	q := u.Query()
	q.Set("digest", dg.String())
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := do(s.p.client, req, http.StatusCreated)
	if err != nil {
		return err
	}
	discard(resp)
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dg.String() {
		return fmt.Errorf("registry stored the blob as %s, want %s", got, dg)
	}
	return nil
}

// abort deletes the session, even if ctx is done, and logs what it could
// not delete: a leaked session only costs the registry space until its
// own purge.
func (s *session) abort(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := s.delete(ctx)
	if err != nil {
		// After a request that failed part-way the session's Location is
		// out of date, and distribution refuses it; ask for a fresh one.
		if _, _, serr := s.status(ctx); serr == nil {
			err = s.delete(ctx)
		}
	}
	if err != nil {
		s.po.log.Warnf("abandoning upload session %s on %s: %v", s.uuid, s.p.repo.Name(), err)
		return
	}
	s.po.log.Debugf("deleted upload session %s on %s", s.uuid, s.p.repo.Name())
}

func (s *session) delete(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.loc.String(), nil)
	if err != nil {
		return err
	}
	resp, err := do(s.p.client, req, http.StatusNoContent, http.StatusAccepted, http.StatusOK)
	if err != nil {
		return err
	}
	discard(resp)
	return nil
}
