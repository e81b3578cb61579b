// Package hostile generates malicious OCI image layouts (escaping paths,
// symlink and hard-link tricks, whiteouts through symlinks, device nodes,
// type changes, duplicate entries, damaged streams, very deep paths) and,
// in its tests, checks that both archive paths handle each one safely:
//
//   - v1: stages.ArchiveLayout of the layout's blobs, nothing unpacked;
//   - v2: stages.Indexer.Index of the same image pushed to the embedded
//     registry.
//
// Each must either produce the correct tree or fail with a clear error, and
// nothing may ever be created but the archive. Where both succeed,
// their trees must be equal.
//
// Run `go test ./test/hostile/ -args -results RESULTS.txt` to rewrite
// RESULTS.txt with the outcome of every case.
package hostile
