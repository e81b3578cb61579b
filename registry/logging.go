package registry

import (
	"io"

	"github.com/sirupsen/logrus"
)

// RouteLogs sends distribution's logging (which goes to logrus's standard
// logger) to dst. A client error such as a 404 on a blob HEAD is routine for
// a registry, so requests that completed with a status under 500 are logged
// at debug level rather than as errors.
func RouteLogs(dst *logrus.Logger) {
	std := logrus.StandardLogger()
	std.SetOutput(io.Discard)
	std.SetLevel(logrus.TraceLevel)
	std.ReplaceHooks(logrus.LevelHooks{})
	std.AddHook(relay{dst})
}

type relay struct{ dst *logrus.Logger }

func (relay) Levels() []logrus.Level { return logrus.AllLevels }

func (r relay) Fire(e *logrus.Entry) error {
	level := e.Level
	if status, ok := e.Data["http.response.status"].(int); ok && status < 500 && level < logrus.DebugLevel {
		level = logrus.DebugLevel
	}
	if !r.dst.IsLevelEnabled(level) {
		return nil
	}
	r.dst.WithFields(e.Data).WithField("component", "registry").Log(level, e.Message)
	return nil
}
