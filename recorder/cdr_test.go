package recorder

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func testLogger(t *testing.T) *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)) }

// testDB is a migrated database with one client, his manager anna and her
// partner bob.
type testDB struct {
	url               string
	store             *storage.Store // direct, for assertions
	client, anna, bob string
}

func newTestDB(t *testing.T) testDB {
	t.Helper()
	ctx := context.Background()
	db := testDB{url: testenv.Database(t)}
	if _, err := storage.Migrate(ctx, db.url); err != nil {
		t.Fatal(err)
	}
	db.store = openStore(t, db.url)
	mk := func(user string) string {
		m, err := db.store.CreateManager(ctx, storage.NewManager{Name: user, SIPUsername: user, HA1MD5: "x",
			HA1SHA256: "y", Role: storage.RoleManager}, "test")
		if err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	db.anna, db.bob = mk("anna"), mk("bob")
	c, err := db.store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: db.anna, PartnerIDs: []string{db.bob},
		NewCode: func() (string, error) { return "12345678", nil }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	db.client = c.ID
	return db
}

func openStore(t *testing.T, url string) *storage.Store {
	t.Helper()
	s, err := storage.Open(context.Background(), url, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// connectAs connects as one of the embedded server's users: the CDR
// writer runs as the recorder's, whose permissions must suffice for it.
func connectAs(t *testing.T, url, name string, auth bus.Auth) jetstream.JetStream {
	t.Helper()
	nc, js, err := bus.Connect(context.Background(), url, name, auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

// startWriter runs a CDR writer with short retry delays until the test ends,
// and checks that Run returns nil when its context ends.
func startWriter(t *testing.T, js jetstream.JetStream, store *storage.Store) (stop func()) {
	t.Helper()
	w := NewCDRWriter(js, store, testLogger(t))
	w.retryMin, w.retryMax = 50*time.Millisecond, 500*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newPublisher(t *testing.T, js jetstream.JetStream) *events.Publisher {
	t.Helper()
	p := events.NewPublisher(js, testLogger(t))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("publisher close: %v", err)
		}
	})
	return p
}

// answeredCall is an inbound call offered to anna, rung and answered by bob
// 7.5 s later, hung up by the client after 42.25 s of talk.
func answeredCall(db testDB, t0 time.Time) []events.Event {
	id := newID()
	ev := func(k events.Kind, at time.Duration, manager string) events.Event {
		return events.Event{ID: newID(), Kind: k, Time: t0.Add(at), CallID: id, Direction: events.Inbound,
			ClientID: db.client, ManagerID: manager}
	}
	end := ev(events.Ended, 49750*time.Millisecond, db.bob)
	end.Disposition, end.HangupSide, end.Recording = events.DispositionAnswered, events.HangupClient, "ok"
	return []events.Event{
		ev(events.Offered, 0, db.anna),
		ev(events.Ringing, time.Second, db.bob),
		ev(events.Answered, 7500*time.Millisecond, db.bob),
		end,
	}
}

func publishAll(t *testing.T, p *events.Publisher, evs ...events.Event) {
	t.Helper()
	for _, e := range evs {
		if err := p.Publish(context.Background(), e); err != nil {
			t.Fatalf("publish %s: %v", e.Kind, err)
		}
	}
}

// waitCDR polls until the call's CDR is ended (or the deadline passes).
func waitCDR(t *testing.T, s *storage.Store, callID string, within time.Duration) storage.CDR {
	t.Helper()
	var c storage.CDR
	var err error
	if !testenv.WaitFor(within, func() bool {
		c, err = s.CDR(context.Background(), callID)
		return err == nil && c.EndedAt != nil && c.OfferedAt != nil
	}) {
		t.Fatalf("CDR of %s not complete after %v: %+v %v", callID, within, c, err)
	}
	return c
}

func checkAnswered(t *testing.T, db testDB, c storage.CDR, call []events.Event) {
	t.Helper()
	at := func(i int) time.Time { return call[i].Time.Truncate(time.Microsecond) }
	if c.Direction != "inbound" || c.ClientID != db.client || c.ManagerID != db.bob ||
		c.OfferedAt == nil || !c.OfferedAt.Equal(at(0)) || c.RingingAt == nil || !c.RingingAt.Equal(at(1)) ||
		c.AnsweredAt == nil || !c.AnsweredAt.Equal(at(2)) || !c.EndedAt.Equal(at(3)) ||
		c.Duration != 42250*time.Millisecond || c.Disposition != "answered" || c.HangupSide != "client" ||
		c.Recording != "ok" {
		t.Fatalf("CDR %+v", c)
	}
}

// consumerIdle waits until the CDR consumer has every stored event acked or
// terminated, and returns its state.
func consumerIdle(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := context.Background()
	var info *jetstream.ConsumerInfo
	testenv.Eventually(t, 10*time.Second, func() bool {
		s, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Consumer(ctx, CDRConsumer)
		if err != nil {
			return false
		}
		info, err = c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 &&
			info.AckFloor.Stream == s.CachedInfo().State.LastSeq
	}, "the CDR consumer to catch up")
	return info
}

func rowCount(t *testing.T, url, table, callID string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE call_id = $1`, callID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func execSQL(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

func TestCDRWriter(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	ns, users := testenv.NATSServer(t)
	// The writer runs as the recorder's user; the test pokes the stream
	// (raw events, a deleted consumer) as the PBX's.
	writerJS := connectAs(t, ns.URL(), "recorder", users.RecorderAuth())
	js := connectAs(t, ns.URL(), "pbx", users.PBXAuth())
	pub := newPublisher(t, js)
	if _, err := events.OpenStream(ctx, writerJS, 1); err != nil { // as a recorder that starts first
		t.Fatal(err)
	}
	stopWriter := startWriter(t, writerJS, db.store)
	t0 := time.Now().UTC().Add(-time.Hour)
	parent := t

	call := answeredCall(db, t0)
	publishAll(t, pub, call...)
	first := waitCDR(t, db.store, call[0].CallID, 10*time.Second)
	checkAnswered(t, db, first, call)

	t.Run("republished events change nothing", func(t *testing.T) {
		// The same events again: the stream drops them by event id. The same
		// events under new message ids get past the stream's dedup, so the
		// writer sees them and its ledger must drop them.
		publishAll(t, pub, call...)
		for _, e := range call {
			if _, err := js.Publish(ctx, e.Subject(), mustJSON(t, e)); err != nil {
				t.Fatal(err)
			}
		}
		consumerIdle(t, js)
		again, err := db.store.CDR(ctx, call[0].CallID)
		if err != nil || !again.UpdatedAt.Equal(first.UpdatedAt) {
			t.Fatalf("row rewritten: %+v %v", again, err)
		}
		checkAnswered(t, db, again, call)
		if n := rowCount(t, db.url, "cdr_events", call[0].CallID); n != 4 {
			t.Fatalf("%d events applied", n)
		}
	})

	t.Run("redelivery of the whole stream changes nothing", func(t *testing.T) {
		// Forget the consumer's acks: a new cdr-writer consumer starts at the
		// first event and delivers everything once more.
		stopWriter()
		if err := js.DeleteConsumer(ctx, events.StreamName, CDRConsumer); err != nil {
			t.Fatal(err)
		}
		startWriter(parent, writerJS, db.store) // runs on for the subtests below
		// 8 events: 4, and the same 4 under new message ids.
		if info := consumerIdle(t, js); info.Delivered.Consumer < 8 {
			t.Fatalf("new consumer delivered %d events", info.Delivered.Consumer)
		}
		again, _ := db.store.CDR(ctx, call[0].CallID)
		if !again.UpdatedAt.Equal(first.UpdatedAt) || rowCount(t, db.url, "cdrs", call[0].CallID) != 1 {
			t.Fatalf("row rewritten: %+v", again)
		}
	})

	t.Run("out of order converges", func(t *testing.T) {
		c := answeredCall(db, t0)
		publishAll(t, pub, c[3], c[2], c[1])
		consumerIdle(t, js) // ended is applied before offered exists
		publishAll(t, pub, c[0])
		checkAnswered(t, db, waitCDR(t, db.store, c[0].CallID, 10*time.Second), c)
	})

	t.Run("missed call", func(t *testing.T) {
		c := answeredCall(db, t0)
		missed := []events.Event{c[0], c[1], c[3]}
		missed[1].ManagerID = db.anna
		missed[2].ManagerID, missed[2].Disposition, missed[2].Recording = db.anna, events.DispositionMissed, ""
		publishAll(t, pub, missed...)
		got := waitCDR(t, db.store, c[0].CallID, 10*time.Second)
		if got.Disposition != "missed" || got.AnsweredAt != nil || got.Duration != 0 || got.ManagerID != db.anna ||
			got.HangupSide != "client" || got.RingingAt == nil {
			t.Fatalf("missed call CDR %+v", got)
		}
	})

	t.Run("malformed and invalid events are dropped, not retried", func(t *testing.T) {
		bad := answeredCall(db, t0)[0]
		bad.CallID = "not-a-uuid"
		for _, data := range [][]byte{[]byte("{not json"), []byte(`{"event":1}`), mustJSON(t, bad),
			[]byte(`{"event_id":"x","event":"offered","call_id":"` + newID() + `","time":"yesterday"}`)} {
			if _, err := js.Publish(ctx, "calls."+newID()+".offered", data); err != nil {
				t.Fatal(err)
			}
		}
		c := answeredCall(db, t0)
		publishAll(t, pub, c...)
		checkAnswered(t, db, waitCDR(t, db.store, c[0].CallID, 10*time.Second), c)
		if info := consumerIdle(t, js); info.NumRedelivered != 0 {
			t.Fatalf("%d events redelivered", info.NumRedelivered)
		}
	})
}

func mustJSON(t *testing.T, e events.Event) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCDRWriterSurvivesDatabaseOutage publishes calls while Postgres cannot
// be reached, and while it answers with errors; every CDR appears once the
// database is back.
func TestCDRWriterSurvivesDatabaseOutage(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	proxy := newTCPProxy(t, db.url)
	writerStore := openStore(t, proxy.url)

	ns, users := testenv.NATSServer(t)
	writerJS := connectAs(t, ns.URL(), "recorder", users.RecorderAuth())
	js := connectAs(t, ns.URL(), "pbx", users.PBXAuth())
	pub := newPublisher(t, js)
	if _, err := events.OpenStream(ctx, writerJS, 1); err != nil { // as a recorder that starts first
		t.Fatal(err)
	}
	startWriter(t, writerJS, writerStore)
	t0 := time.Now().UTC()

	warmup := answeredCall(db, t0)
	publishAll(t, pub, warmup...)
	waitCDR(t, db.store, warmup[0].CallID, 10*time.Second)

	// outage runs publish while the database is broken, proves the writer
	// tried and failed, then repairs it and waits for the CDR.
	outage := func(t *testing.T, breakDB, repair func()) {
		before := redelivered(t, js)
		breakDB()
		c := answeredCall(db, t0)
		publishAll(t, pub, c...)
		testenv.Eventually(t, 10*time.Second, func() bool { return redelivered(t, js) >= before+4 }, "the writer to retry")
		if _, err := db.store.CDR(ctx, c[0].CallID); err == nil {
			t.Fatal("CDR written while the database was broken")
		}
		repair()
		// The retries come back in any order: the CDR is whole once all
		// four are applied, not as soon as it has an end.
		testenv.Eventually(t, 15*time.Second, func() bool { return rowCount(t, db.url, "cdr_events", c[0].CallID) >= 4 },
			"the four events to be applied")
		checkAnswered(t, db, waitCDR(t, db.store, c[0].CallID, time.Second), c)
		if n := rowCount(t, db.url, "cdr_events", c[0].CallID); n != 4 {
			t.Fatalf("%d events applied", n)
		}
	}
	t.Run("unreachable", func(t *testing.T) { outage(t, proxy.down, proxy.up) })
	t.Run("table gone", func(t *testing.T) {
		outage(t, func() { execSQL(t, db.url, `ALTER TABLE cdrs RENAME TO cdrs_away`) },
			func() { execSQL(t, db.url, `ALTER TABLE cdrs_away RENAME TO cdrs`) })
	})
}

// redelivered is how many deliveries of the CDR consumer were retries.
func redelivered(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	c, err := js.Consumer(context.Background(), events.StreamName, CDRConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The consumer sequence counts every delivery, the stream sequence each
	// event once (the stream has no gaps): the difference is redeliveries.
	return int(info.Delivered.Consumer - info.Delivered.Stream)
}

// TestCDRWriterSurvivesNATSRestart restarts the embedded NATS (same store,
// same port) twice: once between publishing and consuming, with events
// published while it is down, and once under a running writer.
func TestCDRWriterSurvivesNATSRestart(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	dir, port := t.TempDir(), testenv.FreePort(t, "127.0.0.1")
	users := bus.NewUsers()
	srv, err := bus.StartEmbedded(dir, "127.0.0.1", port, users)
	if err != nil {
		t.Fatal(err)
	}
	restart := func() {
		srv, err = bus.StartEmbedded(dir, "127.0.0.1", port, users)
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { srv.Shutdown() })
	natsURL := srv.URL()
	pubJS := connectAs(t, natsURL, "pbx", users.PBXAuth())
	if _, err := events.EnsureStream(ctx, pubJS, 1); err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, pubJS)
	t0 := time.Now().UTC()

	// Published before any writer runs, then NATS restarts: the stream on
	// disk must still hold them.
	before := answeredCall(db, t0)
	publishAll(t, pub, before...)
	srv.Shutdown()

	// Published while NATS is down: the publisher's outbox keeps them.
	during := answeredCall(db, t0)
	for _, e := range during {
		start := time.Now()
		publishAll(t, pub, e)
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Fatalf("publish blocked a call for %v", d)
		}
	}
	if pub.Queued() == 0 {
		t.Fatal("nothing queued while NATS was down")
	}
	restart()

	startWriter(t, connectAs(t, natsURL, "recorder", users.RecorderAuth()), db.store)
	checkAnswered(t, db, waitCDR(t, db.store, before[0].CallID, 15*time.Second), before)
	checkAnswered(t, db, waitCDR(t, db.store, during[0].CallID, 15*time.Second), during)

	// NATS restarts under the running writer; a call is published meanwhile.
	srv.Shutdown()
	after := answeredCall(db, t0)
	publishAll(t, pub, after...)
	restart()
	checkAnswered(t, db, waitCDR(t, db.store, after[0].CallID, 20*time.Second), after)

	s, err := pubJS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 12 {
		t.Fatalf("stream holds %d events, want 12 (no loss, no duplicate)", n)
	}
}

// tcpProxy stands between the writer and Postgres so a test can cut the
// network: down closes the listener and every connection, up listens again
// on the same port.
type tcpProxy struct {
	t      *testing.T
	target string
	addr   string
	url    string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newTCPProxy(t *testing.T, dbURL string) *tcpProxy {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, target: u.Host, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	u.Host = p.addr
	p.url = u.String()
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.ln != ln { // went down meanwhile
				p.mu.Unlock()
				c.Close()
				up.Close()
				return
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(c, up)
			go pipe(up, c)
		}
	}()
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy up: %v", err)
	}
	p.serve(ln)
}

// TestCDRWriterStopsWhenConnectionCloses: a reconnecting connection is a
// blip, a closed one is the end; Run must say so instead of spinning.
func TestCDRWriterStopsWhenConnectionCloses(t *testing.T) {
	ctx := context.Background()
	url := testenv.NATS(t)
	nc, js, err := bus.Connect(ctx, url, "recorder", bus.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	onlooker, look, err := bus.Connect(ctx, url, "onlooker", bus.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	defer onlooker.Close()
	w := NewCDRWriter(js, nil, testLogger(t))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, err := look.Consumer(ctx, events.StreamName, CDRConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting > 0
	}, "the writer to be consuming (a pull request waiting)")
	nc.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil on a closed connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the connection closed")
	}
}
