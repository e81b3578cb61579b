package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/term"
)

// activityWriter is stderr, remembering when anything last reached it, so
// that the heartbeat speaks only into silence.
type activityWriter struct {
	w    io.Writer
	last atomic.Int64 // unix nanoseconds
}

func newActivityWriter(w io.Writer) *activityWriter {
	a := &activityWriter{w: w}
	a.last.Store(time.Now().UnixNano())
	return a
}

func (a *activityWriter) Write(p []byte) (int, error) {
	a.last.Store(time.Now().UnixNano())
	return a.w.Write(p)
}

// idle is how long ago the last write was.
func (a *activityWriter) idle() time.Duration {
	return time.Since(time.Unix(0, a.last.Load()))
}

// statusTerminal is a terminal's stderr with one status line (progress)
// at the bottom: each log line first clears it, and the next status
// redraws it, so the two never mix on one line.
type statusTerminal struct {
	mu      sync.Mutex
	w       io.Writer
	showing bool
}

const clearLine = "\r\x1b[K"

func (s *statusTerminal) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.showing {
		s.showing = false
		if _, err := io.WriteString(s.w, clearLine); err != nil {
			return 0, err
		}
	}
	return s.w.Write(p)
}

// status replaces the status line with line; "" removes it.
func (s *statusTerminal) status(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.showing && line == "" {
		return
	}
	_, _ = io.WriteString(s.w, clearLine+line)
	s.showing = line != ""
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lineLogger logs each line written to it as one entry: buildah's output
// in --log-format json, where every stderr line must be a JSON object.
type lineLogger struct {
	mu      sync.Mutex
	log     *logrus.Entry
	partial []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.emit(l.partial[:i])
		l.partial = l.partial[i+1:]
	}
}

// Flush logs an unterminated last line.
func (l *lineLogger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.emit(l.partial)
	l.partial = nil
}

func (l *lineLogger) emit(line []byte) {
	// Progress bars redraw with \r; the last drawing is the line.
	s := strings.TrimRight(string(line), "\r")
	if i := strings.LastIndexByte(s, '\r'); i >= 0 {
		s = s[i+1:]
	}
	if strings.TrimSpace(s) == "" {
		return
	}
	l.log.Info(s)
}

// errorLine is the last line of stderr for a failed run: `Error: msg`, as
// a JSON object (level error) when the run logs JSON.
func errorLine(jsonFormat bool, msg string) string {
	text := "Error: " + oneLine(msg)
	if !jsonFormat {
		return text + "\n"
	}
	b, err := (&logrus.JSONFormatter{}).Format(&logrus.Entry{Time: time.Now(), Level: logrus.ErrorLevel, Message: text, Data: logrus.Fields{}})
	if err != nil {
		return text + "\n"
	}
	return string(b)
}

// logFormatArg is the --log-format the command line asks for, found
// without parsing it: a run whose flags do not parse still reports its
// error in the format asked for.
func logFormatArg(args []string) string {
	format := "text"
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return format
		case a == "--log-format" && i+1 < len(args):
			format = args[i+1]
			i++
		case strings.HasPrefix(a, "--log-format="):
			format = strings.TrimPrefix(a, "--log-format=")
		}
	}
	return format
}
