package recorder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/internal/bus"
	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// objectNodes opens the RECORDINGS bucket of one embedded NATS server as
// two nodes would: each with its own local directory.
func objectNodes(t *testing.T) (a, b *ObjectBlobs, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	nc, js, err := bus.Connect(ctx, testenv.NATS(t), "test", bus.Auth{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	open := func() *ObjectBlobs {
		o, err := OpenObjectBlobs(ctx, js, RecordingsBucket, 1, t.TempDir(), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	return open(), open(), js
}

func audioBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

// TestObjectBlobsParts: a recording under way reaches the bucket as parts
// every PartInterval; when its node dies (no Close, its disk gone), another
// node puts the parts together into a playable WAV marked partial, stores
// it under the key and removes the parts; a finished recording is stored
// complete and its parts and local file are gone.
func TestObjectBlobsParts(t *testing.T) {
	a, b, _ := objectNodes(t)
	a.PartInterval = 0 // a part at every sync
	rec := storage.Recording{ID: newID(), CallID: newID(), StartedAt: time.Now()}
	rec.BlobKey = blobKey(rec, "")
	f, err := a.Create(rec.BlobKey)
	if err != nil {
		t.Fatal(err)
	}
	audio := audioBytes(3 * SampleRate * bytesPerFrame) // 3 s
	if _, err := f.Write(wavHeader(-1)); err != nil {
		t.Fatal(err)
	}
	for s := range 3 {
		if _, err := f.Write(audio[s*SampleRate*bytesPerFrame : (s+1)*SampleRate*bytesPerFrame]); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	// Half a second more that never reached a part: lost with the node.
	if _, err := f.Write(audioBytes(SampleRate * bytesPerFrame / 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(rec.BlobKey); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("a key being written on another node: %v, want fs.ErrExist", err)
	}
	if n, err := a.countParts(rec.BlobKey); err != nil || n != 3 {
		t.Fatalf("%d parts (%v), want 3", n, err)
	}
	// Node a dies: b recovers the recording from the bucket alone.
	got, err := RecoverPartial(b, rec)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != storage.RecordingPartial || got.Duration != 3*time.Second {
		t.Fatalf("recovered %s of %v, want partial of 3s", got.Status, got.Duration)
	}
	want := append(wavHeader(int64(len(audio))), audio...)
	stored := readAll(t, b, rec.BlobKey)
	if !bytes.Equal(stored, want) {
		t.Fatalf("recovered WAV differs from what was written (%d bytes, want %d)", len(stored), len(want))
	}
	sum := sha256.Sum256(want)
	if got.SizeBytes != int64(len(want)) || got.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("row says %d bytes %s", got.SizeBytes, got.SHA256)
	}
	if _, err := DecodeWAV(stored); err != nil {
		t.Fatalf("not playable: %v", err)
	}
	if n, _ := b.countParts(rec.BlobKey); n != 0 {
		t.Fatalf("%d parts left after recovery", n)
	}
	if again, err := RecoverPartial(b, rec); err != nil || again.SHA256 != got.SHA256 {
		t.Fatalf("second recovery: %+v %v", again, err)
	}

	// A recording closed in order: complete under its key, nothing else.
	rec2 := storage.Recording{ID: newID(), CallID: newID(), StartedAt: time.Now()}
	rec2.BlobKey = blobKey(rec2, "")
	f2, err := a.Create(rec2.BlobKey)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f2.Write(wavHeader(-1))
	_, _ = f2.Write(audio[:SampleRate*bytesPerFrame])
	_ = f2.Sync()
	_, _ = f2.Write(audio[SampleRate*bytesPerFrame:])
	if _, err := f2.WriteAt(wavHeader(int64(len(audio))), 0); err != nil {
		t.Fatal(err)
	}
	if err := f2.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, b, rec2.BlobKey), want) {
		t.Fatal("the complete recording read on another node differs")
	}
	if n, _ := a.countParts(rec2.BlobKey); n != 0 {
		t.Fatalf("%d parts left after close", n)
	}
	if _, err := a.local.Open(rec2.BlobKey); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("local file after the upload: %v", err)
	}
	// Nothing of the removed parts stays in the stream: only the two
	// complete recordings' chunk and meta messages.
	if info, err := a.stream.Info(context.Background()); err != nil || info.State.Msgs != 4 {
		t.Fatalf("the bucket's stream holds %d messages (%v), want 4: delete markers of parts left", info.State.Msgs, err)
	}
	if err := b.Delete(rec2.BlobKey); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Open(rec2.BlobKey); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleted recording opens: %v", err)
	}
	if _, err := RecoverPartial(b, storage.Recording{ID: newID(), BlobKey: "x/2026/01/nothing.wav"}); err != nil {
		t.Fatalf("recovery of a recording with nothing stored: %v", err)
	}
}

func readAll(t *testing.T, b BlobStore, key string) []byte {
	t.Helper()
	r, err := b.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestObjectBlobsSeek: reads after seeks forwards, backwards and from the
// end return the bytes at those offsets; it measures the time to the
// first byte of the last second of a one-hour recording (115 MB).
func TestObjectBlobsSeek(t *testing.T) {
	a, b, _ := objectNodes(t)
	size := wavHeaderSize + 3600*SampleRate*bytesPerFrame
	if testing.Short() {
		size = wavHeaderSize + 60*SampleRate*bytesPerFrame
	}
	content := audioBytes(size)
	key := "c/2026/11/hour.wav"
	f, err := a.Create(key)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write(content)
	start := time.Now()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stored %d bytes in %v", size, time.Since(start))
	r, err := b.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, _ := r.Seek(0, io.SeekEnd); n != int64(size) {
		t.Fatalf("size %d, want %d", n, size)
	}
	last := int64(size - SampleRate*bytesPerFrame)
	for _, off := range []int64{last, 1000, 0, int64(size) - 10} {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 10)
		start := time.Now()
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		if off == last {
			t.Logf("first byte of the last second after %v", time.Since(start))
		}
		if !bytes.Equal(buf, content[off:off+10]) {
			t.Fatalf("bytes at %d differ", off)
		}
	}
}

// TestObjectBlobsNATSAway: with NATS gone a recording still starts and is
// written locally; a part that can't be stored costs a sync at most the
// part timeout and is not retried for a while; the final store fails
// after its tries, the local file stays and this node serves it.
func TestObjectBlobsNATSAway(t *testing.T) {
	ctx := context.Background()
	e, users := testenv.NATSServer(t)
	nc, js, err := bus.Connect(ctx, e.URL(), "test", users.PBXAuth())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := OpenObjectBlobs(ctx, js, RecordingsBucket, 1, t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	b.PartInterval, b.storeTimeout = 0, 500*time.Millisecond
	e.Shutdown()
	key := "c/2026/11/away.wav"
	start := time.Now()
	f, err := b.Create(key)
	if err != nil {
		t.Fatalf("a recording refused while NATS is away: %v", err)
	}
	want := append(wavHeader(SampleRate), audioBytes(SampleRate*bytesPerFrame)...)
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("sync while NATS is away: %v", err)
	}
	again := time.Now()
	_ = f.Sync() // backing off: no second wait
	if d := time.Since(again); d > 500*time.Millisecond {
		t.Errorf("a second sync waited %v for NATS", d)
	}
	if err := f.Close(); err == nil {
		t.Fatal("the close claims the recording is stored")
	}
	t.Logf("create, syncs and close with NATS away took %v", time.Since(start))
	if !bytes.Equal(readAll(t, b, key), want) {
		t.Fatal("the local file is not served after the store failed")
	}
}
