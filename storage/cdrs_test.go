package storage_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

func cdrUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// cdrCall is the four events of one answered inbound call: offered with the
// assigned manager, ringing at a partner, answered by the partner, ended by
// the client after 42.5 s.
func cdrCall(callID, clientID, assigned, answerer string, t0 time.Time) []storage.CallEvent {
	ev := func(kind string, at time.Duration, manager string) storage.CallEvent {
		return storage.CallEvent{EventID: cdrUUID(), Kind: kind, At: t0.Add(at), CallID: callID,
			Direction: "inbound", ClientID: clientID, ManagerID: manager}
	}
	ended := ev(storage.CallEnded, 50*time.Second, answerer)
	ended.Disposition, ended.HangupSide, ended.Recording = "answered", "client", "ok"
	return []storage.CallEvent{
		ev(storage.CallOffered, 0, assigned),
		ev(storage.CallRinging, 2*time.Second, answerer),
		ev(storage.CallAnswered, 7500*time.Millisecond, answerer),
		ended,
	}
}

func applyAll(t *testing.T, s *storage.Store, evs []storage.CallEvent, wantApplied bool) {
	t.Helper()
	for _, e := range evs {
		applied, err := s.ApplyCallEvent(context.Background(), e)
		if err != nil {
			t.Fatalf("apply %s: %v", e.Kind, err)
		}
		if applied != wantApplied {
			t.Fatalf("apply %s: applied = %v, want %v", e.Kind, applied, wantApplied)
		}
	}
}

func sameTime(got *time.Time, want time.Time) bool {
	return got != nil && got.Equal(want.Truncate(time.Microsecond))
}

// cdrCore is a CDR without the columns that legitimately differ between two
// rows describing the same call.
func cdrCore(c storage.CDR) string {
	f := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%s %s %s %s %s %s %s %s %s %s %s", c.Direction, c.ClientID, c.ManagerID, f(c.OfferedAt),
		f(c.RingingAt), f(c.AnsweredAt), f(c.EndedAt), c.Duration, c.Disposition, c.HangupSide, c.Recording)
}

