package recorder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// session is one recording session (RFC 7866 RS): its dialog, its streams'
// sockets, the timeline and the file. See server.go for who owns what.
type session struct {
	srv       *Server
	logger    *zap.Logger
	callID    string // SIP Call-ID of the recording dialog
	localTag  string
	remoteTag string

	rec       storage.Recording // owned by run once started
	start     time.Time
	file      BlobFile
	tl        *timeline
	conns     [2]*net.UDPConn // per side; nil if the SRC sends no stream for it
	sources   []netip.Addr    // RTP is taken only from these IPs (SDP c= and the SIP source)
	offer     recordingOffer
	ports     map[int]uint16 // our port per recorded m-line
	answer    []byte
	sessionID uint64
	version   atomic.Uint64

	// flushMu is held by whoever writes the file: a flush worker's tick,
	// then finish (which sets finishing, after which no tick touches it).
	flushMu   sync.Mutex
	finishing bool      // guarded by flushMu
	lastSync  time.Time // guarded by flushMu
	written   int64     // data bytes in the file; guarded by flushMu
	writeErr  error     // first file error; guarded by flushMu

	// A sync worker syncs the file while run goes on writing; syncMu keeps
	// finish from closing the file under a sync.
	syncMu      sync.Mutex
	syncPending atomic.Bool
	syncErr     atomic.Pointer[error]
	closed      bool // guarded by syncMu
	lastPacket  atomic.Int64

	readers sync.WaitGroup
	acked   chan struct{}
	ackOnce sync.Once

	// stateMu orders start and end: finish runs once both happened.
	stateMu   sync.Mutex
	started   bool
	endReason *endReason
	running   atomic.Bool // started and not finishing: flush workers tick it
}

type endReason struct {
	status string // RecordingComplete or RecordingPartial
	why    string
	at     time.Time
}

// newSession sets a recording up completely: sockets, file, journal entry
// and our SDP answer. On error nothing is left behind.
func (s *Server) newSession(req *sip.Request, offer recordingOffer, meta Metadata) (ss *session, err error) {
	remoteTag, _ := req.From().Params.Get("tag")
	ss, err = s.registerSession(req.CallID().Value(), meta, sip.GenerateTagN(16), remoteTag)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ss.abandon()
			s.forget(ss)
		}
	}()

	// Which stream is whose channel: by the metadata's association, else
	// in m-line order.
	streams := offer.accepted()
	var bySide [2]*offerStream
	for i := range streams {
		for side, label := range meta.StreamLabels {
			if label != "" && streams[i].label == label && bySide[side] == nil {
				bySide[side] = &streams[i]
			}
		}
	}
	for i := range streams {
		st := &streams[i]
		if bySide[sideClient] == st || bySide[sideManager] == st {
			continue
		}
		for side := range bySide {
			if bySide[side] == nil {
				bySide[side] = st
				break
			}
		}
	}

	ss.offer, ss.ports = offer, map[int]uint16{}
	var kinds [2]*payloadTable
	var codecs [2]string
	if src, err := netip.ParseAddrPort(req.Source()); err == nil {
		ss.sources = append(ss.sources, src.Addr().Unmap())
	}
	for side, st := range bySide {
		kinds[side] = &payloadTable{}
		if st == nil {
			continue
		}
		conn, err := s.ports.listen()
		if err != nil {
			return ss, err
		}
		ss.conns[side] = conn
		ss.ports[st.index] = uint16(conn.LocalAddr().(*net.UDPAddr).Port)
		kinds[side] = &st.kinds
		codecs[side] = st.audioCodec()
		if st.addr.IsValid() {
			ss.sources = append(ss.sources, st.addr)
		}
	}
	ss.rec.Codec = codecs[sideClient]
	if codecs[sideManager] != "" && codecs[sideManager] != codecs[sideClient] {
		ss.rec.Codec = strings.TrimPrefix(codecs[sideClient]+"/"+codecs[sideManager], "/")
	}
	ss.tl = newTimeline(kinds)
	ss.answer = buildAnswer(offer, s.public, ss.ports, ss.sessionID, ss.version.Add(1))

	if err := ss.createFile(); err != nil {
		return ss, err
	}
	if err := s.journal.write(journalEntry{Stage: stageRecording, Recording: ss.rec}); err != nil {
		return ss, fmt.Errorf("recorder: journal: %w", err)
	}
	return ss, nil
}

