package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/registry"
)

// NewRegistryCmd is `clipbuild registry`.
func NewRegistryCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "The embedded scratch registry",
	}
	var addr, root, htpasswd, storage string
	var redirect bool
	serve := &cobra.Command{
		Use:   "serve [--addr A] [--root DIR | --storage s3://BUCKET/PREFIX [--redirect=false]]",
		Short: "Serve the embedded registry in the foreground until SIGINT or SIGTERM",
		Long: `Serve the embedded registry in the foreground until SIGINT or SIGTERM.

With --storage s3://BUCKET/PREFIX the data is kept in S3, reached with the AWS
SDK's settings (AWS_ENDPOINT_URL, with path-style addressing, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials),
or where the environment sets none, the --config file's s3 keys.
Several registries may share one bucket and prefix; give them all the same
CLIPBUILD_REGISTRY_SECRET (or registry.secret in the config), or an upload
begun on one fails on another.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			log, err := g.logger()
			if err != nil {
				return err
			}
			registry.RouteLogs(log.Logger)
			if _, err := g.loadConfig(); err != nil {
				return err
			}
			opts := []registry.ServerOption{registry.WithRedirect(redirect)}
			if htpasswd != "" {
				opts = append(opts, registry.WithHtpasswd(htpasswd))
			}
			secret := os.Getenv("CLIPBUILD_REGISTRY_SECRET")
			if secret != "" {
				opts = append(opts, registry.WithSecret(secret))
			}
			s3, err := storageFlag(cmd, storage)
			if err != nil {
				return err
			}
			switch {
			case s3 != nil:
				opts = append(opts, registry.WithS3(*s3))
				if secret == "" {
					log.Warn("neither CLIPBUILD_REGISTRY_SECRET nor the config's registry.secret is set: using a random HTTP secret, so uploads break across registries sharing this storage")
				}
			case root == "":
				if root, err = registry.DefaultRoot(); err != nil {
					return err
				}
			}
			s, err := registry.Start(context.WithoutCancel(ctx), addr, root, opts...)
			if err != nil {
				return fmt.Errorf("starting registry: %w", err)
			}
			log.Infof("registry serving on http://%s (storage %s)", s.Addr, s.Storage)
			select {
			case <-ctx.Done():
			case err := <-s.Done():
				return fmt.Errorf("registry stopped: %w", err)
			}
			log.Info("registry shutting down")
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return s.Shutdown(sctx)
		},
	}
	serve.Flags().StringVar(&addr, "addr", registry.DefaultAddr, "address to listen on (host:port)")
	serve.Flags().StringVar(&root, "root", "", "storage directory (the default is $XDG_DATA_HOME/clipbuild/registry)")
	serve.Flags().StringVar(&htpasswd, "htpasswd", "", "require basic auth with users from this htpasswd file (bcrypt)")
	serve.Flags().StringVar(&storage, "storage", "", "keep the data in S3 (s3://BUCKET/PREFIX) instead of --root")
	serve.Flags().BoolVar(&redirect, "redirect", true, "redirect blob reads to presigned storage URLs (S3); false serves them through the registry")
	cmd.AddCommand(serve)
	cmd.AddCommand(newRegistryGCCmd(g))
	return cmd
}

// newRegistryGCCmd is `clipbuild registry gc`.
func newRegistryGCCmd(g *globalOptions) *cobra.Command {
	var root, storage string
	var keep time.Duration
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc [--root DIR | --storage s3://BUCKET/PREFIX] [--keep 720h] [--dry-run]",
		Short: "Remove the scratch images older than --keep, then collect their blobs",
		Long: `Remove the scratch images clipbuild pushed (tags id-<image ID>) that were
last pushed longer ago than --keep, then run distribution's mark-and-sweep
garbage collector, which deletes the manifests and blobs nothing tagged uses
any more. Other tags are never removed. A tag's age is the modification time
of its link in the storage, which every push of the tag rewrites.

No registry may write to the storage while gc runs (distribution's rule): stop
the registries serving it, or make them read-only, for a maintenance window.
A v2 archive whose image was collected fails to read, naming the missing blob.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			registry.RouteLogs(log.Logger)
			if _, err := g.loadConfig(); err != nil {
				return err
			}
			opts := []registry.GCOption{registry.WithKeep(keep), registry.WithDryRun(dryRun)}
			s3, err := storageFlag(cmd, storage)
			if err != nil {
				return err
			}
			switch {
			case s3 != nil:
				opts = append(opts, registry.WithGCStorage(*s3))
			case root == "":
				if root, err = registry.DefaultRoot(); err != nil {
					return err
				}
			}
			if keep < 0 {
				return usagef("--keep %s: want a duration of 0 or more, such as 720h", keep)
			}
			res, err := registry.GC(cmd.Context(), root, opts...)
			w := cmd.OutOrStdout()
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			for _, c := range res.Removed {
				fmt.Fprintf(w, "%s %s:%s (pushed %s)\n", verb, c.Repository, c.Tag, c.Pushed.UTC().Format(time.RFC3339))
			}
			if err != nil {
				return fmt.Errorf("registry gc: %w", err)
			}
			if dryRun {
				fmt.Fprintf(w, "dry run: would remove %d scratch tags, keeping %d\n", len(res.Removed), res.Kept)
				return nil
			}
			fmt.Fprintf(w, "removed %d scratch tags and %d blobs, kept %d scratch tags\n", len(res.Removed), res.BlobsRemoved, res.Kept)
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "storage directory (the default is $XDG_DATA_HOME/clipbuild/registry)")
	cmd.Flags().StringVar(&storage, "storage", "", "the registry's data is in S3 (s3://BUCKET/PREFIX) instead of --root")
	cmd.Flags().DurationVar(&keep, "keep", registry.DefaultKeep, "keep scratch tags pushed less than this long ago")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the tags that would be removed and change nothing")
	return cmd
}

// storageFlag parses --storage s3://BUCKET/PREFIX (nil when not given),
// which excludes --root.
func storageFlag(cmd *cobra.Command, storage string) (*registry.S3Storage, error) {
	if storage == "" {
		return nil, nil
	}
	if cmd.Flags().Changed("root") {
		return nil, usagef("--root and --storage: give one")
	}
	s3, err := registry.ParseS3URL(storage)
	if err != nil {
		return nil, usagef("--storage: %w", err)
	}
	// The S3 driver's SDK reads ~/.aws/config (profiles, regions,
	// credential sources) only when asked to, as the AWS CLI does.
	if os.Getenv("AWS_SDK_LOAD_CONFIG") == "" {
		os.Setenv("AWS_SDK_LOAD_CONFIG", "1")
	}
	return &s3, nil
}
