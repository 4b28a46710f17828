// Package events is the call-event schema shared by pbx (which publishes) and
// recorder (which turns events into CDRs), and the JetStream plumbing for it:
// the CALLS stream and a publisher that never loses an event while NATS is
// away. Events carry ids and times only; they never know a phone number.
package events
