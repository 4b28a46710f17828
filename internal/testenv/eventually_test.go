package testenv

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// recordingTB is a testing.TB that records a Fatalf or Skipf instead of
// ending the goroutine, so the helpers' failure paths can be tested (the
// helper goes on after them, as it never does with a real T).
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper()                      {}
func (r *recordingTB) Fatalf(f string, args ...any) { r.fatal = fmt.Sprintf(f, args...) }
func (r *recordingTB) Skipf(f string, args ...any)  { r.skip = fmt.Sprintf(f, args...) }
func (r *recordingTB) Logf(string, ...any)          {}

func TestWaitFor(t *testing.T) {
	var n atomic.Int32
	start := time.Now()
	if !WaitFor(5*time.Second, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("a condition that came true was missed")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("three polls took %v", took)
	}
	start = time.Now()
	calls := 0
	if WaitFor(50*time.Millisecond, func() bool { calls++; return false }) {
		t.Fatal("a false condition held")
	}
	if took := time.Since(start); took < 50*time.Millisecond || calls < 2 {
		t.Errorf("gave up after %v and %d polls", took, calls)
	}
}

func TestEventually(t *testing.T) {
	r := &recordingTB{TB: t}
	Eventually(r, 30*time.Millisecond, func() bool { return false }, "the CDR of %s", "call-1")
	if r.fatal != "timed out after 30ms waiting for the CDR of call-1" {
		t.Errorf("Fatalf(%q)", r.fatal)
	}
	r = &recordingTB{TB: t}
	Eventually(r, 30*time.Millisecond, func() bool { return false }, "100% of the packets")
	if r.fatal != "timed out after 30ms waiting for 100% of the packets" {
		t.Errorf("a message without args is formatted: %q", r.fatal)
	}
	r = &recordingTB{TB: t}
	Eventually(r, time.Second, func() bool { return true }, "nothing")
	if r.fatal != "" {
		t.Errorf("a true condition failed: %q", r.fatal)
	}
}

func TestRequire(t *testing.T) {
	const missing = "maskpbx-no-such-tool"
	t.Setenv("CI", "")
	r := &recordingTB{TB: t}
	if p := Require(r, missing, "sh"); p == "" || r.skip != "" || r.fatal != "" {
		t.Errorf("the second alternative: %q, skip %q, fatal %q", p, r.skip, r.fatal)
	}
	r = &recordingTB{TB: t}
	if Require(r, missing); r.skip == "" || r.fatal != "" {
		t.Errorf("outside CI a missing tool skips: skip %q, fatal %q", r.skip, r.fatal)
	}
	r = &recordingTB{TB: t}
	if p := Have(r, missing); p != "" || r.fatal != "" {
		t.Errorf("outside CI a missing optional tool is left out: %q, fatal %q", p, r.fatal)
	}
	t.Setenv("CI", "true")
	for _, f := range []func(testing.TB, ...string) string{Require, Have} {
		r = &recordingTB{TB: t}
		if f(r, missing); r.fatal == "" {
			t.Error("in CI a missing tool does not fail the test")
		}
	}
}
