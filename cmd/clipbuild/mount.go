package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/clipbuild/clipbuild/archive"
)

// NewMountCmd is `clipbuild mount`.
func NewMountCmd(g *globalOptions) *cobra.Command {
	var cacheDir, cacheSize, statsFile, spanDir, regHost string
	var allowOther, mapOwner, noPrefetch bool
	var prefetchWindow time.Duration
	var dense float64
	reg := registryFlags{}
	cmd := &cobra.Command{
		Use:   "mount ARCHIVE MOUNTPOINT",
		Short: "Mount an archive read-only with FUSE, in the foreground, until SIGINT or SIGTERM",
		Long: `Mount an archive read-only with FUSE, in the foreground, until SIGINT or SIGTERM.

As root the mount is open to every user. Any other user mounts through
fusermount3, needs read and write access to /dev/fuse, and alone can enter
the mount unless --allow-other is given (which /etc/fuse.conf must allow with
user_allow_other). Owners are shown as the archive records them, as host
ids: a file of uid 0 is root's, and one of uid 1000 is whoever has uid 1000
here. --map-owner shows what uid and gid 0 own as the caller's, for a
rootless container runtime whose container root is the caller.

A v2 archive built by clipbuild is read by byte range, a span (about 1 MiB)
at a time, into the span cache (--span-cache-dir). Once reads of a layer have
needed a share of its spans (--dense-threshold), the rest of it is fetched in
the background. The spans read in the first seconds of a mount
(--prefetch-window) are recorded in the span cache directory, under traces/,
by the image's manifest digest, and the next mount of the same image fetches
them in the background before they are asked for (unless --no-prefetch). It
also stores the small files those reads were of in the kernel's page cache,
with their directory entries, so that reading them again costs no request
to this process.

ARCHIVE may be an s3://BUCKET/KEY object: its metadata is read once and a
v1 archive's data by range, as files are read.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if _, err := g.loadConfig(); err != nil {
				return err
			}
			var opts []archive.MountOption
			if allowOther {
				if err := checkAllowOther(); err != nil {
					return fmt.Errorf("mounting %s: %w", args[1], err)
				}
				opts = append(opts, archive.WithAllowOther(true))
			}
			if mapOwner {
				opts = append(opts, archive.WithOwnerMap(uint32(os.Getuid()), uint32(os.Getgid())))
			}
			if err := checkFuseDevice(fuseDevice); err != nil {
				return fmt.Errorf("mounting %s: %w", args[1], err)
			}
			a, err := archive.OpenAny(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("mounting %s: %w", args[0], err)
			}
			// Plain HTTP to a registry that is not loopback only with
			// --tls-verify=false: never because the archive says so.
			sopts := []archive.StorageOption{archive.WithCacheDir(cacheDir), archive.WithRegistryOptions(reg.options(false)), archive.WithStorageLog(log),
				archive.WithSpanCacheDir(spanDir), archive.WithPrefetch(!noPrefetch), archive.WithRegistryHost(regHost)}
			if prefetchWindow <= 0 {
				return usagef("--prefetch-window %s: want a positive duration such as 30s", prefetchWindow)
			}
			if dense < 0 || dense > 1 {
				return usagef("--dense-threshold %g: want 0 (off) to 1", dense)
			}
			sopts = append(sopts, archive.WithPrefetchWindow(prefetchWindow), archive.WithDenseThreshold(dense))
			if cacheSize != "" {
				n, err := units.RAMInBytes(cacheSize)
				if err != nil || n <= 0 {
					return usagef("--cache-size %q: want a size such as 512m or 4g", cacheSize)
				}
				sopts = append(sopts, archive.WithSpanCacheSize(n))
			}
			s, err := archive.OpenStorage(a, sopts...)
			if err != nil {
				return err
			}
			stats := statsWriter(log, s, statsFile)
			defer stats(false)
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			defer signal.Stop(usr1)
			go func() {
				for range usr1 {
					stats(true)
				}
			}()
			m, err := archive.MountArchive(a, s, args[1], opts...)
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
	cmd.Flags().StringVar(&cacheSize, "cache-size", "", "bound of the span cache shared by all mounts, e.g. 4g (the default is the smaller of 2 GiB and 10% of its filesystem)")
	cmd.Flags().StringVar(&statsFile, "stats", "", "write read statistics (bytes and spans fetched, cache hits and misses, read latency percentiles) as JSON to FILE on exit and on SIGUSR1")
	cmd.Flags().StringVar(&spanDir, "span-cache-dir", "", "directory of the span cache and read traces of v2 archives read by range, shared by all mounts (the default is $XDG_CACHE_HOME/clipbuild/spans)")
	cmd.Flags().BoolVar(&noPrefetch, "no-prefetch", false, "do not fetch in the background the spans that the last mount of the same image read in its first seconds, nor put the files it read in the kernel's page cache")
	cmd.Flags().DurationVar(&prefetchWindow, "prefetch-window", archive.DefaultPrefetchWindow, "how long after it starts the mount records the spans it reads, for the next mount of the image to prefetch")
	cmd.Flags().Float64Var(&dense, "dense-threshold", archive.DefaultDenseThreshold, "share of a layer's spans that reads must have needed before the rest of the layer is fetched in the background (0 turns it off)")
	cmd.Flags().BoolVar(&allowOther, "allow-other", false, "let other users use the mount (always so as root; others need user_allow_other in /etc/fuse.conf)")
	cmd.Flags().BoolVar(&mapOwner, "map-owner", false, "show files of uid/gid 0 as the caller's (for rootless container runtimes)")
	cmd.Flags().StringVar(&regHost, "registry", "", "read a v2 archive's blobs from this registry HOST[:PORT] (another replica or a mirror of the same content), keeping the archive's repository and digests (the default is the registry the archive names)")
	reg.bind(cmd)
	return cmd
}

// statsWriter returns a func that writes s's read statistics to file or,
// without a file, logs them (at info when asked for with SIGUSR1, at debug
// on exit); it does nothing for storages that keep none (v1 archives,
// layers read whole).
func statsWriter(log *logrus.Entry, s archive.Storage, file string) func(asked bool) {
	return func(asked bool) {
		st, ok := archive.StatsOf(s)
		if !ok {
			return
		}
		if file == "" {
			b, _ := json.Marshal(st)
			if asked {
				log.Infof("mount statistics: %s", b)
			} else {
				log.Debugf("mount statistics: %s", b)
			}
			return
		}
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			log.Warnf("encoding mount statistics: %v", err)
			return
		}
		if err := archive.WriteFileAtomic(file, func(f *os.File) error {
			_, err := f.Write(append(b, '\n'))
			return err
		}); err != nil {
			log.Warnf("writing mount statistics: %v", err)
		}
	}
}

const (
	fuseDevice = "/dev/fuse"
	fuseConf   = "/etc/fuse.conf"
)

// checkFuseDevice opens the FUSE device as the mount will (fusermount3
// opens it as the calling user), so that a device this user may not use
// fails with what to do rather than with fusermount3's own message.
func checkFuseDevice(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err == nil {
		return f.Close()
	}
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s does not exist: load the fuse kernel module (modprobe fuse) or, in a container, pass the device in", dev)
	}
	if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("opening %s: %w", dev, err)
	}
	var mode string
	if fi, serr := os.Stat(dev); serr == nil {
		mode = fmt.Sprintf(" (mode %04o here)", fi.Mode().Perm())
	}
	return fmt.Errorf("cannot open %s%s as uid %d: make it readable and writable for this user (mode 0666, as udev sets it, or a group of this user's with rw access) or run as root", dev, mode, os.Getuid())
}

// checkAllowOther checks that this user may mount with allow_other:
// root always may, any other user only with user_allow_other in
// /etc/fuse.conf, which fusermount3 enforces.
func checkAllowOther() error {
	if os.Geteuid() == 0 {
		return nil
	}
	ok, err := fuseConfAllows(fuseConf)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("--allow-other needs a line user_allow_other in %s for users other than root", fuseConf)
	}
	return nil
}

// fuseConfAllows reports whether the fuse.conf at path has the
// user_allow_other option, alone on a line as fusermount3 wants it.
func fuseConfAllows(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "user_allow_other" {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	return false, nil
}
