package pbx

import (
	"net/url"
	"testing"
)

func TestParseReplaces(t *testing.T) {
	for _, tc := range []struct {
		in                     string
		callID, toTag, fromTag string
		ok                     bool
	}{
		{url.QueryEscape("abc@h;to-tag=T1;from-tag=F1"), "abc@h", "T1", "F1", true},
		{"abc%3Bfrom-tag%3DF%3Bto-tag%3DT%3Bearly-only", "abc", "T", "F", true},
		{url.QueryEscape("abc;to-tag=T"), "abc", "T", "", false},
		{"%zz", "", "", "", false},
		{"", "", "", "", false},
	} {
		callID, toTag, fromTag, ok := parseReplaces(tc.in)
		if callID != tc.callID || toTag != tc.toTag || fromTag != tc.fromTag || ok != tc.ok {
			t.Errorf("parseReplaces(%q) = %q %q %q %v", tc.in, callID, toTag, fromTag, ok)
		}
	}
}

// A Replaces value comes from the network: no input makes the parser
// panic, and whatever it accepts has all three parts.
func FuzzParseReplaces(f *testing.F) {
	f.Add(url.QueryEscape("abc@h;to-tag=T1;from-tag=F1"))
	f.Add("%3B%3B=;to-tag")
	f.Fuzz(func(t *testing.T, s string) {
		callID, toTag, fromTag, ok := parseReplaces(s)
		if ok && (callID == "" || toTag == "" || fromTag == "") {
			t.Fatalf("accepted %q with a part missing", s)
		}
	})
}
