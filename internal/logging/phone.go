package logging

import (
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/masking"
)

// redacted is a number that only ever prints redacted, whatever the encoder.
type redacted string

func (r redacted) String() string   { return masking.Redact(string(r)) }
func (r redacted) GoString() string { return masking.Redact(string(r)) }

// Phone is the only way to put a phone number in a log line: the field writes
// the redacted form (masking.Redact), so a log never carries a client's
// number.
func Phone(key, number string) zap.Field {
	return zap.Stringer(key, redacted(number))
}
