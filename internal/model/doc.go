// Package model holds the cluster-wide types that every layer shares: nodes,
// their links, quorum options and timings. Validation lives here so that a bad
// configuration is refused the same way whether it comes from a file, the CLI
// or the API. It imports nothing else of Vigil's.
package model
