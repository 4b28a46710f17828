package bus

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/recorder"
	"github.com/maskpbx/maskpbx/storage"
)

// TestRecorderUserObjectStore: with the recorder's credentials (a recorder
// node with --recordings-url jetstream:RECORDINGS) the RECORDINGS bucket
// and the retention lease work end to end, with no permission violation,
// while the CLUSTER bucket (the digest nonce key) stays out of reach; the
// PBX's user does the same.
func TestRecorderUserObjectStore(t *testing.T) {
	ctx := context.Background()
	e, users := startAuthServer(t)
	for _, who := range []struct {
		name string
		auth Auth
	}{{"recorder", users.RecorderAuth()}, {"pbx", users.PBXAuth()}} {
		t.Run(who.name, func(t *testing.T) {
			var mu sync.Mutex
			var violations []error
			_, js := connectAs(t, e.URL(), who.auth, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				mu.Lock()
				violations = append(violations, err)
				mu.Unlock()
			}))
			blobs, err := recorder.OpenObjectBlobs(ctx, js, recorder.RecordingsBucket, 1, t.TempDir(), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			blobs.PartInterval = 0
			key := "c/2026/11/" + who.name + ".wav"
			f, err := blobs.Create(key)
			if err != nil {
				t.Fatal(err)
			}
			audio := bytes.Repeat([]byte{1, 2, 3, 4}, 4_000_000) // 16 MB: flow control too
			if _, err := f.Write(audio); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil { // a part
				t.Fatal(err)
			}
			// Another node recovers it from the part.
			other, err := recorder.OpenObjectBlobs(ctx, js, recorder.RecordingsBucket, 1, t.TempDir(), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			rec, err := recorder.RecoverPartial(other, storage.Recording{BlobKey: key})
			if err != nil || rec.Status != storage.RecordingMissing {
				// Not a WAV: the recovery reads it and leaves it missing.
				t.Fatalf("recovery: %+v %v", rec, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			r, err := other.Open(key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Seek(15_000_000, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			tail, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(tail, audio[15_000_000:]) {
				t.Fatalf("read back after a seek: %d bytes, %v", len(tail), err)
			}
			if err := other.Delete(key); err != nil {
				t.Fatal(err)
			}
			kv, err := recorder.OpenLeases(ctx, js, 1)
			if err != nil {
				t.Fatal(err)
			}
			l := recorder.NewLease(kv, "retention", who.name, time.Minute)
			if held, err := l.Acquire(ctx); err != nil || !held {
				t.Fatalf("lease: %v %v", held, err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if err := js.Conn().Flush(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(violations) > 0 {
				t.Fatalf("permission violations: %v", violations)
			}
		})
	}
	// The recorder reads no secret of the PBX's.
	_, pbxJS := connectAs(t, e.URL(), users.PBXAuth())
	cluster, err := pbxJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "CLUSTER", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Put(ctx, "digest-nonce-key", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	_, recJS := connectAs(t, e.URL(), users.RecorderAuth())
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if kv, err := recJS.KeyValue(tctx, "CLUSTER"); err == nil {
		if v, err := kv.Get(tctx, "digest-nonce-key"); err == nil {
			t.Fatalf("the recorder read the nonce key: %q", v.Value())
		}
	}
}