// registerSession makes a session's recording row and registers it under
// key (the SIP Call-ID, or the call id of a local session), before
// anything is written, so the journal sweeper never takes this recording
// for one of a dead process. The caller sets it up and begins it, or
// abandons and forgets it.
//
// The dialog's tags are set here, before the session is published: an
// in-dialog request on the same Call-ID (the ACK of a digest challenge's
// 401) may look the session up at once (find).
func (s *Server) registerSession(key string, meta Metadata, localTag, remoteTag string) (*session, error) {
	now := time.Now()
	ss := &session{srv: s, callID: key, start: now, sessionID: newSessionID(), acked: make(chan struct{}),
		localTag: localTag, remoteTag: remoteTag}
	ss.rec = storage.Recording{
		ID: uuid.NewString(), CallID: meta.CallID, ClientID: meta.ClientID, ManagerID: meta.ManagerID,
		Direction: meta.Direction, Source: storage.SourceMaskPBX, Node: s.cfg.Node,
		Status: storage.RecordingActive, StartedAt: now.UTC().Truncate(time.Microsecond), DTMF: []storage.DTMFEvent{},
	}
	if !meta.Ours() {
		// No call of ours named: whatever client or manager the metadata
		// claims, the recording belongs to nobody (a session naming a
		// client without a call must not land in that client's list).
		ss.rec.CallID, ss.rec.Source = uuid.NewString(), storage.SourceSIPREC
		ss.rec.ClientID, ss.rec.ManagerID, ss.rec.Direction = "", "", ""
	}
	fields := []zap.Field{zap.String("recording_id", ss.rec.ID), zap.String("call_id", ss.rec.CallID)}
	if ss.rec.ClientID != "" {
		fields = append(fields, zap.String("client_id", ss.rec.ClientID))
	}
	ss.logger = s.logger.With(fields...)

	s.mu.Lock()
	defer s.mu.Unlock()
	switch _, dup := s.sessions[key]; {
	case s.closing:
		return nil, errClosing
	case dup:
		return nil, errDuplicate
	}
	s.sessions[key] = ss
	s.wg.Add(1)
	return ss, nil
}

// blobKey is where a recording lives: per client, per month.
func blobKey(r storage.Recording, suffix string) string {
	owner := r.ClientID
	if owner == "" {
		owner = "unassigned"
	}
	t := r.StartedAt.UTC()
	return fmt.Sprintf("%s/%04d/%02d/%s%s.wav", strings.ToLower(owner), t.Year(), int(t.Month()), r.CallID, suffix)
}

func (ss *session) createFile() error {
	var err error
	for _, suffix := range []string{"", "-" + ss.rec.ID[:8]} {
		ss.rec.BlobKey = blobKey(ss.rec, suffix)
		ss.file, err = ss.srv.blobs.Create(ss.rec.BlobKey)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("recorder: create file: %w", err)
	}
	if _, err := ss.file.Write(wavHeader(-1)); err != nil {
		return fmt.Errorf("recorder: write header: %w", err)
	}
	return nil
}

// abandon undoes a session that never started.
func (ss *session) abandon() {
	for _, c := range ss.conns {
		if c != nil {
			c.Close()
		}
	}
	if ss.file != nil {
		ss.file.Close()
		_ = ss.srv.blobs.Delete(ss.rec.BlobKey)
	}
	_ = ss.srv.journal.remove(ss.rec.ID)
}

func (ss *session) streamCount() int {
	n := 0
	for _, c := range ss.conns {
		if c != nil {
			n++
		}
	}
	return n
}

func (ss *session) contactHeader(req *sip.Request) *sip.ContactHeader {
	_, port, _ := net.SplitHostPort(ss.srv.Addr())
	u := sip.Uri{Scheme: "sip", User: "recorder", Host: ss.srv.public.String(), Port: atoi(port)}
	if t := strings.ToLower(req.Transport()); t != "" && t != "udp" {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", t)
	}
	c := &sip.ContactHeader{Address: u, Params: sip.NewParams()}
	c.Params.Add("+sip.srs", "")
	return c
}

