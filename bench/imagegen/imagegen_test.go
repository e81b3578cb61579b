package imagegen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fakeBusybox(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(p, []byte("#!busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSmall(t *testing.T) {
	dir := t.TempDir()
	c, err := Write(Specs["small"], dir, fakeBusybox(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.OneFile != "/etc/hello.txt" || c.Whiteout != "" {
		t.Fatalf("unexpected context %+v", c)
	}
	if _, err := os.Stat(filepath.Join(dir, "busybox")); err != nil {
		t.Fatal(err)
	}
}

func TestReproducibleMix(t *testing.T) {
	s := Spec{Name: "t", Big: []int64{3000}, TextFiles: 25, TextMeanBytes: 400, TextPerDir: 10, Extra: []int64{100}, Doomed: 50}
	a, b := t.TempDir(), t.TempDir()
	ca, err := Write(s, a, fakeBusybox(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(s, b, fakeBusybox(t)); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"big/big-00.bin", "text/d0002/f00024.txt", "extra/doomed.bin"} {
		x, err := os.ReadFile(filepath.Join(a, rel))
		if err != nil {
			t.Fatal(err)
		}
		y, _ := os.ReadFile(filepath.Join(b, rel))
		if string(x) != string(y) {
			t.Fatalf("%s differs between two runs", rel)
		}
	}
	hello, _ := os.ReadFile(filepath.Join(a, "text", "hello.txt"))
	if string(hello) != OneFileContent || len(hello) != 6 {
		t.Fatalf("hello.txt = %q", hello)
	}
	if !strings.Contains(ca.Dockerfile, `RUN ["/bin/busybox", "rm", "/data/extra/doomed.bin"]`) || ca.Whiteout == "" {
		t.Fatalf("no whiteout layer:\n%s", ca.Dockerfile)
	}
	if n := strings.Count(ca.Dockerfile, "\nCOPY ") + strings.Count(ca.Dockerfile, "\nRUN "); n != 6 {
		t.Fatalf("%d layers, want 6:\n%s", n, ca.Dockerfile)
	}
}

func TestReviseChangesOnlyTheLastInstruction(t *testing.T) {
	for _, s := range []Spec{
		Specs["small"],
		{Name: "t", Big: []int64{300}, TextFiles: 5, TextMeanBytes: 40, TextPerDir: 10, Extra: []int64{10}, Doomed: 5},
	} {
		t.Run(s.Name, func(t *testing.T) {
			dir := t.TempDir()
			c, err := Write(s, dir, fakeBusybox(t))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Revise(c, 2)
			if err != nil {
				t.Fatal(err)
			}
			onDisk, _ := os.ReadFile(filepath.Join(dir, "Dockerfile"))
			if string(onDisk) != got {
				t.Fatalf("Dockerfile on disk:\n%s\nwant:\n%s", onDisk, got)
			}
			was, now := strings.Split(c.Dockerfile, "\n"), strings.Split(got, "\n")
			if len(now) != len(was) {
				t.Fatalf("%d lines, want %d:\n%s", len(now), len(was), got)
			}
			last := len(was) - 2 // the text ends with a newline
			for i := range was {
				if (was[i] == now[i]) != (i != last) {
					t.Errorf("line %d: got %q, was %q", i+1, now[i], was[i])
				}
			}
			// JSON doubles the backslash of printf's \n.
			want := `/bin/busybox printf 'revision 2\\n' > ` + RevisionFile + `"]`
			if !strings.HasPrefix(now[last], `RUN ["/bin/busybox","sh","-c",`) || !strings.HasSuffix(now[last], want) {
				t.Fatalf("last instruction %q, want a busybox sh -c ending in %q", now[last], want)
			}
		})
	}
}
