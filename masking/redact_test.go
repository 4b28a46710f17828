package masking

import "testing"

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"russian mobile", "+79161234567", "+7916***4567"},
		{"uk", "+442079460958", "+4420***0958"},
		{"shortest shown", "+37251234567", "+3725***4567"},
		{"one too short", "+4930123456", "***"},
		{"short", "+7916", "***"},
		{"empty", "", "***"},
		{"raw input", "8 916 123-45-67", "8 916***5-67"},
		{"multibyte runes kept whole", "☎☎☎☎☎123☎☎☎☎", "☎☎☎☎☎***☎☎☎☎"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
