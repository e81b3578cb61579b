package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"

	"github.com/clipbuild/clipbuild/stages"
)

// TestExitCode: usage errors exit 2, a child's status passes through, and
// anything else is 1, however the error is wrapped.
func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"plain", errors.New("pushing: connection refused"), 1},
		{"usage", usagef("--isolation: bad"), 2},
		{"wrapped usage", fmt.Errorf("build: %w", usageError{errors.New("x")}), 2},
		{"buildah status", &stages.ExitError{Cmd: "buildah bud", Code: 7}, 7},
		{"wrapped buildah status", fmt.Errorf("building: %w", &stages.ExitError{Cmd: "buildah bud", Code: 125}), 125},
		{"status 0 is still a failure", &stages.ExitError{Cmd: "buildah bud", Code: 0}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// TestUsageErrors: each command line that cannot run is a usage error
// (exit 2), found before any work; failures of the work are not.
func TestUsageErrors(t *testing.T) {
	ctxDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CLIP_VERSION", "")
	tests := []struct {
		name  string
		args  []string
		usage bool
	}{
		{"unknown flag", []string{"build", "--bogus", ctxDir}, true},
		{"unknown flag, default command", []string{"--bogus", ctxDir}, true},
		{"extra argument", []string{"build", ctxDir, ctxDir}, true},
		{"missing argument", []string{"inspect"}, true},
		{"bad --clip-version", []string{"build", "--clip-version", "9", ctxDir}, true},
		{"bad pull --clip-version", []string{"pull", "--clip-version", "9", "127.0.0.1:5000/x:y"}, true},
		{"bad --tls-verify", []string{"build", "--tls-verify=maybe", ctxDir}, true},
		{"bad --log-level", []string{"--log-level", "loud", "inspect", "x.clip"}, true},
		{"bad --log-format", []string{"--log-format", "xml", "inspect", "x.clip"}, true},
		{"bad --isolation", []string{"build", "--isolation", "vm", ctxDir}, true},
		{"--build-context without value", []string{"build", "--build-context", "name", ctxDir}, true},
		{"--label without key", []string{"build", "--label", "=v", ctxDir}, true},
		{"--annotation without key", []string{"build", "--annotation", "=v", ctxDir}, true},
		{"--ssh without id", []string{"build", "--ssh", "=/sock", ctxDir}, true},
		{"verify with neither source", []string{"verify", "x.clip"}, true},
		{"bad pull reference", []string{"pull", "UPPER/Case::x"}, true},
		// Not usage errors: the command line is fine, the work fails.
		{"missing Dockerfile", []string{"build", "-f", filepath.Join(ctxDir, "nope"), ctxDir}, false},
		{"buildah missing", []string{"build", "--clip-version", "1", "-o", filepath.Join(t.TempDir(), "x.clip"), ctxDir}, false},
		{"corrupt archive", []string{"inspect", filepath.Join(ctxDir, "Dockerfile")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := execute(t, tt.args...)
			if err == nil {
				t.Fatalf("clipbuild %q succeeded, want an error", tt.args)
			}
			want := 1
			if tt.usage {
				want = 2
			}
			if got := exitCode(err); got != want {
				t.Errorf("clipbuild %q: exit %d (%v), want %d", tt.args, got, err, want)
			}
		})
	}
}

// TestBuildFlagsReachBuildah: the build inputs are build flags in
// buildah's spellings, repeatable where buildah's are.
func TestBuildFlagsReachBuildah(t *testing.T) {
	cmd := NewBuildCmd(&globalOptions{})
	for flag, typ := range map[string]string{"label": "stringArray", "annotation": "stringArray",
		"build-context": "stringArray", "ssh": "stringArray", "secret": "stringArray", "iidfile": "string"} {
		f := cmd.Flags().Lookup(flag)
		if f == nil {
			t.Errorf("build has no --%s flag", flag)
			continue
		}
		if f.Value.Type() != typ {
			t.Errorf("--%s is a %s, want %s", flag, f.Value.Type(), typ)
		}
	}
}

// TestLineLoggerJSON: in json mode every line buildah writes becomes one
// JSON object with time, level, msg and source, however the writes split
// the lines.
func TestLineLoggerJSON(t *testing.T) {
	var out bytes.Buffer
	l := logrus.New()
	l.SetOutput(&out)
	l.SetFormatter(&logrus.JSONFormatter{})
	ll := &lineLogger{log: l.WithField("source", "buildah")}
	for _, w := range []string{"STEP 1/2: FROM scr", "atch\nSTEP 2/2: RUN echo \"quoted\"\n", "\n", "Copying blob 10%\rCopying blob 100%\n", "no newline at the end"} {
		if _, err := ll.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	ll.Flush()
	var msgs []string
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		if e["source"] != "buildah" || e["level"] != "info" || e["time"] == nil {
			t.Errorf("line %q: source, level, time = %v, %v, %v; want buildah, info, set", line, e["source"], e["level"], e["time"])
		}
		msgs = append(msgs, e["msg"].(string))
	}
	want := []string{"STEP 1/2: FROM scratch", `STEP 2/2: RUN echo "quoted"`, "Copying blob 100%", "no newline at the end"}
	if d := cmp.Diff(want, msgs); d != "" {
		t.Errorf("messages (-want +got):\n%s", d)
	}
}

func TestErrorLine(t *testing.T) {
	if got, want := errorLine(false, "pushing x:\n  refused"), "Error: pushing x: refused\n"; got != want {
		t.Errorf("errorLine(text) = %q, want %q", got, want)
	}
	got := errorLine(true, "pushing x:\n  refused")
	if !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("errorLine(json) = %q, want one line", got)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(got), &e); err != nil {
		t.Fatalf("errorLine(json) = %q, not JSON: %v", got, err)
	}
	if e["level"] != "error" || e["msg"] != "Error: pushing x: refused" || e["time"] == nil {
		t.Errorf("errorLine(json) = %v, want level error, msg %q and a time", e, "Error: pushing x: refused")
	}
}

