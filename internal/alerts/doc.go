// Package alerts raises alerts on drifting clients and unusual access: it
// reads CDRs and the audit log through storage, applies deterministic rules
// with configurable thresholds, publishes each alert on NATS (alerts.<rule>)
// and POSTs it, signed, to the configured webhooks. It knows no SIP and no
// HTTP routing; it never handles a phone number.
package alerts
