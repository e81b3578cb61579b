package stages

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/registry"
)

// layerCache remembers, per (repository, diff ID, compression settings),
// what a layer's pass made, so that a rebuild does not compress, upload or
// index an unchanged layer again. An entry is one file, written to a
// temporary name and renamed into place, so concurrent builds on one host
// see either a whole entry or none (two may compute the same layer; the
// last rename wins, with the same content). An entry that does not read
// back whole is ignored, and an entry is trusted only once the registry
// says it has the blob.
//
// Layout: DIR/SETTINGS/ALG-DIFFID/REPOHASH, REPOHASH naming the repository,
// so that one directory lists every repository a layer went to.
type layerCache struct {
	dir      string
	settings string
	host     string // the registry, host[:port]
	repo     string // host[:port]/path, as Pusher.Repository names it
	log      *logrus.Entry
}

// cacheEntry is one cached layer.
type cacheEntry struct {
	Settings         string
	Repository       string
	DiffID           digest.Digest
	BlobDigest       digest.Digest
	BlobSize         int64
	UncompressedSize int64
	Members          []archive.Member
	Scan             *archive.LayerScan
}

// cacheMagic starts every entry file: [magic][gob entry][sha256 of the gob].
// Version 2 entries carry the files' content hashes; version 1 ones are
// misses.
var cacheMagic = []byte("CBPUBC2\n")

// maxMountSources bounds how many other repositories a lookup tries to
// mount a layer from.
const maxMountSources = 4

func (c *layerCache) layerDir(diffID digest.Digest) string {
	return filepath.Join(c.dir, c.settings, diffID.Algorithm().String()+"-"+diffID.Encoded())
}

func (c *layerCache) entryPath(diffID digest.Digest, repo string) string {
	sum := sha256.Sum256([]byte(repo))
	return filepath.Join(c.layerDir(diffID), hex.EncodeToString(sum[:16]))
}

// lookup returns the cached layer if the registry has its blob in c.repo
// with the cached size, or mounts it there from another repository of the
// same registry that the cache names. It returns nil when the layer must be
// published again.
func (c *layerCache) lookup(ctx context.Context, pusher *registry.Pusher, diffID digest.Digest) *publishedLayer {
	if diffID.Validate() != nil {
		return nil
	}
	own := c.entryPath(diffID, c.repo)
	e, err := c.read(own, diffID)
	switch {
	case err == nil:
		size, ok, err := pusher.BlobExists(ctx, e.BlobDigest)
		if err == nil && ok && size == e.BlobSize {
			return e.layer()
		}
		c.log.Debugf("cached layer %s: %s has no blob %s of %d bytes (got %v, %d bytes, %v); publishing it again", diffID, c.repo, e.BlobDigest, e.BlobSize, ok, size, err)
	case !errors.Is(err, os.ErrNotExist):
		c.log.Warnf("ignoring cache entry %s: %v", own, err)
	}
	return c.mount(ctx, pusher, diffID, own)
}

// mount looks for the layer in the other repositories the cache has it
// for, on the same registry, and mounts the blob from the first that has
// it.
func (c *layerCache) mount(ctx context.Context, pusher *registry.Pusher, diffID digest.Digest, own string) *publishedLayer {
	names, err := os.ReadDir(c.layerDir(diffID))
	if err != nil {
		return nil
	}
	tried := 0
	for _, n := range names {
		p := filepath.Join(c.layerDir(diffID), n.Name())
		if p == own || strings.HasPrefix(n.Name(), ".") || tried >= maxMountSources {
			continue
		}
		e, err := c.read(p, diffID)
		if err != nil {
			c.log.Debugf("ignoring cache entry %s: %v", p, err)
			continue
		}
		if host, _, _ := strings.Cut(e.Repository, "/"); host != c.host || e.Repository == c.repo {
			continue
		}
		tried++
		ok, err := pusher.MountBlob(ctx, e.BlobDigest, e.Repository)
		if err != nil || !ok {
			c.log.Debugf("cached layer %s: mounting %s from %s: %v, %v", diffID, e.BlobDigest, e.Repository, ok, err)
			continue
		}
		c.log.Debugf("cached layer %s: mounted %s from %s", diffID, e.BlobDigest, e.Repository)
		pl := e.layer()
		if err := c.store(diffID, pl); err != nil {
			c.log.Warnf("caching layer %s: %v", diffID, err)
		}
		return pl
	}
	return nil
}

