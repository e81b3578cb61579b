package examples_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"github.com/clipbuild/clipbuild/pipeline"
	"github.com/clipbuild/clipbuild/test/testsupport"
)

var (
	repoRoot     string
	clipbuildBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := testsupport.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "examples:", err)
		return 1
	}
	repoRoot = root
	bin, cleanup, err := locateBinary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "examples:", err)
		return 1
	}
	defer cleanup()
	clipbuildBin = bin
	return m.Run()
}

// locateBinary returns the clipbuild whose --help the examples are checked
// against: $CLIPBUILD_BIN, else one built now from this tree (never a
// bin/clipbuild that may be older than the source).
func locateBinary() (string, func(), error) {
	if env := os.Getenv("CLIPBUILD_BIN"); env != "" {
		abs, err := filepath.Abs(env)
		if err != nil {
			return "", func() {}, err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", func() {}, fmt.Errorf("CLIPBUILD_BIN: %w", err)
		}
		return abs, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "clipbuild-examples-")
	if err != nil {
		return "", func() {}, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	bin := filepath.Join(dir, "clipbuild")
	cmd := exec.Command(goTool(), "build",
		"-tags", "containers_image_openpgp exclude_graphdriver_btrfs",
		"-o", bin, "./cmd/clipbuild")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", func() {}, fmt.Errorf("building clipbuild: %v\n%s", err, out)
	}
	return bin, cleanup, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func readExample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ghWorkflow is the part of a GitHub Actions workflow the test reads.
type ghWorkflow struct {
	On   yaml.Node        `yaml:"on"`
	Jobs map[string]ghJob `yaml:"jobs"`
}

type ghJob struct {
	RunsOn string            `yaml:"runs-on"`
	Env    map[string]string `yaml:"env"`
	Steps  []ghStep          `yaml:"steps"`
}

type ghStep struct {
	Name string            `yaml:"name"`
	Uses string            `yaml:"uses"`
	Run  string            `yaml:"run"`
	With map[string]string `yaml:"with"`
	If   string            `yaml:"if"`
}

// glJob is the part of a GitLab CI job the test reads.
type glJob struct {
	Image        string            `yaml:"image"`
	Variables    map[string]string `yaml:"variables"`
	BeforeScript []string          `yaml:"before_script"`
	Script       []string          `yaml:"script"`
	Artifacts    struct {
		Paths []string `yaml:"paths"`
	} `yaml:"artifacts"`
}

func loadWorkflow(t *testing.T) ghWorkflow {
	t.Helper()
	var w ghWorkflow
	if err := yaml.Unmarshal(readExample(t, "github-actions.yml"), &w); err != nil {
		t.Fatalf("parsing examples/github-actions.yml: %v", err)
	}
	return w
}

// loadGitLabJobs returns the jobs of the GitLab file: every top-level key
// that is a mapping with a script.
func loadGitLabJobs(t *testing.T) map[string]glJob {
	t.Helper()
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(readExample(t, "gitlab-ci.yml"), &top); err != nil {
		t.Fatalf("parsing examples/gitlab-ci.yml: %v", err)
	}
	jobs := map[string]glJob{}
	for name, n := range top {
		if n.Kind != yaml.MappingNode {
			continue
		}
		var j glJob
		if err := n.Decode(&j); err != nil {
			t.Fatalf("examples/gitlab-ci.yml: job %s: %v", name, err)
		}
		if len(j.Script) > 0 {
			jobs[name] = j
		}
	}
	return jobs
}

// invocation is one clipbuild command line found in a CI script.
type invocation struct {
	line    string   // the whole shell line
	before  []string // the words before clipbuild (sudo, runuser -u U --, ...)
	command []string // the subcommand path: [build], [registry serve]
	args    []string // flags and arguments, up to the first shell operator
	stdout  string   // the file stdout is redirected to, if any
	bg      bool     // run in the background (&)
}

// flag reports whether the invocation has flag (long or short spelling).
func (in invocation) flag(names ...string) bool {
	for _, a := range in.args {
		if slices.Contains(names, flagName(a)) {
			return true
		}
	}
	return false
}

// value is the value given to the first of names, or "".
func (in invocation) value(names ...string) string {
	for i, a := range in.args {
		name, val, hasVal := strings.Cut(a, "=")
		if !slices.Contains(names, name) {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(in.args) {
			return in.args[i+1]
		}
	}
	return ""
}

func flagName(a string) string {
	if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
		return ""
	}
	name, _, _ := strings.Cut(a, "=")
	return name
}

var (
	ghExpr    = regexp.MustCompile(`\$\{\{[^}]*\}\}`)
	shellVar  = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)
	operators = []string{"|", "||", "&&", ";", "&"}
)

