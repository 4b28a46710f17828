// Package masking is the domain core of maskpbx: number normalisation,
// encryption and blind index of client numbers, client codes, the rule of who
// may reach whom, and redaction. It knows no SIP and no SQL.
package masking
