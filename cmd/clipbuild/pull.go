package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/pipeline"
	"github.com/clipbuild/clipbuild/stages"
)

// pullOptions are the flags of `clipbuild pull`.
type pullOptions struct {
	output      string
	clipVersion string
	platform    string
	reg         registryFlags
	config      string
	json        bool
}

// NewPullCmd is `clipbuild pull`.
func NewPullCmd(g *globalOptions) *cobra.Command {
	o := &pullOptions{}
	cmd := &cobra.Command{
		Use:   "pull IMAGE [flags]",
		Short: "Archive an image that already sits in a registry (v2: indexed where it is, no local copy)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPull(cmd, g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "", "archive path (the default is ./<image name>.clip)")
	f.StringVar(&o.clipVersion, "clip-version", "", "archive version: auto, 1 or 2 ($CLIP_VERSION; the default is auto)")
	f.StringVar(&o.platform, "platform", "", "platform OS/ARCH[/VARIANT] to pick (the default is the host's)")
	o.reg.bind(cmd)
	f.StringVar(&o.config, "config", "", "config file (YAML)")
	f.BoolVar(&o.json, "json", false, "print the result as JSON on stdout")
	return cmd
}

func runPull(cmd *cobra.Command, g *globalOptions, o *pullOptions, image string) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	cfg, err := pipeline.LoadConfig(o.config)
	if err != nil {
		return err
	}
	settings, err := pipeline.Resolve(o.clipVersion, "", cfg)
	if err != nil {
		return err
	}
	reg := o.reg.options(settings.RegistryInsecure)
	ref, err := reg.ParseReference(image)
	if err != nil {
		return err
	}
	if _, err := stages.ParsePlatform(o.platform); err != nil {
		return err
	}
	output := o.output
	if output == "" {
		output = imageBaseName(ref.Context().RepositoryStr()) + ".clip"
	}
	if st, err := os.Stat(filepath.Dir(output)); err != nil || !st.IsDir() {
		return fmt.Errorf("output directory %s does not exist", filepath.Dir(output))
	}
	v2 := pipeline.PullV2(stages.Indexer{Options: reg, Platform: o.platform})
	v1 := pipeline.PullV1(stages.Fetcher{Options: reg, Platform: o.platform})
	var chain pipeline.Stage
	switch settings.Version {
	case pipeline.Version1:
		chain = v1
	case pipeline.Version2:
		chain = v2
	default:
		chain = pipeline.Fallback(v2, v1)
	}
	job := pipeline.NewJob(log, output)
	job.Ref = image
	job.Result.Image = image
	res, err := pipeline.Run(cmd.Context(), job, chain)
	if err != nil {
		return err
	}
	return printResult(g, o.json, res)
}
