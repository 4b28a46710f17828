package pbx

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/google/uuid"
	"github.com/icholy/digest"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/pbx/media"
)

// The PBX as a SIPREC session recording client (RFC 7866 SRC). When a call
// is answered, call control starts a recording session with the recorder:
// an INVITE whose multipart body holds an SDP offer of two sendonly streams
// (a=label:client, a=label:manager) and RFC 7865 metadata naming the call,
// the client (id and code) and the manager (id), never a number. The
// relay's tap then forks each leg's RTP to the recorder's port for that
// side, and a BYE ends the session. A recorder that is down, slow or
// refuses costs the call nothing: Start fails within its timeout and the
// call goes on unrecorded ("missing" in its CDR).
//
// A recorder in this process (RecorderConfig.Local) takes the same
// sessions without SIP: Start opens its recording directly and the tap
// hands it each packet by a call (LocalRecording.Packet), no socket, no
// dialog, no BYE.
//
// Goroutines: Start runs on the call's owner goroutine. Tap runs on the
// relay's two RTP readers, side A's on one and side B's on the other; each
// touches only its own stream's buffer, so they share nothing but atomics.
// Stop may run anywhere, once; the BYE it sends goes out on a goroutine of
// its own, counted by the SRC so shutdown can wait for it (Wait).

// RecorderConfig points the PBX at a SIPREC recording server.
type RecorderConfig struct {
	// URI of the recorder, e.g. sip:recorder@10.0.0.5:5090;transport=tcp.
	// The INVITE carries SDP and metadata, more than UDP may (RFC 3261
	// §18.1.1), so it always goes over TCP.
	URI string
	// Timeout bounds Start: connecting, and waiting for the final answer.
	// Default 2s.
	Timeout time.Duration
	// Local, if set, is a recorder in this process: sessions go to it
	// directly and URI is not used.
	Local LocalRecorder
	// User and Secret answer the recorder's digest challenge (401) to a
	// recording INVITE; a recorder that challenges an SRC without them
	// refuses it.
	User, Secret string
}

// LocalRecorder is a recorder in this process (the one serve runs when
// --recorder is empty). StartRecording opens the recording of a call that
// was just answered and returns quickly; codec is the call's G.711 codec
// ("PCMU" or "PCMA").
type LocalRecorder interface {
	StartRecording(info RecordingInfo, codec string) (LocalRecording, error)
}

// LocalRecording takes one call's forked packets. Packet runs on the
// relay's reader of side (0 client, 1 manager): it must not block or keep
// payload; pt is renumbered as over SIPREC (0 PCMU, 8 PCMA, 101
// telephone-event). End ends the recording in order; it may run anywhere,
// more than once.
type LocalRecording interface {
	Packet(side int, pt uint8, marker bool, seq uint16, ts, ssrc uint32, payload []byte)
	End()
}

// DefaultRecordingTimeout is RecorderConfig.Timeout's default.
const DefaultRecordingTimeout = 2 * time.Second

// Recording outcomes, as a call's ended event reports them.
const (
	// RecordingPending: the recorder took the session; its recording.ready
	// event will say complete or partial.
	RecordingPending = "pending"
	// RecordingMissing: the call was not recorded (recorder down, refused,
	// or recording disabled).
	RecordingMissing = "missing"
)

// Errors of recording sessions. None of them ever fails a call.
var (
	// ErrRecordingDisabled: no recorder is configured.
	ErrRecordingDisabled = errors.New("pbx: recording disabled")
	// ErrRecorderUnavailable: the recorder could not be reached or did not
	// answer within the timeout.
	ErrRecorderUnavailable = errors.New("pbx: recorder unavailable")
	// ErrRecorderRefused: the recorder answered the INVITE with an error,
	// or with an SDP answer we cannot use.
	ErrRecorderRefused = errors.New("pbx: recorder refused the recording session")
	// ErrBadRecordingInfo: the call's ids are not fit for the metadata.
	ErrBadRecordingInfo = errors.New("pbx: bad recording info")
)

