package masking

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
)

// HA1MD5 is the SIP digest HA1 for MD5, hex(md5(user:realm:password)). The
// registrar stores HA1 instead of the password, so a database dump does not
// yield SIP passwords directly.
func HA1MD5(username, realm, password string) string {
	sum := md5.Sum([]byte(username + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}

// HA1SHA256 is the SIP digest HA1 for SHA-256 (RFC 8760),
// hex(sha256(user:realm:password)), stored next to HA1MD5 so phones may use
// either algorithm.
func HA1SHA256(username, realm, password string) string {
	sum := sha256.Sum256([]byte(username + ":" + realm + ":" + password))
	return hex.EncodeToString(sum[:])
}
