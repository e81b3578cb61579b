package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCounts(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "1000")
			return
		}
		w.Write(bytes.Repeat([]byte("x"), 1000+len(body)))
	}))
	defer backend.Close()
	p, err := Start(backend.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	resp, err := http.Post("http://"+p.Addr+"/v2/x/blobs/uploads/", "application/octet-stream", strings.NewReader(strings.Repeat("y", 300)))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != 1300 {
		t.Fatalf("read %d bytes, want 1300", n)
	}
	resp, err = http.Head("http://" + p.Addr + "/v2/x/blobs/sha256:00")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := p.Reset()
	if got.Sent != 300 || got.Fetched != 1300 || got.Requests != 2 {
		t.Fatalf("counts %+v, want sent 300, fetched 1300, 2 requests", got)
	}
	if c := p.Counts(); c != (Counts{}) {
		t.Fatalf("counts after reset %+v", c)
	}
}

func TestRejectsNonLoopback(t *testing.T) {
	if _, err := Start("http://192.0.2.1:5000"); err == nil {
		t.Fatal("a non-loopback target was accepted")
	}
}
