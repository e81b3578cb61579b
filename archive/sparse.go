package archive

import (
	"archive/tar"
	"errors"
	"strings"
)

// ErrSparse is the indexer's refusal of a sparse file: a v2 node's data is
// one run of bytes in its layer, and a sparse file's is not (its holes are
// not stored, and in PAX format 1.0 its map sits before its data). A v1
// archive holds such a file exactly.
var ErrSparse = errors.New("sparse file: a v2 archive cannot serve it, as its data is not one run of bytes in the layer")

// IsSparse reports whether hdr, as archive/tar read it, is a GNU sparse file:
// type 'S' (the old GNU format) or any GNU.sparse.* PAX record (GNU's PAX
// formats 0.0, 0.1 and 1.0, and any later one). archive/tar expands the
// formats it knows as it reads them (holes read as zeros, hdr.Size is the
// real size), keeping the type flag ('S', or '0' for PAX) and, for PAX, the
// GNU.sparse.* records.
func IsSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