// shellLines splits a script into logical lines: backslash continuations
// joined, GitHub ${{ }} expressions replaced by a word.
func shellLines(script string) []string {
	script = ghExpr.ReplaceAllString(script, "EXPR")
	script = strings.ReplaceAll(script, "\\\n", " ")
	return strings.Split(script, "\n")
}

// invocations finds every clipbuild command in script. vars expands
// $NAME and ${NAME} (the job's variables); quotes are dropped.
func invocations(t *testing.T, script string, vars map[string]string) []invocation {
	t.Helper()
	var out []invocation
	for _, line := range shellLines(script) {
		words := strings.Fields(line)
		for i := range words {
			words[i] = strings.Trim(shellVar.ReplaceAllStringFunc(words[i], func(m string) string {
				name := shellVar.FindStringSubmatch(m)[1]
				if v, ok := vars[name]; ok {
					return v
				}
				return m
			}), `"'`)
		}
		for i, w := range words {
			if filepath.Base(w) != "clipbuild" || i+1 >= len(words) {
				continue
			}
			next := words[i+1]
			if !strings.HasPrefix(next, "-") && !isCommand(t, []string{next}) {
				continue // a path such as install's target, not a command
			}
			in := invocation{line: line, before: words[:i]}
			rest := words[i+1:]
			for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") && isCommand(t, append(slices.Clone(in.command), rest[0])) {
				in.command = append(in.command, rest[0])
				rest = rest[1:]
			}
			if len(in.command) == 0 {
				in.command = []string{"build"} // clipbuild -f Dockerfile
			}
			for j := 0; j < len(rest); j++ {
				r := rest[j]
				switch {
				case r == ">" || r == "1>":
					if j+1 < len(rest) {
						in.stdout = rest[j+1]
						j++
					}
					continue
				case strings.HasPrefix(r, ">") && !strings.HasPrefix(r, ">&"):
					in.stdout = strings.TrimPrefix(r, ">")
					continue
				case r == "2>" || r == "2>>":
					j++
					continue
				case strings.HasPrefix(r, "2>"):
					continue
				case r == "&":
					in.bg = true
				}
				if slices.Contains(operators, r) || strings.HasSuffix(r, ";") {
					break
				}
				if in.stdout == "" {
					in.args = append(in.args, r)
				}
			}
			out = append(out, in)
		}
	}
	return out
}

// help is what `clipbuild ... --help` says a command takes.
type help struct {
	flags       map[string]bool // --long and -s spellings, global flags included
	subcommands map[string]bool
}

var (
	helpMu    sync.Mutex
	helpCache = map[string]help{}
	// helpFlag matches a flag line of cobra's help: "  -o, --output string  ...".
	helpFlag    = regexp.MustCompile(`^\s+(?:-([A-Za-z0-9]), )?--([A-Za-z0-9][A-Za-z0-9-]*)`)
	helpCommand = regexp.MustCompile(`^\s+([a-z][a-z0-9-]*)\s{2,}`)
)