// reanswer is our answer again, with the next SDP version.
func (ss *session) reanswer() []byte {
	return buildAnswer(ss.offer, ss.srv.public, ss.ports, ss.sessionID, ss.version.Add(1))
}

// end finishes the recording (on a goroutine of its own) once it has
// started; only the first reason counts.
func (ss *session) end(status, why string, at time.Time) {
	ss.stateMu.Lock()
	defer ss.stateMu.Unlock()
	if ss.endReason != nil {
		return
	}
	ss.endReason = &endReason{status: status, why: why, at: at}
	if ss.started {
		go ss.finish(*ss.endReason)
	}
}

// begin hands a session that is set up completely to the flush workers:
// its readers start, its row is queued, and from now on end finishes it.
func (ss *session) begin() {
	for side, c := range ss.conns {
		if c != nil {
			ss.readers.Add(1)
			go ss.read(side, c)
		}
	}
	ss.srv.rows.saveLater(ss.rec)
	ss.running.Store(true)
	ss.stateMu.Lock()
	defer ss.stateMu.Unlock()
	ss.started = true
	if r := ss.endReason; r != nil {
		go ss.finish(*r)
	}
}

// retransmitUntilAck resends our 200 over UDP (RFC 3261 §13.3.1.4) until
// the SRC's ACK comes; without one in 64*T1 the session is given up.
func (ss *session) retransmitUntilAck(tx sip.ServerTransaction, ok *sip.Response) {
	const t1, t2 = 500 * time.Millisecond, 4 * time.Second
	giveUp := time.NewTimer(64 * t1)
	defer giveUp.Stop()
	interval := t1
	for {
		select {
		case <-ss.acked:
			return
		case <-giveUp.C:
			if ss.lastPacket.Load() == 0 {
				ss.logger.Warn("no ACK and no RTP for the recording session; ending it")
				ss.end(storage.RecordingPartial, "no ACK", time.Now())
			}
			return
		case <-time.After(interval):
			_ = tx.Respond(ok)
			interval = min(2*interval, t2)
		}
	}
}

// read is the reader of one stream's socket. It allocates nothing per
// packet: the buffer is its own and parsing works in place.
func (ss *session) read(side int, conn *net.UDPConn) {
	defer ss.readers.Done()
	buf := make([]byte, 1500)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !ss.fromSource(src.Addr()) {
			continue
		}
		h, payload, ok := parseRTP(buf[:n])
		if !ok {
			continue
		}
		now := time.Now()
		ss.tl.place(side, h, payload, framesSince(ss.start, now))
		ss.lastPacket.Store(now.UnixNano())
	}
}

func (ss *session) fromSource(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, a := range ss.sources {
		if a == ip {
			return true
		}
	}
	return false
}

var flushBuffers = sync.Pool{New: func() any { b := make([]byte, 0, ringFrames*bytesPerFrame); return &b }}

// flushTo writes the frames before upTo to the file.
func (ss *session) flushTo(upTo int64) {
	bp := flushBuffers.Get().(*[]byte)
	out := ss.tl.take(upTo, (*bp)[:0])
	if len(out) > 0 && ss.writeErr == nil {
		if room := maxDataBytes - ss.written; int64(len(out)) > room {
			out = out[:room/bytesPerFrame*bytesPerFrame]
			ss.writeErr = errors.New("recorder: recording reached the WAV size limit")
			ss.end(storage.RecordingPartial, "size limit", time.Now())
		}
		n, err := ss.file.Write(out)
		ss.written += int64(n)
		if err != nil && ss.writeErr == nil {
			ss.writeErr = err
		}
	}
	*bp = out[:0]
	flushBuffers.Put(bp)
}

