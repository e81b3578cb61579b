package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// scales are the BENCH_SCALE values, in report order.
var scales = []string{"small", "medium", "large"}

// Write stores res as dir/results-<scale>.json and dir/results.json (the
// latest run), then renders dir/RESULTS.md from every results-<scale>.json
// in dir, so one report holds each scale's latest run.
func Write(dir string, res *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	for _, name := range []string{"results-" + res.Scale + ".json", "results.json"} {
		if err := writeFile(filepath.Join(dir, name), b); err != nil {
			return err
		}
	}
	return WriteReport(dir)
}

// WriteReport renders dir/RESULTS.md from the results-<scale>.json files.
func WriteReport(dir string) error {
	var all []*Results
	for _, sc := range scales {
		b, err := os.ReadFile(filepath.Join(dir, "results-"+sc+".json"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		var r Results
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("results-%s.json: %w", sc, err)
		}
		all = append(all, &r)
	}
	if len(all) == 0 {
		return fmt.Errorf("no results-<scale>.json in %s", dir)
	}
	var missing []string
	for _, sc := range scales {
		if !slices.ContainsFunc(all, func(r *Results) bool { return r.Scale == sc }) {
			missing = append(missing, sc)
		}
	}
	var sb strings.Builder
	renderReport(&sb, all, missing)
	// The reliability and indexing figures come from `make test` and Go
	// benchmarks, not from this suite; they are kept in reliability.md and
	// indexing.md and carried into every rendering.
	for _, name := range []string{"reliability.md", "indexing.md"} {
		if extra, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			sb.WriteString("\n")
			sb.Write(extra)
		} else if !os.IsNotExist(err) {
			return err
		}
	}
	return writeFile(filepath.Join(dir, "RESULTS.md"), []byte(sb.String()))
}

// writeFile replaces path atomically.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