// SRC starts recording sessions for the calls of one Server.
type SRC struct {
	srv     *Server
	local   LocalRecorder // set: the in-process path, no SIP
	uri     sip.Uri       // the recorder, as the Request-URI
	dest    string        // host:port the INVITE goes to
	user    string        // digest credentials for the recorder
	secret  string
	timeout time.Duration
	logger  *zap.Logger

	clientOnce sync.Once
	client     *sipgo.Client
	clientErr  error

	pending sync.WaitGroup // BYEs on their way

	started, failed, active atomic.Int64
}

// SRCStats are the counters of recording sessions, for metrics.
type SRCStats struct {
	Started uint64 // sessions the recorder accepted
	Failed  uint64 // calls that went unrecorded because Start failed
	Active  int    // sessions not yet stopped
}

// NewSRC makes s a recording client of the recorder at cfg.URI. Start is
// usable once s serves calls (EnableCalls, then Serve).
func NewSRC(s *Server, cfg RecorderConfig) (*SRC, error) {
	if s == nil {
		return nil, errors.New("pbx: NewSRC needs a Server")
	}
	if cfg.Local != nil {
		return &SRC{srv: s, local: cfg.Local, logger: s.logger.Named("siprec")}, nil
	}
	var u sip.Uri
	if err := sip.ParseUri(strings.TrimSpace(cfg.URI), &u); err != nil || u.Host == "" ||
		(u.Scheme != "sip" && u.Scheme != "") {
		return nil, fmt.Errorf("pbx: recorder URI %q is not a sip: URI", cfg.URI)
	}
	if t, ok := u.UriParams.Get("transport"); ok && !strings.EqualFold(t, "tcp") {
		return nil, fmt.Errorf("pbx: recorder URI: SIPREC goes over TCP, not %q", t)
	}
	port := u.Port
	if port == 0 {
		port = 5060
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRecordingTimeout
	}
	return &SRC{
		srv:     s,
		uri:     sip.Uri{Scheme: "sip", User: u.User, Host: u.Host, Port: u.Port},
		dest:    net.JoinHostPort(u.Host, strconv.Itoa(port)),
		user:    cfg.User,
		secret:  cfg.Secret,
		timeout: cfg.Timeout,
		logger:  s.logger.Named("siprec"),
	}, nil
}

// Stats returns the counters.
func (r *SRC) Stats() SRCStats {
	if r == nil {
		return SRCStats{}
	}
	return SRCStats{Started: uint64(r.started.Load()), Failed: uint64(r.failed.Load()), Active: int(r.active.Load())}
}

