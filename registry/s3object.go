package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	awssession "github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// IsS3URL reports whether name is an s3:// URL rather than a file path.
func IsS3URL(name string) bool { return strings.HasPrefix(name, "s3://") }

// ParseS3Object parses s3://BUCKET/KEY, the URL of one object: the key is
// the storage's Prefix.
func ParseS3Object(s string) (S3Storage, error) {
	o, err := ParseS3URL(s)
	if err != nil {
		return o, err
	}
	if o.Prefix == "" {
		return o, fmt.Errorf("S3 URL %q: no key, want s3://BUCKET/KEY", s)
	}
	return o, nil
}

// s3PartSize is the size of a multipart upload's parts (S3 wants at least
// 5 MiB for all but the last).
const s3PartSize = 16 << 20

// s3RequestTimeout bounds one request to S3 that has no caller's context
// (a mount's range reads) and the abort of a failed upload.
const s3RequestTimeout = 2 * time.Minute

// newS3Client is a client for s, resolved as Resolve does: path-style
// addressing with an endpoint, and the SDK's credential chain unless s has
// keys of its own.
func newS3Client(s S3Storage) (*s3.S3, error) {
	s, err := s.Resolve()
	if err != nil {
		return nil, err
	}
	cfg := aws.NewConfig().WithRegion(s.Region).WithMaxRetries(3)
	if s.Endpoint != "" {
		cfg = cfg.WithEndpoint(s.Endpoint).WithS3ForcePathStyle(true)
	}
	if s.AccessKey != "" {
		cfg = cfg.WithCredentials(credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, ""))
	}
	sess, err := awssession.NewSessionWithOptions(awssession.Options{Config: *cfg, SharedConfigState: awssession.SharedConfigEnable})
	if err != nil {
		return nil, fmt.Errorf("reading the AWS configuration: %w", oneLine(err))
	}
	return s3.New(sess), nil
}

// UploadS3 uploads the file at path to the object o atomically: as a
// multipart upload whose completion is the commit, so that until the last
// part is in nothing is at o's key, and a failed or cancelled upload is
// aborted (under its own timeout, even after ctx is done) and leaves
// nothing behind.
func UploadS3(ctx context.Context, o S3Storage, path string) (err error) {
	c, err := newS3Client(o)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	bucket, key := aws.String(o.Bucket), aws.String(o.Prefix)
	up, err := c.CreateMultipartUploadWithContext(ctx, &s3.CreateMultipartUploadInput{Bucket: bucket, Key: key, ContentType: aws.String("application/octet-stream")})
	if err != nil {
		return fmt.Errorf("uploading to %s: %w", o, s3Err(ctx, err))
	}
	defer func() {
		if err == nil {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3RequestTimeout)
		defer cancel()
		if _, aerr := c.AbortMultipartUploadWithContext(actx, &s3.AbortMultipartUploadInput{Bucket: bucket, Key: key, UploadId: up.UploadId}); aerr != nil {
			err = errors.Join(err, fmt.Errorf("aborting the upload to %s: %w", o, oneLine(aerr)))
		}
	}()
	var parts []*s3.CompletedPart
	for off, n := int64(0), int64(1); off < st.Size() || off == 0; off, n = off+s3PartSize, n+1 {
		size := min(s3PartSize, st.Size()-off)
		out, err := c.UploadPartWithContext(ctx, &s3.UploadPartInput{Bucket: bucket, Key: key, UploadId: up.UploadId,
			PartNumber: aws.Int64(n), Body: io.NewSectionReader(f, off, size), ContentLength: aws.Int64(size)})
		if err != nil {
			return fmt.Errorf("uploading part %d to %s: %w", n, o, s3Err(ctx, err))
		}
		parts = append(parts, &s3.CompletedPart{ETag: out.ETag, PartNumber: aws.Int64(n)})
		if size == 0 {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := c.CompleteMultipartUploadWithContext(ctx, &s3.CompleteMultipartUploadInput{Bucket: bucket, Key: key, UploadId: up.UploadId,
		MultipartUpload: &s3.CompletedMultipartUpload{Parts: parts}}); err != nil {
		return fmt.Errorf("completing the upload to %s: %w", o, s3Err(ctx, err))
	}
	return nil
}

// s3Err is err in one line, or ctx's error when ctx is done (the SDK's
// RequestCanceled does not wrap it), so that callers can tell an
// interrupted run with errors.Is.
func s3Err(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return oneLine(err)
}

// PutS3 writes data as the object o, in one request (atomic in S3).
func PutS3(ctx context.Context, o S3Storage, data []byte, contentType string) error {
	c, err := newS3Client(o)
	if err != nil {
		return err
	}
	if _, err := c.PutObjectWithContext(ctx, &s3.PutObjectInput{Bucket: aws.String(o.Bucket), Key: aws.String(o.Prefix),
		Body: bytes.NewReader(data), ContentType: aws.String(contentType)}); err != nil {
		return fmt.Errorf("writing %s: %w", o, s3Err(ctx, err))
	}
	return nil
}

// s3BlockSize is how much an S3ObjectReader fetches at least per request,
// so that the many small reads of decoding an archive's index cost few
// requests.
const s3BlockSize = 1 << 20

// S3ObjectReader reads an S3 object by byte range. It keeps the last few
// blocks it fetched. It is safe for concurrent use.
type S3ObjectReader struct {
	c    *s3.S3
	o    S3Storage
	size int64
	etag string

	mu     sync.Mutex
	blocks []s3Block // most recent last
}

type s3Block struct {
	off  int64
	data []byte
}

// s3CachedBlocks is how many blocks an S3ObjectReader keeps.
const s3CachedBlocks = 8

// OpenS3Object opens the object o for reading by range.
func OpenS3Object(ctx context.Context, o S3Storage) (*S3ObjectReader, error) {
	c, err := newS3Client(o)
	if err != nil {
		return nil, err
	}
	h, err := c.HeadObjectWithContext(ctx, &s3.HeadObjectInput{Bucket: aws.String(o.Bucket), Key: aws.String(o.Prefix)})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", o, oneLine(err))
	}
	return &S3ObjectReader{c: c, o: o, size: aws.Int64Value(h.ContentLength), etag: aws.StringValue(h.ETag)}, nil
}

// Size is the object's size.
func (r *S3ObjectReader) Size() int64 { return r.size }

// ReadAt reads len(p) bytes at off, fetching whole blocks that it does not
// hold. Every request is pinned to the ETag seen on open, so an object
// replaced meanwhile fails rather than mixing two versions.
func (r *S3ObjectReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("reading %s: negative offset %d", r.o, off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.size {
			return n, io.EOF
		}
		start := pos - pos%s3BlockSize
		b, err := r.block(start)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], b[pos-start:])
		if c == 0 {
			return n, io.ErrUnexpectedEOF
		}
		n += c
	}
	return n, nil
}

