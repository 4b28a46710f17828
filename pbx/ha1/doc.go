// Package ha1 computes the SIP digest HA1 that the registrar (package pbx)
// verifies against and that storage keeps instead of a SIP password:
// hex(H(user:realm:password)) per digest algorithm. It is a leaf of pbx so
// that the HTTP API and the console, which set SIP passwords, can compute
// it without importing the SIP stack.
package ha1
