package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// exitUsage is the exit status of a command line that does not parse: an
// unknown flag, a bad flag value, a wrong number of arguments.
const exitUsage = 2

// usageError is a command line clipbuild cannot run. It exits 2, as
// buildah, skopeo and POSIX utilities do, so a CI job can tell a typo in
// its script from a failed build.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// ExitCode is exitUsage.
func (usageError) ExitCode() int { return exitUsage }

// exitCode is the exit status for a failed run: the status err carries
// (2 for a usage error, buildah's own when buildah failed), else 1.
func exitCode(err error) int {
	var ec exitCoder
	if errors.As(err, &ec) && ec.ExitCode() > 0 {
		return ec.ExitCode()
	}
	return 1
}

// usagef is a usageError with a formatted message.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// asUsage marks err, if any, as a usage error.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	var u usageError
	if errors.As(err, &u) {
		return err
	}
	return usageError{err}
}

// markUsageErrors makes flag parsing and argument count errors of cmd and
// all its subcommands usage errors.
func markUsageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return asUsage(err) })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error { return asUsage(args(c, a)) }
	}
	for _, c := range cmd.Commands() {
		markUsageErrors(c)
	}
}
