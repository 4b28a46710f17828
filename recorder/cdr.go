package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/storage"
)

// CDRConsumer is the durable JetStream consumer the CDR writer reads CALLS
// through; every recorder node shares it, so each event goes to one node.
const CDRConsumer = "cdr-writer"

// CDRWriter turns call events into CDR rows. It acks an event only after its
// row change committed; a database error sends the event back for a later
// retry, so neither a NATS nor a Postgres outage loses a CDR, and storage's
// event ledger makes every redelivery harmless.
type CDRWriter struct {
	js     jetstream.JetStream
	store  *storage.Store
	logger *zap.Logger

	ackWait   time.Duration // how long JetStream waits for an ack before redelivering
	dbTimeout time.Duration // one event's database work
	retryMin  time.Duration // first redelivery delay after a database error, and first setup retry
	retryMax  time.Duration // cap of both backoffs
}

// NewCDRWriter returns a writer that reads CALLS through js into store.
func NewCDRWriter(js jetstream.JetStream, store *storage.Store, logger *zap.Logger) *CDRWriter {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &CDRWriter{
		js:        js,
		store:     store,
		logger:    logger.Named("cdr"),
		ackWait:   30 * time.Second,
		dbTimeout: 5 * time.Second,
		retryMin:  250 * time.Millisecond,
		retryMax:  15 * time.Second,
	}
}

// Run consumes call events until ctx ends, then returns nil. It outlasts
// NATS restarts: with a connection that reconnects forever (bus.Connect) it
// resumes the durable consumer, and it re-creates the stream or consumer if
// a restarted server lost them. It fails only when the NATS connection is
// closed for good.
func (w *CDRWriter) Run(ctx context.Context) error {
	delay := w.retryMin
	for {
		started := time.Now()
		err := w.consume(ctx)
		if time.Since(started) > time.Minute { // it had been working: start the backoff over
			delay = w.retryMin
		}
		if ctx.Err() != nil {
			return nil
		}
		if w.js.Conn().IsClosed() {
			return fmt.Errorf("recorder: cdr writer: %w", nats.ErrConnectionClosed)
		}
		w.logger.Warn("cdr consumer stopped; restarting", zap.Duration("in", delay), zap.Error(err))
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
		delay = min(2*delay, w.retryMax)
	}
}

// consume sets up the stream and consumer and processes messages until ctx
// ends or the consumer can no longer deliver.
func (w *CDRWriter) consume(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := events.EnsureStream(sctx, w.js); err != nil {
		return err
	}
	cons, err := w.js.CreateOrUpdateConsumer(sctx, events.StreamName, jetstream.ConsumerConfig{
		Durable:       CDRConsumer,
		Description:   "CDR writer: one row per call in Postgres",
		FilterSubject: events.SubjectAll,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
	})
	if err != nil {
		return fmt.Errorf("recorder: cdr consumer: %w", err)
	}

	// The consume goroutine reports errors here; it keeps going through a
	// reconnect by itself, but not when the server forgot the consumer.
	lost := make(chan error, 1)
	cc, err := cons.Consume(func(msg jetstream.Msg) { w.handle(ctx, msg) },
		jetstream.PullMaxMessages(32),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			switch {
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
				errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrConnectionClosed):
				select {
				case lost <- err:
				default:
				}
			default:
				w.logger.Debug("cdr consumer", zap.Error(err))
			}
		}))
	if err != nil {
		return fmt.Errorf("recorder: cdr consume: %w", err)
	}
	w.logger.Info("cdr writer consuming", zap.String("stream", events.StreamName), zap.String("consumer", CDRConsumer))

	// Stop leaves unacked buffered messages to redelivery after AckWait; a
	// message being handled finishes first (its database work does not
	// depend on ctx), so Closed means no handler runs any more.
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case err = <-lost:
	case <-cc.Closed():
		err = errors.New("consume ended")
	}
	cc.Stop()
	select {
	case <-cc.Closed():
	case <-time.After(w.dbTimeout + 5*time.Second):
		w.logger.Warn("cdr consumer did not stop in time")
	}
	return err
}

// handle applies one event. Decisions: undecodable or invalid -> Term (a
// retry cannot fix it); database error -> Nak with a growing delay; applied
// or already seen -> Ack.
func (w *CDRWriter) handle(ctx context.Context, msg jetstream.Msg) {
	var seq uint64
	delivered := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		seq, delivered = md.Sequence.Stream, md.NumDelivered
	}

	var e events.Event
	if err := json.Unmarshal(msg.Data(), &e); err != nil {
		w.logger.Error("malformed call event dropped", zap.Uint64("stream_seq", seq),
			zap.Int("bytes", len(msg.Data())), zap.String("reason", decodeProblem(err)))
		w.term(msg, "malformed call event")
		return
	}
	log := w.logger.With(zap.Uint64("stream_seq", seq), zap.String("event_id", e.ID),
		zap.String("call_id", e.CallID), zap.String("event", string(e.Kind)))

	// A handler under way finishes its transaction even during shutdown, so
	// it can still ack; dbTimeout bounds it.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.dbTimeout)
	applied, err := w.store.ApplyCallEvent(dctx, callEvent(e))
	cancel()
	switch {
	case errors.Is(err, storage.ErrInvalidCallEvent):
		log.Error("invalid call event dropped", zap.Error(err))
		w.term(msg, "invalid call event")
	case err != nil:
		delay := w.redeliveryDelay(delivered)
		level := zap.DebugLevel
		if delivered == 1 || delivered%20 == 0 { // an outage retries every event many times
			level = zap.WarnLevel
		}
		log.Log(level, "cdr write failed; event will be redelivered", zap.Uint64("delivered", delivered),
			zap.Duration("in", delay), zap.Error(err))
		if err := msg.NakWithDelay(delay); err != nil {
			log.Debug("nak", zap.Error(err)) // AckWait redelivers it anyway
		}
	default:
		if err := msg.Ack(); err != nil {
			// The row is committed; a redelivery will find the event seen.
			log.Debug("ack", zap.Error(err))
		}
		log.Debug("call event applied", zap.Bool("new", applied))
	}
}

func (w *CDRWriter) term(msg jetstream.Msg, reason string) {
	if err := msg.TermWithReason(reason); err != nil {
		w.logger.Debug("term", zap.Error(err))
	}
}

// redeliveryDelay doubles from retryMin per delivery up to retryMax.
func (w *CDRWriter) redeliveryDelay(delivered uint64) time.Duration {
	d := w.retryMin
	for i := uint64(1); i < delivered && d < w.retryMax; i++ {
		d *= 2
	}
	return min(d, w.retryMax)
}

func callEvent(e events.Event) storage.CallEvent {
	return storage.CallEvent{
		EventID:     e.ID,
		Kind:        string(e.Kind),
		At:          e.Time,
		CallID:      e.CallID,
		Direction:   e.Direction,
		ClientID:    e.ClientID,
		ManagerID:   e.ManagerID,
		Disposition: e.Disposition,
		HangupSide:  e.HangupSide,
		Recording:   e.Recording,
	}
}

// decodeProblem describes a JSON error without quoting the payload, which
// came from the network and must not reach the log verbatim.
func decodeProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	default:
		return "undecodable field value"
	}
}
