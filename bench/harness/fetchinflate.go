package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
)

// cmdFetchInflate is the baseline for reading every file cold: every
// layer blob fetched from the registry once, in one GET each, and
// inflated by `gzip -dc` as it arrives, one blob after another.
const cmdFetchInflate = "$CLIPBENCH fetch-inflate $BLOBURLS"

// FetchInflate GETs each URL in turn and pipes its body through
// `gzip -dc` to /dev/null (a single pass: the download and the inflate
// overlap), and returns the bytes fetched.
func FetchInflate(ctx context.Context, urls []string) (int64, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	var total int64
	for _, u := range urls {
		n, err := fetchInflate(ctx, u, devnull)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func fetchInflate(ctx context.Context, url string, out io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	gz := exec.CommandContext(ctx, "gzip", "-dc")
	gz.Stdout, gz.Stderr = out, os.Stderr
	in, err := gz.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := gz.Start(); err != nil {
		return 0, err
	}
	n, cerr := io.Copy(in, resp.Body)
	in.Close()
	if err := gz.Wait(); err != nil {
		return n, fmt.Errorf("gzip -dc of %s: %w", url, err)
	}
	if cerr != nil {
		return n, fmt.Errorf("reading %s: %w", url, cerr)
	}
	return n, nil
}

// fetchInflateRow measures cmdFetchInflate over layers in reg, as row
// name.
func (s *suite) fetchInflateRow(ctx context.Context, name string, reg *registry, layers []layer) error {
	smp := newSamples(name, display(cmdFetchInflate))
	for i := 0; i < s.o.Runs; i++ {
		reg.Proxy.Reset()
		m, err := s.r.timed(ctx, s.argvLayers(cmdFetchInflate, reg.Proxy.Addr, layers), nil)
		if err != nil {
			return err
		}
		c := reg.Proxy.Reset()
		smp.process(m)
		smp.time(m.Wall)
		smp.fetched = append(smp.fetched, c.Fetched)
		s.logf("   %s %d: %.2fs, %d bytes fetched", name, i+1, m.Wall.Seconds(), c.Fetched)
	}
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}
