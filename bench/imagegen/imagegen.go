// Package imagegen writes the benchmark's build contexts: a Dockerfile and
// the files it copies, generated offline from a fixed seed so every run
// builds the same bytes. Images start FROM scratch with the host's static
// busybox, so no base image is pulled.
package imagegen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// MiB is 2^20 bytes.
const MiB = 1 << 20

// OneFileContent is the 6-byte file ("hello\n") every image has, read by the
// one-file lazy-mount measurement.
const OneFileContent = "hello\n"

// Spec sizes one image. The zero value of every size field leaves that
// part out; small is busybox alone.
type Spec struct {
	Name string
	// Big are the random (incompressible) files of the "big" layer.
	Big []int64
	// TextFiles small text files, about TextMeanBytes each, in the "text"
	// layer, spread over directories of TextPerDir files.
	TextFiles     int
	TextMeanBytes int
	TextPerDir    int
	// Extra are random files of a later layer, and Doomed the size of a
	// file added with them and deleted in the layer after (a whiteout).
	Extra  []int64
	Doomed int64
}

// Specs are the images per BENCH_SCALE.
var Specs = map[string]Spec{
	"small": {Name: "small"},
	"medium": {
		Name:          "medium",
		Big:           repeat(4, 40*MiB),
		TextFiles:     30000,
		TextMeanBytes: 2400,
		TextPerDir:    100,
		Extra:         repeat(2, 16*MiB),
		Doomed:        8 * MiB,
	},
	"large": {
		Name:          "large",
		Big:           repeat(5, 150*MiB),
		TextFiles:     60000,
		TextMeanBytes: 2400,
		TextPerDir:    100,
		Extra:         repeat(2, 32*MiB),
		Doomed:        16 * MiB,
	},
}

func repeat(n int, size int64) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// Context is a written build context.
type Context struct {
	Dir string
	// OneFile is the absolute path, inside the image, of the 6-byte file.
	OneFile string
	// Whiteout is the path deleted by a later layer ("" when none).
	Whiteout string
	// Dockerfile is its text.
	Dockerfile string
}

// Write writes s's context into dir (which must exist and be empty), with
// busybox copied from busyboxPath.
func Write(s Spec, dir, busyboxPath string) (Context, error) {
	c := Context{Dir: dir}
	if err := copyFile(busyboxPath, filepath.Join(dir, "busybox"), 0o755); err != nil {
		return c, fmt.Errorf("copying busybox: %w", err)
	}
	rng := rand.New(rand.NewChaCha8(seed(s.Name)))
	var df strings.Builder
	df.WriteString("FROM scratch\nCOPY busybox /bin/busybox\n")
	if s.TextFiles == 0 {
		// busybox alone; the 6-byte file is written by the same RUN, so the
		// image keeps busybox's two layers.
		c.OneFile = "/etc/hello.txt"
		df.WriteString(`RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && /bin/busybox mkdir -p /etc && /bin/busybox printf 'hello\n' > /etc/hello.txt"]` + "\n")
		c.Dockerfile = df.String()
		return c, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(c.Dockerfile), 0o644)
	}
	df.WriteString(`RUN ["/bin/busybox", "--install", "-s", "/bin"]` + "\n")
	if len(s.Big) > 0 {
		if err := writeRandomFiles(rng, filepath.Join(dir, "big"), "big", s.Big); err != nil {
			return c, err
		}
		df.WriteString("COPY big/ /data/big/\n")
	}
	if err := writeTextTree(rng, filepath.Join(dir, "text"), s); err != nil {
		return c, err
	}
	c.OneFile = "/data/text/hello.txt"
	df.WriteString("COPY text/ /data/text/\n")
	if len(s.Extra) > 0 || s.Doomed > 0 {
		extra := filepath.Join(dir, "extra")
		if err := writeRandomFiles(rng, extra, "extra", s.Extra); err != nil {
			return c, err
		}
		df.WriteString("COPY extra/ /data/extra/\n")
		if s.Doomed > 0 {
			if err := writeRandomFile(rng, filepath.Join(extra, "doomed.bin"), s.Doomed); err != nil {
				return c, err
			}
			c.Whiteout = "/data/extra/doomed.bin"
			df.WriteString(`RUN ["/bin/busybox", "rm", "/data/extra/doomed.bin"]` + "\n")
		}
	}
	c.Dockerfile = df.String()
	return c, os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(c.Dockerfile), 0o644)
}

