package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/archive"
	"github.com/clipbuild/clipbuild/pipeline"
	"github.com/clipbuild/clipbuild/registry"
)

// globalOptions are the flags every subcommand takes.
type globalOptions struct {
	logLevel  string
	logFormat string
	config    string
	stdout    io.Writer
	stderr    io.Writer

	// Set by logger: everything written to stderr goes through activity
	// (which the heartbeat watches), and through terminal when stderr is
	// a terminal and the format is text.
	activity *activityWriter
	terminal *statusTerminal
	log      *logrus.Entry
}

// logger builds the run's logger: logrus on stderr, with clip's own logging
// routed through it.
func (g *globalOptions) logger() (*logrus.Entry, error) {
	l := logrus.New()
	level, err := logrus.ParseLevel(g.logLevel)
	if err != nil {
		return nil, usagef("--log-level: %w", err)
	}
	l.SetLevel(level)
	switch g.logFormat {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, usagef("--log-format: %q is not text or json", g.logFormat)
	}
	g.activity = newActivityWriter(g.stderr)
	var out io.Writer = g.activity
	if g.logFormat == "text" && isTerminal(g.stderr) {
		g.terminal = &statusTerminal{w: g.activity}
		out = g.terminal
	}
	l.SetOutput(out)
	// containers/image and containers/storage log through logrus's standard
	// logger; they share our output, and speak at info only when we debug.
	std := logrus.StandardLogger()
	std.SetOutput(out)
	std.SetFormatter(l.Formatter)
	std.SetLevel(logrus.WarnLevel)
	if level >= logrus.DebugLevel {
		std.SetLevel(level)
	}
	// Go's own log package (used by some dependencies) goes through ours,
	// so that in json mode its lines are JSON objects too.
	log.SetFlags(0)
	log.SetOutput(l.WriterLevel(logrus.InfoLevel))
	archive.RouteClipLogs(l)
	g.log = logrus.NewEntry(l)
	return g.log, nil
}

// loadConfig reads --config (an empty Config without it) and sets the
// environment its S3 and registry settings stand for, where the
// environment does not already decide them (pipeline.Config.Environ), so
// that every AWS SDK client and S3 driver of the run sees one set of
// settings. It warns when the file holds secrets others may read. Call it
// after logger.
func (g *globalOptions) loadConfig() (*pipeline.Config, error) {
	cfg, err := pipeline.LoadConfig(g.config)
	if err != nil {
		return nil, err
	}
	if g.config == "" {
		return cfg, nil
	}
	if st, err := os.Stat(g.config); err == nil && cfg.HasSecrets() && st.Mode().Perm()&0o077 != 0 {
		g.log.Warnf("config %s holds secrets and is readable by others (mode %04o): chmod 600 it", g.config, st.Mode().Perm())
	}
	for _, kv := range cfg.Environ(os.Getenv) {
		name, value, _ := strings.Cut(kv, "=")
		if err := os.Setenv(name, value); err != nil {
			return nil, fmt.Errorf("config %s: setting %s: %w", g.config, name, err)
		}
		g.log.Debugf("config %s sets %s", g.config, name)
	}
	return cfg, nil
}

// buildahOutput is where buildah's own output goes: stderr as it is in
// text mode; in json mode, one JSON object per line with the line in msg
// and "source": "buildah". flush logs an unterminated last line.
func (g *globalOptions) buildahOutput() (w io.Writer, flush func()) {
	if g.logFormat != "json" {
		if g.terminal != nil {
			return g.terminal, func() {}
		}
		return g.activity, func() {}
	}
	ll := &lineLogger{log: g.log.WithField("source", "buildah")}
	return ll, ll.Flush
}

// reportInterval is how often a run without a terminal reports progress,
// and the silence after which it prints a heartbeat:
// $CLIPBUILD_HEARTBEAT (a Go duration such as 2s), else 10 s.
func reportInterval() (time.Duration, error) {
	v := os.Getenv("CLIPBUILD_HEARTBEAT")
	if v == "" {
		return pipeline.DefaultInterval, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("CLIPBUILD_HEARTBEAT=%q: want a positive duration such as 10s", v)
	}
	return d, nil
}

// jobOptions are the reporting options of a run: the heartbeat, and the
// progress reporter for the stages that move bytes.
func (g *globalOptions) jobOptions() ([]pipeline.JobOption, *pipeline.Progress, error) {
	interval, err := reportInterval()
	if err != nil {
		return nil, nil, err
	}
	popts := []pipeline.ProgressOption{pipeline.ProgressInterval(interval)}
	if g.terminal != nil {
		popts = append(popts, pipeline.ProgressOnTerminal(g.terminal.status))
	}
	return []pipeline.JobOption{pipeline.WithHeartbeat(interval, g.activity.idle)}, pipeline.NewProgress(g.log, popts...), nil
}

