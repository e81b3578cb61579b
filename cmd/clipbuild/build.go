package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/pipeline"
	"github.com/clipbuild/clipbuild/stages"
)

// buildOptions are the flags of `clipbuild build`, in buildah's spellings.
type buildOptions struct {
	archiveFlags
	file      string
	tags      []string
	buildArgs []string
	target    string
	platform  string
	layers    bool
	isolation string
	secrets   []string
	ssh       []string
	labels    []string
	notes     []string // --annotation
	contexts  []string // --build-context
	iidfile   string
	registry  string
	keepImage bool
	reg       registryFlags
}

// NewBuildCmd is `clipbuild build`.
func NewBuildCmd(g *globalOptions) *cobra.Command {
	o := &buildOptions{}
	cmd := &cobra.Command{
		Use:   "build [flags] [CONTEXT]",
		Short: "Build a Dockerfile with buildah and archive the image",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			contextDir := "."
			if len(args) == 1 {
				contextDir = args[0]
			}
			return runBuild(cmd, g, o, contextDir)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "Dockerfile path (the default is CONTEXT/Dockerfile)")
	f.StringArrayVarP(&o.tags, "tag", "t", nil, "image name to tag the build with (repeatable; the default is a unique local name)")
	f.StringArrayVar(&o.buildArgs, "build-arg", nil, "build-time variable K=V (repeatable)")
	f.StringVar(&o.target, "target", "", "build stage to stop at")
	f.StringVar(&o.platform, "platform", "", "target platform OS/ARCH[/VARIANT]")
	f.BoolVar(&o.layers, "layers", false, "cache intermediate layers (buildah's default when not given)")
	f.StringVar(&o.isolation, "isolation", stages.DefaultIsolation(), "RUN isolation: chroot, oci or rootless (the default is $BUILDAH_ISOLATION, else chroot; not the rootless that `buildah unshare` sets)")
	f.StringArrayVar(&o.secrets, "secret", nil, "build secret id=ID,src=PATH (repeatable; passed to buildah, never a build argument)")
	f.StringArrayVar(&o.ssh, "ssh", nil, "SSH agent socket or keys for RUN --mount=type=ssh: default|ID[=SOCKET|KEY[,KEY]] (repeatable)")
	f.StringArrayVar(&o.labels, "label", nil, "image label K=V, in the image config (repeatable)")
	f.StringArrayVar(&o.notes, "annotation", nil, "image annotation K=V, in the image manifest (repeatable)")
	f.StringArrayVar(&o.contexts, "build-context", nil, "extra build context NAME=DIR|IMAGE|URL for COPY --from=NAME (repeatable)")
	f.StringVar(&o.iidfile, "iidfile", "", "write the image ID (sha256:...) to this file once the run succeeds")
	f.StringVar(&o.registry, "registry", "", "scratch registry HOST[:PORT][/NAMESPACE] for v2 ($CLIPBUILD_REGISTRY)")
	f.BoolVar(&o.keepImage, "keep-image", false, "keep the image in buildah's storage when clipbuild named it (no --tag); the default removes it once archived")
	o.reg.bind(cmd)
	o.archiveFlags.bind(cmd)
	return cmd
}

var (
	nameUnsafe = regexp.MustCompile(`[^a-z0-9._-]+`)
	// nameSeparators: a reference path component allows single separators
	// between alphanumerics only.
	nameSeparators = regexp.MustCompile(`[._-]{2,}`)
)

// imageBaseName is the last path element of an image name, without tag.
func imageBaseName(name string) string {
	name = name[strings.LastIndex(name, "/")+1:]
	if i := strings.IndexAny(name, ":@"); i >= 0 {
		name = name[:i]
	}
	return name
}

// defaultName derives an image name from the context directory.
func defaultName(contextDir string) string {
	abs, err := filepath.Abs(contextDir)
	if err != nil {
		abs = contextDir
	}
	n := nameUnsafe.ReplaceAllString(strings.ToLower(filepath.Base(abs)), "-")
	n = strings.Trim(nameSeparators.ReplaceAllString(n, "-"), "-._")
	if n == "" {
		n = "image"
	}
	return n
}

// isolations are the values of --isolation that buildah takes.
var isolations = []string{"chroot", "oci", "rootless"}