// Wait waits up to d for the BYEs of stopped sessions to go out (shutdown).
func (r *SRC) Wait(d time.Duration) {
	if r == nil {
		return
	}
	done := make(chan struct{})
	go func() { r.pending.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// RecordingInfo is what a recording session says about its call: ids only.
type RecordingInfo struct {
	CallID     string // our call id (uuid), as in call events
	Direction  string // "inbound" or "outbound"
	ClientID   string // uuid, or "" for a caller we do not know
	ClientCode string // the client's code (digits), or ""
	ManagerID  string // uuid of the manager who answered
	// Codecs are the payload formats the call's legs negotiated, with each
	// leg's payload type numbers (both legs' lists may simply be appended):
	// the tap sees packets as the relay forwards them, numbered for the
	// leg they go to.
	Codecs []media.Codec
}

var (
	uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	codePattern = regexp.MustCompile(`^[0-9]{6,12}$`)
)

func (i RecordingInfo) validate() error {
	switch {
	case !uuidPattern.MatchString(i.CallID):
		return fmt.Errorf("%w: call id is not a uuid", ErrBadRecordingInfo)
	case i.Direction != "inbound" && i.Direction != "outbound":
		return fmt.Errorf("%w: direction %q", ErrBadRecordingInfo, i.Direction)
	case i.ClientID != "" && !uuidPattern.MatchString(i.ClientID), i.ManagerID != "" && !uuidPattern.MatchString(i.ManagerID):
		return fmt.Errorf("%w: client or manager id is not a uuid", ErrBadRecordingInfo)
	case i.ClientCode != "" && !codePattern.MatchString(i.ClientCode):
		return fmt.Errorf("%w: client code is not a code", ErrBadRecordingInfo)
	}
	return nil
}

// recordingFormats are the formats offered on both streams (the call's
// G.711 codecs at their static types, and telephone-event at 101) and the
// map of every payload type the tap may see to the one it is sent as
// (0xff: dropped). The relay carries only PCMU, PCMA and telephone-event,
// so a dynamic type not listed as audio is telephone-event, whichever leg
// numbered it.
func recordingFormats(codecs []media.Codec) ([]media.Codec, *[128]uint8) {
	var table [128]uint8
	for i := range table {
		table[i] = 0xff
		if i >= 96 {
			table[i] = media.TelephoneEvent.PayloadType
		}
	}
	table[media.PCMU.PayloadType] = media.PCMU.PayloadType
	table[media.PCMA.PayloadType] = media.PCMA.PayloadType
	var offer []media.Codec
	have := map[string]bool{}
	for _, c := range codecs {
		if c.PayloadType >= 128 || c.ClockRate != 8000 || !c.IsAudio() {
			continue
		}
		std := media.PCMU
		switch c.Name {
		case media.PCMU.Name:
		case media.PCMA.Name:
			std = media.PCMA
		default:
			continue
		}
		table[c.PayloadType] = std.PayloadType
		if !have[std.Name] {
			have[std.Name] = true
			offer = append(offer, std)
		}
	}
	if len(offer) == 0 {
		return nil, &table
	}
	return append(offer, media.TelephoneEvent), &table
}

// RecordingSession is one call's recording session with the recorder.
type RecordingSession struct {
	src     *SRC
	local   LocalRecording // the in-process path; nil over SIPREC
	callID  string
	dlg     *dialog
	logger  *zap.Logger
	offer   []byte
	stopped atomic.Bool
	once    sync.Once
	ptmap   *[128]uint8
	streams [2]tapStream // [media.SideA] client, [media.SideB] manager
}

// tapStream is one forked stream. buf and the counters are touched only by
// the relay reader of its side.
type tapStream struct {
	conn    *net.UDPConn
	dest    netip.AddrPort
	on      bool   // the recorder accepted it
	buf     []byte // SIPREC only: the packet as forked
	packets atomic.Uint64
}

// Start opens a recording session for a call that was just answered. It
// returns within the configured timeout (2s): on error the call goes on
// unrecorded, and the error is logged and counted here. On success install
// the session's Tap on the call's relay and Stop it when the call ends.
func (r *SRC) Start(ctx context.Context, info RecordingInfo) (*RecordingSession, error) {
	if r == nil {
		return nil, ErrRecordingDisabled
	}
	sess, err := r.start(ctx, info)
	if err != nil {
		r.failed.Add(1)
		r.logger.Error("call not recorded", zap.String("call_id", info.CallID), zap.Error(err))
		return nil, err
	}
	r.started.Add(1)
	r.active.Add(1)
	return sess, nil
}

func (r *SRC) start(ctx context.Context, info RecordingInfo) (*RecordingSession, error) {
	if err := info.validate(); err != nil {
		return nil, err
	}
	if r.local != nil {
		return r.startLocal(info)
	}
	cc := r.srv.calls
	if cc == nil || cc.client == nil {
		return nil, fmt.Errorf("%w: the PBX does not serve calls yet", ErrRecorderUnavailable)
	}
	r.clientOnce.Do(func() {
		// Its own client, not cc.client: that one is bound to the UDP
		// listening socket, and SIPREC needs TCP from any port.
		r.client, r.clientErr = sipgo.NewClient(cc.client.UserAgent, sipgo.WithClientHostname(cc.publicIP.String()))
	})
	if r.clientErr != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecorderUnavailable, r.clientErr)
	}
	formats, ptmap := recordingFormats(info.Codecs)
	if len(formats) == 0 {
		return nil, fmt.Errorf("%w: no G.711 codec on the call", ErrBadRecordingInfo)
	}

	sess := &RecordingSession{src: r, callID: uuid.NewString(), ptmap: ptmap,
		logger: r.logger.With(zap.String("call_id", info.CallID))}
	ok := false
	defer func() {
		if !ok {
			sess.closeSockets()
		}
	}()
	bindIP := r.srv.listenIP()
	var ports [2]uint16
	for side := range sess.streams {
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bindIP, 0)))
		if err != nil {
			return nil, fmt.Errorf("%w: no socket for the forked stream: %v", ErrRecorderUnavailable, err)
		}
		sess.streams[side].conn = conn
		sess.streams[side].buf = make([]byte, 1500)
		ports[side] = uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	}
	sess.offer = recordingSDP(cc.publicIP, newSessionID(), ports, formats)
	meta := recordingMetadata(info, cc.domain, newMetadataIDs())
	boundary := "mpx-" + strings.ReplaceAll(uuid.NewString(), "-", "")
	body := multipartBody(boundary, sess.offer, meta)

	contact := sip.Uri{Scheme: "sip", User: "maskpbx", Host: cc.contact.Host, Port: cc.contact.Port,
		UriParams: sip.HeaderParams{{K: "transport", V: "tcp"}}}
	sess.dlg = &dialog{
		callID:    sess.callID,
		localTag:  sip.GenerateTagN(16),
		local:     sip.Uri{Scheme: "sip", User: "maskpbx", Host: cc.domain},
		remote:    r.uri,
		target:    r.uri,
		dest:      r.dest,
		transport: "TCP",
	}
	// build makes the INVITE, each time with the dialog's next CSeq: a
	// second one answers the recorder's digest challenge.
	build := func(authorization string) *sip.Request {
		inv := sess.dlg.request(sip.INVITE, contact)
		inv.RemoveHeader("Contact")
		inv.AppendHeader(&sip.ContactHeader{Address: contact, Params: sip.HeaderParams{{K: "+sip.src"}}})
		inv.AppendHeader(sip.NewHeader("Require", "siprec"))
		inv.AppendHeader(sip.NewHeader("Allow", dialogAllow))
		if authorization != "" {
			inv.AppendHeader(sip.NewHeader("Authorization", authorization))
		}
		ct := sip.ContentTypeHeader("multipart/mixed;boundary=" + boundary)
		inv.AppendHeader(&ct)
		inv.SetBody(body)
		return inv
	}

	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	inv := build("")
	res, err := r.invite(ctx, inv)
	if err == nil && res.StatusCode == 401 && r.secret != "" {
		var authorization string
		if authorization, err = r.authorization(inv, res); err != nil {
			return nil, err
		}
		res, err = r.invite(ctx, build(authorization))
	}
	if err != nil {
		return nil, err
	}
	if !res.IsSuccess() {
		return nil, fmt.Errorf("%w: %d %s", ErrRecorderRefused, res.StatusCode, res.Reason)
	}
	if err := sess.answered(res); err != nil {
		sess.byeLater() // it did answer 200: end that dialog
		return nil, err
	}
	if err := cc.dialogs.add(sess.callID, siprecDialog{sess}); err != nil {
		sess.byeLater()
		return nil, fmt.Errorf("%w: %v", ErrRecorderUnavailable, err)
	}
	ok = true
	sess.logger.Info("recording session started", zap.Bool("client_stream", sess.streams[media.SideA].on),
		zap.Bool("manager_stream", sess.streams[media.SideB].on))
	return sess, nil
}