func TestCDRFromCallEvents(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")
	client, err := s.CreateClient(ctx, storage.NewClient{Name: "Acme", Phones: []masking.SealedPhone{phone("cdr1")},
		ManagerID: anna.ID, PartnerIDs: []string{bob.ID}, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 123456789, time.UTC)

	callID := cdrUUID()
	call := cdrCall(callID, client.ID, anna.ID, bob.ID, t0)
	applyAll(t, s, call, true)
	got, err := s.CDR(ctx, callID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Direction != "inbound" || got.ClientID != client.ID || got.ManagerID != bob.ID ||
		!sameTime(got.OfferedAt, t0) || !sameTime(got.RingingAt, call[1].At) ||
		!sameTime(got.AnsweredAt, call[2].At) || !sameTime(got.EndedAt, call[3].At) ||
		got.Duration != 42500*time.Millisecond || got.Disposition != "answered" ||
		got.HangupSide != "client" || got.Recording != "ok" {
		t.Fatalf("cdr = %+v", got)
	}

	t.Run("redelivered events change nothing", func(t *testing.T) {
		applyAll(t, s, call, false)
		again, err := s.CDR(ctx, callID)
		if err != nil || cdrCore(again) != cdrCore(got) || !again.UpdatedAt.Equal(got.UpdatedAt) {
			t.Fatalf("row changed: %+v %v", again, err)
		}
	})

	t.Run("any order converges", func(t *testing.T) {
		// Every permutation of the four events, each as its own call.
		var perms [][]int
		var permute func([]int, int)
		permute = func(a []int, k int) {
			if k == len(a) {
				perms = append(perms, append([]int(nil), a...))
				return
			}
			for i := k; i < len(a); i++ {
				a[k], a[i] = a[i], a[k]
				permute(a, k+1)
				a[k], a[i] = a[i], a[k]
			}
		}
		permute([]int{0, 1, 2, 3}, 0)
		for _, p := range perms {
			id := cdrUUID()
			evs := cdrCall(id, client.ID, anna.ID, bob.ID, t0)
			for _, i := range p {
				applyAll(t, s, evs[i:i+1], true)
			}
			c, err := s.CDR(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if cdrCore(c) != cdrCore(got) {
				t.Fatalf("order %v:\n got %s\nwant %s", p, cdrCore(c), cdrCore(got))
			}
		}
	})

	t.Run("missed call", func(t *testing.T) {
		id := cdrUUID()
		evs := cdrCall(id, client.ID, anna.ID, anna.ID, t0)
		missed := []storage.CallEvent{evs[0], evs[1], evs[3]}
		missed[2].Disposition, missed[2].HangupSide, missed[2].Recording = "missed", "client", ""
		applyAll(t, s, missed, true)
		c, err := s.CDR(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Disposition != "missed" || c.AnsweredAt != nil || c.Duration != 0 || c.EndedAt == nil ||
			c.ManagerID != anna.ID || c.Recording != "" {
			t.Fatalf("missed call cdr = %+v", c)
		}
	})

	t.Run("unknown people do not block the CDR", func(t *testing.T) {
		id := cdrUUID()
		evs := cdrCall(id, cdrUUID(), "not-a-uuid", cdrUUID(), t0)
		applyAll(t, s, evs, true)
		c, err := s.CDR(ctx, id)
		if err != nil || c.ClientID != "" || c.ManagerID != "" || c.Disposition != "answered" {
			t.Fatalf("cdr = %+v %v", c, err)
		}
	})

	t.Run("recording.ready overrides what ended reported", func(t *testing.T) {
		for _, readyFirst := range []bool{false, true} {
			id := cdrUUID()
			evs := cdrCall(id, client.ID, anna.ID, bob.ID, t0)
			evs[3].Recording = "missing"
			ready := storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallRecordingReady, At: t0.Add(time.Minute),
				CallID: id, Direction: "inbound", Recording: "ok"}
			if readyFirst {
				evs = append([]storage.CallEvent{ready}, evs...)
			} else {
				evs = append(evs, ready)
			}
			applyAll(t, s, evs, true)
			c, _ := s.CDR(ctx, id)
			if c.Recording != "ok" || c.Disposition != "answered" {
				t.Fatalf("ready first %v: cdr = %+v", readyFirst, c)
			}
		}
	})

	t.Run("invalid events write nothing", func(t *testing.T) {
		id := cdrUUID()
		good := cdrCall(id, client.ID, anna.ID, bob.ID, t0)[3]
		for name, mutate := range map[string]func(*storage.CallEvent){
			"no event id":    func(e *storage.CallEvent) { e.EventID = "" },
			"call id":        func(e *storage.CallEvent) { e.CallID = "call-1" },
			"kind":           func(e *storage.CallEvent) { e.Kind = "exploded" },
			"time":           func(e *storage.CallEvent) { e.At = time.Time{} },
			"direction":      func(e *storage.CallEvent) { e.Direction = "sideways" },
			"disposition":    func(e *storage.CallEvent) { e.Disposition = "maybe" },
			"no disposition": func(e *storage.CallEvent) { e.Disposition = "" },
			"hang-up side":   func(e *storage.CallEvent) { e.HangupSide = "nobody" },
		} {
			e := good
			mutate(&e)
			if applied, err := s.ApplyCallEvent(ctx, e); !errors.Is(err, storage.ErrInvalidCallEvent) || applied {
				t.Fatalf("%s: applied %v, err %v", name, applied, err)
			}
		}
		if _, err := s.CDR(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("invalid event made a row: %v", err)
		}
		if _, err := s.CDR(ctx, "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("bad id: %v", err)
		}
	})

	t.Run("concurrent delivery applies once", func(t *testing.T) {
		id := cdrUUID()
		evs := cdrCall(id, client.ID, anna.ID, bob.ID, t0)
		var wg sync.WaitGroup
		var mu sync.Mutex
		applied := map[string]int{}
		for range 4 {
			for _, e := range evs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok, err := s.ApplyCallEvent(ctx, e)
					if err != nil {
						t.Error(err)
					}
					if ok {
						mu.Lock()
						applied[e.EventID]++
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		for _, e := range evs {
			if applied[e.EventID] != 1 {
				t.Fatalf("%s applied %d times", e.Kind, applied[e.EventID])
			}
		}
		c, _ := s.CDR(ctx, id)
		if cdrCore(c) != cdrCore(got) {
			t.Fatalf("concurrent:\n got %s\nwant %s", cdrCore(c), cdrCore(got))
		}
	})
}

func TestCDRList(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "anna"), mkManager(t, s, "bob")
	c1, err := s.CreateClient(ctx, storage.NewClient{Name: "Acme", Phones: []masking.SealedPhone{phone("l1")},
		ManagerID: anna.ID, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.CreateClient(ctx, storage.NewClient{Name: "Bolt", Phones: []masking.SealedPhone{phone("l2")},
		ManagerID: bob.ID, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var ids []string // oldest first
	for i, who := range []struct{ client, manager string }{
		{c1.ID, anna.ID}, {c2.ID, bob.ID}, {c1.ID, anna.ID}, {c1.ID, bob.ID},
	} {
		id := cdrUUID()
		ids = append(ids, id)
		applyAll(t, s, cdrCall(id, who.client, who.manager, who.manager, t0.Add(time.Duration(i)*time.Hour)), true)
	}
	// A call whose offered event is still on its way is the newest.
	late := cdrUUID()
	applyAll(t, s, cdrCall(late, c2.ID, bob.ID, bob.ID, t0.Add(9*time.Hour))[1:2], true)

	callIDs := func(cs []storage.CDR) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.CallID
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter storage.CDRFilter
		want   []string
	}{
		{"all newest first", storage.CDRFilter{}, []string{late, ids[3], ids[2], ids[1], ids[0]}},
		{"by client", storage.CDRFilter{ClientID: c1.ID}, []string{ids[3], ids[2], ids[0]}},
		{"by manager", storage.CDRFilter{ManagerID: bob.ID}, []string{late, ids[3], ids[1]}},
		{"by both", storage.CDRFilter{ClientID: c1.ID, ManagerID: anna.ID}, []string{ids[2], ids[0]}},
		{"limit", storage.CDRFilter{Limit: 2}, []string{late, ids[3]}},
		{"malformed id", storage.CDRFilter{ClientID: "x"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.CDRs(ctx, tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(callIDs(got)) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", callIDs(got), tc.want)
			}
		})
	}
}

// A call the node refused at admission (503, overload) has its CDR with its
// own disposition, not a dropped event.
func TestCDROverload(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	callID, t0 := cdrUUID(), time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	offered := storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallOffered, At: t0, CallID: callID, Direction: "inbound"}
	ended := offered
	ended.EventID, ended.Kind, ended.Disposition, ended.HangupSide = cdrUUID(), storage.CallEnded, "overload", "system"
	applyAll(t, s, []storage.CallEvent{offered, ended}, true)
	c, err := s.CDR(ctx, callID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Disposition != "overload" || c.EndedAt == nil || c.AnsweredAt != nil {
		t.Fatalf("CDR %s", cdrCore(c))
	}
}

// OpenCDRs finds the calls a node left without an end (and rows that name
// no node), never another node's or an ended one; an ended event with hang-up
// side node_lost closes one.
func TestOpenCDRsByNode(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	offered := func(node string) storage.CallEvent {
		return storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallOffered, At: t0, CallID: cdrUUID(),
			Direction: "inbound", Node: node}
	}
	mine, theirs, unnamed, done := offered("node-a"), offered("node-b"), offered(""), offered("node-a")
	ended := done
	ended.EventID, ended.Kind, ended.Disposition, ended.HangupSide = cdrUUID(), storage.CallEnded, "missed", "client"
	// The node is the first one named, whatever later events say.
	later := mine
	later.EventID, later.Kind, later.Node = cdrUUID(), storage.CallRinging, "node-c"
	applyAll(t, s, []storage.CallEvent{mine, theirs, unnamed, done, ended, later}, true)
	open, err := s.OpenCDRs(ctx, "node-a", true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range open {
		got[c.CallID] = true
	}
	if len(open) != 2 || !got[mine.CallID] || !got[unnamed.CallID] {
		t.Fatalf("open CDRs of node-a: %v, want %s and %s", got, mine.CallID, unnamed.CallID)
	}
	lost := mine
	lost.EventID, lost.Kind, lost.Disposition, lost.HangupSide, lost.At = cdrUUID(), storage.CallEnded, "failed",
		"node_lost", t0.Add(time.Minute)
	applyAll(t, s, []storage.CallEvent{lost}, true)
	c, err := s.CDR(ctx, mine.CallID)
	if err != nil || c.HangupSide != "node_lost" || c.EndedAt == nil {
		t.Fatalf("CDR %s, %v", cdrCore(c), err)
	}
	if open, _ := s.OpenCDRs(ctx, "node-c", true); len(open) != 1 || open[0].CallID != unnamed.CallID {
		t.Fatalf("node-c has open %v: the first node named must stay the call's", open)
	}
	if open, _ := s.OpenCDRs(ctx, "node-b", false); len(open) != 1 || open[0].CallID != theirs.CallID {
		t.Fatalf("node-b's open calls, without unnamed rows: %v", open)
	}
}
