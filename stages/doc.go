// Package stages holds one small type per pipeline step: building with
// buildah, exporting from containers-storage to an OCI layout, unpacking a
// layout into a rootfs, and writing the archive. Each step takes a context
// first and hands the next one a minimal result; the pipeline package
// composes them.
package stages
