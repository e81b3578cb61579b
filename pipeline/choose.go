package pipeline

import (
	"errors"

	"github.com/sirupsen/logrus"
)

// ErrNoRegistry is returned when a v2 build is asked for without a
// registry to publish its layers to.
var ErrNoRegistry = errors.New("clip version 2 needs a registry: give --registry HOST[:PORT][/NAMESPACE], $CLIPBUILD_REGISTRY or imageService.buildRegistry")

// ChooseBuild picks what archives a built image, from the resolved
// settings: v1 alone, v2 alone, or v2 falling back to v1. In auto mode a
// build without a registry makes v1 (there is nowhere to publish to);
// version 2 without one is an error. This and ChoosePull are the only
// places the choice is made.
func ChooseBuild(s Settings, v1, v2 Stage, log *logrus.Entry) (Stage, error) {
	switch {
	case s.Version == Version1:
		return v1, nil
	case s.Version == Version2 && s.Registry == "":
		return nil, ErrNoRegistry
	case s.Version == Version2:
		return v2, nil
	case s.Registry == "":
		log.Info("no registry configured: producing a v1 archive")
		return v1, nil
	default:
		return Fallback(v2, v1), nil
	}
}

// ChoosePull picks what archives an image that sits in a registry: v2
// indexes it where it is, so auto mode always tries v2 first.
func ChoosePull(s Settings, v1, v2 Stage) Stage {
	switch s.Version {
	case Version1:
		return v1
	case Version2:
		return v2
	default:
		return Fallback(v2, v1)
	}
}
