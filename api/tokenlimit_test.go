package api

import (
	"strconv"
	"testing"
	"time"
)

// Refused tokens from ever new addresses never grow the table past its
// bound; once their window has passed they make room again.
func TestTokenFailuresBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	f := newTokenFailures(func() time.Time { return now })
	for i := range tokenSourcesMax + 1000 {
		f.fail("src-" + strconv.Itoa(i))
	}
	if n := len(f.bySource); n != tokenSourcesMax {
		t.Fatalf("%d sources tracked, want the bound %d", n, tokenSourcesMax)
	}
	now = now.Add(tokenFailWindow + time.Second)
	f.fail("late")
	if _, ok := f.bySource["late"]; !ok || len(f.bySource) != 1 {
		t.Fatalf("after the window: %d tracked, late tracked %v; want only the new one", len(f.bySource), ok)
	}
	for range tokenFailLimit {
		f.fail("late")
	}
	if !f.blocked("late") {
		t.Fatal("a source over the limit is not blocked")
	}
}