// tick is one flush of a running session, on a flush worker: final frames
// go to the file, a sync is queued every SyncInterval, and a write error or
// a session without RTP for IdleTimeout ends the recording.
func (ss *session) tick(now time.Time) {
	s := ss.srv
	ss.flushMu.Lock()
	defer ss.flushMu.Unlock()
	if ss.finishing {
		return
	}
	ss.flushTo(framesSince(ss.start, now) - int64(jitterDelay)*SampleRate/int64(time.Second))
	if ss.lastSync.IsZero() {
		ss.lastSync = ss.start
	}
	if now.Sub(ss.lastSync) >= s.cfg.SyncInterval && ss.syncPending.CompareAndSwap(false, true) {
		select {
		case s.syncQueue <- ss:
			ss.lastSync = now
		default: // every worker busy and the queue full: next tick
			ss.syncPending.Store(false)
		}
	}
	if err := ss.syncErr.Load(); err != nil && ss.writeErr == nil {
		ss.writeErr = *err
	}
	if ss.writeErr != nil {
		// Counted and logged once, by finish.
		ss.end(storage.RecordingPartial, "write error", now)
	}
	last := ss.lastPacket.Load()
	if last == 0 {
		last = ss.start.UnixNano()
	}
	if now.Sub(time.Unix(0, last)) > s.cfg.IdleTimeout {
		ss.end(storage.RecordingPartial, "no RTP", now)
	}
}

// finish closes the recording in order: every frame up to the end written,
// the header made final, the file synced and hashed, then committed.
func (ss *session) finish(r endReason) {
	s := ss.srv
	defer s.forget(ss)
	ss.running.Store(false)
	ss.flushMu.Lock() // a tick under way ends first; none touches the file after
	ss.finishing = true
	ss.flushMu.Unlock()
	for _, c := range ss.conns {
		if c != nil {
			c.Close()
		}
	}
	ss.readers.Wait()
	end := max(framesSince(ss.start, r.at), ss.tl.head)
	ss.flushTo(end)
	status := r.status
	// A failed write may have left half a frame; the header counts whole ones.
	ss.written = ss.written / bytesPerFrame * bytesPerFrame
	if _, err := ss.file.WriteAt(wavHeader(ss.written), 0); err != nil && ss.writeErr == nil {
		ss.writeErr = err
	}
	ss.syncMu.Lock() // a queued sync may still come; it finds the file closed
	if err := ss.file.Sync(); err != nil && ss.writeErr == nil {
		ss.writeErr = err
	}
	if err := ss.file.Close(); err != nil && ss.writeErr == nil {
		ss.writeErr = err
	}
	ss.closed = true
	ss.syncMu.Unlock()
	if ss.writeErr != nil {
		status = storage.RecordingPartial
		s.stats.writeErrors.Add(1)
		ss.logger.Error("recording file incomplete", zap.Error(ss.writeErr))
	}

	st, dtmf := ss.tl.snapshot()
	s.stats.packets.Add(st.Packets)
	s.stats.late.Add(st.Late)
	s.stats.lost.Add(st.Lost)
	s.stats.overruns.Add(st.Overruns)

	rec := ss.rec
	rec.Status = status
	rec.DTMF = dtmf
	rec.Duration = time.Duration(ss.written/bytesPerFrame) * time.Second / SampleRate
	size, sum, err := hashBlob(s.blobs, rec.BlobKey)
	if err != nil {
		ss.logger.Error("recording file unreadable after closing", zap.Error(err))
	}
	rec.SizeBytes, rec.SHA256 = size, sum
	if err := s.journal.write(journalEntry{Stage: stageFinal, Recording: rec}); err != nil {
		ss.logger.Error("journal not updated", zap.Error(err))
	}
	ss.logger.Info("recording ended", zap.String("status", status), zap.String("why", r.why),
		zap.Duration("duration", rec.Duration), zap.Uint64("packets", st.Packets), zap.Uint64("lost", st.Lost),
		zap.Uint64("late", st.Late), zap.Uint64("overruns", st.Overruns), zap.Uint64("reanchors", st.Reanchors),
		zap.Int("dtmf", len(dtmf)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s.commit(ctx, rec)
}

// hashBlob returns a blob's size and hex SHA-256.
func hashBlob(blobs BlobStore, key string) (int64, string, error) {
	b, err := blobs.Open(key)
	if err != nil {
		return 0, "", err
	}
	defer b.Close()
	h := sha256.New()
	n, err := io.Copy(h, b)
	if err != nil {
		return n, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// syncFile runs on a sync worker.
func (ss *session) syncFile() {
	ss.syncMu.Lock()
	defer ss.syncMu.Unlock()
	defer ss.syncPending.Store(false)
	if ss.closed {
		return
	}
	if err := ss.file.Sync(); err != nil {
		ss.syncErr.CompareAndSwap(nil, &err)
	}
}
