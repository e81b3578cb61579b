package pipeline

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// syncBuffer is a log output safe for the heartbeat's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func bufferLog() (*logrus.Entry, *syncBuffer) {
	var out syncBuffer
	l := logrus.New()
	l.SetOutput(&out)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	return logrus.NewEntry(l), &out
}

// TestHeartbeatDuringSilentStage: a silent stage gets a heartbeat each
// interval, naming the stage and its elapsed time; none once it is done.
func TestHeartbeatDuringSilentStage(t *testing.T) {
	log, out := bufferLog()
	always := func() time.Duration { return time.Hour }
	j := NewJob(log, "", WithHeartbeat(50*time.Millisecond, always))
	slow := Step("build", func(ctx context.Context, j *Job) error {
		time.Sleep(280 * time.Millisecond)
		return nil
	})
	if _, err := Run(context.Background(), j, Sequence("all", slow)); err != nil {
		t.Fatal(err)
	}
	n := strings.Count(out.String(), "still building (build, ")
	// 280 ms at one per 50 ms: 5, give or take the scheduler.
	if n < 3 || n > 6 {
		t.Errorf("got %d heartbeats in 280 ms at a 50 ms interval, want about 5:\n%s", n, out)
	}
	after := out.String()
	time.Sleep(120 * time.Millisecond)
	if out.String() != after {
		t.Errorf("heartbeat after the stage ended:\n%s", strings.TrimPrefix(out.String(), after))
	}
}

// TestHeartbeatQuietWhileOutput: a stage whose output keeps flowing gets
// no heartbeat.
func TestHeartbeatQuietWhileOutput(t *testing.T) {
	log, out := bufferLog()
	busy := func() time.Duration { return 0 }
	j := NewJob(log, "", WithHeartbeat(30*time.Millisecond, busy))
	stage := Step("build", func(ctx context.Context, j *Job) error {
		time.Sleep(200 * time.Millisecond)
		return nil
	})
	if _, err := Run(context.Background(), j, stage); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "still building") {
		t.Errorf("heartbeat while output flowed:\n%s", out)
	}
}

func TestNoHeartbeatByDefault(t *testing.T) {
	log, out := bufferLog()
	j := NewJob(log, "")
	if _, err := Run(context.Background(), j, Step("build", func(context.Context, *Job) error {
		time.Sleep(50 * time.Millisecond)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "still building") {
		t.Errorf("heartbeat without WithHeartbeat:\n%s", out)
	}
}

// fakeClock is a Progress clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestProgressLogsAtMostOncePerInterval: without a terminal, one line per
// interval at most, however often bytes arrive.
func TestProgressLogsAtMostOncePerInterval(t *testing.T) {
	log, out := bufferLog()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := NewProgress(log, ProgressInterval(10*time.Second))
	p.now = clock.now
	report := p.Reporter("push")
	mib := int64(1 << 20)
	for i := int64(0); i <= 40; i++ {
		report(i*mib, 40*mib)
		clock.t = clock.t.Add(time.Second)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d progress lines over 40 s at a 10 s interval, want 4:\n%s", len(lines), out)
	}
	if want := "push: 10.0 MiB of 40.0 MiB (25%), 1.0 MiB/s, ETA 30s"; !strings.Contains(lines[0], want) {
		t.Errorf("first line %q, want it to contain %q", lines[0], want)
	}
}

// TestProgressOnTerminal: on a terminal the status line is redrawn and
// cleared when the step is done, and nothing is logged.
func TestProgressOnTerminal(t *testing.T) {
	log, out := bufferLog()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var status []string
	p := NewProgress(log, ProgressOnTerminal(func(s string) { status = append(status, s) }))
	p.now = clock.now
	report := p.Reporter("archive")
	for i := int64(0); i <= 4; i++ {
		report(i*1024, 4096)
		clock.t = clock.t.Add(time.Second)
	}
	if out.String() != "" {
		t.Errorf("logged on a terminal: %q", out)
	}
	if len(status) != 4 || status[len(status)-1] != "" || !strings.HasPrefix(status[0], "archive: 1.0 KiB of 4.0 KiB (25%)") {
		t.Errorf("status lines = %q, want 3 updates then a clear", status)
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		done, total int64
		elapsed     time.Duration
		want        string
	}{
		{512, 0, time.Second, "push: 512 B, 512 B/s"},
		{3 << 20, 0, 0, "push: 3.0 MiB, 0 B/s"},
		{1 << 30, 1 << 30, time.Second, "push: 1.0 GiB of 1.0 GiB (100%), 1.0 GiB/s"},
		{1 << 20, 4 << 20, 2 * time.Second, "push: 1.0 MiB of 4.0 MiB (25%), 512.0 KiB/s, ETA 6s"},
	}
	for _, tt := range tests {
		if got := progressLine("push", tt.done, tt.total, tt.elapsed); got != tt.want {
			t.Errorf("progressLine(%d, %d, %v) = %q, want %q", tt.done, tt.total, tt.elapsed, got, tt.want)
		}
	}
}

func TestNilProgressReportsNothing(t *testing.T) {
	var p *Progress
	if p.Reporter("push") != nil {
		t.Error("nil Progress gave a reporter")
	}
}
