//go:build !vigil_chaos_nofence

package controller

// unsafeSkipFencing is false in every real build. Only the chaos checker's
// own test sets it (build tag vigil_chaos_nofence, see nofence_on.go) to
// prove that its never-twice checker catches a recovery without fencing.
const unsafeSkipFencing = false
