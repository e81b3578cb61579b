package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/archive"
)

// NewInspectCmd is `clipbuild inspect`.
func NewInspectCmd(g *globalOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect ARCHIVE",
		Short: "Show what a .clip holds: version, image, layers, config, counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.logger(); err != nil {
				return err
			}
			if _, err := g.loadConfig(); err != nil {
				return err
			}
			a, err := archive.OpenAny(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("inspecting %s: %w", args[0], err)
			}
			s := archive.Summarize(a)
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			printSummary(g, s)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func printSummary(g *globalOptions, s archive.Summary) {
	w := g.stdout
	fmt.Fprintf(w, "Archive:         %s (%d bytes)\n", s.Path, s.ArchiveBytes)
	fmt.Fprintf(w, "Clip version:    %d\n", s.Version)
	if s.Image != "" {
		fmt.Fprintf(w, "Image:           %s\n", s.Image)
	}
	if s.ImageRef != "" {
		fmt.Fprintf(w, "Image ref:       %s\n", s.ImageRef)
	}
	if s.ManifestDigest != "" {
		fmt.Fprintf(w, "Manifest digest: %s\n", s.ManifestDigest)
	}
	c := s.Counts
	fmt.Fprintf(w, "Contents:        %d files (%d hard links), %d dirs, %d symlinks, %d special; %d data bytes\n",
		c.Files, c.Hardlinks, c.Dirs, c.Symlinks, c.Special, c.DataBytes)
	if c.XattrInodes > 0 {
		fmt.Fprintf(w, "Xattrs:          %d inodes with extended attributes\n", c.XattrInodes)
	}
	if len(s.Layers) > 0 {
		fmt.Fprintf(w, "Layers:\n")
		for _, l := range s.Layers {
			fmt.Fprintf(w, "  %s  %d bytes  %s\n", l.Digest, l.Size, l.MediaType)
		}
	}
	if cfg := s.Config; cfg != nil {
		fmt.Fprintf(w, "Config:\n")
		if cfg.OS != "" {
			fmt.Fprintf(w, "  Platform:   %s/%s\n", cfg.OS, cfg.Architecture)
		}
		for _, kv := range []struct{ k, v string }{
			{"Entrypoint", strings.Join(cfg.Entrypoint, " ")},
			{"Cmd", strings.Join(cfg.Cmd, " ")},
			{"WorkingDir", cfg.WorkingDir},
			{"User", cfg.User},
		} {
			if kv.v != "" {
				fmt.Fprintf(w, "  %-11s %s\n", kv.k+":", kv.v)
			}
		}
		for _, e := range cfg.Env {
			fmt.Fprintf(w, "  Env:        %s\n", e)
		}
	}
}
