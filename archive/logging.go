package archive

import (
	"encoding/json"

	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
	"github.com/sirupsen/logrus"
)

// RouteClipLogs sends clip's zerolog output through l, at l's level: clip
// logs every FUSE call at debug level by default, which would bury ours.
// This is the one place third-party logging is configured.
func RouteClipLogs(l *logrus.Logger) {
	level := zerolog.WarnLevel
	if l.IsLevelEnabled(logrus.DebugLevel) {
		level = zerolog.DebugLevel
	}
	zerolog.SetGlobalLevel(level)
	zlog.Logger = zerolog.New(zerologBridge{l}).Level(level)
}

type zerologBridge struct{ l *logrus.Logger }

func (b zerologBridge) Write(p []byte) (int, error) {
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		b.l.Debug(string(p))
		return len(p), nil
	}
	msg, _ := fields["message"].(string)
	lvl, _ := fields["level"].(string)
	delete(fields, "message")
	delete(fields, "level")
	level, err := logrus.ParseLevel(lvl)
	if err != nil {
		level = logrus.DebugLevel
	}
	b.l.WithField("component", "clip").WithFields(fields).Log(level, msg)
	return len(p), nil
}
