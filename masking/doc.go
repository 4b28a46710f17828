// Package masking is the domain core of maskpbx: number normalisation,
// encryption and blind index of client numbers (SealedPhone), client codes,
// the rule of who may reach whom, and redaction. It knows no SIP, no SQL and
// no logger: storage keeps what it seals, pbx owns SIP digests, and
// internal/logging turns Redact into a log field.
package masking
