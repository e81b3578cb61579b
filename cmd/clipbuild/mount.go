package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/registry"
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
			s, err := archive.OpenStorage(a, archive.WithCacheDir(cacheDir), archive.WithRegistryOptions(reg.options(a)))
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

// registryFlags are the registry flags of commands that read v2 archives.
type registryFlags struct {
	creds     string
	authfile  string
	tlsVerify bool
}

func (r *registryFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.creds, "creds", "", "registry credentials USER[:PASS] for v2 archives")
	cmd.Flags().StringVar(&r.authfile, "authfile", os.Getenv("REGISTRY_AUTH_FILE"), "registry auth file ($REGISTRY_AUTH_FILE)")
	cmd.Flags().BoolVar(&r.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates (loopback registries may use HTTP)")
}

// options are the registry options for reading a's data: plain HTTP is
// allowed where the archive was made over it.
func (r *registryFlags) options(a *archive.Archive) registry.Options {
	return registry.Options{Creds: r.creds, AuthFile: r.authfile, TLSVerify: r.tlsVerify, Insecure: a.Trailer.PlainHTTP}
}
