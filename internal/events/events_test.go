package events

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
)

func validEvent() Event {
	return Event{ID: newUUID(), Kind: Ended, Time: time.Now(), CallID: newUUID(), Direction: Inbound,
		ClientID: newUUID(), ManagerID: newUUID(), Disposition: DispositionAnswered, HangupSide: HangupClient, Recording: "ok"}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Event)
		ok     bool
	}{
		{"valid ended", func(*Event) {}, true},
		{"valid offered", func(e *Event) { e.Kind, e.Disposition, e.HangupSide = Offered, "", "" }, true},
		{"recording ready", func(e *Event) { e.Kind, e.Disposition, e.HangupSide = RecordingReady, "", "" }, true},
		{"outbound without people", func(e *Event) {
			e.Kind, e.Direction, e.ClientID, e.ManagerID, e.Disposition, e.HangupSide = Ringing, Outbound, "", "", "", ""
		}, true},
		{"no id", func(e *Event) { e.ID = "" }, false},
		{"unknown kind", func(e *Event) { e.Kind = "exploded" }, false},
		{"no time", func(e *Event) { e.Time = time.Time{} }, false},
		{"call id not a uuid", func(e *Event) { e.CallID = "abc.def" }, false},
		{"call id is a SIP Call-ID", func(e *Event) { e.CallID = "a84b4c76e66710@pc33.example.com" }, false},
		{"no direction", func(e *Event) { e.Direction = "" }, false},
		{"client id is a number", func(e *Event) { e.ClientID = "+79161234567" }, false},
		{"manager id", func(e *Event) { e.ManagerID = "bob" }, false},
		{"ended without disposition", func(e *Event) { e.Disposition = "" }, false},
		{"unknown disposition", func(e *Event) { e.Disposition = "maybe" }, false},
		{"disposition on answered", func(e *Event) { e.Kind, e.HangupSide = Answered, "" }, false},
		{"unknown hang-up side", func(e *Event) { e.HangupSide = "both" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := validEvent()
			tc.mutate(&e)
			err := e.Validate()
			if tc.ok && err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, js, err := bus.Connect(context.Background(), url, t.Name(), bus.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

func TestEnsureStream(t *testing.T) {
	ctx := context.Background()
	js := connect(t, testenv.NATS(t))
	for range 2 { // the second call finds it and keeps it
		s, err := EnsureStream(ctx, js, 1)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Name != "CALLS" || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "calls.>" ||
			cfg.Storage != jetstream.FileStorage || cfg.Duplicates != 2*time.Minute || cfg.MaxAge != 30*24*time.Hour {
			t.Fatalf("stream config %+v", cfg)
		}
	}
}

func TestPublish(t *testing.T) {
	ctx := context.Background()
	js := connect(t, testenv.NATS(t))
	stream, err := EnsureStream(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPublisher(js, zaptest.NewLogger(t))

	callID := newUUID()
	if err := p.Publish(ctx, Event{Kind: RecordingReady, CallID: callID, Direction: Outbound, Recording: "ok"}); err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "calls."+callID+".recording.ready")
	if err != nil {
		t.Fatal(err)
	}
	var got Event
	if err := json.Unmarshal(msg.Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID == "" || got.ID != msg.Header.Get(nats.MsgIdHdr) || got.Time.IsZero() || got.CallID != callID ||
		got.Kind != RecordingReady || got.Recording != "ok" {
		t.Fatalf("stored %+v, header %v", got, msg.Header)
	}
	for _, field := range []string{`"event_id"`, `"event":"recording.ready"`, `"time"`, `"call_id"`, `"direction":"outbound"`} {
		if !strings.Contains(string(msg.Data), field) {
			t.Fatalf("payload %s lacks %s", msg.Data, field)
		}
	}

	t.Run("same event id is stored once", func(t *testing.T) {
		before, _ := stream.Info(ctx)
		for range 3 {
			if err := p.Publish(ctx, got); err != nil {
				t.Fatal(err)
			}
		}
		after, _ := stream.Info(ctx)
		if after.State.Msgs != before.State.Msgs {
			t.Fatalf("duplicates stored: %d -> %d", before.State.Msgs, after.State.Msgs)
		}
	})
	t.Run("invalid event is refused", func(t *testing.T) {
		if err := p.Publish(ctx, Event{Kind: Offered, CallID: "x", Direction: Inbound}); !errors.Is(err, ErrInvalidEvent) {
			t.Fatalf("err = %v", err)
		}
	})
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, validEvent()); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

// TestOutboxSurvivesNATSRestart stops NATS between publishes: Publish must
// neither fail nor hold the call up, and every event must be stored exactly
// once after NATS is back.
func TestOutboxSurvivesNATSRestart(t *testing.T) {
	ctx := context.Background()
	n := startRestartable(t)
	js := n.js
	p := NewPublisher(js, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))

	callID := newUUID()
	ev := func(k Kind) Event {
		e := Event{Kind: k, CallID: callID, Direction: Inbound}
		if k == Ended {
			e.Disposition = DispositionMissed
		}
		return e
	}
	if err := p.Publish(ctx, ev(Offered)); err != nil {
		t.Fatal(err)
	}
	n.srv.Shutdown()
	for _, k := range []Kind{Ringing, Ended} {
		start := time.Now()
		if err := p.Publish(ctx, ev(k)); err != nil {
			t.Fatalf("publish %s while NATS is down: %v", k, err)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Fatalf("publish %s blocked for %v", k, d)
		}
	}
	if n := p.Queued(); n != 2 {
		t.Fatalf("queued %d, want 2", n)
	}

	t.Run("close with NATS down reports loss", func(t *testing.T) {
		lossy := NewPublisher(js, zap.NewNop())
		if err := lossy.Publish(ctx, ev(Ringing)); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if err := lossy.Close(cctx); !errors.Is(err, ErrUnflushed) {
			t.Fatalf("close: %v", err)
		}
	})

	n.start(t)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.Close(cctx); err != nil {
		t.Fatalf("close after NATS is back: %v", err)
	}
	stream, err := js.Stream(ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Fatalf("stream holds %d events, want 3", info.State.Msgs)
	}
	for _, k := range []Kind{Offered, Ringing, Ended} {
		if _, err := stream.GetLastMsgForSubject(ctx, "calls."+callID+"."+string(k)); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
}

// TestSpoolSurvivesCrash: events queued while NATS is down are on disk; the
// process dies (its retry loop stopped, nothing flushed, the last line half
// written); the next start's publisher, on the same spool, sends them all
// once NATS is back, and empties the file.
func TestSpoolSurvivesCrash(t *testing.T) {
	ctx := context.Background()
	spool := filepath.Join(t.TempDir(), "outbox.jsonl")
	n := startRestartable(t)
	js := n.js
	dead := NewPublisher(js, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err := dead.Spool(spool); err != nil {
		t.Fatal(err)
	}
	callID := newUUID()
	offered := Event{Kind: Offered, CallID: callID, Direction: Inbound}
	if err := dead.Publish(ctx, offered); err != nil { // NATS up: sent, not spooled
		t.Fatal(err)
	}
	n.srv.Shutdown()
	for _, e := range []Event{{Kind: Ringing, CallID: callID, Direction: Inbound},
		{Kind: Ended, CallID: callID, Direction: Inbound, Disposition: DispositionMissed, HangupSide: HangupClient}} {
		if err := dead.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// The crash: the retry loop is gone, nothing was flushed; the write in
	// flight was cut short.
	dead.stopLoop()
	<-dead.done
	f, err := os.OpenFile(spool, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"event_id":"cut-sh`)
	f.Close()

	n.start(t)
	next := NewPublisher(js, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err := next.Spool(spool); err != nil {
		t.Fatal(err)
	}
	if n := next.Queued(); n != 2 {
		t.Fatalf("the next start queued %d events from the spool, want 2", n)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := next.Close(cctx); err != nil {
		t.Fatalf("close after NATS is back: %v", err)
	}
	stream, err := js.Stream(ctx, StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []Kind{Offered, Ringing, Ended} {
		if _, err := stream.GetLastMsgForSubject(ctx, "calls."+callID+"."+string(k)); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	if info, err := os.Stat(spool); err != nil || info.Size() != 0 {
		t.Fatalf("spool after the flush: %v, %v: want empty", info, err)
	}
}

// restartable is an embedded NATS server with the CALLS stream that a test
// stops and starts again on the same port and store, and a connection to
// it that reconnects.
type restartable struct {
	dir   string
	port  int
	users bus.Users
	srv   *bus.Embedded
	js    jetstream.JetStream
}

func startRestartable(t *testing.T) *restartable {
	t.Helper()
	n := &restartable{dir: t.TempDir(), port: testenv.FreePort(t, "127.0.0.1"), users: bus.NewUsers()}
	n.start(t)
	n.js = connect(t, testenv.WithCredentials(n.srv.URL(), bus.UserPBX, n.users.PBX))
	if _, err := EnsureStream(context.Background(), n.js, 1); err != nil {
		t.Fatal(err)
	}
	return n
}

// start starts the server (again); it is shut down at the test's end.
func (n *restartable) start(t *testing.T) {
	t.Helper()
	srv, err := bus.StartEmbedded(n.dir, "127.0.0.1", n.port, n.users)
	if err != nil {
		t.Fatal(err)
	}
	n.srv = srv
	t.Cleanup(srv.Shutdown)
}
