package pbx

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// openStore migrates the database at url and opens it.
func openStore(t testing.TB, ctx context.Context, url string) *storage.Store {
	t.Helper()
	if _, err := storage.Migrate(ctx, url); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	store, err := storage.Open(ctx, url, storage.WithAudit(testenv.AuditKey(), nil))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(store.Close)
	return store
}

// runCache loads a routing cache and runs it until the test ends.
func runCache(t *testing.T, c *RouteCache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	if err := c.Load(ctx); err != nil {
		t.Fatalf("load: %v", err)
	}
	go func() { defer close(done); _ = c.Run(ctx) }()
}

// outageEnv is what a routing cache test with Postgres stopped needs: a
// Postgres cluster of its own, keys, NATS and the registrations.
type outageEnv struct {
	pg    *testenv.PostgresCluster
	store *storage.Store
	keys  *masking.Keyring
	js    jetstream.JetStream
	regs  *Registrations
}

func newOutageEnv(t *testing.T, ctx context.Context) outageEnv {
	t.Helper()
	e := outageEnv{pg: testenv.OwnPostgres(t)}
	e.store = openStore(t, ctx, e.pg.URL)
	var err error
	if e.keys, err = masking.NewKeyring(randomKey(t), randomKey(t)); err != nil {
		t.Fatal(err)
	}
	e.js = runNATS(t)
	if e.regs, err = openRegistrations(t, ctx, e.js, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	return e
}

// person makes someone of the team "sales" with a registered phone.
func (e outageEnv) person(t *testing.T, ctx context.Context, user, role string) storage.Manager {
	t.Helper()
	m, err := e.store.CreateManager(ctx, storage.NewManager{Name: "M", SIPUsername: user, HA1MD5: "x", HA1SHA256: "x",
		Team: "sales", Role: role}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.regs.Put(ctx, Registration{ManagerID: m.ID, Username: user, Contact: "sip:" + user + "@127.0.0.3:5060",
		Source: "127.0.0.3:5060", Transport: "UDP", ExpiresAt: time.Now().Add(time.Hour), CallID: "reg-" + user, CSeq: 1}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRouteCacheOutage: two nodes' caches follow a change made through one
// of them; with Postgres stopped a known client still routes to his
// manager, a dismissal heard from the bus cuts the manager off without a
// read (and a forged "active" does not bring him back), a new caller gets
// a client and keeps it, and his row is written when Postgres is back.
func TestRouteCacheOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	e := newOutageEnv(t, ctx)
	pg, store, keys, js, regs := e.pg, e.store, e.keys, e.js, e.regs
	anna, bob := e.person(t, ctx, "anna", storage.RoleManager), e.person(t, ctx, "bob", storage.RoleManager)
	const acmeNumber = "+79161234567"
	phone, err := keys.Seal(acmeNumber)
	if err != nil {
		t.Fatal(err)
	}
	acme, err := store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: anna.ID, PartnerIDs: []string{bob.ID},
		Phones:  []masking.SealedPhone{phone},
		NewCode: func() (string, error) { return "12345678", nil }}, "test")
	if err != nil {
		t.Fatal(err)
	}

	nodeA := NewRouteCache(store, keys, js.Conn(), zaptest.NewLogger(t).Named("a"))
	nodeB := NewRouteCache(store, keys, js.Conn(), zaptest.NewLogger(t).Named("b"))
	runCache(t, nodeA)
	runCache(t, nodeB)
	router := &Router{Store: store, Keys: keys, Numbers: masking.NewNormalizer("RU"), Regs: regs, Cache: nodeB}

	// A reassignment through node A reaches node B's cache.
	if _, err := store.Reassign(ctx, acme.ID, bob.ID, []string{anna.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	nodeA.ClientChanged(acme.ID)
	testenv.Eventually(t, 10*time.Second, func() bool {
		c, ok := nodeB.caller(keys.BlindIndex(acmeNumber), "")
		return ok && c.ManagerID == bob.ID
	}, "node B's cache follows the reassignment made through node A")

	pg.Stop()
	route, err := router.InboundRoute(ctx, "89161234567")
	if err != nil {
		t.Fatalf("route with Postgres stopped: %v", err)
	}
	if route.ClientID != acme.ID || route.ClientCode != "12345678" || len(route.Steps) == 0 || !slices.Equal(route.Steps[0], []string{bob.ID}) {
		t.Fatalf("route with Postgres stopped %+v, want Acme ringing bob first", route)
	}
	if !nodeB.DatabaseDown() {
		t.Error("node B does not say it routes from the cache")
	}

	// Bob is dismissed (through a node whose database answers): the event
	// alone cuts him off here, with no read.
	nodeA.ManagerChanged(bob.ID, storage.StatusDismissed)
	testenv.Eventually(t, 10*time.Second, func() bool {
		route, err := router.InboundRoute(ctx, acmeNumber)
		return err == nil && !slices.ContainsFunc(route.Steps, func(s []string) bool { return slices.Contains(s, bob.ID) })
	}, "the dismissed manager no longer rings, Postgres down")
	nodeB.onChange(ctx, changeManagersPrefix+bob.ID, []byte(`{"status":"active"}`))
	if route, _ := router.InboundRoute(ctx, acmeNumber); slices.ContainsFunc(route.Steps, func(s []string) bool { return slices.Contains(s, bob.ID) }) {
		t.Errorf("an event saying %q brought the dismissed manager back: %+v", "active", route)
	}

	// A first-time caller, at node C (whose loop the test runs by hand): a
	// client of the next manager in turn, the same one at his second call.
	nodeC := NewRouteCache(store, keys, js.Conn(), zaptest.NewLogger(t).Named("c"))
	nodeC.mu.Lock()
	nodeC.warm = true // as loaded before the outage: nothing but managers matter here
	for _, m := range nodeA.managerList() {
		nodeC.managers[m.ID] = m
	}
	nodeC.mu.Unlock()
	spool := filepath.Join(t.TempDir(), "pending-callers.json")
	if err := nodeC.SpoolPending(spool); err != nil {
		t.Fatal(err)
	}
	routerC := &Router{Store: store, Keys: keys, Numbers: masking.NewNormalizer("RU"), Regs: regs, Cache: nodeC}
	const newNumber = "+79165550000"
	callIDs := []string{uuid.NewString(), uuid.NewString()}
	first, err := routerC.InboundRoute(withRoutedCall(ctx, callIDs[0]), newNumber)
	if err != nil || first.ClientID == "" || first.ClientCode == "" {
		t.Fatalf("new caller with Postgres stopped: %+v %v", first, err)
	}
	again, err := routerC.InboundRoute(withRoutedCall(ctx, callIDs[1]), newNumber)
	if err != nil || again.ClientID != first.ClientID || !slices.Equal(again.Steps[0], first.Steps[0]) {
		t.Fatalf("the new caller's second call %+v %v, want the client of his first %+v", again, err, first)
	}

	// Node C dies; node D starts on its data dir and takes its pending
	// callers back from the spool.
	nodeD := NewRouteCache(store, keys, js.Conn(), zaptest.NewLogger(t).Named("d"))
	if err := nodeD.SpoolPending(spool); err != nil {
		t.Fatal(err)
	}
	if p := nodeD.pending[string(keys.BlindIndex(newNumber))]; p.client.ID != first.ClientID || !slices.Equal(p.calls, callIDs) {
		t.Fatalf("pending caller read back from the spool %+v, want client %s with calls %v", p, first.ClientID, callIDs)
	}
	nodeD.down.Store(true)

	pg.Start()
	testenv.Eventually(t, 30*time.Second, func() bool { return !nodeB.DatabaseDown() }, "node B reads Postgres again")
	// A reload (Postgres never heard of bob's dismissal here) keeps it.
	if err := nodeB.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(nodeB.managerList(), func(m storage.Manager) bool { return m.ID == bob.ID }); i < 0 ||
		nodeB.managerList()[i].Status != storage.StatusDismissed {
		t.Error("a reload undid the dismissal an event brought")
	}
	// The CDR writer is quicker than node C: it writes the first call's CDR
	// while the database does not know the client yet.
	if _, err := store.ApplyCallEvents(ctx, []storage.CallEvent{{EventID: uuid.NewString(), Kind: storage.CallOffered,
		At: time.Now(), CallID: callIDs[0], Direction: "inbound", ClientID: first.ClientID}}); err != nil {
		t.Fatal(err)
	}
	if cdrs, err := store.CDRs(ctx, storage.CDRFilter{ClientID: first.ClientID}); err != nil || len(cdrs) != 0 {
		t.Fatalf("CDRs of a client not written yet: %+v %v", cdrs, err)
	}
	if !nodeD.recover(ctx) {
		t.Fatal("node D does not see Postgres back")
	}
	c, err := store.ClientByBlindIndex(ctx, keys.IndexKeyID(), keys.BlindIndex(newNumber))
	if err != nil || c.ID != first.ClientID || c.Code != first.ClientCode || c.Name != newCallerName || c.ManagerID != anna.ID {
		t.Fatalf("the new caller's row %+v %v, want id %s code %s, anna's", c, err, first.ClientID, first.ClientCode)
	}
	if cdrs, err := store.CDRs(ctx, storage.CDRFilter{ClientID: first.ClientID}); err != nil || len(cdrs) != 1 || cdrs[0].CallID != callIDs[0] {
		t.Errorf("the new caller's CDRs %+v %v, want his first call's, given his client", cdrs, err)
	}
	if st := nodeD.Stats(); st.PendingCallers != 0 || st.DatabaseDown {
		t.Errorf("node D after recovering: %+v", st)
	}
	if raw, err := os.ReadFile(spool); err != nil || string(raw) != "[]" {
		t.Errorf("the spool after the callers were written: %q %v", raw, err)
	}
	// Written once: node C's copy of the same caller, and another pending
	// client of the same number (a second node's), find the row and leave
	// it alone.
	nodeC.writePending(ctx)
	sealed, err := keys.Seal(newNumber)
	if err != nil {
		t.Fatal(err)
	}
	nodeC.pending[string(sealed.BlindIndex)] = pendingCaller{phone: sealed, client: storage.Client{ID: uuid.NewString(),
		Code: "87654321", Name: newCallerName, ManagerID: anna.ID}}
	nodeC.writePending(ctx)
	if cs, _ := store.Clients(ctx, anna.ID); len(cs) != 2 {
		t.Errorf("anna has %d clients, want Acme and the new caller", len(cs))
	}
}

// BenchmarkRouteCacheLoad measures loading 100,000 clients (one number
// each) and 100 managers: time per load and the heap the cache holds.
func BenchmarkRouteCacheLoad(b *testing.B) {
	ctx := context.Background()
	url := testenv.Database(b)
	store := openStore(b, ctx, url)
	keys, err := masking.NewKeyring(make([]byte, 32), append(make([]byte, 31), 1))
	if err != nil {
		b.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`INSERT INTO managers (name, sip_username, ha1_md5, ha1_sha256, team)
			SELECT 'M ' || i, 'm' || i, 'x', 'x', 'sales' FROM generate_series(1, 100) i`,
		`INSERT INTO clients (code, name, segment) SELECT lpad(i::text, 8, '0'), 'Client ' || i, 'vip'
			FROM generate_series(1, 100000) i`,
		`INSERT INTO client_phones (client_id, ciphertext, enc_key_id, blind_index, index_key_id)
			SELECT id, '\x00', 'k', sha256(id::text::bytea), '` + keys.IndexKeyID() + `' FROM clients`,
		`INSERT INTO assignments (client_id, manager_id, kind, changed_by)
			SELECT c.id, m.id, 'primary', 'bench' FROM
			(SELECT id, row_number() OVER () % 100 AS n FROM clients) c JOIN
			(SELECT id, row_number() OVER () % 100 AS n FROM managers) m USING (n)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := NewRouteCache(store, keys, nil, zap.NewNop())
	b.ResetTimer()
	for b.Loop() {
		if err := c.Load(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := c.Stats()
	if st.Clients != 100000 || st.Managers != 100 {
		b.Fatalf("loaded %+v", st)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MB")
	runtime.KeepAlive(c)
}

// TestRouteCacheSegmentRule: a segment's new rules reach another node's
// cache by a change event, and with Postgres stopped a VIP client's call
// still rings only the permitted and ends at the supervisor.
func TestRouteCacheSegmentRule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	e := newOutageEnv(t, ctx)
	pg, store, keys, js, regs := e.pg, e.store, e.keys, e.js, e.regs
	anna, bob := e.person(t, ctx, "anna", storage.RoleManager), e.person(t, ctx, "bob", storage.RoleManager)
	e.person(t, ctx, "carl", storage.RoleManager)
	sue := e.person(t, ctx, "sue", storage.RoleSupervisor)
	phone, err := keys.Seal("+79161234567")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateClient(ctx, storage.NewClient{Name: "Acme", Segment: "vip", ManagerID: anna.ID,
		Phones: []masking.SealedPhone{phone}, NewCode: func() (string, error) { return "12345678", nil }}, "test"); err != nil {
		t.Fatal(err)
	}
	nodeA := NewRouteCache(store, keys, js.Conn(), zaptest.NewLogger(t).Named("a"))
	nodeB := NewRouteCache(store, keys, js.Conn(), zaptest.NewLogger(t).Named("b"))
	runCache(t, nodeA)
	runCache(t, nodeB)
	if rule := nodeB.segmentRule("vip"); rule.Restricted {
		t.Fatalf("vip restricted before its rules were written: %+v", rule)
	}
	vip, err := store.SegmentByName(ctx, "vip")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.UpdateSegment(ctx, vip.ID, storage.Segment{Name: "vip", Restricted: true,
		AllowedManagers: []string{anna.ID, bob.ID}, SupervisorID: sue.ID, OverflowToSupervisor: true}, "test"); err != nil {
		t.Fatal(err)
	}
	nodeA.SegmentChanged(vip.ID)
	testenv.Eventually(t, 10*time.Second, func() bool {
		rule := nodeB.segmentRule("vip")
		return rule.Restricted && rule.Overflow == sue.ID
	}, "node B's cache follows the segment's new rules")

	// First-time callers go to the "new" segment: restricted, only its
	// permitted managers take them in turn.
	newSeg, err := store.CreateSegment(ctx, storage.Segment{Name: newCallerSegment, Restricted: true,
		AllowedManagers: []string{bob.ID}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	nodeA.SegmentChanged(newSeg.ID)
	router := &Router{Store: store, Keys: keys, Numbers: masking.NewNormalizer("RU"), Regs: regs, Cache: nodeB}
	for _, caller := range []string{"+79035550001", "+79035550002"} {
		route, err := router.InboundRoute(ctx, caller)
		if err != nil || len(route.Steps) == 0 || !slices.Equal(route.Steps[0], []string{bob.ID}) {
			t.Fatalf("a new caller's route %+v %v, want bob, the only one the new segment permits", route, err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return nodeB.segmentRule(newCallerSegment).Restricted },
		"node B's cache holds the new segment's rule")

	pg.Stop()
	if route, err := router.InboundRoute(ctx, "+79035550003"); err != nil || len(route.Steps) == 0 || !slices.Equal(route.Steps[0], []string{bob.ID}) {
		t.Fatalf("a new caller's route from the cache %+v %v, want bob", route, err)
	}
	route, err := router.InboundRoute(ctx, "89161234567")
	if err != nil {
		t.Fatalf("route with Postgres stopped: %v", err)
	}
	if want := [][]string{{anna.ID}, {sue.ID}}; !slices.EqualFunc(route.Steps, want, slices.Equal[[]string]) {
		t.Fatalf("ring plan %q, want anna then the supervisor (bob and carl are the team, which the overflow replaces)", route.Steps)
	}
}
