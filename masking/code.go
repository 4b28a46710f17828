package masking

import (
	"crypto/rand"
	"fmt"
	"math/big"
)

// ClientCode is what a manager sees and dials instead of a client's number
// ("Ivanov #48213907"). It is random, never derived from the number, so
// knowing codes reveals nothing about numbers.
type ClientCode string

// codeSpan is how many 8-digit codes there are with a non-zero first digit;
// a leading zero could be dropped by phones and spreadsheets.
var codeSpan = big.NewInt(90_000_000)

// NewClientCode returns a random 8-digit code whose first digit is 1-9.
// Codes are not guaranteed unique (10k codes collide with probability ~0.4):
// storage must enforce uniqueness and draw again on conflict.
func NewClientCode() (ClientCode, error) {
	n, err := rand.Int(rand.Reader, codeSpan)
	if err != nil {
		return "", fmt.Errorf("masking: client code: %w", err)
	}
	return ClientCode(fmt.Sprintf("%d", n.Int64()+10_000_000)), nil
}

// ValidClientCode reports whether s can be a client code: 6 to 12 ASCII
// digits. The range is wider than what NewClientCode makes so codes can grow
// or be imported; it is checked before a dialled SIP user is looked up.
func ValidClientCode(s string) bool {
	if len(s) < 6 || len(s) > 12 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
