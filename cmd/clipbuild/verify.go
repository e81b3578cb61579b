package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/stages"
)

// errDiffers is verify's failure when the comparison ran and found differences.
var errDiffers = errors.New("archive differs")

// NewVerifyCmd is `clipbuild verify`.
func NewVerifyCmd(g *globalOptions) *cobra.Command {
	var image, rootfs, cacheDir string
	reg := registryFlags{}
	cmd := &cobra.Command{
		Use:   "verify ARCHIVE (--image NAME | --rootfs DIR)",
		Short: "Compare an archive's tree and contents with an image or an unpacked rootfs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			log, err := g.logger()
			if err != nil {
				return err
			}
			if _, err := g.loadConfig(); err != nil {
				return err
			}
			if (image == "") == (rootfs == "") {
				return usagef("verify needs exactly one of --image or --rootfs")
			}
			a, err := archive.OpenAny(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("verifying %s: %w", args[0], err)
			}
			// Plain HTTP to a registry that is not loopback only with
			// --tls-verify=false: never because the archive says so.
			s, err := archive.OpenStorage(a, archive.WithCacheDir(cacheDir), archive.WithRegistryOptions(reg.options(false)))
			if err != nil {
				return err
			}
			defer s.Cleanup()
			dir := rootfs
			if image != "" {
				buildahOut, flush := g.buildahOutput()
				defer flush()
				b, err := stages.NewBuildah(buildahOut, log)
				if err != nil {
					return err
				}
				d, release, err := b.MountImage(ctx, image)
				if err != nil {
					return err
				}
				defer func() {
					ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
					defer cancel()
					if err := release(ctx); err != nil {
						log.Warnf("removing verify container: %v", err)
					}
				}()
				dir = d
			}
			want, err := archive.TreeFromDir(ctx, dir)
			if err != nil {
				return fmt.Errorf("reading %s: %w", dir, err)
			}
			got, err := archive.TreeFromArchive(ctx, a, s)
			if err != nil {
				return fmt.Errorf("reading %s: %w", args[0], err)
			}
			diffs := archive.Diff(want, got)
			for _, d := range diffs {
				fmt.Fprintln(g.stdout, d)
			}
			if len(diffs) > 0 {
				return fmt.Errorf("%w from %s: %d differences", errDiffers, dir, len(diffs))
			}
			fmt.Fprintf(g.stdout, "%s matches %s: %d entries\n", args[0], dir, len(want))
			return nil
		},
	}
	cmd.Flags().StringVar(&image, "image", "", "local image to compare with")
	cmd.Flags().StringVar(&rootfs, "rootfs", "", "unpacked rootfs to compare with")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "directory for fetched layer data of v2 archives")
	reg.bind(cmd)
	return cmd
}