// startLocal opens the session with the recorder in this process.
func (r *SRC) startLocal(info RecordingInfo) (*RecordingSession, error) {
	formats, ptmap := recordingFormats(info.Codecs)
	if len(formats) == 0 {
		return nil, fmt.Errorf("%w: no G.711 codec on the call", ErrBadRecordingInfo)
	}
	rec, err := r.local.StartRecording(info, formats[0].Name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecorderUnavailable, err)
	}
	sess := &RecordingSession{src: r, local: rec, callID: info.CallID, ptmap: ptmap, logger: r.logger}
	for side := range sess.streams {
		sess.streams[side].on = true
	}
	return sess, nil
}

// authorization answers the recorder's digest challenge to inv.
func (r *SRC) authorization(inv *sip.Request, res *sip.Response) (string, error) {
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		return "", fmt.Errorf("%w: 401 without a challenge", ErrRecorderRefused)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return "", fmt.Errorf("%w: challenge: %v", ErrRecorderRefused, err)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: string(inv.Method), URI: inv.Recipient.String(),
		Username: r.user, Password: r.secret, Count: 1})
	if err != nil {
		return "", fmt.Errorf("%w: challenge: %v", ErrRecorderRefused, err)
	}
	return cred.String(), nil
}

// invite sends the INVITE and waits for its final answer until ctx ends; a
// session given up on is CANCELled. A final answer other than 2xx is
// returned as it is (a 401 to answer, or a refusal).
func (r *SRC) invite(ctx context.Context, inv *sip.Request) (*sip.Response, error) {
	tx, err := r.client.TransactionRequest(ctx, inv, sipgo.ClientRequestAddVia)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecorderUnavailable, err)
	}
	defer tx.Terminate()
	for {
		select {
		case res, ok := <-tx.Responses():
			if !ok {
				return nil, fmt.Errorf("%w: transaction ended", ErrRecorderUnavailable)
			}
			switch {
			case res.IsProvisional():
				continue
			default:
				return res, nil
			}
		case <-tx.Done():
			return nil, fmt.Errorf("%w: %v", ErrRecorderUnavailable, tx.Err())
		case <-ctx.Done():
			go r.cancel(inv)
			return nil, fmt.Errorf("%w: no answer in %s", ErrRecorderUnavailable, r.timeout)
		}
	}
}

