package registry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"go.podman.io/image/v5/docker"
)

// IsTransient reports whether err is worth retrying: the registry could not
// be reached, dropped the connection, or answered with a server error or
// "too many requests". Authentication failures, missing images and bad
// content are not.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var status docker.UnexpectedHTTPStatusError
	if errors.As(err, &status) {
		return retryableStatus(status.StatusCode)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return retryableStatus(terr.StatusCode)
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500
}

// Backoff is a bounded retry schedule: Attempts tries in all, waiting
// Initial, then twice that, and so on, between them.
type Backoff struct {
	Attempts int
	Initial  time.Duration
}

// DefaultBackoff tries three times over about 1.5 seconds of waiting.
var DefaultBackoff = Backoff{Attempts: 3, Initial: 500 * time.Millisecond}

// Retry runs fn until it succeeds, fails with an error that is not
// transient, or the attempts run out. Each retry is reported to logf.
func Retry(ctx context.Context, b Backoff, logf func(format string, args ...any), what string, fn func() error) error {
	wait := b.Initial
	var err error
	for attempt := 1; ; attempt++ {
		if err = fn(); err == nil || !IsTransient(err) || attempt >= b.Attempts {
			return err
		}
		logf("%s: attempt %d of %d failed, retrying in %v: %v", what, attempt, b.Attempts, wait, err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}
