package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// timeBin is GNU time, whose -v report has the peak RSS of a command.
const timeBin = "/usr/bin/time"

// Measured is one timed run of a command.
type Measured struct {
	Wall    time.Duration
	PeakRSS int64 // bytes; the largest of the command and its children
	Stdout  []byte
	Log     string // the file the command's stderr went to
}

// runner runs commands under GNU time, logging their stderr to a file.
type runner struct {
	work string // where time's reports and logs go
	seq  int
}

// timed runs argv to completion under `time -v` and returns its wall time
// (measured here, process start to exit), peak RSS and stdout. With a
// non-nil stdout, the command writes there instead and Stdout is empty.
func (r *runner) timed(ctx context.Context, argv []string, stdout io.Writer) (Measured, error) {
	report, logPath := r.next(argv[0])
	cmd := exec.CommandContext(ctx, timeBin, append([]string{"-v", "-o", report}, argv...)...)
	// On cancellation the command itself gets SIGTERM (time would not pass
	// it on) and cleans up; time then exits.
	cmd.Cancel = func() error { return terminate(cmd.Process.Pid) }
	cmd.WaitDelay = 30 * time.Second
	var buf bytes.Buffer
	cmd.Stdout = &buf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return Measured{}, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return Measured{}, fmt.Errorf("%s: %w%s", strings.Join(argv, " "), err, tail(logPath))
	}
	rss, err := peakRSS(report)
	if err != nil {
		return Measured{}, err
	}
	return Measured{Wall: wall, PeakRSS: rss, Stdout: buf.Bytes(), Log: logPath}, nil
}

// plain runs argv untimed (setup steps), returning its stdout.
func (r *runner) plain(ctx context.Context, argv ...string) ([]byte, error) {
	_, logPath := r.next(argv[0])
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w%s", strings.Join(argv, " "), err, tail(logPath))
	}
	return out, nil
}

// next names the files of the next command.
func (r *runner) next(name string) (report, log string) {
	r.seq++
	base := filepath.Join(r.work, "logs", fmt.Sprintf("%03d-%s", r.seq, filepath.Base(name)))
	_ = os.MkdirAll(filepath.Dir(base), 0o755)
	return base + ".time", base + ".log"
}

// background is a long-running command under `time -v`, such as a mount.
type background struct {
	cmd    *exec.Cmd
	report string
	log    string
	waited chan error
}

// start starts argv under `time -v` in the background.
func (r *runner) start(argv []string) (*background, error) {
	report, logPath := r.next(argv[0])
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(timeBin, append([]string{"-v", "-o", report}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	b := &background{cmd: cmd, report: report, log: logPath, waited: make(chan error, 1)}
	go func() {
		b.waited <- cmd.Wait()
		logf.Close()
	}()
	return b, nil
}

// exited reports whether the command has ended, and how.
func (b *background) exited() (bool, error) {
	select {
	case err := <-b.waited:
		b.waited <- err
		return true, err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the command itself (time's child: time would not
// pass it on), waits for it, and returns its peak RSS.
func (b *background) stop(timeout time.Duration) (int64, error) {
	if done, _ := b.exited(); !done {
		_ = terminate(b.cmd.Process.Pid)
	}
	select {
	case err := <-b.waited:
		if err != nil {
			return 0, fmt.Errorf("%s: %w%s", b.cmd.String(), err, tail(b.log))
		}
	case <-time.After(timeout):
		_ = b.cmd.Process.Kill()
		<-b.waited
		return 0, fmt.Errorf("%s did not stop in %s", b.cmd.String(), timeout)
	}
	return peakRSS(b.report)
}

// terminate sends SIGTERM to the command that `time` (at timePID) runs,
// or to time itself when it has no child.
func terminate(timePID int) error {
	pid := childOf(timePID)
	if pid == 0 {
		pid = timePID
	}
	return syscall.Kill(pid, syscall.SIGTERM)
}

// childOf is the first child process of pid, or 0.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	// Without that file, look for a process whose parent is pid.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so cut at ')'.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			return n
		}
	}
	return 0
}

var maxRSS = regexp.MustCompile(`Maximum resident set size \(kbytes\): (\d+)`)

// peakRSS reads the peak RSS from a `time -v` report.
func peakRSS(report string) (int64, error) {
	b, err := os.ReadFile(report)
	if err != nil {
		return 0, fmt.Errorf("reading time report: %w", err)
	}
	m := maxRSS.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("no peak RSS in %s", report)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb * 1024, nil
}

// tail is the last lines of a log, to quote in an error.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return ":\n  " + strings.Join(lines, "\n  ")
}
