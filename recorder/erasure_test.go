package recorder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// failingBlobs is a blob store whose deletions fail while failing is set
// (a disk gone read-only).
type failingBlobs struct {
	BlobStore
	failing atomic.Bool
}

func (b *failingBlobs) Delete(key string) error {
	if b.failing.Load() {
		return errors.New("read-only file system")
	}
	return b.BlobStore.Delete(key)
}

// TestErasureDeletesAudio: after a client's erasure has committed, his
// recordings' audio on this node is deleted; a deletion that fails is
// logged and retried by the next run, a recording still being written
// waits for its end, and other nodes' and other clients' audio stay.
func TestErasureDeletesAudio(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	fsb, _ := NewFSBlobs(t.TempDir())
	blobs := &failingBlobs{BlobStore: fsb}
	other, err := db.store.CreateClient(ctx, storage.NewClient{Name: "Other", ManagerID: db.anna,
		NewCode: func() (string, error) { return "87654321", nil }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	mk := func(client, node, status string) storage.Recording {
		return storedRecording(t, db, fsb, client, node, status, time.Now())
	}
	done, live := mk(db.client, "n1", storage.RecordingComplete), mk(db.client, "n1", storage.RecordingActive)
	elsewhere, kept := mk(db.client, "n2", storage.RecordingComplete), mk(other.ID, "n1", storage.RecordingComplete)
	there := func(r storage.Recording) bool {
		_, err := os.Stat(filepath.Join(fsb.Root(), r.BlobKey))
		return err == nil
	}
	if _, err := db.store.EraseClient(ctx, db.client, "admin:test", "erasure request 77"); err != nil {
		t.Fatal(err)
	}

	core, logs := observer.New(zap.ErrorLevel)
	e := &Erasure{Catalog: db.store, Blobs: blobs, Node: "n1", Interval: 20 * time.Millisecond, Logger: zap.New(core)}
	blobs.failing.Store(true)
	if n, err := e.EraseAudio(ctx); n != 0 || err == nil || !there(done) {
		t.Fatalf("with deletions failing: deleted %d, %v", n, err)
	}
	if logs.FilterMessageSnippet("retried").Len() != 1 {
		t.Fatalf("the failure was not logged: %v", logs.All())
	}
	if r, _ := db.store.Recording(ctx, done.ID); r.AudioDeletedAt != nil {
		t.Fatal("a row was marked deleted over a file that is still there")
	}
	blobs.failing.Store(false)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = e.Run(runCtx) }()
	testenv.Eventually(t, 5*time.Second, func() bool { return !there(done) }, "the next run deleted the audio")
	if !there(live) || !there(elsewhere) || !there(kept) {
		t.Fatalf("audio that must stay is gone: live %v, other node %v, other client %v", there(live), there(elsewhere), there(kept))
	}
	live.Status = storage.RecordingComplete
	if err := db.store.SaveRecording(ctx, live); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return !there(live) }, "the finished recording's audio deleted")
	for _, r := range []storage.Recording{done, live} {
		got, err := db.store.Recording(ctx, r.ID)
		if err != nil || got.AudioDeletedAt == nil {
			t.Errorf("row of erased audio: %+v %v", got, err)
		}
	}
	if n := audioDeletions(t, db, "system:erasure"); n != 2 {
		t.Errorf("%d audio deletions audited, want 2", n)
	}
	if _, err := db.store.VerifyAudit(ctx); err != nil {
		t.Error(err)
	}
}
