package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/archive"
)

// NewMountCmd is `clipbuild mount`.
func NewMountCmd(g *globalOptions) *cobra.Command {
	var cacheDir string
	reg := registryFlags{}
	cmd := &cobra.Command{
		Use:   "mount ARCHIVE MOUNTPOINT",
		Short: "Mount an archive read-only with FUSE, in the foreground, until SIGINT or SIGTERM",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			a, err := archive.Open(args[0])
			if err != nil {
				return fmt.Errorf("mounting %s: %w", args[0], err)
			}
			// Plain HTTP to a registry that is not loopback only with
			// --tls-verify=false: never because the archive says so.
			s, err := archive.OpenStorage(a, archive.WithCacheDir(cacheDir), archive.WithRegistryOptions(reg.options(false)))
			if err != nil {
				return err
			}
			m, err := archive.MountArchive(a, s, args[1])
			if err != nil {
				s.Cleanup()
				return err
			}
			log.Infof("mounted %s (clip v%d) at %s", args[0], a.Version(), args[1])
			select {
			case <-cmd.Context().Done():
				log.Infof("unmounting %s", args[1])
			case <-m.Done():
				log.Infof("%s was unmounted", args[1])
			}
			return m.Unmount()
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "directory for fetched layer data of v2 archives (the default is $XDG_CACHE_HOME/clipbuild/layers)")
	reg.bind(cmd)
	return cmd
}