// cancel stops an INVITE we no longer wait for (RFC 3261 §9.1).
func (r *SRC) cancel(inv *sip.Request) {
	c := newCancel(inv)
	c.SetBody(nil)
	r.requestAndWait(c, sipgo.ClientRequestBuild)
}

func (r *SRC) requestAndWait(req *sip.Request, opts ...sipgo.ClientRequestOption) {
	requestAndWait(r.client, req, 5*time.Second, r.logger, opts...)
}

// answered takes the recorder's 200: ACK, dialog state, and where each
// stream goes.
func (sess *RecordingSession) answered(res *sip.Response) error {
	sess.dlg.mu.Lock()
	sess.dlg.remoteTag = tagOf(res.To().Params)
	if c := res.Contact(); c != nil && c.Address.Host != "" {
		sess.dlg.target = c.Address
		port := c.Address.Port
		if port == 0 {
			port = 5060
		}
		sess.dlg.dest = net.JoinHostPort(c.Address.Host, strconv.Itoa(port))
	}
	sess.dlg.mu.Unlock()
	ack := sess.dlg.requestSeq(sip.ACK, res.CSeq().SeqNo, sess.src.srv.calls.contact)
	ack.SetBody(nil) // Content-Length: 0, which a TCP peer needs to frame it
	if err := sess.src.client.WriteRequest(ack, sipgo.ClientRequestAddVia); err != nil {
		sess.logger.Warn("ACK to the recorder not sent", zap.Error(err))
	}
	dests, err := answerStreams(res)
	if err != nil {
		return err
	}
	accepted := false
	for side := range sess.streams {
		if side < len(dests) && dests[side].IsValid() {
			sess.streams[side].dest, sess.streams[side].on = dests[side], true
			accepted = true
		}
	}
	if !accepted {
		return fmt.Errorf("%w: it accepted no stream", ErrRecorderRefused)
	}
	return nil
}

