package pipeline

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestChoose(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	v1 := Step("v1", func(context.Context, *Job) error { return nil })
	v2 := Step("v2", func(context.Context, *Job) error { return nil })
	const reg = "127.0.0.1:5000/x"
	tests := []struct {
		name      string
		s         Settings
		wantBuild string // stage name, "fallback" or "error"
		wantPull  string
	}{
		{"v1", Settings{Version: Version1, Registry: reg}, "v1", "v1"},
		{"v1 no registry", Settings{Version: Version1}, "v1", "v1"},
		{"v2", Settings{Version: Version2, Registry: reg}, "v2", "v2"},
		{"v2 no registry", Settings{Version: Version2}, "error", "v2"},
		{"auto", Settings{Version: VersionAuto, Registry: reg}, "fallback", "fallback"},
		{"auto no registry", Settings{Version: VersionAuto}, "v1", "fallback"},
	}
	name := func(st Stage) string {
		if _, ok := st.(fallback); ok {
			return "fallback"
		}
		return st.Name()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ChooseBuild(tt.s, v1, v2, logrus.NewEntry(log))
			got := "error"
			if err == nil {
				got = name(st)
			} else if !errors.Is(err, ErrNoRegistry) {
				t.Fatalf("ChooseBuild error = %v, want ErrNoRegistry", err)
			}
			if got != tt.wantBuild {
				t.Errorf("ChooseBuild(%+v) = %s, want %s", tt.s, got, tt.wantBuild)
			}
			if got := name(ChoosePull(tt.s, v1, v2)); got != tt.wantPull {
				t.Errorf("ChoosePull(%+v) = %s, want %s", tt.s, got, tt.wantPull)
			}
		})
	}
}
