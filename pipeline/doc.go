// Package pipeline composes the stages into a run: a Pipeline runs Stages in
// order against a shared Job, records how long each took, runs one deferred
// cleanup at the end whatever happened, and chooses between the v2 and v1
// chains by wrapping them (Fallback(v2, v1)) rather than with modes inside
// stages. It owns the Result that --json prints.
package pipeline
