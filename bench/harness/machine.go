package harness

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// machine describes the host.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), LoadAvgStart: loadAvg()}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemBytes = kb * 1024
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadAvg is the 1-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// software records the versions of what is measured.
func software(repoDir string) Software {
	s := Software{
		Buildah: firstLine("buildah", "--version"),
		Go:      runtime.Version(),
		Gzip:    firstLine("gzip", "--version"),
	}
	if c := firstLine("git", "-C", repoDir, "rev-parse", "--short", "HEAD"); c != "" {
		s.Clipbuild = "commit " + c
		// Changes to the suite itself do not change what it measures.
		if dirty, _ := exec.Command("git", "-C", repoDir, "status", "--porcelain", "--untracked-files=no",
			"--", ".", ":!bench", ":!Makefile").Output(); len(dirty) > 0 {
			s.Clipbuild += " with uncommitted changes"
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/awslabs/soci-snapshotter":
				s.SOCI = d.Version
			case "github.com/containerd/stargz-snapshotter/estargz":
				s.Estargz = d.Version
			}
		}
	}
	return s
}

func firstLine(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		return ""
	}
	l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return l
}