// validate checks what the command line alone can tell is wrong: each is
// a usage error, reported before any work.
func (o *buildOptions) validate() error {
	if o.clipVersion != "" {
		if _, err := pipeline.ParseVersion(o.clipVersion); err != nil {
			return usagef("--clip-version: %w", err)
		}
	}
	if o.isolation != "" && !slices.Contains(isolations, o.isolation) {
		return usagef("--isolation: %q is not one of %s", o.isolation, strings.Join(isolations, ", "))
	}
	for _, kv := range []struct {
		flag   string
		values []string
		needEq bool
	}{{"--label", o.labels, false}, {"--annotation", o.notes, false}, {"--build-context", o.contexts, true}, {"--build-arg", o.buildArgs, false}} {
		for _, v := range kv.values {
			k, val, eq := strings.Cut(v, "=")
			if k == "" || (kv.needEq && (!eq || val == "")) {
				want := "K=V"
				if kv.needEq {
					want = "NAME=VALUE"
				}
				return usagef("%s %q: want %s", kv.flag, v, want)
			}
		}
	}
	for _, v := range o.ssh {
		if id, _, _ := strings.Cut(v, "="); id == "" {
			return usagef("--ssh %q: want default or ID[=SOCKET|KEY]", v)
		}
	}
	if o.iidfile != "" {
		if st, err := os.Stat(filepath.Dir(o.iidfile)); err != nil || !st.IsDir() {
			return fmt.Errorf("--iidfile: directory %s does not exist", filepath.Dir(o.iidfile))
		}
	}
	return nil
}

func runBuild(cmd *cobra.Command, g *globalOptions, o *buildOptions, contextDir string) error {
	limitMemory()
	ctx := cmd.Context()
	log, err := g.logger()
	if err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	jobOpts, progress, err := g.jobOptions()
	if err != nil {
		return err
	}
	cfg, err := g.loadConfig()
	if err != nil {
		return err
	}
	settings, err := pipeline.Resolve(o.clipVersion, o.registry, cfg)
	if err != nil {
		return err
	}
	bud := stages.BudOptions{
		ContextDir: contextDir,
		File:       o.file,
		Tags:       o.tags,
		BuildArgs:  o.buildArgs,
		Target:     o.target,
		Platform:   o.platform,
		Isolation:  o.isolation,
		Secrets:    o.secrets,
		SSH:        o.ssh,

		Labels:        o.labels,
		Annotations:   o.notes,
		BuildContexts: o.contexts,
	}
	if cmd.Flags().Changed("layers") {
		bud.Layers = &o.layers
	}
	if _, err := bud.Dockerfile(); err != nil {
		return err
	}
	var buildOpts []pipeline.BuildOption
	if len(bud.Tags) == 0 {
		// An image nobody named is a leftover once it is archived.
		bud.Tags = []string{stages.UniqueName(defaultName(contextDir))}
		if !o.keepImage {
			buildOpts = append(buildOpts, pipeline.RemoveImage())
		}
	}
	output, err := o.outputPath(imageBaseName(o.tags0(contextDir)))
	if err != nil {
		return err
	}
	buildahOut, flush := g.buildahOutput()
	defer flush()
	b, err := stages.NewBuildah(buildahOut, log)
	if err != nil {
		return err
	}
	reg := o.reg.options(settings.RegistryInsecure)
	v1 := pipeline.V1(stages.StoreArchiver{Progress: progress.Reporter("archive")})
	publisher, err := stages.NewPublisher(settings.Registry, reg, stages.WithPublishLog(log), stages.WithPublishProgress(progress.Reporter("push")))
	if err != nil {
		return err
	}
	v2 := pipeline.BuildV2(publisher)
	archiveStage, err := pipeline.ChooseBuild(settings, v1, v2, log)
	if err != nil {
		return err
	}
	job := pipeline.NewJob(log, output, jobOpts...)
	res, err := pipeline.Run(ctx, job, pipeline.Sequence("build", pipeline.Build(b, bud, buildOpts...), archiveStage))
	if err != nil {
		return err
	}
	if o.iidfile != "" {
		if err := writeIIDFile(o.iidfile, job.Image.ID); err != nil {
			return err
		}
	}
	return o.printResult(g, res)
}

// writeIIDFile writes the image ID as buildah's --iidfile does
// (sha256:<hex>, no newline), atomically: only after the archive is
// written, so a failed run leaves no ID of an image it did not archive.
func writeIIDFile(path, id string) error {
	err := archive.WriteFileAtomic(path, func(f *os.File) error {
		_, err := f.WriteString("sha256:" + id)
		return err
	})
	if err != nil {
		return fmt.Errorf("writing image id file: %w", err)
	}
	return nil
}

// tags0 is the name the default output is named after.
func (o *buildOptions) tags0(contextDir string) string {
	if len(o.tags) > 0 {
		return o.tags[0]
	}
	return defaultName(contextDir)
}
