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

// CDRWriter turns call events into CDR rows. It takes the events in batches
// (whatever has arrived, up to batchMax) and applies each batch in one
// transaction; it acks the batch's events only after that committed. A
// database error sends them back for a later retry, so neither a NATS nor a
// Postgres outage loses a CDR, and storage's event ledger makes every
// redelivery harmless.
type CDRWriter struct {
	// Replicas are the CALLS stream's replicas should the writer have to
	// create it (a NATS cluster that lost it); 0 is 1.
	Replicas int

	js      jetstream.JetStream
	store   *storage.Store
	logger  *zap.Logger
	metrics cdrMetrics

	batchMax  int           // events applied in one transaction at most
	ackWait   time.Duration // how long JetStream waits for an ack before redelivering
	dbTimeout time.Duration // one batch's database work
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
		metrics:   newCDRMetrics(),
		batchMax:  500,
		ackWait:   30 * time.Second,
		dbTimeout: 10 * time.Second,
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
//
// Goroutines: the consumer's own goroutine hands each message to the
// callback, which passes it to this goroutine through in; this goroutine
// batches and writes. After stopping closes, the callback naks what it
// holds, so that it goes out again at once.
func (w *CDRWriter) consume(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// OpenStream, not EnsureStream: a recorder's NATS user may create the
	// stream a restarted server lost, never change the PBX's.
	if _, err := events.OpenStream(sctx, w.js, w.Replicas); err != nil {
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
		// A node holds up to four batches unacked (its pull buffer, the
		// hand-over channel, the batch being written); room for two nodes.
		MaxAckPending: 8 * w.batchMax,
	})
	if err != nil {
		return fmt.Errorf("recorder: cdr consumer: %w", err)
	}

	in := make(chan jetstream.Msg, w.batchMax)
	stopping := make(chan struct{})
	// The consume goroutine reports errors here; it keeps going through a
	// reconnect by itself, but not when the server forgot the consumer.
	lost := make(chan error, 1)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		select {
		case in <- msg:
		case <-stopping:
			w.nak(msg)
		}
	},
		jetstream.PullMaxMessages(2*w.batchMax),
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
	w.logger.Info("cdr writer consuming", zap.String("stream", events.StreamName), zap.String("consumer", CDRConsumer),
		zap.Int("batch_max", w.batchMax))

	batch := make([]jetstream.Msg, 0, w.batchMax)
	for err == nil {
		if err = ctx.Err(); err != nil { // before more messages, however many wait
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case err = <-lost:
		case <-cc.Closed():
			err = errors.New("consume ended")
		case msg := <-in:
			// Whatever else has arrived meanwhile joins the batch: under load
			// batches grow by themselves, and an idle writer waits for nothing.
			batch = append(batch[:0], msg)
		more:
			for len(batch) < w.batchMax {
				select {
				case msg := <-in:
					batch = append(batch, msg)
				default:
					break more
				}
			}
			w.write(ctx, batch)
		}
	}

	// A batch under way has finished (its database work does not depend on
	// ctx); events handed over but not written go back at once.
	close(stopping)
	cc.Stop()
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
		w.logger.Warn("cdr consumer did not stop in time")
	}
	for {
		select {
		case msg := <-in:
			w.nak(msg)
		default:
			return err
		}
	}
}

// nak sends an unwritten message back for redelivery now.
func (w *CDRWriter) nak(msg jetstream.Msg) {
	if err := msg.Nak(); err != nil {
		w.logger.Debug("nak", zap.Error(err)) // AckWait redelivers it anyway
	}
}

// cdrEvent is one message of a batch and the event it carries.
type cdrEvent struct {
	msg       jetstream.Msg
	seq       uint64 // stream sequence
	delivered uint64
	event     storage.CallEvent
}