// answerStreams reads where the recorder wants each offered stream, in
// m-line order; a refused stream (port 0) is invalid.
func answerStreams(res *sip.Response) (out []netip.AddrPort, err error) {
	defer func() {
		if recover() != nil {
			out, err = nil, fmt.Errorf("%w: unparseable SDP answer", ErrRecorderRefused)
		}
	}()
	body := res.Body()
	if h := res.ContentType(); h != nil {
		mt, params, perr := mime.ParseMediaType(h.Value())
		if perr == nil && mt == "multipart/mixed" {
			body = nil
			mr := multipart.NewReader(bytes.NewReader(res.Body()), params["boundary"])
			for range 8 {
				p, err := mr.NextRawPart()
				if err != nil {
					break
				}
				if pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); pt == "application/sdp" {
					body, _ = io.ReadAll(io.LimitReader(p, 32<<10))
					break
				}
			}
		}
	}
	var sd sdp.SessionDescription
	if len(body) == 0 || sd.Unmarshal(body) != nil {
		return nil, fmt.Errorf("%w: no usable SDP answer", ErrRecorderRefused)
	}
	for _, md := range sd.MediaDescriptions {
		ci := md.ConnectionInformation
		if ci == nil {
			ci = sd.ConnectionInformation
		}
		var ap netip.AddrPort
		if ci != nil && ci.Address != nil && md.MediaName.Port.Value > 0 && md.MediaName.Port.Value < 65536 {
			if ip, err := netip.ParseAddr(ci.Address.Address); err == nil && !ip.IsUnspecified() && !ip.IsMulticast() {
				ap = netip.AddrPortFrom(ip.Unmap(), uint16(md.MediaName.Port.Value))
			}
		}
		out = append(out, ap)
	}
	return out, nil
}

// Tap forks one RTP packet to the recorder: a 12-byte header (no CSRCs,
// extensions or padding; payload type renumbered to what we offered) and
// the payload, sent on the side's own socket. It runs on the relay's
// reader goroutine for that side, allocates nothing, and never waits for
// anything but the send (a UDP send does not block on the receiver).
func (sess *RecordingSession) Tap(from media.Side, pkt *rtp.Packet) {
	if sess.stopped.Load() || from > media.SideB {
		return
	}
	st := &sess.streams[from]
	pt := sess.ptmap[pkt.PayloadType&0x7f]
	if sess.local != nil {
		if pt != 0xff {
			sess.local.Packet(int(from), pt, pkt.Marker, pkt.SequenceNumber, pkt.Timestamp, pkt.SSRC, pkt.Payload)
			st.packets.Add(1)
		}
		return
	}
	if !st.on || pt == 0xff || len(pkt.Payload)+12 > len(st.buf) {
		return
	}
	b := st.buf[:12+len(pkt.Payload)]
	b[0] = 0x80
	b[1] = pt
	if pkt.Marker {
		b[1] |= 0x80
	}
	binary.BigEndian.PutUint16(b[2:], pkt.SequenceNumber)
	binary.BigEndian.PutUint32(b[4:], pkt.Timestamp)
	binary.BigEndian.PutUint32(b[8:], pkt.SSRC)
	copy(b[12:], pkt.Payload)
	if _, err := st.conn.WriteToUDPAddrPort(b, st.dest); err == nil {
		st.packets.Add(1)
	}
}

// Stop ends the session: forking stops at once, the BYE goes out in the
// background. It is safe to call more than once and on a nil session.
func (sess *RecordingSession) Stop() {
	if sess == nil {
		return
	}
	sess.once.Do(func() {
		sess.stopped.Store(true)
		sess.src.active.Add(-1)
		if sess.local != nil {
			sess.local.End()
			return
		}
		sess.closeSockets()
		sess.src.srv.calls.dialogs.remove(sess.callID)
		sess.byeLater()
		sess.logger.Info("recording session stopped", zap.Uint64("client_packets", sess.streams[media.SideA].packets.Load()),
			zap.Uint64("manager_packets", sess.streams[media.SideB].packets.Load()))
	})
}

// Outcome is what a call's ended event says about its recording: "" when
// recording is off (r is nil), missing when the session did not start,
// pending when the recorder has it (its recording.ready event will say
// complete or partial).
func (r *SRC) Outcome(sess *RecordingSession) string {
	switch {
	case r == nil:
		return ""
	case sess == nil:
		return RecordingMissing
	}
	return RecordingPending
}

