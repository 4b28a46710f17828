package masking

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/nyaruka/phonenumbers"
)

// ErrBadNumber says an input is not a phone number we can route or store;
// callers map it to a 4xx (SIP or HTTP) instead of treating it as a fault.
var ErrBadNumber = errors.New("masking: not a valid phone number")

// maxRawLen bounds what we hand to the parser: no real number, however
// formatted, is longer, and a bound keeps hostile input cheap.
const maxRawLen = 64

// Normalizer turns the many spellings of a phone number into one E.164
// string, so that the blind index and the assignment rules see one key per
// number.
type Normalizer struct {
	region string // ISO 3166-1 alpha-2, e.g. "RU"; "" = international only
}

// NewNormalizer returns a Normalizer that reads numbers written without '+'
// as national numbers of region (e.g. "RU"). With region "" only
// international input ("+<country code>...") is accepted, because a number
// without a country is ambiguous.
func NewNormalizer(region string) Normalizer {
	return Normalizer{region: strings.ToUpper(strings.TrimSpace(region))}
}

// ValidRegion reports whether region is one NewNormalizer can read national
// numbers of (an ISO 3166-1 alpha-2 code the number metadata knows, any
// case), or "" (international numbers only).
func ValidRegion(region string) bool {
	region = strings.ToUpper(strings.TrimSpace(region))
	return region == "" || phonenumbers.GetCountryCodeForRegion(region) != 0
}

// Normalize returns raw as E.164 (e.g. "+79161234567") or an error wrapping
// ErrBadNumber. The rule:
//
//   - Input with letters is refused: the parser would otherwise read vanity
//     letters as digits, and a SIP user with letters is never a number.
//   - Input starting with '+' is international; formatting (spaces, dashes,
//     dots, brackets) is ignored.
//   - Other input is national in the default region, with its national
//     prefix: with region RU, "8 916 123-45-67" is +79161234567.
//   - Trunks often send international numbers without '+' ("79161234567"):
//     if the national reading is not a valid number and the input is 10 or
//     more digits starting with the region's country code, it is read again
//     as international.
//
// The result must be a valid number by libphonenumber's metadata, not just
// one of a possible length.
func (n Normalizer) Normalize(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" || len(s) > maxRawLen {
		return "", fmt.Errorf("%w: empty or too long", ErrBadNumber)
	}
	if strings.IndexFunc(s, unicode.IsLetter) >= 0 {
		return "", fmt.Errorf("%w: contains letters", ErrBadNumber)
	}
	international := strings.HasPrefix(s, "+")
	if !international && n.region == "" {
		return "", fmt.Errorf("%w: no '+' and no default region", ErrBadNumber)
	}
	region := n.region
	if region == "" {
		region = phonenumbers.UNKNOWN_REGION
	}
	if e164, ok := parseValid(s, region); ok {
		return e164, nil
	}
	// libphonenumber usually strips a leading country code itself; retrying
	// explicitly keeps the documented rule independent of its heuristics.
	if !international {
		digits := onlyDigits(s)
		cc := fmt.Sprint(phonenumbers.GetCountryCodeForRegion(region))
		if len(digits) >= 10 && cc != "0" && strings.HasPrefix(digits, cc) {
			if e164, ok := parseValid("+"+digits, region); ok {
				return e164, nil
			}
		}
	}
	return "", ErrBadNumber
}

// parseValid parses s and reports its E.164 form if it is a valid number.
func parseValid(s, region string) (string, bool) {
	num, err := phonenumbers.Parse(s, region)
	if err != nil || !phonenumbers.IsPossibleNumber(num) || !phonenumbers.IsValidNumber(num) {
		return "", false
	}
	return phonenumbers.Format(num, phonenumbers.E164), true
}

// onlyDigits drops formatting so "7 (916) 123-45-67" counts as 11 digits.
func onlyDigits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
