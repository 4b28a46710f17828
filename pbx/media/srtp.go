package media

import (
	"fmt"
	"io"
	"sync"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// SRTP on a leg (RFC 3711). The relay is an SRTP endpoint towards a secure
// leg: what the leg's peer sends is authenticated and decrypted with the
// peer's key before anything else looks at it (latching, media activity,
// forwarding, the Tap), and what the relay sends it is encrypted with our
// key. The other leg may be plain: the relay never forwards ciphertext.
//
// Ownership of the pion contexts, which are not safe for concurrent use:
//
//   - rtpIn of side s is used only by forwardRTP(s), which reads s's peer;
//     rtpOut of side s only by forwardRTP(1-s), the one writer of s's RTP
//     socket.
//   - rtcpIn and rtcpOut are used by whoever relays RTCP (the shared poller,
//     or one RTCP goroutine per leg where it is unavailable) under rtcpMu;
//     rtcpMu is never held with another lock.

// replayWindow is the SRTP and SRTCP replay window, in packets; RFC 3711
// §3.3.2 asks for at least 64.
const replayWindow = 128

// srtpOverhead is the most SRTP or SRTCP adds to a packet: the SRTCP index
// and an 80-bit tag.
const srtpOverhead = 4 + 10

// SRTPKeys are the SRTP keys of one secure leg, as negotiated in SDP with
// AnswerCrypto or AnsweredKeys. They print redacted.
type SRTPKeys struct {
	Suite Suite
	// Local is our key, from our a=crypto line: it protects what the relay
	// sends to the leg.
	Local MasterKey
	// Remote is the peer's key, from its a=crypto line: it authenticates
	// and decrypts what the peer sends.
	Remote MasterKey
}

// Format prints the suite only, with every verb (see Crypto.Format).
func (k SRTPKeys) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, "srtp-keys:"+k.Suite.String())
}

// srtpLeg is the SRTP state of one secure side of a relay.
type srtpLeg struct {
	rtpIn, rtpOut *srtp.Context

	rtcpMu          sync.Mutex
	rtcpIn, rtcpOut *srtp.Context
	rtcpHeader      rtcp.Header // scratch for pion, under rtcpMu
}

// newSRTPLeg derives the contexts for one secure side; nil keys mean a
// plain side.
func newSRTPLeg(k *SRTPKeys) (*srtpLeg, error) {
	if k == nil {
		return nil, nil
	}
	if !k.Suite.valid() || k.Local.isZero() || k.Remote.isZero() || k.Local == k.Remote {
		// Equal keys would make each direction's keystream the other's.
		return nil, fmt.Errorf("%w: unusable SRTP keys", ErrNoCrypto)
	}
	l := &srtpLeg{}
	var err error
	ctx := func(key *MasterKey, in bool) *srtp.Context {
		if err != nil {
			return nil
		}
		var opts []srtp.ContextOption
		if in {
			opts = []srtp.ContextOption{srtp.SRTPReplayProtection(replayWindow), srtp.SRTCPReplayProtection(replayWindow)}
		}
		var c *srtp.Context
		// pion's errors name lengths only, never key bytes.
		c, err = srtp.CreateContext(key.key(), key.salt(), k.Suite.profile(), opts...)
		return c
	}
	l.rtpIn, l.rtcpIn = ctx(&k.Remote, true), ctx(&k.Remote, true)
	l.rtpOut, l.rtcpOut = ctx(&k.Local, false), ctx(&k.Local, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoCrypto, err)
	}
	return l, nil
}

// openRTP authenticates and decrypts the SRTP packet in b in place and
// returns the RTP packet; false for a forgery, a replay or junk. Called by
// forwardRTP of the leg's side only; hdr is its scratch header.
func (l *srtpLeg) openRTP(b []byte, hdr *rtp.Header) ([]byte, bool) {
	p, err := l.rtpIn.DecryptRTP(b, b, hdr)
	return p, err == nil
}

// sealRTP encrypts the RTP packet in b into dst (room for b plus
// srtpOverhead); false if the stream has used up its key. Called by the
// other side's forwardRTP only; hdr is its scratch header.
func (l *srtpLeg) sealRTP(dst, b []byte, hdr *rtp.Header) ([]byte, bool) {
	p, err := l.rtpOut.EncryptRTP(dst[:0], b, hdr)
	return p, err == nil
}

// openRTCP authenticates and decrypts the SRTCP packet in b in place.
func (l *srtpLeg) openRTCP(b []byte) ([]byte, bool) {
	l.rtcpMu.Lock()
	defer l.rtcpMu.Unlock()
	p, err := l.rtcpIn.DecryptRTCP(b, b, &l.rtcpHeader)
	return p, err == nil
}

// sealRTCP encrypts the compound RTCP packet in b into dst.
func (l *srtpLeg) sealRTCP(dst, b []byte) ([]byte, bool) {
	l.rtcpMu.Lock()
	defer l.rtcpMu.Unlock()
	p, err := l.rtcpOut.EncryptRTCP(dst[:0], b, &l.rtcpHeader)
	return p, err == nil
}
