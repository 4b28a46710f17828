package masking

import "testing"

func TestNewClientCode(t *testing.T) {
	const n = 10_000
	seen := make(map[ClientCode]bool, n)
	dups := 0
	for range n {
		c, err := NewClientCode()
		if err != nil {
			t.Fatal(err)
		}
		if len(c) != 8 || c[0] == '0' || !ValidClientCode(string(c)) {
			t.Fatalf("NewClientCode() = %q, want 8 digits not starting with 0", c)
		}
		if seen[c] {
			dups++
		}
		seen[c] = true
	}
	// 10k draws from 9e7 codes collide about 0.56 times on average (birthday
	// bound), so storage retries on conflict; more than a few duplicates
	// means the generator lost entropy. P(dups > 6) is about 2e-6.
	if dups > 6 {
		t.Errorf("%d duplicate codes in %d, want at most 6", dups, n)
	}
}

func TestValidClientCode(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"48213907", true},
		{"123456", true},
		{"123456789012", true},
		{"012345", true},
		{"12345", false},
		{"1234567890123", false},
		{"", false},
		{"1234567a", false},
		{"+48213907", false},
		{"4821 3907", false},
		{"١٢٣٤٥٦٧", false}, // Arabic-Indic digits are not ASCII digits
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := ValidClientCode(tt.in); got != tt.want {
				t.Errorf("ValidClientCode(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