// helpOf runs the real binary's --help for command and parses it.
func helpOf(t *testing.T, command []string) help {
	t.Helper()
	key := strings.Join(command, " ")
	helpMu.Lock()
	defer helpMu.Unlock()
	if h, ok := helpCache[key]; ok {
		return h
	}
	out, err := exec.Command(clipbuildBin, append(slices.Clone(command), "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("clipbuild %s --help: %v\n%s", key, err, out)
	}
	h := help{flags: map[string]bool{}, subcommands: map[string]bool{}}
	section := ""
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":") {
			section = line
			continue
		}
		switch section {
		case "Flags:", "Global Flags:":
			if m := helpFlag.FindStringSubmatch(line); m != nil {
				h.flags["--"+m[2]] = true
				if m[1] != "" {
					h.flags["-"+m[1]] = true
				}
			}
		case "Available Commands:":
			if m := helpCommand.FindStringSubmatch(line); m != nil {
				h.subcommands[m[1]] = true
			}
		}
	}
	if len(h.flags) == 0 {
		t.Fatalf("clipbuild %s --help lists no flags:\n%s", key, out)
	}
	helpCache[key] = h
	return h
}

// isCommand reports whether command is a command path clipbuild has.
func isCommand(t *testing.T, command []string) bool {
	t.Helper()
	return helpOf(t, command[:len(command)-1]).subcommands[command[len(command)-1]]
}

// unknownFlags are the flags of in that its command does not define.
func unknownFlags(t *testing.T, in invocation) []string {
	t.Helper()
	h := helpOf(t, in.command)
	var unknown []string
	for _, a := range in.args {
		if name := flagName(a); name != "" && !h.flags[name] {
			unknown = append(unknown, name)
		}
	}
	return unknown
}

// checkFlags fails for every flag of in that its command does not define.
func checkFlags(t *testing.T, file string, in invocation) {
	t.Helper()
	for _, name := range unknownFlags(t, in) {
		t.Errorf("%s: clipbuild %s has no flag %s (in %q)", file, strings.Join(in.command, " "), name, strings.TrimSpace(in.line))
	}
}

func isBuild(in invocation) bool { return slices.Equal(in.command, []string{"build"}) }

// checkArchiveBuild checks that a build invocation writes a .clip with -o
// and its --json result beside it as <archive>.json; it returns both names.
func checkArchiveBuild(t *testing.T, file string, in invocation) (clip, result string) {
	t.Helper()
	clip = in.value("-o", "--output")
	if !strings.HasSuffix(clip, ".clip") {
		t.Errorf("%s: %q: -o = %q, want a .clip path", file, strings.TrimSpace(in.line), clip)
	}
	if !in.flag("--json") {
		t.Errorf("%s: %q: no --json", file, strings.TrimSpace(in.line))
	}
	if got, want := in.stdout, clip+".json"; got != want {
		t.Errorf("%s: %q: stdout goes to %q, want %q", file, strings.TrimSpace(in.line), got, want)
	}
	return clip, in.stdout
}

// rootWrappers run a command as root or as another user.
var rootWrappers = []string{"sudo", "doas", "su", "runuser", "pkexec"}

func TestGitHubWorkflow(t *testing.T) {
	const file = "examples/github-actions.yml"
	w := loadWorkflow(t)
	var triggers map[string]any
	if err := w.On.Decode(&triggers); err != nil {
		t.Fatalf("%s: on: %v", file, err)
	}
	for _, want := range []string{"push", "workflow_dispatch"} {
		if _, ok := triggers[want]; !ok {
			t.Errorf("%s: on: has no %s", file, want)
		}
	}
	if len(w.Jobs) == 0 {
		t.Fatalf("%s: no jobs", file)
	}
	for name, job := range w.Jobs {
		t.Run(name, func(t *testing.T) {
			if job.RunsOn != "ubuntu-latest" {
				t.Errorf("%s: runs-on = %q, want ubuntu-latest", file, job.RunsOn)
			}
			if len(job.Steps) == 0 {
				t.Fatalf("%s: job %s has no steps", file, name)
			}
			checkGitHubJob(t, file, job)
		})
	}
}

