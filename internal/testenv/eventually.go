package testenv

import (
	"fmt"
	"testing"
	"time"
)

// pollInterval is the pause between two evaluations of a condition: short
// enough that a test waits little past the moment the condition holds, long
// enough that a condition that queries Postgres or HTTP does not hog the
// machine.
const pollInterval = 10 * time.Millisecond

// Eventually polls cond until it returns true and fails the test with msg
// (formatted with args, as by fmt.Sprintf) if it has not within timeout.
// cond runs on the caller's goroutine, so it may itself call t.Fatal; call
// Eventually from the test's goroutine (elsewhere use WaitFor).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	if WaitFor(timeout, cond) {
		return
	}
	if len(args) > 0 {
		msg = fmt.Sprintf(msg, args...)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, msg)
}

// WaitFor polls cond until it returns true or timeout passes, and says
// whether it held. It fails no test, so any goroutine may use it. cond is
// evaluated once more after the deadline, so a slow last evaluation is not
// lost.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	timer := time.NewTimer(pollInterval)
	defer timer.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		timer.Reset(pollInterval) // the pause runs from the end of cond
		<-timer.C
	}
}
