// Package api is maskpbx's provisioning REST API (SPEC section 4): managers,
// clients, assignments, reveal, health and metrics. It joins masking (numbers,
// keys) and storage; it never hands a phone number to anyone but a revealing
// admin, and it knows nothing of SIP.
package api
