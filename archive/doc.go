// Package archive is the clip archive format as clipbuild uses it: writing
// self-contained (v1) archives with exact modes, special files and hard links,
// reading and validating any archive, inspecting it, comparing it with a
// rootfs, and mounting it read-only through FUSE.
//
// The on-disk layout is clip's (github.com/beam-cloud/clip): a 54-byte header,
// data blocks, a gob-encoded index of common.ClipNode, and optional storage
// info. clipbuild appends a small JSON trailer with the image metadata, which
// clip's own reader ignores, so archives stay readable by clip.
package archive
