package masking

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	const want = "+79161234567"
	tests := []struct {
		name   string
		region string
		raw    string
		want   string // "" means ErrBadNumber
	}{
		{"e164", "RU", "+79161234567", want},
		{"plus formatted", "RU", "+7 (916) 123 45 67", want},
		{"plus dashes and spaces around", "RU", "  +7-916-123-45-67 ", want},
		{"national 8 prefix spaced", "RU", "8 916 123-45-67", want},
		{"national 8 prefix bare", "RU", "89161234567", want},
		{"national without prefix", "RU", "9161234567", want},
		{"country code without plus", "RU", "79161234567", want},
		{"country code without plus formatted", "RU", "7 (916) 123-45-67", want},
		{"lower-case region", "ru", "8 916 123-45-67", want},
		{"moscow landline", "RU", "8 (495) 123-45-67", "+74951234567"},
		{"foreign number", "RU", "+44 20 7946 0958", "+442079460958"},
		{"no region e164", "", "+7 916 123 45 67", want},
		{"no region national refused", "", "89161234567", ""},
		{"no region bare digits refused", "", "79161234567", ""},
		{"empty", "RU", "", ""},
		{"blank", "RU", "   ", ""},
		{"garbage", "RU", "garbage", ""},
		{"letters after digits", "RU", "+7 916 CALL-ME-1", ""},
		{"vanity letters", "US", "1-800-FLOWERS", ""},
		{"cyrillic letters", "RU", "8 916 абв 45 67", ""},
		{"punctuation only", "RU", "+()-", ""},
		{"plus only", "RU", "+", ""},
		{"too short", "RU", "12345", ""},
		{"too short e164", "RU", "+7916", ""},
		{"too long", "RU", "+7 916 123 45 67 89 01", ""},
		{"unknown country code", "RU", "+999 123 4567", ""},
		{"very long input", "RU", strings.Repeat("7", 500), ""},
		{"sip uri is not a number", "RU", "sip:79161234567@trunk", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewNormalizer(tt.region).Normalize(tt.raw)
			if tt.want == "" {
				if !errors.Is(err, ErrBadNumber) {
					t.Fatalf("Normalize(%q) = %q, %v; want ErrBadNumber", tt.raw, got, err)
				}
				if got != "" {
					t.Errorf("Normalize(%q) returned %q along with an error", tt.raw, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
			}
		})
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"+79161234567", "8 916 123-45-67", "+7 (916) 123 45 67", "79161234567",
		"", "+", "garbage", "1-800-FLOWERS", "00", "810 44 20 7946 0958", "+7\x00916",
	} {
		f.Add(s)
	}
	n := NewNormalizer("RU")
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := n.Normalize(raw)
		if err != nil {
			if !errors.Is(err, ErrBadNumber) {
				t.Fatalf("Normalize(%q): error %v does not wrap ErrBadNumber", raw, err)
			}
			return
		}
		if !strings.HasPrefix(got, "+") || strings.Trim(got[1:], "0123456789") != "" {
			t.Fatalf("Normalize(%q) = %q, not E.164", raw, got)
		}
		if again, err := n.Normalize(got); err != nil || again != got {
			t.Fatalf("Normalize(%q) = %q, %v; want it unchanged", got, again, err)
		}
	})
}

func TestValidRegion(t *testing.T) {
	for region, ok := range map[string]bool{
		"": true, "RU": true, "ru": true, " de ": true, "US": true,
		"RUS": false, "XX": false, "7": false, "+7": false,
	} {
		if got := ValidRegion(region); got != ok {
			t.Errorf("ValidRegion(%q) = %v, want %v", region, got, ok)
		}
	}
}
