package events

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

const (
	// publishTimeout bounds one attempt, so Publish never holds a call up
	// for longer than this.
	publishTimeout = 2 * time.Second
	// outboxLimit bounds memory while NATS is away (about 200 bytes each).
	outboxLimit = 100_000
	minRetry    = 100 * time.Millisecond
	maxRetry    = 2 * time.Second
)

// pending is an event ready to send: marshalled once, resent unchanged, so
// every attempt carries the same Nats-Msg-Id.
type pending struct {
	id, callID, subject string
	kind                Kind
	data                []byte
}

// Publisher publishes call events to JetStream. When NATS is unreachable it
// keeps events in an in-memory outbox and a background goroutine retries
// them, oldest first, until they are stored; JetStream's duplicate window
// drops any copy that got through twice. It is safe for concurrent use.
//
// The outbox lives in this process unless Spool gives it a file: then a
// crash while NATS is down loses nothing, the next start sends what it held.
// Close flushes it on an orderly shutdown.
type Publisher struct {
	js     jetstream.JetStream
	logger *zap.Logger

	mu      sync.Mutex
	outbox  []pending
	spool   *os.File      // the outbox on disk, one event's JSON per line; nil: memory only
	emptied chan struct{} // closed when the outbox becomes empty; nil while it is
	closed  bool

	wake     chan struct{} // buffered(1): the outbox has something new
	stopLoop context.CancelFunc
	loopCtx  context.Context
	done     chan struct{} // closed when the retry goroutine has returned
}

// NewPublisher returns a publisher on js and starts its retry goroutine;
// Close stops it.
func NewPublisher(js jetstream.JetStream, logger *zap.Logger) *Publisher {
	if logger == nil {
		logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{
		js:       js,
		logger:   logger.Named("events"),
		wake:     make(chan struct{}, 1),
		loopCtx:  ctx,
		stopLoop: cancel,
		done:     make(chan struct{}),
	}
	go p.retryLoop()
	return p
}

// Publish sends e to calls.<call_id>.<kind>, filling in ID and Time when
// they are empty. It returns once JetStream stored the event or, if NATS is
// unreachable, once the event is queued for retry (nil in both cases); it
// blocks for at most about two seconds. It fails only for an invalid event,
// after Close, or when the outbox is full.
func (p *Publisher) Publish(ctx context.Context, e Event) error {
	if e.ID == "" {
		e.ID = newUUID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if err := e.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("events: marshal: %w", err)
	}
	m := pending{id: e.ID, callID: e.CallID, kind: e.Kind, subject: e.Subject(), data: data}

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	// Behind a non-empty outbox or on a dead connection a direct attempt
	// would only wait out its timeout (and overtake older events): queue.
	direct := len(p.outbox) == 0 && p.js.Conn().IsConnected()
	p.mu.Unlock()

	if direct {
		actx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := p.send(actx, m)
		cancel()
		if err == nil {
			return nil
		}
		p.logger.Warn("call event queued for retry", zap.String("event_id", m.id),
			zap.String("call_id", m.callID), zap.String("event", string(m.kind)), zap.Error(err))
	}
	return p.enqueue(m)
}

func (p *Publisher) send(ctx context.Context, m pending) error {
	msg := &nats.Msg{Subject: m.subject, Data: m.data, Header: nats.Header{}}
	_, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(m.id), jetstream.WithExpectStream(StreamName))
	return err
}

func (p *Publisher) enqueue(m pending) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if len(p.outbox) >= outboxLimit {
		p.logger.Error("call event dropped: outbox full", zap.String("event_id", m.id),
			zap.String("call_id", m.callID), zap.String("event", string(m.kind)))
		return ErrOutboxFull
	}
	if err := p.spoolAppend(m); err != nil {
		p.logger.Error("call event not spooled to disk: a crash before NATS is back loses it",
			zap.String("event_id", m.id), zap.String("call_id", m.callID), zap.Error(err))
	}
	if len(p.outbox) == 0 {
		p.emptied = make(chan struct{})
	}
	p.outbox = append(p.outbox, m)
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// retryLoop owns the head of the outbox: only it removes events, so the head
// it sends is the head it pops.
func (p *Publisher) retryLoop() {
	defer close(p.done)
	delay := minRetry
	failures := 0
	for {
		p.mu.Lock()
		var head pending
		ok := len(p.outbox) > 0
		if ok {
			head = p.outbox[0]
		}
		p.mu.Unlock()
		if !ok {
			select {
			case <-p.wake:
				continue
			case <-p.loopCtx.Done():
				return
			}
		}

		var err error
		if !p.js.Conn().IsConnected() {
			err = nats.ErrDisconnected
		} else {
			ctx, cancel := context.WithTimeout(p.loopCtx, publishTimeout)
			err = p.send(ctx, head)
			cancel()
		}
		if err == nil {
			p.pop()
			if failures > 0 {
				p.logger.Info("call events flowing again", zap.Int("failed_attempts", failures))
			}
			delay, failures = minRetry, 0
			continue
		}
		failures++
		if failures == 1 || failures%50 == 0 {
			p.logger.Warn("call event publish failing; retrying", zap.String("event_id", head.id),
				zap.String("call_id", head.callID), zap.Int("queued", p.Queued()),
				zap.Int("attempts", failures), zap.Error(err))
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-t.C:
		case <-p.loopCtx.Done():
			t.Stop()
			return
		}
		delay = min(2*delay, maxRetry)
	}
}

func (p *Publisher) pop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outbox[0] = pending{}
	p.outbox = p.outbox[1:]
	if len(p.outbox) == 0 {
		p.outbox = nil
		close(p.emptied)
		p.emptied = nil
		p.spoolEmpty()
	}
}

// Queued is the number of events waiting in the outbox.
func (p *Publisher) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.outbox)
}

// Close refuses new events, waits until the outbox is flushed to JetStream
// or ctx ends, and stops the retry goroutine. Events still queued when ctx
// ends are logged and reported with ErrUnflushed. It does not close the NATS
// connection, which belongs to the caller.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	emptied := p.emptied
	p.mu.Unlock()

	if emptied != nil {
		select {
		case <-emptied:
		case <-ctx.Done():
		}
	}
	p.stopLoop()
	<-p.done

	p.mu.Lock()
	lost := p.outbox
	p.outbox = nil
	p.mu.Unlock()
	spooled := p.spool != nil
	if spooled {
		_ = p.spool.Close()
	}
	for _, m := range lost {
		if spooled {
			p.logger.Warn("call event kept on disk for the next start", zap.String("event_id", m.id),
				zap.String("call_id", m.callID), zap.String("event", string(m.kind)))
			continue
		}
		p.logger.Error("call event lost at shutdown", zap.String("event_id", m.id),
			zap.String("call_id", m.callID), zap.String("event", string(m.kind)))
	}
	if len(lost) > 0 {
		return fmt.Errorf("%w: %d", ErrUnflushed, len(lost))
	}
	return nil
}
