package main

import (
	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/pipeline"
	"github.com/clipbuild/clipbuild/stages"
)

// pullOptions are the flags of `clipbuild pull`.
type pullOptions struct {
	archiveFlags
	platform        string
	signaturePolicy string
	reg             registryFlags
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
	f.StringVar(&o.platform, "platform", "", "platform OS/ARCH[/VARIANT] to pick (the default is the host's)")
	f.StringVar(&o.signaturePolicy, "signature-policy", "", "signature policy file (the default is containers' policy.json, /etc/containers/policy.json)")
	o.reg.bind(cmd)
	o.archiveFlags.bind(cmd)
	return cmd
}

func runPull(cmd *cobra.Command, g *globalOptions, o *pullOptions, image string) error {
	limitMemory()
	log, err := g.logger()
	if err != nil {
		return err
	}
	if o.clipVersion != "" {
		if _, err := pipeline.ParseVersion(o.clipVersion); err != nil {
			return usagef("--clip-version: %w", err)
		}
	}
	jobOpts, progress, err := g.jobOptions()
	if err != nil {
		return err
	}
	cfg, err := g.loadConfig()
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
		return asUsage(err)
	}
	if _, err := stages.ParsePlatform(o.platform); err != nil {
		return asUsage(err)
	}
	output, err := o.outputPath(imageBaseName(ref.Context().RepositoryStr()))
	if err != nil {
		return err
	}
	policy := stages.Policy{Path: o.signaturePolicy}
	v2 := pipeline.PullV2(stages.Indexer{Options: reg, Platform: o.platform, Policy: &policy, Progress: progress.Reporter("index")})
	v1 := pipeline.PullV1(stages.Fetcher{Options: reg, Platform: o.platform, Policy: policy})
	chain := pipeline.ChoosePull(settings, v1, v2)
	job := pipeline.NewJob(log, output, jobOpts...)
	job.Ref = image
	job.Result.Image = image
	res, err := pipeline.Run(cmd.Context(), job, chain)
	if err != nil {
		return err
	}
	return o.printResult(g, res)
}
