package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// argon2id parameters for new hashes (OWASP's first recommendation:
// 19 MiB, two passes, one lane). Stored hashes carry their own parameters,
// so raising these later leaves old hashes verifiable.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonKeyLen    = 32
	argonSaltLen   = 16
)

// Password length limits for web passwords.
const (
	MinPasswordLen = 10
	maxPasswordLen = 256
)

var (
	errBadHash = errors.New("console: unrecognised password hash")
	b64        = base64.RawStdEncoding
)

// HashPassword hashes a web password with argon2id into the PHC string
// format ($argon2id$v=19$m=...,t=...,p=...$salt$key).
func HashPassword(password string) (string, error) {
	if id, _ := passwordProblem(password); id != "" {
		return "", fmt.Errorf("console: password refused by the policy (%s)", id)
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// passwordProblem is the policy for a new web password: the catalog
// message (with its arguments) that says what is wrong, or "" if nothing.
func passwordProblem(p string) (id string, args []any) {
	switch {
	case len(p) < MinPasswordLen:
		return "password.too_short", []any{"Min", MinPasswordLen}
	case len(p) > maxPasswordLen:
		return "password.too_long", []any{"Max", maxPasswordLen}
	}
	return "", nil
}

// VerifyPassword reports whether password matches a stored hash: argon2id
// as HashPassword writes it, or bcrypt ($2a$, $2b$, $2y$) from an import.
func VerifyPassword(hash, password string) (bool, error) {
	if len(password) > maxPasswordLen {
		return false, nil
	}
	if strings.HasPrefix(hash, "$2") {
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errBadHash
	}
	var mem, iter uint32
	var threads uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &iter, &threads); err != nil ||
		mem == 0 || mem > 1<<20 || iter == 0 || iter > 16 || threads == 0 {
		return false, errBadHash
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 {
		return false, errBadHash
	}
	got := argon2.IDKey([]byte(password), salt, iter, mem, threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummyHash is verified against when the account does not exist, so an
// unknown username takes as long to refuse as a wrong password.
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("no such account, no such password")
	return h
})