// RevisionFile is the small file Revise adds to the last layer.
const RevisionFile = "/clipbench-revision.txt"

// Revise rewrites c's Dockerfile so that only its last layer changes: the
// last instruction, a RUN in exec form, also writes RevisionFile holding
// revision n. Every earlier instruction, and so every earlier layer, stays
// the same. Writing c.Dockerfile back restores the original.
func Revise(c Context, n int) (string, error) {
	lines := strings.Split(strings.TrimSuffix(c.Dockerfile, "\n"), "\n")
	last := lines[len(lines)-1]
	rest, ok := strings.CutPrefix(last, "RUN ")
	if !ok {
		return "", fmt.Errorf("the last instruction %q is not a RUN", last)
	}
	var argv []string
	if err := json.Unmarshal([]byte(rest), &argv); err != nil || len(argv) == 0 {
		return "", fmt.Errorf("the last instruction %q is not a RUN in exec form", last)
	}
	script := ""
	if len(argv) == 4 && argv[0] == "/bin/busybox" && argv[1] == "sh" && argv[2] == "-c" {
		script = argv[3]
	} else {
		quoted := make([]string, len(argv))
		for i, a := range argv {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		script = strings.Join(quoted, " ")
	}
	script += fmt.Sprintf(" && /bin/busybox printf 'revision %d\\n' > %s", n, RevisionFile)
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // a Dockerfile reads "&&" and ">" as they are
	if err := enc.Encode([]string{"/bin/busybox", "sh", "-c", script}); err != nil {
		return "", err
	}
	lines[len(lines)-1] = "RUN " + strings.TrimSuffix(b.String(), "\n")
	text := strings.Join(lines, "\n") + "\n"
	return text, os.WriteFile(filepath.Join(c.Dir, "Dockerfile"), []byte(text), 0o644)
}

// seed is a fixed seed per image name.
func seed(name string) [32]byte {
	var s [32]byte
	copy(s[:], "clipbuild-bench/"+name)
	return s
}

func writeRandomFiles(rng *rand.Rand, dir, prefix string, sizes []int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, size := range sizes {
		if err := writeRandomFile(rng, filepath.Join(dir, fmt.Sprintf("%s-%02d.bin", prefix, i)), size); err != nil {
			return err
		}
	}
	return nil
}

// writeRandomFile writes size bytes from rng: data no compressor shrinks.
func writeRandomFile(rng *rand.Rand, path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, MiB)
	for size > 0 {
		n := min(size, int64(len(buf)))
		for i := 0; i < int(n); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < int(n); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		size -= n
	}
	return f.Close()
}

// writeTextTree writes s.TextFiles text files of words from a made-up
// vocabulary (compressible like source or config text), plus hello.txt.
func writeTextTree(rng *rand.Rand, dir string, s Spec) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte(OneFileContent), 0o644); err != nil {
		return err
	}
	words := vocabulary(rng, 4096)
	perDir := max(s.TextPerDir, 1)
	for i := 0; i < s.TextFiles; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%04d", i/perDir))
		if i%perDir == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		// Sizes spread evenly from 1/4 to 7/4 of the mean.
		size := s.TextMeanBytes/4 + rng.IntN(s.TextMeanBytes*3/2+1)
		if err := writeTextFile(rng, filepath.Join(sub, fmt.Sprintf("f%05d.txt", i)), words, size); err != nil {
			return err
		}
	}
	return nil
}

func vocabulary(rng *rand.Rand, n int) []string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	words := make([]string, n)
	for i := range words {
		b := make([]byte, 2+rng.IntN(9))
		for j := range b {
			b[j] = letters[rng.IntN(len(letters))]
		}
		words[i] = string(b)
	}
	return words
}

func writeTextFile(rng *rand.Rand, path string, words []string, size int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	written, line := 0, 0
	for written < size {
		word := words[rng.IntN(len(words))]
		sep := " "
		if line+len(word) > 72 {
			sep, line = "\n", 0
		}
		n, _ := w.WriteString(word + sep)
		written += n
		line += n
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
