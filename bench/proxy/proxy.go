// Package proxy is a byte-counting reverse proxy for a registry on the
// loopback interface. Clients talk to the proxy; it forwards every request
// to the registry and counts the request bodies it forwards (bytes sent to
// the registry: uploads) and the response bodies it relays (bytes fetched
// from the registry: manifests and blobs). Headers are not counted.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"
)

// Counts are body bytes through the proxy since its last Reset.
type Counts struct {
	Sent     int64 // request bodies, client → registry
	Fetched  int64 // response bodies, registry → client
	Requests int64
}

// Proxy forwards to one registry and counts bytes.
type Proxy struct {
	// Addr is HOST:PORT the proxy listens on (always 127.0.0.1).
	Addr string

	sent, fetched, requests atomic.Int64
	server                  *http.Server
	done                    chan error
}

// Start listens on 127.0.0.1 (an ephemeral port) and forwards to target,
// an http://HOST:PORT URL that must be on the loopback interface.
func Start(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("proxy target: %w", err)
	}
	if !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("proxy target %s is not a loopback address", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), done: make(chan error, 1)}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &countingTransport{next: http.DefaultTransport, p: p}
	rp.FlushInterval = -1 // relay bytes as they come, as a client sees them
	p.server = &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}
	go func() { p.done <- p.server.Serve(ln) }()
	return p, nil
}

// Reset zeroes the counters and returns what they held.
func (p *Proxy) Reset() Counts {
	return Counts{Sent: p.sent.Swap(0), Fetched: p.fetched.Swap(0), Requests: p.requests.Swap(0)}
}

// Counts returns the counters without resetting them.
func (p *Proxy) Counts() Counts {
	return Counts{Sent: p.sent.Load(), Fetched: p.fetched.Load(), Requests: p.requests.Load()}
}

// Close stops the proxy.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.server.Shutdown(ctx)
	if serr := <-p.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// countingTransport counts the bodies of the requests it sends and of the
// responses it returns, as they are read.
type countingTransport struct {
	next http.RoundTripper
	p    *Proxy
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.p.requests.Add(1)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, n: &t.p.sent}
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.Body != nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &t.p.fetched}
	}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}
