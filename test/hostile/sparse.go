package hostile

import (
	"embed"
	"strings"
)

// The sparse layers, made by GNU tar with testdata/mksparse.sh: Go's
// archive/tar reads sparse files but cannot write them.
//
//go:embed testdata/sparse-*.tar
var sparseLayers embed.FS

// SparseFormats names GNU tar's sparse encodings, one layer each.
var SparseFormats = []string{"gnu", "pax-0.0", "pax-0.1", "pax-1.0"}

// SparseLayer returns the uncompressed layer holding SparseFiles("/sparse")
// in the given encoding (one of SparseFormats), or for "mixed" the layer
// holding SparseFiles("/mixed/gnu") in GNU format and then
// SparseFiles("/mixed/pax") in PAX format 1.0.
func SparseLayer(format string) ([]byte, error) {
	return sparseLayers.ReadFile("testdata/sparse-" + format + ".tar")
}

// SparseFiles are the regular files of a sparse layer in directory dir, by
// path, with their bytes as mksparse.sh wrote them: holes at the start, in
// the middle, at the end, a file that is all hole, and a plain file after
// them. The layers also hold dir and its parents (0755); every entry is
// owned by 0:0, files are 0644.
func SparseFiles(dir string) map[string][]byte {
	at := func(size int, parts ...any) []byte {
		b := make([]byte, size)
		for i := 0; i < len(parts); i += 3 {
			off, word, n := parts[i].(int), parts[i+1].(string), parts[i+2].(int)
			copy(b[off:], strings.Repeat(word+"\n", n/len(word)+1)[:n]) // as `yes word | head -c n`
		}
		return b
	}
	return map[string][]byte{
		dir + "/hole-start":  at(262144, 200000, "hole-start", 1000),
		dir + "/hole-middle": at(153000, 0, "hole-middle-a", 3000, 150000, "hole-middle-b", 3000),
		dir + "/hole-end":    at(262144, 0, "hole-end", 3000),
		dir + "/all-hole":    at(100000),
		dir + "/after":       []byte("a regular file after the sparse ones\n"),
	}
}
