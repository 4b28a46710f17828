package recorder

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

// TestRecorderLoad records MASKPBX_RECORDER_LOAD concurrent sessions (two
// 50 packet/s streams each, as calls have) for ten seconds and reports the
// CPU the process used, senders included. Off unless the variable is set:
//
//	MASKPBX_RECORDER_LOAD=1000 go test -run TestRecorderLoad -v ./recorder/
func TestRecorderLoad(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MASKPBX_RECORDER_LOAD"))
	if n <= 0 {
		t.Skip("set MASKPBX_RECORDER_LOAD to a number of sessions")
	}
	const seconds = 10
	r := startRecorder(t, t.TempDir(), func(c *ServerConfig) {
		if v := os.Getenv("MASKPBX_RECORDER_SYNC"); v != "" {
			c.SyncInterval, _ = time.ParseDuration(v)
		}
	})
	s := newSRC(t)
	type stream struct {
		dst  netip.AddrPort
		ssrc uint32
	}
	var streams []stream
	var dialogs []*sipgo.DialogClientSession
	for i := range n {
		callID := fmt.Sprintf("6f1b8d7e-0d38-4c1f-9d43-%012d", i)
		d, ports, err := s.invite(r, "multipart/mixed;boundary=b1", multipartBody(srcOffer("PCMU"), ourMetadata(callID)),
			sip.NewHeader("Require", "siprec"))
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		dialogs = append(dialogs, d)
		streams = append(streams, stream{ports["client"], uint32(2 * i)}, stream{ports["manager"], uint32(2*i + 1)})
	}
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	start := time.Now()
	buf := make([]byte, 12+160)
	var maxLag time.Duration
	for k := range seconds * 50 {
		if lag := time.Since(start.Add(time.Duration(k) * 20 * time.Millisecond)); lag > maxLag {
			maxLag = lag
			if lag > 50*time.Millisecond {
				t.Logf("tick %d: sender %v late", k, lag)
			}
		}
		for _, st := range streams {
			buf[0], buf[1] = 0x80, 0
			binary.BigEndian.PutUint16(buf[2:], uint16(k))
			binary.BigEndian.PutUint32(buf[4:], uint32(k*160))
			binary.BigEndian.PutUint32(buf[8:], st.ssrc)
			for j := 12; j < len(buf); j++ {
				buf[j] = byte(k + j)
			}
			_, _ = s.rtp.WriteToUDPAddrPort(buf, st.dst)
		}
		time.Sleep(time.Until(start.Add(time.Duration(k+1) * 20 * time.Millisecond))) // pacing: a tick every 20 ms
	}
	wall := time.Since(start)
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()-before.Utime.Nano()) + time.Duration(after.Stime.Nano()-before.Stime.Nano())
	t.Logf("%d sessions, %d packets/s for %v: CPU %v = %.2f cores (senders included); the sender lagged up to %v",
		n, len(streams)*50, wall.Round(time.Millisecond), cpu.Round(time.Millisecond), cpu.Seconds()/wall.Seconds(), maxLag)
	for _, d := range dialogs {
		_ = d.Bye(context.Background())
	}
	// Waits for every session, then the stats below say what went wrong.
	testenv.WaitFor(60*time.Second, func() bool {
		done := 0
		for _, rec := range r.cat.all() {
			if rec.Status == storage.RecordingComplete {
				done++
			}
		}
		return done == n
	})
	st := r.srv.Stats()
	t.Logf("stats %+v", st)
	if st.Complete != uint64(n) || st.Overruns != 0 || st.WriteErrors != 0 {
		t.Fatalf("not every session recorded cleanly: %+v", st)
	}
}
