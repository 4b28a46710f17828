package storage_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// missedCall is the events of an inbound call nobody answered: offered to
// manager, ended as missed 20 s later.
func missedCall(callID, clientID, manager string, t0 time.Time) []storage.CallEvent {
	offered := storage.CallEvent{EventID: cdrUUID(), Kind: storage.CallOffered, At: t0, CallID: callID,
		Direction: "inbound", ClientID: clientID, ManagerID: manager}
	ended := offered
	ended.EventID, ended.Kind, ended.At, ended.Disposition, ended.HangupSide = cdrUUID(), storage.CallEnded,
		t0.Add(20*time.Second), "missed", "client"
	return []storage.CallEvent{offered, ended}
}

// clientTasks is a client's tasks, oldest first.
func clientTasks(t *testing.T, s *storage.Store, clientID string) []storage.Task {
	t.Helper()
	all, err := s.Tasks(context.Background(), storage.TaskFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []storage.Task
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].ClientID == clientID {
			out = append(out, all[i])
		}
	}
	return out
}

func newTaskClient(t *testing.T, s *storage.Store, name, idx, managerID string) storage.Client {
	t.Helper()
	c, err := s.CreateClient(context.Background(), storage.NewClient{Name: name,
		Phones: []masking.SealedPhone{phone(idx)}, ManagerID: managerID, NewCode: nextCode}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMissedCallTasks(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna, bob := mkManager(t, s, "task-anna"), mkManager(t, s, "task-bob")
	client := newTaskClient(t, s, "Tasked", "task1", anna.ID)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)

	// Two missed calls: two open tasks for anna, each once however often
	// its events are applied (a redelivery carries the same event ids; a
	// second writer's copy may not).
	miss1, miss2 := cdrUUID(), cdrUUID()
	first := missedCall(miss1, client.ID, anna.ID, t0)
	applyAll(t, s, first, true)
	applyAll(t, s, first, false)
	again := missedCall(miss1, client.ID, anna.ID, t0)
	if _, err := s.ApplyCallEvents(ctx, again); err != nil {
		t.Fatal(err)
	}
	applyAll(t, s, missedCall(miss2, client.ID, anna.ID, t0.Add(time.Minute)), true)
	got := clientTasks(t, s, client.ID)
	if len(got) != 2 || got[0].CallID != miss1 || got[1].CallID != miss2 {
		t.Fatalf("tasks after two missed calls: %+v", got)
	}
	for _, tk := range got {
		if tk.Status != storage.TaskOpen || tk.ManagerID != anna.ID || tk.ClientName != "Tasked" ||
			tk.ClientCode != client.Code || tk.ClosedAt != nil {
			t.Fatalf("open task: %+v", tk)
		}
	}
	if !got[0].CreatedAt.Equal(t0.Add(20 * time.Second)) {
		t.Fatalf("created_at %v, want the missed call's end %v", got[0].CreatedAt, t0.Add(20*time.Second))
	}

	// The filters: anna's, bob's (none), overdue (missed before a time).
	for _, tc := range []struct {
		name string
		f    storage.TaskFilter
		want int
	}{
		{"anna's", storage.TaskFilter{ManagerID: anna.ID}, 2},
		{"bob's", storage.TaskFilter{ManagerID: bob.ID}, 0},
		{"not a uuid", storage.TaskFilter{ManagerID: "x"}, 0},
		{"open", storage.TaskFilter{ManagerID: anna.ID, Status: storage.TaskOpen}, 2},
		{"done", storage.TaskFilter{ManagerID: anna.ID, Status: storage.TaskDone}, 0},
		{"missed before the second", storage.TaskFilter{ManagerID: anna.ID, CreatedBefore: t0.Add(time.Minute)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := s.Tasks(ctx, tc.f)
			if err != nil || len(l) != tc.want {
				t.Fatalf("%d tasks (%v), want %d", len(l), err, tc.want)
			}
		})
	}

	// Reassigned: the open tasks go to bob with the client.
	if _, err := s.Reassign(ctx, client.ID, bob.ID, nil, "test"); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.Tasks(ctx, storage.TaskFilter{ManagerID: bob.ID}); len(l) != 2 {
		t.Fatalf("bob has %d tasks after the reassignment, want 2", len(l))
	}
	if l, _ := s.Tasks(ctx, storage.TaskFilter{ManagerID: anna.ID}); len(l) != 0 {
		t.Fatalf("anna still has %d tasks after the reassignment", len(l))
	}

	// bob calls back and the client answers: both tasks are done, closed
	// by that call.
	back := cdrUUID()
	callBack := cdrCall(back, client.ID, bob.ID, bob.ID, t0.Add(10*time.Minute))
	for i := range callBack {
		callBack[i].Direction = "outbound"
	}
	applyAll(t, s, callBack, true)
	for _, tk := range clientTasks(t, s, client.ID) {
		if tk.Status != storage.TaskDone || tk.ClosedByCallID != back || tk.ClosedAt == nil ||
			!tk.ClosedAt.Equal(t0.Add(10*time.Minute+7500*time.Millisecond)) {
			t.Fatalf("task after the call-back: %+v", tk)
		}
	}

	// A missed call applied after the call-back that followed it (its
	// events came late) is done at once; one after the call-back is open.
	late, next := cdrUUID(), cdrUUID()
	applyAll(t, s, missedCall(late, client.ID, bob.ID, t0.Add(5*time.Minute)), true)
	applyAll(t, s, missedCall(next, client.ID, bob.ID, t0.Add(20*time.Minute)), true)
	status := map[string]storage.Task{}
	for _, tk := range clientTasks(t, s, client.ID) {
		status[tk.CallID] = tk
	}
	if tk := status[late]; tk.Status != storage.TaskDone || tk.ClosedByCallID != back {
		t.Fatalf("late missed call's task: %+v", tk)
	}
	if tk := status[next]; tk.Status != storage.TaskOpen {
		t.Fatalf("missed call after the call-back: %+v", tk)
	}

	// An answered call whose end came first: the task it made goes when
	// its answered event arrives.
	odd := cdrUUID()
	call := cdrCall(odd, client.ID, bob.ID, bob.ID, t0.Add(25*time.Minute))
	applyAll(t, s, []storage.CallEvent{call[0], call[3]}, true)
	applyAll(t, s, []storage.CallEvent{call[1], call[2]}, true)
	for _, tk := range clientTasks(t, s, client.ID) {
		if tk.CallID == odd {
			t.Fatalf("an answered call left a task: %+v", tk)
		}
		if tk.Status != storage.TaskDone {
			t.Fatalf("the answered call did not close %+v", tk)
		}
	}

	// A caller the PBX did not know (no client) makes no task.
	unknown := cdrUUID()
	applyAll(t, s, missedCall(unknown, "", "", t0), true)
	if l, _ := s.Tasks(ctx, storage.TaskFilter{}); len(l) != 4 {
		t.Fatalf("%d tasks in all, want the client's 4", len(l))
	}

	// Erased: his open task is cancelled, and no new one is made.
	applyAll(t, s, missedCall(cdrUUID(), client.ID, bob.ID, t0.Add(30*time.Minute)), true)
	if _, err := s.EraseClient(ctx, client.ID, "test", "the client asked to be forgotten"); err != nil {
		t.Fatal(err)
	}
	applyAll(t, s, missedCall(cdrUUID(), client.ID, "", t0.Add(40*time.Minute)), true)
	after := clientTasks(t, s, client.ID)
	if len(after) != 5 {
		t.Fatalf("%d tasks after the erasure, want 5", len(after))
	}
	for _, tk := range after {
		if tk.Status == storage.TaskOpen || tk.ManagerID != "" || tk.ClientName == "Tasked" {
			t.Fatalf("erased client's task: %+v", tk)
		}
	}
}

// TestMissedCallTasksConcurrentWriters applies a missed call and its
// call-back at the same moment from two writers, many times: the task is
// closed every time, never left open.
func TestMissedCallTasksConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	anna := mkManager(t, s, "task-carol")
	t0 := time.Now().Add(-time.Hour)
	for i := range 20 {
		client := newTaskClient(t, s, "Race", "race"+string(rune('a'+i)), anna.ID)
		miss, back := missedCall(cdrUUID(), client.ID, anna.ID, t0), cdrCall(cdrUUID(), client.ID, anna.ID, anna.ID, t0.Add(time.Minute))
		var wg sync.WaitGroup
		for _, evs := range [][]storage.CallEvent{miss, back} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.ApplyCallEvents(ctx, evs); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got := clientTasks(t, s, client.ID)
		if len(got) != 1 || got[0].Status != storage.TaskDone {
			t.Fatalf("round %d: %+v", i, got)
		}
	}
}
