package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/clipbuild/clipbuild/bench/peers"
)

// Command templates of the pull path (see suite.argv).
const (
	cmdPopulate = "buildah push --tls-verify=false --format oci $IMAGE docker://$PROXY/$REPO:latest"
	cmdPullV2   = "$CLIPBUILD pull $PROXY/$REPO:latest --clip-version 2 -o $WORK/pull-v2.clip --json"
	cmdPullV1   = "$CLIPBUILD pull $PROXY/$REPO:latest --clip-version 1 -o $WORK/pull-v1.clip --json"
	cmdGunzip   = "gzip -dc $BLOBS"
	cmdZtoc     = "$CLIPBENCH ztoc $BLOBS"
	cmdEstargz  = "$CLIPBENCH estargz $BLOBS"
)

// pullPath pushes the image once to a registry that stays up for the pull
// and lazy-mount measurements, then measures v2 and v1 pulls from it and,
// over its layer blobs on disk, gzip -dc, SOCI and eStargz.
func (s *suite) pullPath(ctx context.Context) error {
	reg, err := startRegistry(s.o.Clipbuild, filepath.Join(s.work, "registry-pull"))
	if err != nil {
		return err
	}
	s.defer_(reg.stop)
	s.pull = reg
	if _, err := s.r.plain(ctx, s.argv(cmdPopulate, reg.Proxy.Addr)...); err != nil {
		return err
	}
	layers, err := reg.manifest(ctx, s.repo, "latest")
	if err != nil {
		return err
	}
	s.im.Layers = layers
	s.blobs = nil
	for _, l := range layers {
		s.im.CompressedBytes += l.Size
		s.blobs = append(s.blobs, reg.blobPath(l.Digest))
	}
	reg.Proxy.Reset()
	for _, step := range []func(context.Context) error{s.pullV2, s.pullV1, s.gunzip, s.ztoc, s.estargz, s.fetchInflate} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// pullV2: the time is the index stage. The last archive is kept for the
// lazy mounts.
func (s *suite) pullV2(ctx context.Context) error {
	smp := newSamples("v2-pull-index", display(cmdPullV2))
	for i := 0; i < s.o.Runs; i++ {
		m, err := s.r.timed(ctx, s.argv(cmdPullV2, s.pull.Proxy.Addr), nil)
		if err != nil {
			return err
		}
		c := s.pull.Proxy.Reset()
		r, err := parseResult(m.Stdout, 2)
		if err != nil {
			return err
		}
		smp.process(m)
		addStages(smp, r)
		smp.archive = append(smp.archive, r.ArchiveBytes)
		smp.fetched = append(smp.fetched, c.Fetched)
		s.logf("   v2 pull %d: %.2fs, %d bytes fetched", i+1, smp.seconds[i], c.Fetched)
	}
	s.lazyArchive = filepath.Join(s.work, "pull-v2.clip")
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}

// pullV1: the time is fetch + unpack + archive.
func (s *suite) pullV1(ctx context.Context) error {
	smp := newSamples("v1-pull", display(cmdPullV1))
	for i := 0; i < s.o.Runs; i++ {
		m, err := s.r.timed(ctx, s.argv(cmdPullV1, s.pull.Proxy.Addr), nil)
		if err != nil {
			return err
		}
		c := s.pull.Proxy.Reset()
		r, err := parseResult(m.Stdout, 1)
		if err != nil {
			return err
		}
		smp.process(m)
		addStages(smp, r)
		smp.archive = append(smp.archive, r.ArchiveBytes)
		smp.fetched = append(smp.fetched, c.Fetched)
		_ = os.Remove(filepath.Join(s.work, "pull-v1.clip"))
		s.logf("   v1 pull %d: %.2fs, %d bytes fetched", i+1, smp.seconds[i], c.Fetched)
	}
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}

// gunzip is the floor for any gzip indexer: inflating the same blobs from
// local disk to /dev/null.
func (s *suite) gunzip(ctx context.Context) error {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	smp := newSamples("gzip-dc", display(cmdGunzip))
	for i := 0; i < s.o.Runs; i++ {
		m, err := s.r.timed(ctx, s.argv(cmdGunzip, ""), devnull)
		if err != nil {
			return err
		}
		smp.process(m)
		smp.time(m.Wall)
		s.logf("   gzip -dc %d: %.2fs", i+1, m.Wall.Seconds())
	}
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}

// fetchInflate is the floor for reading every file of a cold mount: each
// image's blobs downloaded and inflated once, those buildah pushed (which
// the pulled archive reads) and those of the v2 build (the built archive).
func (s *suite) fetchInflate(ctx context.Context) error {
	if err := s.fetchInflateRow(ctx, "fetch-inflate", s.pull, s.im.Layers); err != nil {
		return err
	}
	return s.fetchInflateRow(ctx, "fetch-inflate-built", s.built, s.im.BuiltLayers)
}

func (s *suite) ztoc(ctx context.Context) error {
	return s.peer(ctx, "soci-ztoc", cmdZtoc)
}

func (s *suite) estargz(ctx context.Context) error {
	return s.peer(ctx, "estargz-convert", cmdEstargz)
}

// peer runs a clipbench helper over the blobs; it prints a peers.Output.
func (s *suite) peer(ctx context.Context, name, tmpl string) error {
	smp := newSamples(name, display(tmpl))
	for i := 0; i < s.o.Runs; i++ {
		m, err := s.r.timed(ctx, s.argv(tmpl, ""), nil)
		if err != nil {
			return err
		}
		var out peers.Output
		if err := json.Unmarshal(m.Stdout, &out); err != nil {
			return fmt.Errorf("%s output: %w: %q", name, err, m.Stdout)
		}
		smp.process(m)
		smp.time(m.Wall)
		smp.out = append(smp.out, out.OutBytes)
		s.logf("   %s %d: %.2fs, %d bytes out", name, i+1, m.Wall.Seconds(), out.OutBytes)
	}
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}
