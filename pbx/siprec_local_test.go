package pbx

import (
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/pion/rtp"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
)

// fakeLocal is a LocalRecorder that keeps what it is handed.
type fakeLocal struct {
	mu      sync.Mutex
	info    RecordingInfo
	codec   string
	packets [2][]uint8 // payload types per side
	ended   int
}

func (f *fakeLocal) StartRecording(info RecordingInfo, codec string) (LocalRecording, error) {
	f.info, f.codec = info, codec
	return f, nil
}

func (f *fakeLocal) Packet(side int, pt uint8, _ bool, _ uint16, _, _ uint32, _ []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.packets[side] = append(f.packets[side], pt)
}

func (f *fakeLocal) End() { f.mu.Lock(); f.ended++; f.mu.Unlock() }

// TestLocalRecordingSession: with a recorder in this process, a session
// needs no SIP: the tap hands packets over renumbered as over SIPREC
// (PCMA 8, a dynamic telephone-event 101, others dropped) and Stop ends
// the recording once.
func TestLocalRecordingSession(t *testing.T) {
	local := &fakeLocal{}
	src, err := NewSRC(&Server{logger: zap.NewNop()}, RecorderConfig{Local: local})
	if err != nil {
		t.Fatal(err)
	}
	info := RecordingInfo{CallID: uuid.NewString(), Direction: "inbound", ManagerID: uuid.NewString(),
		Codecs: []media.Codec{media.PCMA, {Name: "telephone-event", PayloadType: 96, ClockRate: 8000}}}
	sess, err := src.Start(t.Context(), info)
	if err != nil {
		t.Fatal(err)
	}
	if local.codec != "PCMA" || local.info.CallID != info.CallID {
		t.Fatalf("started with %q, %+v", local.codec, local.info)
	}
	for _, pt := range []uint8{8, 96, 0, 13} {
		sess.Tap(media.SideA, &rtp.Packet{Header: rtp.Header{PayloadType: pt}, Payload: make([]byte, 160)})
	}
	sess.Tap(media.SideB, &rtp.Packet{Header: rtp.Header{PayloadType: 8}, Payload: make([]byte, 160)})
	if got := local.packets[0]; len(got) != 3 || got[0] != 8 || got[1] != 101 || got[2] != 0 {
		t.Errorf("client side got payload types %v, want [8 101 0] (13 dropped)", got)
	}
	if got := local.packets[1]; len(got) != 1 || got[0] != 8 {
		t.Errorf("manager side got payload types %v", got)
	}
	if c, m := sess.Packets(); c != 3 || m != 1 {
		t.Errorf("Packets() = %d, %d", c, m)
	}
	if st := src.Stats(); st.Started != 1 || st.Active != 1 || src.Outcome(sess) != RecordingPending {
		t.Errorf("stats %+v, outcome %q", st, src.Outcome(sess))
	}
	sess.Stop()
	sess.Stop()
	sess.Tap(media.SideA, &rtp.Packet{Header: rtp.Header{PayloadType: 8}, Payload: make([]byte, 160)})
	if local.ended != 1 || len(local.packets[0]) != 3 || src.Stats().Active != 0 {
		t.Errorf("after Stop: ended %d times, %d client packets, %d active", local.ended, len(local.packets[0]), src.Stats().Active)
	}
}
