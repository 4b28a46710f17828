package recorder

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/audio"
	"github.com/maskpbx/maskpbx/internal/testenv"

	"github.com/google/uuid"

	"github.com/maskpbx/maskpbx/internal/events"
	"github.com/maskpbx/maskpbx/storage"
)

// TestLocalSession: the in-process path writes what the relay hands it as a
// SIPREC session would: the client's tone in the left channel, the
// manager's in the right, a complete row, a recording.ready event and an
// empty journal.
func TestLocalSession(t *testing.T) {
	r := startRecorder(t, t.TempDir(), nil)
	callID, clientID, managerID := uuid.NewString(), uuid.NewString(), uuid.NewString()
	ls, err := r.srv.StartLocal(Metadata{CallID: callID, Direction: "inbound", ClientID: clientID, ClientCode: "123456",
		ManagerID: managerID}, "PCMU")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.srv.StartLocal(Metadata{CallID: callID, Direction: "inbound"}, "PCMU"); err == nil {
		t.Fatal("a second recording of the same call started")
	}
	payload := [2][]byte{make([]byte, 160), make([]byte, 160)}
	freqs := [2]float64{1000, 1600} // client, manager
	const n = 100                   // 2 s
	start := time.Now()
	for i := range n {
		for side := range 2 {
			for j := range 160 {
				payload[side][j] = audio.LinearToULaw(int16(8000 * math.Sin(2*math.Pi*freqs[side]*float64(i*160+j)/SampleRate)))
			}
			ls.Packet(side, localPCMU, i == 0, uint16(i), uint32(i*160), uint32(0x1000+side), payload[side])
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 20 * time.Millisecond))) // pacing: a packet per side every 20 ms
	}
	ls.End()
	ls.End()                                                     // idempotent
	ls.Packet(0, localPCMU, false, n, n*160, 0x1000, payload[0]) // after the end: ignored

	rec := r.cat.waitRow(t, callID)
	if rec.Status != storage.RecordingComplete || rec.Source != storage.SourceMaskPBX || rec.ClientID != clientID ||
		rec.ManagerID != managerID || rec.Codec != "PCMU" || rec.Direction != "inbound" {
		t.Fatalf("row %+v", rec)
	}
	if rec.Duration < 1900*time.Millisecond || rec.Duration > 2300*time.Millisecond {
		t.Errorf("recorded %v of a 2 s call", rec.Duration)
	}
	p := readRecording(t, r, rec)
	mid := len(p.Left) / 2
	left, right := p.Left[mid-2000:mid+2000], p.Right[mid-2000:mid+2000]
	if g := audio.ToneShare(left, freqs[0]); g < 0.8 {
		t.Errorf("left channel: client tone %.2f", g)
	}
	if g := audio.ToneShare(left, freqs[1]); g > 0.05 {
		t.Errorf("left channel: manager tone %.2f", g)
	}
	if g := audio.ToneShare(right, freqs[1]); g < 0.8 {
		t.Errorf("right channel: manager tone %.2f", g)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, e := range r.evs.list() {
			if e.Kind == events.RecordingReady && e.CallID == callID && e.ID == rec.ID {
				return true
			}
		}
		return false
	}, "the local recording to finish")
	testenv.Eventually(t, 10*time.Second, func() bool {
		entries, _, _ := r.srv.journal.list()
		return len(entries) == 0
	}, "the local recording to finish")
}

// TestLocalSessionCrash: a local recording whose process died is repaired
// from the journal at the next start and marked partial, as a SIPREC one.
// The crash is a copy of the data dir taken mid-call: what a killed process
// leaves on disk.
func TestLocalSessionCrash(t *testing.T) {
	dir := t.TempDir()
	r := startRecorder(t, dir, nil)
	callID := uuid.NewString()
	ls, err := r.srv.StartLocal(Metadata{CallID: callID, Direction: "outbound"}, "PCMA")
	if err != nil {
		t.Fatal(err)
	}
	silence := make([]byte, 160)
	for i := range silence {
		silence[i] = audio.LinearToALaw(0)
	}
	start := time.Now()
	for i := 0; ; i++ {
		ls.Packet(1, localPCMA, false, uint16(i), uint32(i*160), 7, silence)
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 20 * time.Millisecond)))
		if i >= 50 && len(ls.ss.recordedBytes(t)) > wavHeaderSize+SampleRate*bytesPerFrame/2 {
			break // half a second of audio on disk
		}
	}
	crashed := t.TempDir()
	if err := os.CopyFS(crashed, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	ls.End()
	r.cat.waitRow(t, callID)

	r2 := startRecorder(t, crashed, nil)
	got := r2.cat.waitRow(t, callID)
	if got.Status != storage.RecordingPartial || got.Duration < 500*time.Millisecond {
		t.Fatalf("recovered row %+v", got)
	}
	if p := readRecording(t, r2, got); p.Duration() != got.Duration.Seconds() {
		t.Fatalf("repaired file holds %.3f s, the row says %v", p.Duration(), got.Duration)
	}
}

// recordedBytes is the session's file as it is on disk now.
func (ss *session) recordedBytes(t *testing.T) []byte {
	raw, err := os.ReadFile(filepath.Join(ss.srv.blobs.(*FSBlobs).Root(), filepath.FromSlash(ss.rec.BlobKey)))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
