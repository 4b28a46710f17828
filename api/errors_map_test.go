package api

import (
	"fmt"
	"net/http"
	"testing"
)

// The call errors a dialer returns, wrapped as they come, become the
// statuses and codes integrators rely on.
func TestCallErrorsMapped(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{ErrNotRegistered, http.StatusConflict, errNotReg.Code},
		{ErrTooManyCalls, http.StatusTooManyRequests, errTooMany.Code},
		{ErrNoTrunk, http.StatusServiceUnavailable, "no_trunk"},
		{ErrNoPhone, http.StatusConflict, "client_has_no_phone"},
		{ErrShuttingDown, http.StatusServiceUnavailable, "shutting_down"},
	} {
		got := asAPIError(fmt.Errorf("originate: %w", tc.err))
		if got == nil || got.Status != tc.status || got.Code != tc.code {
			t.Errorf("%v -> %+v, want %d %s", tc.err, got, tc.status, tc.code)
		}
	}
}
