package bus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maskpbx/maskpbx/internal/events"
)

func startAuthServer(t *testing.T) (*Embedded, Users) {
	t.Helper()
	users := NewUsers()
	e, err := StartEmbedded(t.TempDir(), "127.0.0.1", -1, users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e, users
}

func connectAs(t *testing.T, url string, auth Auth, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	o, err := auth.options()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(o, opts...)...)
	if err != nil {
		t.Fatalf("connect as %q: %v", auth.User, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestEmbeddedRefusesStrangers: what finding 1 of issue 11 did (a process
// that reaches the port connects and writes a registration) is refused
// without the PBX's password.
func TestEmbeddedRefusesStrangers(t *testing.T) {
	e, users := startAuthServer(t)
	for name, opts := range map[string][]nats.Option{
		"no credentials":      nil,
		"wrong password":      {nats.UserInfo(UserPBX, "not-the-password-at-all")},
		"unknown user":        {nats.UserInfo("admin", "admin")},
		"recorder's password": {nats.UserInfo(UserPBX, users.Recorder)},
		"token":               {nats.Token(users.PBX)},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := nats.Connect(e.URL(), append(opts, nats.MaxReconnects(0))...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("refused with %v, want an authorization violation", err)
			}
		})
	}
	t.Run("the PBX's user", func(t *testing.T) {
		connectAs(t, e.URL(), users.PBXAuth())
	})
}

// TestRecorderUserPermissions: the recorder's credentials (a recorder node,
// or whoever stole its password) can neither plant a registration nor make
// up a call, nor tamper with the stream; the PBX's do all the PBX does.
func TestRecorderUserPermissions(t *testing.T) {
	ctx := context.Background()
	e, users := startAuthServer(t)

	// The PBX sets up what it owns, as pbx and serve do.
	_, pbxJS := connectAs(t, e.URL(), users.PBXAuth())
	kv, err := pbxJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "REGISTRATIONS", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pbx-node.contact", []byte("genuine")); err != nil {
		t.Fatalf("the PBX cannot write a registration: %v", err)
	}
	stream, err := events.EnsureStream(ctx, pbxJS, 1)
	if err != nil {
		t.Fatalf("the PBX cannot set up CALLS: %v", err)
	}
	if _, err := pbxJS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "RECORDINGS"}); err != nil {
		t.Fatalf("the PBX cannot make the recordings bucket: %v", err)
	}
	const realCall = "11111111-1111-4111-8111-111111111111"
	if _, err := pbxJS.Publish(ctx, "calls."+realCall+".offered", []byte(`{}`)); err != nil {
		t.Fatalf("the PBX cannot publish a call event: %v", err)
	}

	violations := make(chan error, 16)
	_, recJS := connectAs(t, e.URL(), users.RecorderAuth(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case violations <- err:
		default:
		}
	}))
	try := func(what string, f func(context.Context) error) error {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return f(tctx)
	}

	const madeUp = "22222222-2222-4222-8222-222222222222"
	for _, subject := range []string{
		"$KV.REGISTRATIONS.manager-1.attacker", // a contact pointing at the attacker
		"$KV.CLUSTER.new-callers",              // steering new callers to one manager
		"calls." + madeUp + ".offered",         // a call that never was
		"calls." + madeUp + ".answered",
		"calls." + madeUp + ".ended",
		"calls." + realCall + ".ended", // ending someone else's call
	} {
		if err := try(subject, func(c context.Context) error { _, err := recJS.Publish(c, subject, []byte(`{}`)); return err }); err == nil {
			t.Errorf("the recorder published to %s", subject)
		}
	}
	if _, err := kv.Get(ctx, "manager-1.attacker"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("a registration planted with the recorder's credentials is there: %v", err)
	}
	for _, kind := range []string{"offered", "answered", "ended"} {
		if _, err := stream.GetLastMsgForSubject(ctx, "calls."+madeUp+"."+kind); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("a made-up %s event is in CALLS: %v", kind, err)
		}
	}
	if _, err := stream.GetLastMsgForSubject(ctx, "calls."+realCall+".ended"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("the recorder ended a real call: %v", err)
	}
	if err := try("update", func(c context.Context) error {
		_, err := recJS.UpdateStream(c, jetstream.StreamConfig{Name: events.StreamName, Subjects: []string{"calls.>"}, MaxAge: time.Second})
		return err
	}); err == nil {
		t.Error("the recorder changed the CALLS stream")
	}
	if err := try("delete", func(c context.Context) error { return recJS.DeleteStream(c, events.StreamName) }); err == nil {
		t.Error("the recorder deleted the CALLS stream")
	}
	if err := try("kv", func(c context.Context) error { return recJS.DeleteKeyValue(c, "REGISTRATIONS") }); err == nil {
		t.Error("the recorder deleted the registrations")
	}
	// The object store's permissions (purge of OBJ_RECORDINGS) reach no
	// other stream, and no stream may be deleted.
	if err := try("purge", func(c context.Context) error {
		s, err := recJS.Stream(c, events.StreamName)
		if err != nil {
			return err
		}
		return s.Purge(c)
	}); err == nil {
		t.Error("the recorder purged the CALLS stream")
	}
	if err := try("objects", func(c context.Context) error { return recJS.DeleteObjectStore(c, "RECORDINGS") }); err == nil {
		t.Error("the recorder deleted the recordings bucket")
	}
	if _, err := pbxJS.ObjectStore(ctx, "RECORDINGS"); err != nil {
		t.Fatalf("the recordings bucket after the recorder's attempts: %v", err)
	}
	if info, err := stream.Info(ctx); err != nil || info.Config.MaxAge != events.MaxAge {
		t.Fatalf("CALLS after the recorder's attempts: %v %+v", err, info)
	}

	// What a recorder is for still works: its own event, and the stream
	// opened without changing it.
	if _, err := events.OpenStream(ctx, recJS, 1); err != nil {
		t.Fatalf("the recorder cannot open CALLS: %v", err)
	}
	if _, err := recJS.Publish(ctx, "calls."+realCall+".recording.ready", []byte(`{}`)); err != nil {
		t.Fatalf("the recorder cannot publish recording.ready: %v", err)
	}

	// Nor can it listen in on the bus: the PBX's replies, or call events
	// other than through its consumer.
	nc := recJS.Conn()
	for _, subject := range []string{"_INBOX.>", "calls.>", "$KV.>", "changes.>"} {
		if _, err := nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-violations:
			if !strings.Contains(err.Error(), "Permissions Violation") {
				t.Errorf("subscribing to %s: %v", subject, err)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("the recorder subscribed to %s", subject)
		}
	}
	// The PBX's routing caches hear of changes on changes.>; the recorder
	// can't send one (a dismissed manager "active" again), the PBX can.
	pbxNC := pbxJS.Conn()
	changes, err := pbxNC.SubscribeSync("changes.>")
	if err != nil || pbxNC.Flush() != nil {
		t.Fatalf("the PBX cannot follow change events: %v", err)
	}
	if err := nc.Publish("changes.managers."+madeUp, []byte(`{"status":"active"}`)); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	select {
	case err := <-violations:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Errorf("publishing a change: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("the recorder published a change event")
	}
	if m, err := changes.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("the PBX heard a change from the recorder: %s", m.Subject)
	}
	if err := pbxNC.Publish("changes.clients."+realCall, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := changes.NextMsg(2 * time.Second); err != nil {
		t.Errorf("the PBX's own change event: %v", err)
	}
}

// TestLoadUsersOnce: the passwords are generated once, 0600, and read back.
func TestLoadUsersOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	first, err := LoadUsers(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.validate() != nil {
		t.Fatalf("generated passwords %d and %d characters", len(first.PBX), len(first.Recorder))
	}
	again, err := LoadUsers(dir)
	if err != nil || again != first {
		t.Fatalf("second load %v: passwords changed", err)
	}
	for _, f := range []string{PBXPasswordFile, RecorderPasswordFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st.Mode())
		}
	}
}
