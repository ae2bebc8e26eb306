//go:build vigil_chaos_nofence

package controller

// unsafeSkipFencing: a DELIBERATELY BROKEN build for the chaos checker's
// own test (internal/chaos, TestChaosCheckerCatchesUnfencedRecovery). A
// node that is not alive counts as offline at once, without a down proof,
// so its resources are recovered elsewhere while it may still run them.
// Never build a released binary with the vigil_chaos_nofence tag.
const unsafeSkipFencing = true
