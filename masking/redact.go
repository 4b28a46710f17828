package masking

// Redact returns a form of a phone number safe for logs and error messages:
// "+79161234567" becomes "+7916***4567" (logging.Phone writes log fields
// with it). The first five and last four
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
