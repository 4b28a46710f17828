package recorder

import (
	"context"
	"errors"
	"io/fs"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

// TestRetention runs retention against Postgres and a blob store: audio
// older than the limit goes, its row stays marked (and audited), newer
// audio and other nodes' recordings stay.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	blobs, _ := NewFSBlobs(t.TempDir())
	mk := func(node string, age time.Duration) storage.Recording {
		return storedRecording(t, db, blobs, db.client, node, storage.RecordingComplete, time.Now().Add(-age))
	}
	old1, old2 := mk("n1", 31*24*time.Hour), mk("n1", 40*24*time.Hour)
	fresh := mk("n1", 29*24*time.Hour)
	elsewhere := mk("n2", 90*24*time.Hour)

	r := &Retention{Catalog: db.store, Blobs: blobs, Node: "n1", MaxAge: 30 * 24 * time.Hour, Logger: testLogger(t)}
	n, err := r.RunOnce(ctx)
	if err != nil || n != 2 {
		t.Fatalf("deleted %d, %v", n, err)
	}
	for _, rec := range []storage.Recording{old1, old2} {
		if _, err := blobs.Open(rec.BlobKey); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("old audio kept: %v", err)
		}
		got, err := db.store.Recording(ctx, rec.ID)
		if err != nil || got.AudioDeletedAt == nil || got.Status != storage.RecordingComplete {
			t.Errorf("row of deleted audio: %+v %v", got, err)
		}
	}
	for _, rec := range []storage.Recording{fresh, elsewhere} {
		if _, err := blobs.Open(rec.BlobKey); err != nil {
			t.Errorf("audio that must stay is gone: %v", err)
		}
	}
	if deletions := audioDeletions(t, db, "system:retention"); deletions != 2 {
		t.Errorf("%d deletions audited", deletions)
	}
	if n, err := r.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second run deleted %d, %v", n, err)
	}
}

// storedRecording saves a recording row of client on node, and an empty
// WAV as its audio in blobs.
func storedRecording(t *testing.T, db testDB, blobs BlobStore, client, node, status string, started time.Time) storage.Recording {
	t.Helper()
	r := storage.Recording{ID: newID(), CallID: newID(), ClientID: client, ManagerID: db.anna, Direction: "inbound",
		Source: storage.SourceMaskPBX, Node: node, Codec: "PCMU", Status: status, StartedAt: started}
	r.BlobKey = blobKey(r, "")
	f, err := blobs.Create(r.BlobKey)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write(wavHeader(0))
	f.Close()
	if err := db.store.SaveRecording(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

// audioDeletions counts the audio deletions actor audited.
func audioDeletions(t *testing.T, db testDB, actor string) int {
	t.Helper()
	log, err := db.store.AuditLog(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range log {
		if e.Action == "recording.delete_audio" && e.Actor == actor {
			n++
		}
	}
	return n
}
