package pbx

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/maskpbx/maskpbx/internal/i18n"
)

// The display name a manager's phone shows: bidi overrides and line
// separators in a client's name never reach it, and a long name is cut
// before the #code, never the code.
func TestClientDisplayName(t *testing.T) {
	long := strings.Repeat("Очень длинное название компании ", 5)
	calling := func(client string) string { return "Calling " + client }
	for _, tc := range []struct {
		name               string
		wording            func(string) string
		client, code, want string
	}{
		{"plain", nil, "Acme", "12345678", "Acme #12345678"},
		{"outbound wording", calling, "Acme", "12345678", "Calling Acme #12345678"},
		{"bidi override", nil, "Acme\u202e87654321# evil", "12345678", "Acme87654321# evil #12345678"},
		{"line separator", nil, "Acme\u2028Line two\u2029", "12345678", "AcmeLine two #12345678"},
		{"zero-width and quotes", nil, "A\u200bc\"m\\e\u2066", "12345678", "Acme #12345678"},
		{"tabs and newlines", nil, "Acme\t\r\n  Ltd", "12345678", "Acme Ltd #12345678"},
		{"no name", nil, "", "12345678", "#12345678"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientDisplayName(tc.wording, tc.client, tc.code); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	// Each language's "Calling …" wording, and none: a long name is cut
	// before the code, never the code.
	wordings := map[string]func(string) string{"none": nil}
	for _, code := range i18n.Codes {
		l := i18n.Get(code)
		wordings[code] = func(client string) string { return l.T("phone.calling", "Client", client) }
	}
	for lang, wording := range wordings {
		got := sanitizeDisplayName(clientDisplayName(wording, long+"\u202e", "12345678"))
		prefix := "Очень"
		if wording != nil {
			prefix = strings.TrimSpace(wording(""))
		}
		if !strings.HasSuffix(got, "… #12345678") || !strings.Contains(got, prefix) || !strings.Contains(got, "Очень") ||
			utf8.RuneCountInString(got) > maxDisplayName || strings.ContainsRune(got, '\u202e') {
			t.Errorf("a long name with the %s wording became %q (%d runes)", lang, got, utf8.RuneCountInString(got))
		}
	}
	if got := clientDisplayName(wordings["ru"], "Acme", "12345678"); got != "Вызов: Acme #12345678" {
		t.Errorf("the Russian wording: %q", got)
	}
}

func FuzzClientDisplayName(f *testing.F) {
	f.Add("Acme\u202e", "12345678")
	f.Fuzz(func(t *testing.T, name, code string) {
		if !utf8.ValidString(code) || code == "" || len(code) > 12 || strings.ContainsFunc(code, func(r rune) bool { return r < '0' || r > '9' }) {
			return
		}
		got := sanitizeDisplayName(clientDisplayName(func(c string) string { return "Calling " + c }, name, code))
		if !strings.HasSuffix(got, "#"+code) || utf8.RuneCountInString(got) > maxDisplayName {
			t.Fatalf("%q -> %q", name, got)
		}
	})
}