// NewRootCmd is the clipbuild command tree.
func NewRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "clipbuild",
		Short: "Build a Dockerfile or index a registry image into a lazily mounted clip archive",
		Long: `clipbuild turns a Dockerfile (built with buildah) or an image already in a
registry into a clip archive: v2 is metadata only and reads its data from the
registry on demand; v1 is self-contained.

"clipbuild -f Dockerfile" with no subcommand means "clipbuild build -f Dockerfile .".`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.config, "config", "", "config file (YAML): the archive version, build registry, S3 settings and registry secret")
	root.AddCommand(
		NewBuildCmd(g),
		NewInspectCmd(g),
		NewMountCmd(g),
		NewVerifyCmd(g),
		NewPullCmd(g),
		NewRegistryCmd(g),
	)
	markUsageErrors(root)
	return root
}

// defaultToBuild makes `clipbuild -f Dockerfile` mean `clipbuild build -f
// Dockerfile`: when the first argument after the global flags is neither a
// subcommand nor help, the arguments go to build.
func defaultToBuild(root *cobra.Command, args []string) []string {
scan:
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--log-level" || a == "--log-format":
			i++
			continue
		case strings.HasPrefix(a, "--log-level=") || strings.HasPrefix(a, "--log-format="):
			continue
		case a == "-h" || a == "--help" || a == "help" || a == "completion" || strings.HasPrefix(a, "__complete"):
			return args
		case !strings.HasPrefix(a, "-"):
			for _, c := range root.Commands() {
				if c.Name() == a || c.HasAlias(a) {
					return args
				}
			}
		}
		break scan
	}
	if len(args) == 0 {
		return args
	}
	return append([]string{"build"}, args...)
}

// registryFlags are the registry flags shared by the commands that talk to
// registries, in buildah's spellings.
type registryFlags struct {
	creds     string
	authfile  string
	tlsVerify bool
}

func (r *registryFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.creds, "creds", "", "registry credentials USER[:PASS]")
	cmd.Flags().StringVar(&r.authfile, "authfile", os.Getenv("REGISTRY_AUTH_FILE"), "registry auth file ($REGISTRY_AUTH_FILE)")
	cmd.Flags().BoolVar(&r.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates (loopback registries may use HTTP)")
}

// options are the registry options; insecure allows plain HTTP to hosts
// that are not loopback.
func (r *registryFlags) options(insecure bool) registry.Options {
	return registry.Options{Creds: r.creds, AuthFile: r.authfile, TLSVerify: r.tlsVerify, Insecure: insecure}
}

// archiveFlags are the flags of the commands that write an archive.
type archiveFlags struct {
	output      string
	clipVersion string
	json        bool
}

func (a *archiveFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&a.output, "output", "o", "", "archive path or s3://BUCKET/KEY.clip (the default is ./<image name>.clip)")
	f.StringVar(&a.clipVersion, "clip-version", "", "archive version: auto, 1 or 2 ($CLIP_VERSION; the default is auto)")
	f.BoolVar(&a.json, "json", false, "print the result as JSON on stdout")
}

// outputPath is --output, or <name>.clip in the current directory; its
// directory must exist, so a run fails before any work rather than after.
// An s3://BUCKET/KEY output is only parsed here.
func (a *archiveFlags) outputPath(name string) (string, error) {
	output := a.output
	if output == "" {
		output = name + ".clip"
	}
	if registry.IsS3URL(output) {
		if _, err := registry.ParseS3Object(output); err != nil {
			return "", usagef("--output: %w", err)
		}
		return output, nil
	}
	if st, err := os.Stat(filepath.Dir(output)); err != nil || !st.IsDir() {
		return "", fmt.Errorf("output directory %s does not exist", filepath.Dir(output))
	}
	return output, nil
}

// printResult prints a run's result: JSON with --json, one line otherwise.
func (a *archiveFlags) printResult(g *globalOptions, res pipeline.Result) error {
	if a.json {
		return json.NewEncoder(g.stdout).Encode(res)
	}
	_, err := fmt.Fprintf(g.stdout, "%s: clip v%d, %d bytes (image layers %d bytes, %d uncompressed)\n", res.Archive, res.ClipVersion, res.ArchiveBytes, res.ImageBytes, res.UncompressedBytes)
	return err
}
