// Package peers runs other lazy-loading formats' indexers over the same gzip
// layer blobs that clipbuild's v2 indexer reads, so their costs can be set
// side by side: a SOCI zTOC build and an eStargz conversion. It exists for
// the benchmark only and is never linked into clipbuild.
package peers

import (
	"fmt"
	"io"
	"os"

	"github.com/awslabs/soci-snapshotter/ztoc"
	"github.com/containerd/stargz-snapshotter/estargz"
)

// SOCISpanSize is soci-snapshotter's default span size (4 MiB): one zlib
// checkpoint per span of compressed data.
const SOCISpanSize = 4 << 20

// Output is what a peer made of a set of layers.
type Output struct {
	Layers   int   `json:"layers"`
	InBytes  int64 `json:"inBytes"`  // compressed bytes read
	OutBytes int64 `json:"outBytes"` // serialized zTOCs, or eStargz blobs
}

// Ztoc builds and serializes a SOCI zTOC for each gzip blob, as `soci
// create` does per layer (here for every layer, whatever its size; soci's
// own default skips layers under 10 MiB).
func Ztoc(blobs []string) (Output, error) {
	b := ztoc.NewBuilder("clipbuild-bench")
	var out Output
	for _, p := range blobs {
		in, err := fileSize(p)
		if err != nil {
			return out, err
		}
		z, err := b.BuildZtoc(p, SOCISpanSize)
		if err != nil {
			return out, fmt.Errorf("ztoc of %s: %w", p, err)
		}
		_, desc, err := ztoc.Marshal(z)
		if err != nil {
			return out, fmt.Errorf("serializing ztoc of %s: %w", p, err)
		}
		out.Layers++
		out.InBytes += in
		out.OutBytes += desc.Size
	}
	return out, nil
}

// Estargz converts each gzip blob to an eStargz blob with the library's
// defaults (gzip level 9, 4 MiB chunks, GOMAXPROCS workers) and reads the
// result to the end; the blob is counted, not kept.
func Estargz(blobs []string) (Output, error) {
	var out Output
	for _, p := range blobs {
		n, written, err := estargzOne(p)
		if err != nil {
			return out, err
		}
		out.Layers++
		out.InBytes += n
		out.OutBytes += written
	}
	return out, nil
}

func estargzOne(p string) (in, written int64, err error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return 0, 0, fmt.Errorf("estargz of %s: %w", p, err)
	}
	written, err = io.Copy(io.Discard, blob)
	if cerr := blob.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, fmt.Errorf("estargz of %s: %w", p, err)
	}
	return st.Size(), written, nil
}

func fileSize(p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
