// Package examples checks the CI jobs and the config file under
// examples/: that they parse, have the structure a user copies them for
// (a non-root build keeping the .clip and its --json result as artifacts),
// call clipbuild only with flags the real command defines, and that the
// config file loads with the values it documents.
package examples
