package ha1

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
)

// MD5 is the HA1 for digest algorithm MD5 (RFC 2617),
// hex(md5(user:realm:password)). The registrar stores HA1 instead of the
// password, so a database dump does not yield SIP passwords directly.
func MD5(username, realm, password string) string {
	sum := md5.Sum([]byte(username + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}

// SHA256 is the HA1 for digest algorithm SHA-256 (RFC 8760),
// hex(sha256(user:realm:password)), stored next to MD5's so phones may use
// either algorithm.
func SHA256(username, realm, password string) string {
	sum := sha256.Sum256([]byte(username + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}
