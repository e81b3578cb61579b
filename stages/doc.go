// Package stages holds one small type per pipeline step: building with
// buildah, reading layers from containers-storage, writing a v1 archive
// straight from layer streams (ArchiveLayout, StoreArchiver), indexing a
// registry image as v2, fetching one into an OCI layout. Unpack, which
// applies a layout onto a rootfs with containers-storage's applier, is no
// step of a run any more: the tests use it as the reference the archives'
// trees are compared with. Each step takes a context
// first and hands the next one a minimal result; the pipeline package
// composes them.
package stages
