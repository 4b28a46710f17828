package events

import "errors"

// ErrInvalidEvent means an event misses a field or has a value outside the
// schema; it is refused at the source so it never reaches the stream.
var ErrInvalidEvent = errors.New("events: invalid event")

// ErrClosed means Publish was called after Close.
var ErrClosed = errors.New("events: publisher closed")

// ErrOutboxFull means NATS has been away so long that the in-memory outbox
// reached its bound; the event was not accepted.
var ErrOutboxFull = errors.New("events: outbox full")

// ErrUnflushed means Close gave up before every queued event reached
// JetStream; the remaining events are lost (and logged).
var ErrUnflushed = errors.New("events: events left unpublished")
