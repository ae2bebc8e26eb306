package lab

import "testing"

// Retry retries a step that fails with Fatal, and passes once it does not.
func TestRetryEndsAFailedTryNotTheTest(t *testing.T) {
	l := &Lab{t: t, core: &core{}}
	calls := 0
	l.Retry("flaky step", 3, func(v *Lab) {
		calls++
		if calls < 3 {
			v.t.Fatalf("try %d fails", calls)
		}
	})
	if calls != 3 {
		t.Fatalf("step ran %d times, want 3", calls)
	}
}
