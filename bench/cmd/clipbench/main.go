// Command clipbench is clipbuild's benchmark harness (`make bench`):
//
//	clipbench run --scale small|medium|large --clipbuild bin/clipbuild --dir bench
//	clipbench report --dir bench      re-render RESULTS.md from results-*.json
//	clipbench ztoc BLOB...            SOCI zTOCs of gzip layer blobs (a peer)
//	clipbench estargz BLOB...         eStargz conversion of them (a peer)
//	clipbench fetch-inflate URL...    GET each blob and gunzip it once (a baseline)
//
// The peers print a JSON summary on stdout; `run` runs them as separate
// processes so each has its own time and peak RSS.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/clipbuild/clipbuild/bench/harness"
	"github.com/clipbuild/clipbuild/bench/peers"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "report":
		fs := flag.NewFlagSet("report", flag.ExitOnError)
		dir := fs.String("dir", "bench", "directory with results-<scale>.json")
		_ = fs.Parse(os.Args[2:])
		err = harness.WriteReport(*dir)
	case "ztoc":
		err = peer(peers.Ztoc, os.Args[2:])
	case "estargz":
		err = peer(peers.Estargz, os.Args[2:])
	case "fetch-inflate":
		err = fetchInflate(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clipbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: clipbench run|report|ztoc|estargz|fetch-inflate ... (see the package doc)")
	os.Exit(2)
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	o := harness.Options{Log: os.Stderr}
	fs.StringVar(&o.Scale, "scale", "medium", "image scale: small, medium or large")
	fs.IntVar(&o.Runs, "runs", 3, "runs per measurement (at least 3)")
	fs.StringVar(&o.Clipbuild, "clipbuild", "bin/clipbuild", "the clipbuild binary")
	fs.StringVar(&o.Dir, "dir", "bench", "where RESULTS.md and results*.json are written")
	fs.StringVar(&o.Busybox, "busybox", "/bin/busybox", "a static busybox to put in the images")
	fs.StringVar(&o.Versitygw, "versitygw", "bin/versitygw", "the versitygw binary, the S3 gateway of the registry-on-S3 rows (`make deps` installs it)")
	fs.StringVar(&o.Command, "command", "", "the command to record (the default is this one)")
	fs.StringVar(&o.Version, "clipbuild-version", "", "clipbuild's version to record (the default is the commit of the checkout the binary is in, from git)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory")
	_ = fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Command == "" {
		o.Command = "clipbench run --scale " + o.Scale
	}
	var err error
	if o.Clipbuild, err = filepath.Abs(o.Clipbuild); err != nil {
		return err
	}
	if o.Versitygw, err = filepath.Abs(o.Versitygw); err != nil {
		return err
	}
	if o.Self, err = os.Executable(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := harness.Run(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted: stopped and cleaned up")
		}
		return err
	}
	if err := harness.Write(o.Dir, res); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s (suite: %.0fs)\n",
		filepath.Join(o.Dir, "RESULTS.md"), filepath.Join(o.Dir, "results.json"), res.WallSeconds)
	return nil
}

// peer runs one peer over the blobs and prints its output as JSON.
func peer(fn func([]string) (peers.Output, error), blobs []string) error {
	if len(blobs) == 0 {
		return errors.New("no blobs given")
	}
	out, err := fn(blobs)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// fetchInflate downloads and inflates each blob URL once and prints the
// bytes fetched as JSON.
func fetchInflate(urls []string) error {
	if len(urls) == 0 {
		return errors.New("no blob URLs given")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := harness.FetchInflate(ctx, urls)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(struct {
		FetchedBytes int64 `json:"fetchedBytes"`
	}{n})
}