func checkGitHubJob(t *testing.T, file string, job ghJob) {
	var (
		runs                                  []string
		uploads                               []ghStep
		setupGo, aptInstall, makeBuild, serve bool
		serveAddr                             string
		archives                              []string
		registries                            []string
	)
	for _, s := range job.Steps {
		switch {
		case strings.HasPrefix(s.Uses, "actions/setup-go@"):
			setupGo = true
		case strings.HasPrefix(s.Uses, "actions/upload-artifact@"):
			uploads = append(uploads, s)
		}
		if s.Run == "" {
			continue
		}
		runs = append(runs, s.Run)
		for _, line := range shellLines(s.Run) {
			f := strings.Fields(line)
			if slices.Contains(f, "apt-get") && slices.Contains(f, "install") {
				for _, pkg := range []string{"buildah", "fuse3", "uidmap"} {
					if !slices.Contains(f, pkg) {
						t.Errorf("%s: %q does not install %s", file, strings.TrimSpace(line), pkg)
					}
				}
				aptInstall = true
			}
			if slices.Contains(f, "make") && slices.Contains(f, "build") {
				makeBuild = true
			}
		}
		for _, in := range invocations(t, s.Run, job.Env) {
			t.Logf("step %q: clipbuild %s %s", s.Name, strings.Join(in.command, " "), strings.Join(in.args, " "))
			checkFlags(t, file, in)
			for _, w := range in.before {
				if slices.Contains(rootWrappers, w) {
					t.Errorf("%s: %q runs clipbuild through %s; the runner user is already non-root", file, strings.TrimSpace(in.line), w)
				}
			}
			switch {
			case slices.Equal(in.command, []string{"registry", "serve"}):
				serve = true
				serveAddr = in.value("--addr")
				if !in.bg {
					t.Errorf("%s: %q: the registry must run in the background (&)", file, strings.TrimSpace(in.line))
				}
				if in.value("--root") == "" {
					t.Errorf("%s: %q: no --root", file, strings.TrimSpace(in.line))
				}
			case isBuild(in):
				clip, result := checkArchiveBuild(t, file, in)
				archives = append(archives, clip, result)
				if r := in.value("--registry"); r != "" {
					registries = append(registries, r)
				}
			}
		}
	}
	for what, ok := range map[string]bool{
		"an apt-get install step": aptInstall, "an actions/setup-go step": setupGo,
		"a make build step": makeBuild, "a clipbuild registry serve step": serve,
	} {
		if !ok {
			t.Errorf("%s: no %s", file, what)
		}
	}
	if len(archives) == 0 {
		t.Fatalf("%s: no step runs clipbuild build", file)
	}
	if len(registries) == 0 {
		t.Errorf("%s: no clipbuild build uses --registry (a v2 build)", file)
	}
	for _, r := range registries {
		if host, _, _ := strings.Cut(r, "/"); serveAddr != "" && host != serveAddr {
			t.Errorf("%s: build --registry %s, but the registry serves on %s", file, r, serveAddr)
		}
	}
	if len(uploads) == 0 {
		t.Fatalf("%s: no actions/upload-artifact step", file)
	}
	var uploaded []string
	for _, u := range uploads {
		uploaded = append(uploaded, strings.Fields(u.With["path"])...)
	}
	for _, a := range archives {
		if !slices.Contains(uploaded, a) {
			t.Errorf("%s: upload-artifact paths %q do not include %s", file, uploaded, a)
		}
	}
}

func TestGitLabJob(t *testing.T) {
	const file = "examples/gitlab-ci.yml"
	jobs := loadGitLabJobs(t)
	if len(jobs) == 0 {
		t.Fatalf("%s: no job with a script", file)
	}
	for name, job := range jobs {
		t.Run(name, func(t *testing.T) {
			if job.Image != "debian:bookworm" {
				t.Errorf("%s: image = %q, want debian:bookworm", file, job.Image)
			}
			checkGitLabJob(t, file, job)
		})
	}
}

