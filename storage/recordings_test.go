package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

func newRecording(callID, clientID, managerID string, started time.Time) storage.Recording {
	id := cdrUUID()
	return storage.Recording{
		ID: id, CallID: callID, ClientID: clientID, ManagerID: managerID, Direction: "inbound",
		Source: storage.SourceMaskPBX, Node: "node-a", BlobKey: clientID + "/2026/01/" + id + ".wav",
		Codec: "PCMU", Status: storage.RecordingActive, StartedAt: started,
	}
}

func TestRecordings(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna := mkManager(t, s, "anna")
	acme, err := s.CreateClient(ctx, storage.NewClient{Name: "Acme", Phones: []masking.SealedPhone{phone("r1")},
		ManagerID: anna.ID, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	rec := newRecording(cdrUUID(), acme.ID, anna.ID, t0)
	// offered is what the PBX publishes for a call: the recordings of a
	// call that has it are listed.
	offered := func(t *testing.T, callID, clientID string) {
		t.Helper()
		if _, err := s.ApplyCallEvent(ctx, storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallOffered, At: t0,
			CallID: callID, Direction: "inbound", ClientID: clientID, ManagerID: anna.ID}); err != nil {
			t.Fatal(err)
		}
	}
	offered(t, rec.CallID, acme.ID)

	t.Run("start, end, and a late start retry that must not undo the end", func(t *testing.T) {
		if err := s.SaveRecording(ctx, rec); err != nil {
			t.Fatal(err)
		}
		got, err := s.Recording(ctx, rec.ID)
		if err != nil || got.Status != storage.RecordingActive || len(got.DTMF) != 0 || !got.StartedAt.Equal(t0) {
			t.Fatalf("after start: %+v %v", got, err)
		}
		done := rec
		done.Status, done.Duration, done.SizeBytes, done.SHA256 = storage.RecordingComplete, 61500*time.Millisecond, 984044, "ab12"
		done.DTMF = []storage.DTMFEvent{{Digit: "5", Side: "client", AtMS: 1200, DurationMS: 100}, {Digit: "#", Side: "manager", AtMS: 3000}}
		if err := s.SaveRecording(ctx, done); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveRecording(ctx, rec); err != nil { // the start, retried late
			t.Fatal(err)
		}
		got, _ = s.Recording(ctx, rec.ID)
		if got.Status != storage.RecordingComplete || got.Duration != done.Duration || got.SizeBytes != 984044 ||
			got.SHA256 != "ab12" || len(got.DTMF) != 2 || got.DTMF[1] != done.DTMF[1] || got.ClientID != acme.ID {
			t.Fatalf("after end: %+v", got)
		}
	})

	t.Run("invalid rows are refused", func(t *testing.T) {
		for name, mutate := range map[string]func(*storage.Recording){
			"id":          func(r *storage.Recording) { r.ID = "x" },
			"call id":     func(r *storage.Recording) { r.CallID = "+79161234567" },
			"status":      func(r *storage.Recording) { r.Status = "fine" },
			"source":      func(r *storage.Recording) { r.Source = "" },
			"no blob key": func(r *storage.Recording) { r.BlobKey = "" },
			"dtmf digit":  func(r *storage.Recording) { r.DTMF = []storage.DTMFEvent{{Digit: "55", Side: "client"}} },
			"dtmf side":   func(r *storage.Recording) { r.DTMF = []storage.DTMFEvent{{Digit: "5", Side: "left"}} },
			"same key":    func(r *storage.Recording) { r.BlobKey = rec.BlobKey },
		} {
			r := newRecording(cdrUUID(), acme.ID, anna.ID, t0)
			mutate(&r)
			if err := s.SaveRecording(ctx, r); !errors.Is(err, storage.ErrInvalidRecording) {
				t.Errorf("%s: %v", name, err)
			}
		}
	})

	t.Run("unknown client and manager ids become NULL", func(t *testing.T) {
		r := newRecording(cdrUUID(), cdrUUID(), cdrUUID(), t0)
		r.Source, r.Direction = storage.SourceSIPREC, ""
		if err := s.SaveRecording(ctx, r); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Recording(ctx, r.ID)
		if got.ClientID != "" || got.ManagerID != "" || got.Source != storage.SourceSIPREC {
			t.Fatalf("%+v", got)
		}
	})

	t.Run("list by client, newest first", func(t *testing.T) {
		newer := newRecording(cdrUUID(), acme.ID, anna.ID, t0.Add(time.Minute))
		newer.Status = storage.RecordingPartial
		if err := s.SaveRecording(ctx, newer); err != nil {
			t.Fatal(err)
		}
		offered(t, newer.CallID, acme.ID)
		list, err := s.Recordings(ctx, storage.RecordingFilter{ClientID: acme.ID})
		if err != nil || len(list) != 2 || list[0].ID != newer.ID || list[1].ID != rec.ID {
			t.Fatalf("list: %+v %v", list, err)
		}
		if list, _ := s.Recordings(ctx, storage.RecordingFilter{CallID: rec.CallID}); len(list) != 1 {
			t.Fatalf("by call: %d", len(list))
		}
		if list, _ := s.Recordings(ctx, storage.RecordingFilter{ClientID: "nope"}); len(list) != 0 {
			t.Fatalf("bad id matched %d", len(list))
		}
	})

	// Issue 11, finding 2: an SRC named a real client and manager in a
	// session of a call that never was; or of a real call, but another
	// client; or only recording.ready came for it (what a recorder may
	// publish). None of them is listed; another SRC's own are.
	t.Run("a recording of a call the PBX never announced is not listed", func(t *testing.T) {
		madeUp := newRecording(cdrUUID(), acme.ID, anna.ID, t0.Add(2*time.Minute))
		readyOnly := newRecording(cdrUUID(), acme.ID, anna.ID, t0.Add(3*time.Minute))
		if _, err := s.ApplyCallEvent(ctx, storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallRecordingReady, At: t0,
			CallID: readyOnly.CallID, Direction: "inbound", ClientID: acme.ID, ManagerID: anna.ID, Recording: "complete"}); err != nil {
			t.Fatal(err)
		}
		other, err := s.CreateClient(ctx, storage.NewClient{Name: "Other", Phones: []masking.SealedPhone{phone("r2")},
			ManagerID: anna.ID, NewCode: nextCode}, "test")
		if err != nil {
			t.Fatal(err)
		}
		otherCall := newRecording(cdrUUID(), acme.ID, anna.ID, t0.Add(4*time.Minute))
		offered(t, otherCall.CallID, other.ID)
		foreign := newRecording(cdrUUID(), "", "", t0.Add(5*time.Minute))
		foreign.Source, foreign.Direction = storage.SourceSIPREC, ""
		for _, r := range []storage.Recording{madeUp, readyOnly, otherCall, foreign} {
			if err := s.SaveRecording(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []storage.RecordingFilter{{ClientID: acme.ID}, {ManagerID: anna.ID}, {CallID: madeUp.CallID}, {}} {
			list, err := s.Recordings(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range list {
				if r.ID == madeUp.ID || r.ID == readyOnly.ID || r.ID == otherCall.ID {
					t.Errorf("listed by %+v: %+v", f, r)
				}
			}
		}
		all, _ := s.Recordings(ctx, storage.RecordingFilter{})
		if len(all) == 0 || all[0].ID != foreign.ID {
			t.Errorf("another SRC's recording is not listed: %+v", all)
		}
	})

	t.Run("audio access is audited; in-progress and deleted audio are refused", func(t *testing.T) {
		got, err := s.OpenRecordingAudio(ctx, rec.ID, "supervisor:x", "quality check")
		if err != nil || got.BlobKey != rec.BlobKey {
			t.Fatalf("open: %+v %v", got, err)
		}
		log, _ := s.AuditLog(ctx, 1)
		if len(log) != 1 || log[0].Action != "recording.audio" || log[0].Object != "recording:"+rec.ID ||
			log[0].Actor != "supervisor:x" || log[0].Reason != "quality check" {
			t.Fatalf("audit: %+v", log)
		}
		active := newRecording(cdrUUID(), acme.ID, anna.ID, t0)
		_ = s.SaveRecording(ctx, active)
		if _, err := s.OpenRecordingAudio(ctx, active.ID, "admin:x", ""); !errors.Is(err, storage.ErrRecordingInProgress) {
			t.Fatalf("in progress: %v", err)
		}
		if _, err := s.OpenRecordingAudio(ctx, cdrUUID(), "admin:x", ""); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
		before, _ := s.AuditLog(ctx, 100)
		expired, err := s.ExpiredRecordings(ctx, "node-a", t0.Add(30*time.Second), 10)
		if err != nil || len(expired) != 1 || expired[0].ID != rec.ID {
			t.Fatalf("expired: %+v %v", expired, err) // active and newer ones are not expired
		}
		for range 2 {
			if err := s.MarkAudioDeleted(ctx, rec.ID, "system:retention", "older than 30 days"); err != nil {
				t.Fatal(err)
			}
		}
		after, _ := s.AuditLog(ctx, 100)
		if len(after) != len(before)+1 || after[0].Action != "recording.delete_audio" {
			t.Fatalf("deletion audited %d times", len(after)-len(before))
		}
		if _, err := s.OpenRecordingAudio(ctx, rec.ID, "admin:x", ""); !errors.Is(err, storage.ErrAudioDeleted) {
			t.Fatalf("deleted: %v", err)
		}
		if expired, _ := s.ExpiredRecordings(ctx, "node-a", t0.Add(time.Hour), 10); len(expired) != 1 || expired[0].ID == rec.ID {
			t.Fatalf("deleted audio listed again: %+v", expired)
		}
		if n, err := s.VerifyAudit(ctx); err != nil || n == 0 {
			t.Fatalf("audit chain: %d %v", n, err)
		}
	})
}
