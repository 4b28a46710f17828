package masking

import "go.uber.org/zap"

// Redact returns a form of a phone number safe for logs and error messages:
// "+79161234567" becomes "+7916***4567". The first five and last four
// characters stay so an operator can tell numbers apart; the middle is always
// three stars, so the length is not shown either. A string too short to hide
// at least three characters becomes "***".
func Redact(e164 string) string {
	const head, tail, minHidden = 5, 4, 3
	r := []rune(e164)
	if len(r) < head+tail+minHidden {
		return "***"
	}
	return string(r[:head]) + "***" + string(r[len(r)-tail:])
}

// redacted is a number that only ever prints redacted, whatever the encoder.
type redacted string

func (r redacted) String() string   { return Redact(string(r)) }
func (r redacted) GoString() string { return Redact(string(r)) }

// Phone is the only way to put a phone number in a log line: the field writes
// the redacted form (see Redact), so a log never carries a client's number.
func Phone(key, number string) zap.Field {
	return zap.Stringer(key, redacted(number))
}