// record starts the recording of a call that was just connected and
// installs its tap on the call's relay. It returns nil when the call goes
// unrecorded: no recorder (r is nil), or the recorder failed (logged and
// counted by Start). Call it on the call's owner goroutine.
func (r *SRC) record(c *call, clientCode string) *RecordingSession {
	if r == nil || c.relay == nil {
		return nil
	}
	clientID, managerID := c.parties()
	sess, err := r.Start(context.Background(), RecordingInfo{CallID: c.id, Direction: c.direction, ClientID: clientID,
		ClientCode: clientCode, ManagerID: managerID, Codecs: c.codecs})
	if err != nil {
		return nil
	}
	c.relay.SetTap(sess.Tap)
	return sess
}

// Packets reports how many packets were forked per side (client, manager).
func (sess *RecordingSession) Packets() (client, manager uint64) {
	if sess == nil {
		return 0, 0
	}
	return sess.streams[media.SideA].packets.Load(), sess.streams[media.SideB].packets.Load()
}

func (sess *RecordingSession) closeSockets() {
	for i := range sess.streams {
		if c := sess.streams[i].conn; c != nil {
			_ = c.Close()
		}
	}
}

// byeLater sends the BYE on a goroutine the SRC counts (Wait).
func (sess *RecordingSession) byeLater() {
	sess.src.pending.Add(1)
	go func() {
		defer sess.src.pending.Done()
		sess.bye()
	}()
}

func (sess *RecordingSession) bye() {
	bye := sess.dlg.request(sip.BYE, sess.src.srv.calls.contact)
	bye.SetBody(nil)
	sess.src.requestAndWait(bye, sipgo.ClientRequestAddVia)
}

// stoppedByRecorder: the recorder ended the session with a BYE.
func (sess *RecordingSession) stoppedByRecorder() {
	sess.once.Do(func() {
		sess.stopped.Store(true)
		sess.closeSockets()
		sess.src.active.Add(-1)
		sess.src.srv.calls.dialogs.remove(sess.callID)
		sess.logger.Warn("the recorder ended the recording session mid-call")
	})
}

// siprecDialog routes the recorder's in-dialog requests to its session.
type siprecDialog struct{ sess *RecordingSession }

func (d siprecDialog) matches(req *sip.Request) bool {
	from, to := req.From(), req.To()
	return from != nil && to != nil && tagOf(from.Params) == d.sess.dlg.peerTag() && tagOf(to.Params) == d.sess.dlg.localTag
}

func (d siprecDialog) handleInDialog(_ context.Context, req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.ACK:
	case sip.BYE:
		respond(tx, req, 200, "OK", nil)
		d.sess.stoppedByRecorder()
	case sip.INVITE:
		// The streams stay as they are: answer with our offer again.
		respond(tx, req, 200, "OK", d.sess.offer, contentTypeSDP())
	default:
		respond(tx, req, 200, "OK", nil)
	}
}

// listenIP is the address the forked streams are sent from: the SIP
// listen IP when it is concrete, else any.
func (s *Server) listenIP() netip.Addr {
	host, _, _ := net.SplitHostPort(s.cfg.Listen)
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip
	}
	return netip.IPv4Unspecified()
}

// recordingSDP is the SRC's offer: two sendonly streams, client then
// manager, from our public address.
func recordingSDP(public netip.Addr, sessionID uint64, ports [2]uint16, formats []media.Codec) []byte {
	family := "IP4"
	if public.Is6() {
		family = "IP6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=maskpbx %d 1 IN %s %s\r\ns=maskpbx recording\r\nc=IN %s %s\r\nt=0 0\r\n",
		sessionID, family, public, family, public)
	for side, label := range []string{"client", "manager"} {
		fmt.Fprintf(&b, "m=audio %d RTP/AVP", ports[side])
		for _, c := range formats {
			fmt.Fprintf(&b, " %d", c.PayloadType)
		}
		b.WriteString("\r\n")
		for _, c := range formats {
			fmt.Fprintf(&b, "a=rtpmap:%d %s/%d\r\n", c.PayloadType, c.Name, c.ClockRate)
			if c.Fmtp != "" {
				fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", c.PayloadType, c.Fmtp)
			}
		}
		fmt.Fprintf(&b, "a=label:%s\r\na=sendonly\r\n", label)
	}
	return []byte(b.String())
}

