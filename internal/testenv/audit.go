package testenv

import "bytes"

// AuditKey is a fixed audit-chain key for tests' Stores
// (storage.WithAudit(testenv.AuditKey(), nil)).
func AuditKey() []byte { return bytes.Repeat([]byte{0x5a}, 32) }
