package stages

import (
	"encoding/json"
	"fmt"
)

// convertJSON copies between two types with the same JSON shape, such as
// go-containerregistry's and image-spec's manifests and configs.
func convertJSON(from, to any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return fmt.Errorf("encoding %T: %w", from, err)
	}
	if err := json.Unmarshal(b, to); err != nil {
		return fmt.Errorf("decoding %T: %w", to, err)
	}
	return nil
}
