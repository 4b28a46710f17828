package pbx

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The display name a manager's phone shows: bidi overrides and line
// separators in a client's name never reach it, and a long name is cut
// before the #code, never the code.
func TestClientDisplayName(t *testing.T) {
	long := strings.Repeat("Очень длинное название компании ", 5)
	for _, tc := range []struct {
		name, prefix, client, code, want string
	}{
		{"plain", "", "Acme", "12345678", "Acme #12345678"},
		{"outbound prefix", "Calling ", "Acme", "12345678", "Calling Acme #12345678"},
		{"bidi override", "", "Acme\u202e87654321# evil", "12345678", "Acme87654321# evil #12345678"},
		{"line separator", "", "Acme\u2028Line two\u2029", "12345678", "AcmeLine two #12345678"},
		{"zero-width and quotes", "", "A\u200bc\"m\\e\u2066", "12345678", "Acme #12345678"},
		{"tabs and newlines", "", "Acme\t\r\n  Ltd", "12345678", "Acme Ltd #12345678"},
		{"no name", "", "", "12345678", "#12345678"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientDisplayName(tc.prefix, tc.client, tc.code); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, prefix := range []string{"", "Calling "} {
		got := sanitizeDisplayName(clientDisplayName(prefix, long+"\u202e", "12345678"))
		if !strings.HasSuffix(got, "… #12345678") || !strings.HasPrefix(got, prefix+"Очень") ||
			utf8.RuneCountInString(got) > maxDisplayName || strings.ContainsRune(got, '\u202e') {
			t.Errorf("a long name with prefix %q became %q (%d runes)", prefix, got, utf8.RuneCountInString(got))
		}
	}
}

func FuzzClientDisplayName(f *testing.F) {
	f.Add("Acme\u202e", "12345678")
	f.Fuzz(func(t *testing.T, name, code string) {
		if !utf8.ValidString(code) || code == "" || len(code) > 12 || strings.ContainsFunc(code, func(r rune) bool { return r < '0' || r > '9' }) {
			return
		}
		got := sanitizeDisplayName(clientDisplayName("Calling ", name, code))
		if !strings.HasSuffix(got, "#"+code) || utf8.RuneCountInString(got) > maxDisplayName {
			t.Fatalf("%q -> %q", name, got)
		}
	})
}