// metadataIDs are the RFC 7865 element ids of one document (base64 of 16
// random bytes each, as the RFC suggests).
type metadataIDs struct {
	session, client, manager, clientStream, managerStream string
}

func newMetadataIDs() metadataIDs {
	id := func() string {
		var b [16]byte
		_, _ = rand.Read(b[:])
		return base64.StdEncoding.EncodeToString(b[:])
	}
	return metadataIDs{id(), id(), id(), id(), id()}
}

// recordingMetadata is the RFC 7865 document of a call's recording session,
// with maskpbx's extension naming the call, client and manager by id. It
// holds no phone number: the client is his code at our domain.
func recordingMetadata(info RecordingInfo, domain string, ids metadataIDs) []byte {
	esc := func(s string) string {
		var b strings.Builder
		_ = xml.EscapeText(&b, []byte(s))
		return b.String()
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\r\n")
	b.WriteString(`<recording xmlns="urn:ietf:params:xml:ns:recording:1" xmlns:mpx="urn:maskpbx:xml:ns:recording:1">` + "\r\n")
	b.WriteString("  <datamode>complete</datamode>\r\n")
	fmt.Fprintf(&b, "  <session session_id=\"%s\">\r\n", esc(ids.session))
	fmt.Fprintf(&b, "    <mpx:call id=\"%s\" direction=\"%s\"/>\r\n", esc(info.CallID), esc(info.Direction))
	b.WriteString("  </session>\r\n")
	fmt.Fprintf(&b, "  <participant participant_id=\"%s\">\r\n", esc(ids.client))
	if info.ClientCode != "" {
		fmt.Fprintf(&b, "    <nameID aor=\"sip:%s@%s\"/>\r\n", esc(info.ClientCode), esc(domain))
	}
	if info.ClientID != "" {
		fmt.Fprintf(&b, "    <mpx:client id=\"%s\"", esc(info.ClientID))
		if info.ClientCode != "" {
			fmt.Fprintf(&b, " code=\"%s\"", esc(info.ClientCode))
		}
		b.WriteString("/>\r\n")
	}
	b.WriteString("  </participant>\r\n")
	fmt.Fprintf(&b, "  <participant participant_id=\"%s\">\r\n", esc(ids.manager))
	if info.ManagerID != "" {
		fmt.Fprintf(&b, "    <nameID aor=\"urn:uuid:%s\"/>\r\n", esc(info.ManagerID))
		fmt.Fprintf(&b, "    <mpx:manager id=\"%s\"/>\r\n", esc(info.ManagerID))
	}
	b.WriteString("  </participant>\r\n")
	fmt.Fprintf(&b, "  <stream stream_id=\"%s\" session_id=\"%s\"><label>client</label></stream>\r\n",
		esc(ids.clientStream), esc(ids.session))
	fmt.Fprintf(&b, "  <stream stream_id=\"%s\" session_id=\"%s\"><label>manager</label></stream>\r\n",
		esc(ids.managerStream), esc(ids.session))
	fmt.Fprintf(&b, "  <participantstreamassoc participant_id=\"%s\"><send>%s</send><recv>%s</recv></participantstreamassoc>\r\n",
		esc(ids.client), esc(ids.clientStream), esc(ids.managerStream))
	fmt.Fprintf(&b, "  <participantstreamassoc participant_id=\"%s\"><send>%s</send><recv>%s</recv></participantstreamassoc>\r\n",
		esc(ids.manager), esc(ids.managerStream), esc(ids.clientStream))
	b.WriteString("</recording>\r\n")
	return []byte(b.String())
}

// multipartBody is the INVITE body of RFC 7866 §8: the SDP, then the
// metadata.
func multipartBody(boundary string, offer, metadata []byte) []byte {
	var b bytes.Buffer
	b.WriteString("--" + boundary + "\r\nContent-Type: application/sdp\r\n\r\n")
	b.Write(offer)
	b.WriteString("\r\n--" + boundary + "\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n")
	b.Write(metadata)
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes()
}
