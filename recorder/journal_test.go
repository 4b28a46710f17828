package recorder

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/maskpbx/maskpbx/storage"
)

func journalRec() storage.Recording {
	return storage.Recording{ID: uuid.NewString(), CallID: uuid.NewString(), Status: storage.RecordingActive, BlobKey: "x.wav"}
}

func TestJournalLog(t *testing.T) {
	dir := t.TempDir()
	// An entry in the layout of before (one file per recording) is still
	// found and removed.
	old := journalRec()
	raw, _ := json.Marshal(journalEntry{Stage: stageRecording, Recording: old})
	if err := os.WriteFile(filepath.Join(dir, old.ID+".json"), raw, 0o640); err != nil {
		t.Fatal(err)
	}
	j, err := newJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	recs := make([]storage.Recording, 50)
	for i := range recs {
		recs[i] = journalRec()
		wg.Go(func() {
			if err := j.write(journalEntry{Stage: stageRecording, Recording: recs[i]}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	final := recs[0]
	final.Status = storage.RecordingComplete
	if err := j.write(journalEntry{Stage: stageFinal, Recording: final}); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs[1:] {
		if err := j.remove(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.remove(old.ID); err != nil {
		t.Fatal(err)
	}
	entries, bad, err := j.list()
	if err != nil || len(bad) != 0 || len(entries) != 1 || entries[0].Stage != stageFinal || entries[0].Recording.Status != storage.RecordingComplete {
		t.Fatalf("entries %+v, bad %v, %v", entries, bad, err)
	}

	// A crash mid-append leaves a torn line: the next start drops it.
	f, _ := os.OpenFile(filepath.Join(dir, journalLog), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"stage":"recording","recording":{"id":"`)
	f.Close()
	j2, err := newJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if entries, bad, _ := j2.list(); len(bad) != 0 || len(entries) != 1 || entries[0].Recording.ID != final.ID {
		t.Fatalf("after a torn line: entries %+v, bad %v", entries, bad)
	}

	// Compaction keeps exactly the live entries.
	j2.mu.Lock()
	err = j2.compact()
	j2.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := j2.remove(final.ID); err != nil {
		t.Fatal(err)
	}
	if entries, bad, _ := j2.list(); len(entries) != 0 || len(bad) != 0 {
		t.Fatalf("after compaction: entries %+v, bad %v", entries, bad)
	}
}

func TestLatestRows(t *testing.T) {
	a, b := journalRec(), journalRec()
	aFinal := a
	aFinal.Status = storage.RecordingComplete
	got := latestRows([]rowRequest{{rec: a}, {rec: b}, {rec: aFinal, done: make(chan error, 1)}})
	if len(got) != 2 || got[0].rec.ID != b.ID || got[1].rec.Status != storage.RecordingComplete {
		t.Fatalf("latestRows: %+v", got)
	}
}