// block returns the block at start, fetching it if needed.
func (r *S3ObjectReader) block(start int64) ([]byte, error) {
	r.mu.Lock()
	for i, b := range r.blocks {
		if b.off == start {
			r.blocks = append(append(r.blocks[:i:i], r.blocks[i+1:]...), b)
			r.mu.Unlock()
			return b.data, nil
		}
	}
	r.mu.Unlock()
	end := min(start+s3BlockSize, r.size) - 1
	ctx, cancel := context.WithTimeout(context.Background(), s3RequestTimeout)
	defer cancel()
	out, err := r.c.GetObjectWithContext(ctx, &s3.GetObjectInput{Bucket: aws.String(r.o.Bucket), Key: aws.String(r.o.Prefix),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, end)), IfMatch: aws.String(r.etag)})
	if err != nil {
		return nil, fmt.Errorf("reading %s at %d: %w", r.o, start, oneLine(err))
	}
	defer out.Body.Close()
	data := make([]byte, end-start+1)
	if _, err := io.ReadFull(out.Body, data); err != nil {
		return nil, fmt.Errorf("reading %s at %d: %w", r.o, start, err)
	}
	r.mu.Lock()
	r.blocks = append(r.blocks, s3Block{off: start, data: data})
	if len(r.blocks) > s3CachedBlocks {
		r.blocks = r.blocks[1:]
	}
	r.mu.Unlock()
	return data, nil
}

// DeleteS3 removes the object o; an object already gone is no error.
func DeleteS3(ctx context.Context, o S3Storage) error {
	c, err := newS3Client(o)
	if err != nil {
		return err
	}
	if _, err := c.DeleteObjectWithContext(ctx, &s3.DeleteObjectInput{Bucket: aws.String(o.Bucket), Key: aws.String(o.Prefix)}); err != nil {
		return fmt.Errorf("removing %s: %w", o, oneLine(err))
	}
	return nil
}
