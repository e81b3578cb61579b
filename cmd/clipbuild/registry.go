package main

import (
	"context"
	"fmt"
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
	var addr, root, htpasswd string
	serve := &cobra.Command{
		Use:   "serve [--addr A] [--root DIR]",
		Short: "Serve the embedded registry in the foreground until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			log, err := g.logger()
			if err != nil {
				return err
			}
			registry.RouteLogs(log.Logger)
			if root == "" {
				if root, err = registry.DefaultRoot(); err != nil {
					return err
				}
			}
			var opts []registry.ServerOption
			if htpasswd != "" {
				opts = append(opts, registry.WithHtpasswd(htpasswd))
			}
			s, err := registry.Start(context.WithoutCancel(ctx), addr, root, opts...)
			if err != nil {
				return fmt.Errorf("starting registry: %w", err)
			}
			log.Infof("registry serving on http://%s (root %s)", s.Addr, s.Root)
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
	cmd.AddCommand(serve)
	return cmd
}