func checkGitLabJob(t *testing.T, file string, job glJob) {
	before := strings.Join(job.BeforeScript, "\n")
	script := strings.Join(job.Script, "\n")
	// The non-root user: created in before_script with useradd.
	user := ""
	for _, line := range shellLines(before) {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == "useradd" {
			user = strings.Trim(shellVar.ReplaceAllStringFunc(f[len(f)-1], func(m string) string {
				return job.Variables[shellVar.FindStringSubmatch(m)[1]]
			}), `"'`)
		}
		// Debian 12's useradd writes the subordinate ids itself; a
		// second line for the same user would overlap its range.
		if strings.Contains(line, "/etc/subuid") && (strings.Contains(line, ">>") || strings.Contains(line, "tee")) {
			t.Errorf("%s: %q adds to /etc/subuid, which useradd has already done", file, strings.TrimSpace(line))
		}
	}
	if user == "" || user == "root" {
		t.Fatalf("%s: before_script creates no non-root user with useradd (got %q)", file, user)
	}
	for _, in := range invocations(t, before, job.Variables) {
		checkFlags(t, file, in)
	}
	invs := invocations(t, script, job.Variables)
	var (
		archives  []string
		serve, v2 bool
	)
	for _, in := range invs {
		t.Logf("script: %s clipbuild %s %s", strings.Join(in.before, " "), strings.Join(in.command, " "), strings.Join(in.args, " "))
		checkFlags(t, file, in)
		if got := runsAs(in.before); got != user {
			t.Errorf("%s: %q runs clipbuild as %q, want %q (runuser -u %s -- or su %s -c)", file, strings.TrimSpace(in.line), got, user, user, user)
		}
		switch {
		case slices.Equal(in.command, []string{"registry", "serve"}):
			serve = true
			if !in.bg {
				t.Errorf("%s: %q: the registry must run in the background (&)", file, strings.TrimSpace(in.line))
			}
		case isBuild(in):
			clip, result := checkArchiveBuild(t, file, in)
			archives = append(archives, clip, result)
			v2 = v2 || in.value("--registry") != ""
		}
	}
	if len(archives) == 0 {
		t.Fatalf("%s: script has no clipbuild build", file)
	}
	if !serve || !v2 {
		t.Errorf("%s: script serves the embedded registry: %v, builds a v2 archive (--registry): %v; want both", file, serve, v2)
	}
	for _, a := range archives {
		if !slices.Contains(job.Artifacts.Paths, a) {
			t.Errorf("%s: artifacts.paths %q do not include %s", file, job.Artifacts.Paths, a)
		}
	}
}

// runsAs is the user that words (what precedes clipbuild on its line) run
// it as: the target of runuser -u or su, else "root" (the job's user).
func runsAs(words []string) string {
	user := "root"
	for i := 0; i < len(words); i++ {
		switch words[i] {
		case "runuser":
			for j := i + 1; j+1 < len(words); j++ {
				if words[j] == "-u" || words[j] == "--user" {
					user = words[j+1]
					break
				}
			}
		case "su":
			for j := i + 1; j < len(words); j++ {
				if !strings.HasPrefix(words[j], "-") {
					user = words[j]
					break
				}
			}
		}
	}
	return user
}

