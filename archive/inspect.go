package archive

import (
	"syscall"

	"github.com/beam-cloud/clip/pkg/common"
)

// Summary is what `clipbuild inspect` shows of an archive.
type Summary struct {
	Path           string `json:"path"`
	Version        int    `json:"clipVersion"`
	ArchiveBytes   int64  `json:"archiveBytes"`
	Image          string `json:"image,omitempty"`
	ImageRef       string `json:"imageRef,omitempty"`
	ManifestDigest string `json:"manifestDigest,omitempty"`
	// Registry, Repository and Reference are where clip's own runtime would
	// look for a v2 archive's layers (Reference is an immutable tag).
	Registry   string            `json:"registry,omitempty"`
	Repository string            `json:"repository,omitempty"`
	Reference  string            `json:"reference,omitempty"`
	Layers     []LayerSummary    `json:"layers"`
	Config     *ImageConfig      `json:"config,omitempty"`
	Counts     Stats             `json:"counts"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// LayerSummary is one layer of the image.
type LayerSummary struct {
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType,omitempty"`
	Size      int64  `json:"size"`
}

// ImageConfig is the runtime part of the image config.
type ImageConfig struct {
	Env          []string `json:"env,omitempty"`
	Cmd          []string `json:"cmd,omitempty"`
	Entrypoint   []string `json:"entrypoint,omitempty"`
	WorkingDir   string   `json:"workingDir,omitempty"`
	User         string   `json:"user,omitempty"`
	Architecture string   `json:"architecture,omitempty"`
	OS           string   `json:"os,omitempty"`
}

// Summarize describes a without reading any file contents.
func Summarize(a *Archive) Summary {
	s := Summary{Path: a.Path, Version: a.Version(), ArchiveBytes: a.Size, Layers: []LayerSummary{},
		ImageRef: a.Trailer.ImageRef, ManifestDigest: a.Trailer.ManifestDigest}
	if a.OCI != nil {
		s.Registry, s.Repository, s.Reference = a.OCI.RegistryURL, a.OCI.Repository, a.OCI.Reference
	}
	if img := a.Image(); img != nil {
		s.Image = img.Name
		if s.ManifestDigest == "" {
			s.ManifestDigest = img.Digest
		}
		for _, l := range img.LayersData {
			s.Layers = append(s.Layers, LayerSummary{Digest: l.Digest, MediaType: l.MIMEType, Size: l.Size})
		}
		s.Labels = img.Labels
		s.Config = &ImageConfig{Env: img.Env, Cmd: img.Cmd, Entrypoint: img.Entrypoint, WorkingDir: img.WorkingDir,
			User: img.User, Architecture: img.Architecture, OS: img.Os}
	}
	s.Counts.XattrInodes = len(a.Trailer.Xattrs)
	seen := map[uint64]bool{}
	for _, n := range a.Nodes() {
		first := !seen[n.Attr.Ino]
		if n.NodeType == common.FileNode && n.Attr.Mode&syscall.S_IFMT == syscall.S_IFREG {
			seen[n.Attr.Ino] = true
			if first {
				s.Counts.DataBytes += int64(n.Attr.Size)
			}
		}
		s.Counts.add(n, first)
	}
	return s
}