// write applies one batch of messages. Decisions: undecodable or invalid ->
// Term (a retry cannot fix it); database error -> Nak with a growing delay;
// applied or already seen -> Ack, after the commit.
func (w *CDRWriter) write(ctx context.Context, msgs []jetstream.Msg) {
	batch := make([]cdrEvent, 0, len(msgs))
	var pending uint64
	for _, msg := range msgs {
		c := cdrEvent{msg: msg, delivered: 1}
		if md, err := msg.Metadata(); err == nil {
			c.seq, c.delivered, pending = md.Sequence.Stream, md.NumDelivered, md.NumPending
		}
		var e events.Event
		if err := json.Unmarshal(msg.Data(), &e); err != nil {
			w.logger.Error("malformed call event dropped", zap.Uint64("stream_seq", c.seq),
				zap.Int("bytes", len(msg.Data())), zap.String("reason", decodeProblem(err)))
			w.term(msg, "malformed call event")
			continue
		}
		c.event = callEvent(e)
		if err := c.event.Validate(); err != nil {
			w.logger.Error("invalid call event dropped", zap.Uint64("stream_seq", c.seq), zap.String("event_id", e.ID),
				zap.String("call_id", e.CallID), zap.String("event", string(e.Kind)), zap.Error(err))
			w.term(msg, "invalid call event")
			continue
		}
		batch = append(batch, c)
	}
	// The events after the batch's last one, the writer's own buffer
	// included: they were all undelivered when that one was delivered.
	w.metrics.backlog.Store(int64(pending))
	w.apply(ctx, batch)
}

// apply writes valid events in one transaction. When the database refuses
// the batch's data, each half is tried apart, so one event it cannot store
// holds up only itself.
func (w *CDRWriter) apply(ctx context.Context, batch []cdrEvent) {
	if len(batch) == 0 {
		return
	}
	evs := make([]storage.CallEvent, len(batch))
	for i, c := range batch {
		evs[i] = c.event
	}
	// A batch under way finishes its transaction even during shutdown, so
	// it can still ack; dbTimeout bounds it.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.dbTimeout)
	started := time.Now()
	applied, err := w.store.ApplyCallEvents(dctx, evs)
	cancel()
	if errors.Is(err, storage.ErrCallEventsRefused) && len(batch) > 1 {
		w.apply(ctx, batch[:len(batch)/2])
		w.apply(ctx, batch[len(batch)/2:])
		return
	}
	if err != nil {
		w.metrics.failedBatches.Inc()
		w.retryLater(batch, err)
		return
	}
	w.metrics.batchSeconds.Observe(time.Since(started).Seconds())
	w.metrics.batchEvents.Observe(float64(len(batch)))
	fresh := 0
	for i, c := range batch {
		if err := c.msg.Ack(); err != nil {
			// The rows are committed; a redelivery will find the event seen.
			w.logger.Debug("ack", zap.Uint64("stream_seq", c.seq), zap.Error(err))
		}
		if applied[i] {
			fresh++
		}
	}
	w.metrics.applied.Add(float64(fresh))
	w.metrics.duplicates.Add(float64(len(batch) - fresh))
	w.logger.Debug("call events applied", zap.Int("events", len(batch)), zap.Int("new", fresh),
		zap.Duration("took", time.Since(started)))
}

// retryLater naks every event of a batch that could not be written, each
// with the delay its delivery count calls for.
func (w *CDRWriter) retryLater(batch []cdrEvent, err error) {
	level := zap.DebugLevel
	var most uint64
	for _, c := range batch {
		most = max(most, c.delivered)
		if c.delivered == 1 || c.delivered%20 == 0 { // an outage retries every event many times
			level = zap.WarnLevel
		}
		if err := c.msg.NakWithDelay(w.redeliveryDelay(c.delivered)); err != nil {
			w.logger.Debug("nak", zap.Uint64("stream_seq", c.seq), zap.Error(err)) // AckWait redelivers it anyway
		}
	}
	w.logger.Log(level, "cdr write failed; events will be redelivered", zap.Int("events", len(batch)),
		zap.Uint64("first_stream_seq", batch[0].seq), zap.Uint64("delivered", most),
		zap.Duration("in", w.redeliveryDelay(most)), zap.Error(err))
}

func (w *CDRWriter) term(msg jetstream.Msg, reason string) {
	w.metrics.dropped.Inc()
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
		Via:         e.Via,
		Mobile:      e.Mobile,
		Node:        e.Node,
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