// TestInvocationParsing pins the parser the checks above rely on, so a
// flaw in it cannot make them pass vacuously.
func TestInvocationParsing(t *testing.T) {
	tests := []struct {
		script  string
		command []string
		args    []string
		stdout  string
		bg      bool
		before  []string
	}{
		{
			script:  "buildah unshare clipbuild build --isolation chroot \\\n  -t app:${{ github.sha }} -o app.clip --json > app.clip.json",
			command: []string{"build"}, args: []string{"--isolation", "chroot", "-t", "app:EXPR", "-o", "app.clip", "--json"},
			stdout: "app.clip.json", before: []string{"buildah", "unshare"},
		},
		{
			script:  `nohup bin/clipbuild registry serve --addr 127.0.0.1:5000 --root "$ROOT" > reg.log 2>&1 &`,
			command: []string{"registry", "serve"}, args: []string{"--addr", "127.0.0.1:5000", "--root", "/r"},
			stdout: "reg.log", bg: true, before: []string{"nohup"},
		},
		{
			script:  `runuser -u "$U" -- clipbuild -f Dockerfile --clip-version=1 && echo done`,
			command: []string{"build"}, args: []string{"-f", "Dockerfile", "--clip-version=1"},
			before: []string{"runuser", "-u", "builder", "--"},
		},
	}
	for _, tt := range tests {
		got := invocations(t, tt.script+"\ninstall -m 0755 /opt/clipbuild/bin/clipbuild /usr/local/bin/clipbuild", map[string]string{"ROOT": "/r", "U": "builder"})
		if len(got) != 1 {
			t.Fatalf("invocations(%q) found %d, want 1", tt.script, len(got))
		}
		in := got[0]
		if diff := cmp.Diff(
			[]any{tt.command, tt.args, tt.stdout, tt.bg, tt.before},
			[]any{in.command, in.args, in.stdout, in.bg, in.before}); diff != "" {
			t.Errorf("invocations(%q) mismatch (-want +got):\n%s", tt.script, diff)
		}
	}
	if got, want := runsAs([]string{"runuser", "-u", "builder", "--"}), "builder"; got != want {
		t.Errorf("runsAs(runuser -u builder --) = %q, want %q", got, want)
	}
	if got, want := runsAs([]string{"buildah", "unshare"}), "root"; got != want {
		t.Errorf("runsAs(buildah unshare) = %q, want %q", got, want)
	}
	// A flag clipbuild lacks is reported, one it has is not.
	for _, tt := range []struct {
		script string
		want   []string
	}{
		{"clipbuild build --no-such-flag -o app.clip --json -x", []string{"--no-such-flag", "-x"}},
		{"clipbuild registry serve --addr 127.0.0.1:0 --clip-version 2", []string{"--clip-version"}},
		{"clipbuild build -f Dockerfile -t a:1 --tls-verify=false --log-format json", nil},
	} {
		in := invocations(t, tt.script, nil)
		if len(in) != 1 {
			t.Fatalf("invocations(%q) found %d, want 1", tt.script, len(in))
		}
		if diff := cmp.Diff(tt.want, unknownFlags(t, in[0])); diff != "" {
			t.Errorf("unknownFlags(%q) mismatch (-want +got):\n%s", tt.script, diff)
		}
	}
	h := helpOf(t, []string{"build"})
	for _, want := range []string{"-o", "--output", "--json", "--registry", "--clip-version", "--isolation", "--log-level"} {
		if !h.flags[want] {
			t.Errorf("clipbuild build --help: no %s parsed; flags parsed: %v", want, h.flags)
		}
	}
	if h.flags["--no-such-flag"] {
		t.Errorf("clipbuild build --help: --no-such-flag parsed")
	}
}

// exampleConfig is what examples/clipbuild.yaml documents.
func exampleConfig() *pipeline.Config {
	c := &pipeline.Config{}
	c.ImageService.ClipVersion = "auto"
	c.ImageService.BuildRegistry = "127.0.0.1:5000/clipbuild"
	c.ImageService.BuildRegistryInsecure = false
	return c
}

func TestConfigFile(t *testing.T) {
	path := filepath.Join(repoRoot, "examples", "clipbuild.yaml")
	got, err := pipeline.LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig(examples/clipbuild.yaml): %v", err)
	}
	if diff := cmp.Diff(exampleConfig(), got); diff != "" {
		t.Errorf("LoadConfig(examples/clipbuild.yaml) mismatch (-want +got):\n%s", diff)
	}

	// Every key pipeline.Config knows is in the file, with a comment.
	var doc yaml.Node
	if err := yaml.Unmarshal(readExample(t, "clipbuild.yaml"), &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				key := prefix + k.Value
				documented[key] = strings.TrimSpace(k.HeadComment) != ""
				walk(v, key+".")
			}
		}
	}
	walk(&doc, "")
	for _, key := range configKeys(reflect.TypeOf(pipeline.Config{}), "") {
		ok, present := documented[key]
		switch {
		case !present:
			t.Errorf("examples/clipbuild.yaml: no %s", key)
		case !ok:
			t.Errorf("examples/clipbuild.yaml: %s has no comment", key)
		}
	}

	// The settings it yields for a build without flags or environment.
	t.Setenv("CLIP_VERSION", "")
	t.Setenv("CLIPBUILD_REGISTRY", "")
	s, err := pipeline.Resolve("", "", got)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := pipeline.Settings{Version: pipeline.VersionAuto, Registry: "127.0.0.1:5000/clipbuild", RegistryInsecure: false}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Resolve(examples/clipbuild.yaml) mismatch (-want +got):\n%s", diff)
	}
}

// configKeys lists the dotted YAML keys of the leaves of typ.
func configKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, prefix+name)
			keys = append(keys, configKeys(f.Type, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}