func (e *cacheEntry) layer() *publishedLayer {
	return &publishedLayer{BlobDigest: e.BlobDigest, BlobSize: e.BlobSize, UncompressedSize: e.UncompressedSize, Members: e.Members, Scan: e.Scan}
}

// store writes the entry for diffID in c.repo atomically.
func (c *layerCache) store(diffID digest.Digest, pl *publishedLayer) error {
	e := cacheEntry{Settings: c.settings, Repository: c.repo, DiffID: diffID, BlobDigest: pl.BlobDigest,
		BlobSize: pl.BlobSize, UncompressedSize: pl.UncompressedSize, Members: pl.Members, Scan: pl.Scan}
	if err := e.check(c.settings, diffID); err != nil {
		return err
	}
	dst := c.entryPath(diffID, c.repo)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("creating cache directory: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".entry-*")
	if err != nil {
		return fmt.Errorf("creating cache entry: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	h := sha256.New()
	bw := bufio.NewWriter(f)
	_, _ = bw.Write(cacheMagic)
	if err := gob.NewEncoder(io.MultiWriter(bw, h)).Encode(&e); err != nil {
		f.Close()
		return fmt.Errorf("encoding cache entry: %w", err)
	}
	_, _ = bw.Write(h.Sum(nil))
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing cache entry: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing cache entry: %w", err)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("writing cache entry: %w", err)
	}
	return nil
}

// read reads and checks the entry at p: its checksum first, then its
// content against the key it is filed under. Nothing of a damaged file is
// decoded.
func (c *layerCache) read(p string, diffID digest.Digest) (*cacheEntry, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	payload := fi.Size() - int64(len(cacheMagic)) - sha256.Size
	if payload <= 0 {
		return nil, fmt.Errorf("truncated (%d bytes)", fi.Size())
	}
	magic := make([]byte, len(cacheMagic))
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, cacheMagic) {
		return nil, errors.New("not a cache entry")
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, payload)); err != nil {
		return nil, err
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, sum); err != nil {
		return nil, err
	}
	if !bytes.Equal(sum, h.Sum(nil)) {
		return nil, errors.New("checksum mismatch")
	}
	if _, err := f.Seek(int64(len(cacheMagic)), io.SeekStart); err != nil {
		return nil, err
	}
	var e cacheEntry
	if err := gob.NewDecoder(bufio.NewReader(io.LimitReader(f, payload))).Decode(&e); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if err := e.check(c.settings, diffID); err != nil {
		return nil, err
	}
	return &e, nil
}

// check reports whether e describes a whole blob of the layer diffID made
// with settings: members that tile both the blob and the layer, and a scan
// of the layer's length.
func (e *cacheEntry) check(settings string, diffID digest.Digest) error {
	switch {
	case e.Settings != settings:
		return fmt.Errorf("settings %q, want %q", e.Settings, settings)
	case e.DiffID != diffID:
		return fmt.Errorf("diff ID %s, want %s", e.DiffID, diffID)
	case e.BlobDigest.Validate() != nil:
		return fmt.Errorf("blob digest %q is not valid", e.BlobDigest)
	case e.Scan == nil || e.Scan.Size != e.UncompressedSize:
		return errors.New("no scan of the layer's length")
	case len(e.Members) == 0:
		return errors.New("no gzip members")
	case e.Repository == "":
		return errors.New("no repository")
	}
	var c, u int64
	for i, m := range e.Members {
		if m.COff != c || m.UOff != u || m.CLen <= 0 || m.ULen < 0 || len(m.SHA256) != 2*sha256.Size {
			return fmt.Errorf("member %d does not follow member %d", i, i-1)
		}
		c, u = c+m.CLen, u+m.ULen
	}
	if c != e.BlobSize || u != e.UncompressedSize {
		return fmt.Errorf("members cover %d/%d bytes, want %d/%d", c, u, e.BlobSize, e.UncompressedSize)
	}
	return nil
}
