// Package registry is the embedded scratch registry and the registry-client
// helpers (references, credentials, TLS) the v2 path uses.
package registry
