package recorder

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// The in-process path. When the recorder runs inside serve, the PBX's relay
// hands it each forked packet by a function call instead of a SIPREC
// dialog and UDP: no INVITE over TCP, no multipart body and SDP to build
// and parse, no sockets or reader goroutines per session. Everything after
// the packet reaches the timeline is the SIPREC session's: the same file,
// journal entry, crash repair, partial marking, row and recording.ready
// event. External recorders still get SIPREC (pbx.SRC with a URI).

// Local payload types: the PBX renumbers what it forks to the static G.711
// types and telephone-event at 101, as it offers them over SIPREC.
const (
	localPCMU  = 0
	localPCMA  = 8
	localEvent = 101
)

var localKinds = func() *payloadTable {
	var t payloadTable
	t[localPCMU], t[localPCMA], t[localEvent] = kindPCMU, kindPCMA, kindEvent
	return &t
}()

// ErrBadLocalRecording means StartLocal was given ids that are not fit for
// a recording row.
var ErrBadLocalRecording = errors.New("recorder: bad local recording")

// LocalSession is the recording of one call of the PBX in this process.
// Packet may be called from the relay's two reader goroutines (one per
// side) while End runs anywhere, once or more.
type LocalSession struct {
	ss    *session
	ended atomic.Bool
}

// StartLocal starts recording a call of the PBX in this process: meta names
// the call (CallID, Direction, ClientID, ClientCode, ManagerID), codec is
// the call's G.711 codec ("PCMU" or "PCMA") for the row. It creates the
// file and the journal entry before it returns, as a SIPREC session does
// before its 200.
func (s *Server) StartLocal(meta Metadata, codec string) (ls *LocalSession, err error) {
	switch {
	case !uuidRE.MatchString(meta.CallID), meta.Direction != "inbound" && meta.Direction != "outbound",
		meta.ClientID != "" && !uuidRE.MatchString(meta.ClientID), meta.ManagerID != "" && !uuidRE.MatchString(meta.ManagerID),
		meta.ClientCode != "" && !clientCodeRE.MatchString(meta.ClientCode):
		return nil, fmt.Errorf("%w: ids", ErrBadLocalRecording)
	}
	ss, err := s.registerSession("local/"+meta.CallID, meta, "", "")
	if err != nil {
		s.stats.refused.Add(1)
		return nil, err
	}
	defer func() {
		if err != nil {
			s.stats.refused.Add(1)
			ss.abandon()
			s.forget(ss)
		}
	}()
	ss.rec.Codec = codec
	ss.tl = newTimeline([2]*payloadTable{localKinds, localKinds})
	if err := ss.createFile(); err != nil {
		return nil, err
	}
	if err := s.journal.write(journalEntry{Stage: stageRecording, Recording: ss.rec}); err != nil {
		return nil, fmt.Errorf("recorder: journal: %w", err)
	}
	s.stats.started.Add(1)
	ss.begin()
	ss.logger.Debug("recording started", zap.String("source", "local"))
	return &LocalSession{ss: ss}, nil
}

// Packet records one RTP packet of side (0 the client, 1 the manager): its
// payload type (0 PCMU, 8 PCMA, 101 telephone-event; others are ignored),
// marker, sequence number, timestamp, SSRC and payload. It never blocks on
// I/O and keeps nothing of payload: samples are decoded into the jitter
// buffer, which the flush workers drain; when they fall behind the packet
// is dropped and counted (overruns).
func (l *LocalSession) Packet(side int, pt uint8, marker bool, seq uint16, ts, ssrc uint32, payload []byte) {
	if l == nil || side < 0 || side > 1 || l.ended.Load() {
		return
	}
	now := time.Now()
	l.ss.tl.place(side, rtpHeader{pt: pt & 0x7f, marker: marker, seq: seq, ts: ts, ssrc: ssrc}, payload,
		framesSince(l.ss.start, now))
	l.ss.lastPacket.Store(now.UnixNano())
}

// End ends the recording in order (complete), as a BYE does; it returns at
// once, the file is finished and committed in the background.
func (l *LocalSession) End() {
	if l == nil || !l.ended.CompareAndSwap(false, true) {
		return
	}
	l.ss.end(storage.RecordingComplete, "call ended", time.Now())
}

// ID is the recording's id.
func (l *LocalSession) ID() string { return l.ss.rec.ID }
