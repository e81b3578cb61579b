package registry

import (
	"context"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// conformanceVersion is the pinned OCI distribution-spec conformance suite;
// `make test` installs it as bin/conformance and passes its path in
// CLIPBUILD_CONFORMANCE_BIN.
const conformanceVersion = "v0.0.0-20260831232431-97274622c111"

// TestConformance runs the OCI distribution-spec conformance suite against
// the embedded registry over plain HTTP, with the features a scratch
// registry does not offer (sha512, referrers and subjects,
// non-distributable layers) disabled, and requires zero failures.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite skipped in -short mode")
	}
	bin := os.Getenv("CLIPBUILD_CONFORMANCE_BIN")
	if bin == "" {
		msg := "CLIPBUILD_CONFORMANCE_BIN not set: run `make test`, or GOBIN=$PWD/bin go install github.com/opencontainers/distribution-spec/conformance@" + conformanceVersion
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	RouteLogs(quiet) // 404s on HEAD are part of the suite
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := Start(ctx, "127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())

	results := t.TempDir()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+s.Addr,
		"OCI_TLS=disabled",
		"OCI_RESULTS_DIR="+results,
		"OCI_DATA_SHA512=false",
		"OCI_API_REFERRER=false",
		"OCI_DATA_SUBJECT=false",
		"OCI_DATA_SUBJECT_MISSING=false",
		"OCI_DATA_SUBJECT_LIST=false",
		"OCI_DATA_ARTIFACT_LIST=true",
		"OCI_DATA_NONDISTRIBUTABLE=false",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("conformance suite: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err != nil {
		t.Fatalf("conformance suite wrote no junit.xml: %v\n%s", err, out)
	}
	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Errors   int `xml:"errors,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(raw, &suites); err != nil {
		t.Fatalf("parsing junit.xml: %v", err)
	}
	var tests, failures, errors int
	for _, s := range suites.Suites {
		tests, failures, errors = tests+s.Tests, failures+s.Failures, errors+s.Errors
	}
	t.Logf("conformance: %d tests, %d failures, %d errors", tests, failures, errors)
	if tests == 0 {
		t.Fatalf("conformance ran no tests\n%s", out)
	}
	if failures != 0 || errors != 0 {
		t.Errorf("conformance: got %d failures and %d errors, want 0\n%s", failures, errors, out)
	}
}
