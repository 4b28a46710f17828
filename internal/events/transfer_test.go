package events

import (
	"errors"
	"testing"
)

// transferred_from names another call by its uuid, or nothing.
func TestValidateTransferredFrom(t *testing.T) {
	e := validEvent()
	if e.TransferredFrom = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"; e.Validate() != nil {
		t.Fatalf("a valid transferred_from refused: %v", e.Validate())
	}
	for _, bad := range []string{e.CallID, "x"} {
		e.TransferredFrom = bad
		if err := e.Validate(); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("transferred_from %q: %v", bad, err)
		}
	}
}
