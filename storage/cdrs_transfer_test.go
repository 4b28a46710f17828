package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// A call part that a transfer began names the part before it: the first
// event that carries transferred_from sets it, in whatever order the
// events come; an event naming the call itself, or no uuid, is invalid.
func TestCDRTransferredFrom(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	first, second, t0 := cdrUUID(), cdrUUID(), time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	offered := storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallOffered, At: t0, CallID: second, Direction: "inbound",
		TransferredFrom: first}
	ended := offered
	ended.EventID, ended.Kind, ended.At, ended.Disposition, ended.HangupSide = cdrUUID(), storage.CallEnded, t0.Add(time.Minute), "answered", "client"
	applyAll(t, s, []storage.CallEvent{ended}, true)
	applyAll(t, s, []storage.CallEvent{offered}, true)
	c, err := s.CDR(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	if c.TransferredFrom != first {
		t.Fatalf("transferred_from = %q, want %s", c.TransferredFrom, first)
	}
	if c, err := s.CDR(ctx, first); err == nil {
		t.Fatalf("a CDR appeared for the part before: %+v", c)
	}
	for _, bad := range []string{second, "not-a-uuid"} {
		e := offered
		e.EventID, e.TransferredFrom = cdrUUID(), bad
		if err := e.Validate(); !errors.Is(err, storage.ErrInvalidCallEvent) {
			t.Errorf("transferred_from %q: %v, want ErrInvalidCallEvent", bad, err)
		}
	}
}

// The part of a transfer that the colleague did not take is no missed call:
// the client was talking to the transferring manager all along, so it
// makes no call-back task.
func TestMissedTransferMakesNoTask(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")
	client, err := s.CreateClient(ctx, storage.NewClient{Name: "Acme", Phones: []masking.SealedPhone{phone("tr1")},
		ManagerID: anna.ID, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	part := storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallOffered, At: t0, CallID: cdrUUID(), Direction: "inbound",
		ClientID: client.ID, ManagerID: bob.ID, TransferredFrom: cdrUUID()}
	ended := part
	ended.EventID, ended.Kind, ended.At, ended.Disposition, ended.HangupSide = cdrUUID(), storage.CallEnded, t0.Add(20*time.Second), "missed", "system"
	applyAll(t, s, []storage.CallEvent{part, ended}, true)
	if tasks, err := s.Tasks(ctx, storage.TaskFilter{}); err != nil || len(tasks) != 0 {
		t.Fatalf("tasks %+v (%v), want none", tasks, err)
	}
	// The same call without a transfer is a missed call: a task.
	missed := part
	missed.EventID, missed.CallID, missed.TransferredFrom = cdrUUID(), cdrUUID(), ""
	missedEnd := ended
	missedEnd.EventID, missedEnd.CallID, missedEnd.TransferredFrom = cdrUUID(), missed.CallID, ""
	applyAll(t, s, []storage.CallEvent{missed, missedEnd}, true)
	if tasks, err := s.Tasks(ctx, storage.TaskFilter{}); err != nil || len(tasks) != 1 {
		t.Fatalf("tasks %+v (%v), want the missed call's", tasks, err)
	}
}
