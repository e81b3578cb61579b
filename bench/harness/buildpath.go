package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/clipbuild/clipbuild/bench/imagegen"
	"github.com/clipbuild/clipbuild/bench/proxy"
)

// Command templates of the build path (see suite.argv).
const (
	cmdBud = "buildah bud --layers --isolation chroot -t $IMAGE $WORK/context"
	// cmdRebud is cmdBud after imagegen.Revise changed the last layer.
	cmdRebud = "buildah bud --layers --isolation chroot -t $IMAGE $WORK/context"
	cmdV1    = "$CLIPBUILD build --layers --isolation chroot -t $IMAGE --clip-version 1 -o $WORK/v1.clip --json $WORK/context"
	cmdV2    = "$CLIPBUILD build --layers --isolation chroot -t $IMAGE --clip-version 2 --registry $PROXY/bench -o $WORK/v2.clip --json $WORK/context"
	// buildah push with what clipbuild's push uses: an OCI manifest and
	// gzip layers.
	cmdPushRegistry = "buildah push --tls-verify=false --format oci $IMAGE docker://$PROXY/$REPO:latest"
	cmdPushOCI      = "buildah push --format oci $IMAGE oci:$WORK/oci-layout:latest"
)

// bud builds the image once; every later build hits buildah's layer cache.
func (s *suite) bud(ctx context.Context) error {
	s.defer_(func() {
		// The storage is the run's own; removing it (see privateStorage)
		// removes the cached layers too.
		if _, err := s.r.plain(context.Background(), "buildah", "rmi", "-f", s.image); err != nil {
			s.logf("removing %s: %v", s.image, err)
		}
	})
	smp := newSamples("buildah-bud", display(cmdBud))
	m, err := s.r.timed(ctx, s.argv(cmdBud, ""), nil)
	if err != nil {
		return err
	}
	smp.process(m)
	smp.time(m.Wall)
	s.logf("   buildah bud: %.1fs", m.Wall.Seconds())
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}