func TestLogFormatArg(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "text"},
		{[]string{"build", "--log-format", "json", "."}, "json"},
		{[]string{"--log-format=json", "build", "--bogus"}, "json"},
		{[]string{"build", "--log-format", "json", "--log-format", "text"}, "text"},
		{[]string{"build", "--", "--log-format", "json"}, "text"},
		{[]string{"build", "--log-format"}, "text"},
	}
	for _, tt := range tests {
		if got := logFormatArg(tt.args); got != tt.want {
			t.Errorf("logFormatArg(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

// TestStatusTerminal: a log line clears the status line first, so the two
// never share a line, and an empty status clears it once.
func TestStatusTerminal(t *testing.T) {
	var out bytes.Buffer
	s := &statusTerminal{w: &out}
	s.status("push: 1 MiB")
	s.status("push: 2 MiB")
	fmt.Fprint(s, "log line\n")
	fmt.Fprint(s, "another\n")
	s.status("push: 3 MiB")
	s.status("")
	s.status("")
	want := clearLine + "push: 1 MiB" + clearLine + "push: 2 MiB" + clearLine + "log line\nanother\n" + clearLine + "push: 3 MiB" + clearLine
	if got := out.String(); got != want {
		t.Errorf("terminal got %q, want %q", got, want)
	}
}

func TestActivityWriter(t *testing.T) {
	a := newActivityWriter(&bytes.Buffer{})
	a.last.Store(time.Now().Add(-time.Hour).UnixNano())
	if a.idle() < time.Hour {
		t.Fatalf("idle() = %v, want at least an hour", a.idle())
	}
	fmt.Fprint(a, "x")
	if a.idle() > time.Minute {
		t.Errorf("idle() after a write = %v, want about 0", a.idle())
	}
}

func TestReportInterval(t *testing.T) {
	t.Setenv("CLIPBUILD_HEARTBEAT", "")
	if d, err := reportInterval(); err != nil || d != 10*time.Second {
		t.Errorf("reportInterval() = %v, %v; want 10s", d, err)
	}
	t.Setenv("CLIPBUILD_HEARTBEAT", "250ms")
	if d, err := reportInterval(); err != nil || d != 250*time.Millisecond {
		t.Errorf("reportInterval() with 250ms = %v, %v; want 250ms", d, err)
	}
	for _, bad := range []string{"soon", "-1s", "0"} {
		t.Setenv("CLIPBUILD_HEARTBEAT", bad)
		if _, err := reportInterval(); err == nil {
			t.Errorf("reportInterval() with %q = nil error, want one", bad)
		}
	}
}

func TestWriteIIDFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "iid")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeIIDFile(p, "abc123"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "sha256:abc123" {
		t.Errorf("iidfile holds %q (%v), want %q", got, err, "sha256:abc123")
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want the iidfile only", len(entries))
	}
}
