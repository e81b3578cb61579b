package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeS3Object serves one object (HEAD, and GET with a single byte range
// pinned by If-Match) the way S3 does, counting GETs.
func fakeS3Object(t *testing.T, key string, data []byte) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var gets atomic.Int64
	const etag = `"v1"`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/bucket/"+key {
			http.Error(w, "<Error><Code>NoSuchKey</Code></Error>", http.StatusNotFound)
			return
		}
		w.Header().Set("ETag", etag)
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			return
		}
		gets.Add(1)
		if r.Header.Get("If-Match") != etag {
			http.Error(w, "<Error><Code>PreconditionFailed</Code></Error>", http.StatusPreconditionFailed)
			return
		}
		var start, end int
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end); err != nil || start > end || end >= len(data) {
			http.Error(w, "<Error><Code>InvalidRange</Code></Error>", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(data[start : end+1])
	}))
	t.Cleanup(srv.Close)
	return srv, &gets
}

func TestS3ObjectReader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (3*s3BlockSize+1000)/16)
	srv, gets := fakeS3Object(t, "x/app.clip", data)
	o := S3Storage{Bucket: "bucket", Prefix: "x/app.clip", Endpoint: srv.URL, Region: "us-east-1", AccessKey: "a", SecretKey: "s"}
	r, err := OpenS3Object(context.Background(), o)
	if err != nil {
		t.Fatalf("OpenS3Object() = %v", err)
	}
	if got, want := r.Size(), int64(len(data)); got != want {
		t.Fatalf("Size() = %d, want %d", got, want)
	}
	for _, tc := range []struct {
		off, n int64
	}{
		{0, 10},
		{s3BlockSize - 5, 10}, // across two blocks
		{1, 2*s3BlockSize + 17},
		{int64(len(data)) - 7, 7},
	} {
		got := make([]byte, tc.n)
		n, err := r.ReadAt(got, tc.off)
		if err != nil || int64(n) != tc.n {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v, want %d, nil", tc.n, tc.off, n, err, tc.n)
			continue
		}
		if !bytes.Equal(got, data[tc.off:tc.off+tc.n]) {
			t.Errorf("ReadAt(%d bytes at %d): wrong bytes", tc.n, tc.off)
		}
	}
	// Four blocks in all, each fetched once: the rest came from the cache.
	if got, want := gets.Load(), int64(4); got != want {
		t.Errorf("GET requests = %d, want %d", got, want)
	}
	n, err := r.ReadAt(make([]byte, 10), int64(len(data))-3)
	if n != 3 || err != io.EOF {
		t.Errorf("ReadAt past the end = %d, %v, want 3, io.EOF", n, err)
	}

	o.Prefix = "x/missing.clip"
	if _, err := OpenS3Object(context.Background(), o); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("OpenS3Object(missing) = %v, want a one-line error", err)
	}
}

func TestParseS3Object(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    S3Storage
		wantErr bool
	}{
		{in: "s3://bucket/x/app.clip", want: S3Storage{Bucket: "bucket", Prefix: "x/app.clip"}},
		{in: "s3://bucket", wantErr: true},
		{in: "s3://bucket/", wantErr: true},
		{in: "/tmp/app.clip", wantErr: true},
	} {
		got, err := ParseS3Object(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseS3Object(%q) error = %v, want error %t", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && got != tc.want {
			t.Errorf("ParseS3Object(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