// buildPath measures `clipbuild build` for v1 and v2 after bud, and
// buildah push to the registry and to an OCI layout.
func (s *suite) buildPath(ctx context.Context) error {
	for _, step := range []func(context.Context) error{s.buildV1, s.buildV2, s.pushRegistry, s.pushOCI} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// buildV1: the time is the archive stage (every stage but the bud).
func (s *suite) buildV1(ctx context.Context) error {
	smp := newSamples("v1-build-after-bud", display(cmdV1))
	for i := 0; i < s.o.Runs; i++ {
		m, err := s.r.timed(ctx, s.argv(cmdV1, ""), nil)
		if err != nil {
			return err
		}
		r, err := parseResult(m.Stdout, 1)
		if err != nil {
			return err
		}
		smp.process(m)
		addStages(smp, r)
		smp.archive = append(smp.archive, r.ArchiveBytes)
		// v1 exports the layers uncompressed: their size is the image's.
		s.im.ImageBytes = r.ImageBytes
		_ = os.Remove(filepath.Join(s.work, "v1.clip"))
		s.logf("   v1 build %d: %.1fs after bud", i+1, smp.seconds[i])
	}
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}

// buildV2: the time is the publish stage (every stage but the bud), into
// a new registry with an empty publish cache each run (a registry that has
// the blobs, or a cache that names them, would skip the work). Each run is
// followed by a rebuild with a new last layer into the same registry, with
// the cache the first build left (see rebuild).
func (s *suite) buildV2(ctx context.Context) error {
	smp := newSamples("v2-build-after-bud", display(cmdV2))
	re := newSamples("v2-rebuild-last-layer", display(cmdRebud)+"; "+display(cmdV2))
	for i := 0; i < s.o.Runs; i++ {
		// The last run's registry and archive stay for the lazy-built rows.
		last := i == s.o.Runs-1
		keepAs := ""
		if last {
			keepAs = filepath.Join(s.work, "built-v2.clip")
		}
		err := s.withRegistry(fmt.Sprintf("registry-v2-%d", i), last, func(reg *registry) error {
			if err := os.RemoveAll(s.publishCache()); err != nil {
				return err
			}
			layers, err := s.measureV2(ctx, reg, smp, keepAs, nil)
			if err != nil {
				return err
			}
			if last {
				s.built = reg
				s.im.BuiltLayers = layers
				for _, l := range layers {
					s.im.BuiltBytes += l.Size
				}
			}
			s.logf("   v2 build %d: %.1fs after bud, %d bytes sent, %d fetched, %d blob bytes", i+1, smp.seconds[i], smp.sent[i], smp.fetched[i], smp.blob[i])
			return s.rebuild(ctx, reg, re, i+1)
		})
		if err != nil {
			return err
		}
	}
	s.im.Rows = append(s.im.Rows, smp.row(), re.row())
	return nil
}

// measureV2 runs one v2 build against reg and records it in smp: stages,
// bytes through the proxy, the archive, and the layer blobs of the
// manifest it pushed (read from the registry directly, not counted), which
// it returns. The archive is removed or, with keepAs, moved there. With
// an S3 gateway's proxy, the build's bytes to and from S3 are recorded too.
func (s *suite) measureV2(ctx context.Context, reg *registry, smp *samples, keepAs string, s3 *proxy.Proxy) ([]layer, error) {
	if s3 != nil {
		s3.Reset()
	}
	m, err := s.r.timed(ctx, s.argv(cmdV2, reg.Proxy.Addr), nil)
	if err != nil {
		return nil, err
	}
	c := reg.Proxy.Reset()
	if s3 != nil {
		c3 := s3.Reset()
		smp.s3Sent = append(smp.s3Sent, c3.Sent)
		smp.s3Fetched = append(smp.s3Fetched, c3.Fetched)
	}
	r, err := parseResult(m.Stdout, 2)
	if err != nil {
		return nil, err
	}
	layers, err := reg.manifest(ctx, s.repo, r.ManifestDigest)
	if err != nil {
		return nil, fmt.Errorf("the manifest clipbuild pushed: %w", err)
	}
	var blobs int64
	for _, l := range layers {
		blobs += l.Size
	}
	smp.process(m)
	addStages(smp, r)
	smp.archive = append(smp.archive, r.ArchiveBytes)
	smp.sent = append(smp.sent, c.Sent)
	smp.fetched = append(smp.fetched, c.Fetched)
	smp.blob = append(smp.blob, blobs)
	if p := layersPushed(m.Log); p != "" {
		smp.pushed = p
	}
	archive := filepath.Join(s.work, "v2.clip")
	if keepAs == "" {
		return layers, os.Remove(archive)
	}
	return layers, os.Rename(archive, keepAs)
}

// pushedLog is clipbuild's summary of a publish.
var pushedLog = regexp.MustCompile(`pushed (\d+) of (\d+) layers to `)

// layersPushed reads "N of M" from a build's log, or "" when it is not
// there.
func layersPushed(log string) string {
	b, err := os.ReadFile(log)
	if err != nil {
		return ""
	}
	if m := pushedLog.FindSubmatch(b); m != nil {
		return fmt.Sprintf("%s of %s", m[1], m[2])
	}
	return ""
}

// rebuild is the rebuild row's run n: the context's last layer changes
// (imagegen.Revise: the last RUN also writes a small file), buildah bud
// --layers builds it (every earlier layer a cache hit), and the v2 build
// runs again into reg with the publish cache the first build left. The
// original Dockerfile is then restored and built again (all cache hits),
// so the image every later row measures is the original.
func (s *suite) rebuild(ctx context.Context, reg *registry, smp *samples, n int) error {
	if _, err := imagegen.Revise(s.gen, n+1); err != nil {
		return err
	}
	restore := func() error {
		if err := os.WriteFile(filepath.Join(s.gen.Dir, "Dockerfile"), []byte(s.gen.Dockerfile), 0o644); err != nil {
			return err
		}
		_, err := s.r.plain(ctx, s.argv(cmdBud, "")...)
		return err
	}
	m, err := s.r.timed(ctx, s.argv(cmdRebud, ""), nil)
	if err != nil {
		_ = restore()
		return err
	}
	budSeconds := m.Wall.Seconds()
	smp.stage("buildah bud (new last layer)", budSeconds)
	if _, err := s.measureV2(ctx, reg, smp, "", nil); err != nil {
		_ = restore()
		return err
	}
	i := len(smp.seconds) - 1
	s.logf("   v2 rebuild %d: bud %.1fs, then %.1fs after bud, %s layers pushed, %d bytes sent, %d fetched", n, budSeconds, smp.seconds[i], smp.pushed, smp.sent[i], smp.fetched[i])
	return restore()
}

// pushRegistry is the baseline for v2's push: the same image to the same
// kind of registry, through the same proxy.
func (s *suite) pushRegistry(ctx context.Context) error {
	smp := newSamples("buildah-push-registry", display(cmdPushRegistry))
	for i := 0; i < s.o.Runs; i++ {
		err := s.withRegistry(fmt.Sprintf("registry-push-%d", i), false, func(reg *registry) error {
			m, err := s.r.timed(ctx, s.argv(cmdPushRegistry, reg.Proxy.Addr), nil)
			if err != nil {
				return err
			}
			c := reg.Proxy.Reset()
			layers, err := reg.manifest(ctx, s.repo, "latest")
			if err != nil {
				return fmt.Errorf("the manifest buildah pushed: %w", err)
			}
			var blobs int64
			for _, l := range layers {
				blobs += l.Size
			}
			smp.process(m)
			smp.time(m.Wall)
			smp.sent = append(smp.sent, c.Sent)
			smp.fetched = append(smp.fetched, c.Fetched)
			smp.blob = append(smp.blob, blobs)
			s.logf("   buildah push (registry) %d: %.1fs, %d bytes sent, %d blob bytes", i+1, m.Wall.Seconds(), c.Sent, blobs)
			return nil
		})
		if err != nil {
			return err
		}
	}
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}

// pushOCI is buildah push to a new OCI layout each run.
func (s *suite) pushOCI(ctx context.Context) error {
	smp := newSamples("buildah-push-oci", display(cmdPushOCI))
	dir := filepath.Join(s.work, "oci-layout")
	for i := 0; i < s.o.Runs; i++ {
		_ = os.RemoveAll(dir)
		m, err := s.r.timed(ctx, s.argv(cmdPushOCI, ""), nil)
		if err != nil {
			return err
		}
		smp.process(m)
		smp.time(m.Wall)
		smp.out = append(smp.out, dirBytes(dir))
		s.logf("   buildah push (oci) %d: %.1fs", i+1, m.Wall.Seconds())
	}
	_ = os.RemoveAll(dir)
	s.im.Rows = append(s.im.Rows, smp.row())
	return nil
}

// withRegistry runs fn against a new registry (and proxy) under the work
// directory, then stops it and removes its storage; with keep, that waits
// for the end of the suite.
func (s *suite) withRegistry(name string, keep bool, fn func(*registry) error) error {
	root := filepath.Join(s.work, name)
	reg, err := startRegistry(s.o.Clipbuild, root)
	if err != nil {
		return err
	}
	done := func() {
		reg.stop()
		_ = os.RemoveAll(root)
	}
	// Requests made while starting are not part of any measurement.
	reg.Proxy.Reset()
	err = fn(reg)
	if keep && err == nil {
		s.defer_(done)
	} else {
		done()
	}
	return err
}
