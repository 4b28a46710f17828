package logging

import "strings"

// PhoneDigits is how many digits a run needs to be taken for a phone
// number: ports, status codes, durations and counts have fewer; a national
// number without its trunk prefix has more.
const PhoneDigits = 7

// scrubMark replaces a phone-like run.
const scrubMark = "[digits]"

// phoneSeparator reports whether c may stand between the digits of a number
// as people and switches write them: 8-916-314-15-92, +7 (916) 314.15.92.
func phoneSeparator(c byte) bool {
	return c == '-' || c == '.' || c == '(' || c == ')' || c == ' '
}

// maxSeparators is how many separators in a row a number may have
// ("+7 (916)" has two, "916 - 314" three); more end the run.
const maxSeparators = 3

// ScrubPhones replaces every phone-like run in s (PhoneDigits or more
// digits, possibly split by - . ( ) or spaces, with a leading +) with
// [digits]. It keeps dotted IPv4 addresses (four groups, each at most
// 255): a source address in our own log lines stays readable.
func ScrubPhones(s string) string { return scrub(s, true) }

// ScrubAll is ScrubPhones without the IPv4 exception, for library lines
// that quote a stranger's address next to his message.
func ScrubAll(s string) string { return scrub(s, false) }

func scrub(s string, keepIPv4 bool) string {
	if !hasPhoneDigits(s) {
		return s // the common case: nothing to copy
	}
	var b strings.Builder
	last := 0 // s[last:] is not written yet
	for i := 0; i < len(s); {
		if n := uuidAt(s, i); n > 0 {
			i += n // call, client and manager ids stay readable
			continue
		}
		if !isDigit(s[i]) {
			i++
			continue
		}
		start := i
		end, digits := phoneRun(s, i)
		i = end
		if digits < PhoneDigits || keepIPv4 && isIPv4(s[start:end]) {
			continue
		}
		if start > 0 && s[start-1] == '+' {
			start--
		}
		b.WriteString(s[last:start])
		b.WriteString(scrubMark)
		last = end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// phoneRun returns the end of the run of digits and separators that starts
// with the digit at s[i] and ends with a digit, and how many digits it has.
func phoneRun(s string, i int) (end, digits int) {
	end = i
	seps := 0
	for j := i; j < len(s); j++ {
		switch c := s[j]; {
		case isDigit(c):
			digits++
			seps = 0
			end = j + 1
		case phoneSeparator(c) && seps < maxSeparators:
			seps++
		default:
			return end, digits
		}
	}
	return end, digits
}

// hasPhoneDigits is a quick test that s holds at least PhoneDigits digits.
func hasPhoneDigits(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			if n++; n >= PhoneDigits {
				return true
			}
		}
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func isAlnum(c byte) bool { return isHex(c) || 'g' <= c && c <= 'z' || 'G' <= c && c <= 'Z' }

// uuidAt is the length of the UUID (8-4-4-4-12 hex digits) that starts at
// s[i] as a word of its own, or 0. Ids are no phone numbers, and their
// digit runs would otherwise be taken for some.
func uuidAt(s string, i int) int {
	const n = 36
	if i+n > len(s) || i > 0 && isAlnum(s[i-1]) || i+n < len(s) && isAlnum(s[i+n]) {
		return 0
	}
	for j := 0; j < n; j++ {
		c := s[i+j]
		if j == 8 || j == 13 || j == 18 || j == 23 {
			if c != '-' {
				return 0
			}
		} else if !isHex(c) {
			return 0
		}
	}
	return n
}

// isIPv4 reports whether run is exactly a dotted quad of octets 0-255.
func isIPv4(run string) bool {
	groups := strings.Split(run, ".")
	if len(groups) != 4 {
		return false
	}
	for _, g := range groups {
		if len(g) == 0 || len(g) > 3 {
			return false
		}
		n := 0
		for i := 0; i < len(g); i++ {
			if !isDigit(g[i]) {
				return false
			}
			n = n*10 + int(g[i]-'0')
		}
		if n > 255 {
			return false
		}
	}
	return true
}
