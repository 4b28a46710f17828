package pbx

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/maskpbx/maskpbx/pbx/media"
)

// SRTP on a phone's leg (SDES, RFC 4568). The keys travel in SDP, so the PBX
// offers SRTP only to phones whose signalling is encrypted: those that
// registered over TLS. A phone that offers RTP/SAVP itself (desk dialling)
// gets SRTP whatever its transport: that is its choice. The trunk's leg is
// plain RTP. The relay decrypts what a secure leg sends before it forwards
// or records it, so the recording is the same either way.
//
// Each side's state is written by the call's owner goroutine before the
// leg is joined or answered, and only read after.
type sideCrypto struct {
	offered []media.Crypto  // our lines in an offer to this side
	ours    *media.Crypto   // the line in force: every later SDP repeats it
	keys    *media.SRTPKeys // for the relay
}

// securesTransport reports whether a phone registered over transport is
// offered SRTP.
func securesTransport(transport string) bool { return strings.EqualFold(transport, "TLS") }

// refusesSRTP reports whether a leg's final failure is its phone refusing
// our SRTP offer (488 Not Acceptable Here, 415, 606 Not Acceptable): such a
// leg is tried once more with plain RTP.
func refusesSRTP(ev legEvent) bool {
	return ev.leg.plain != nil && (ev.status == 488 || ev.status == 415 || ev.status == 606)
}

// secureOfferSDP is our offer towards side with SRTP: one a=crypto line per
// supported suite, the same lines to every phone that rings.
func (c *call) secureOfferSDP(side media.Side, codecs []media.Codec) []byte {
	sc := &c.crypto[side]
	if sc.offered == nil {
		sc.offered = media.NewCryptoOffer()
	}
	return media.BuildSDPWith(c.localAddr(side), c.sessionID[side], c.version[side].Add(1), codecs, media.SendRecv,
		media.SDPOptions{Crypto: sc.offered})
}

// answerCrypto is a leg's SRTP state when the peer offered (a phone
// dialling out): the line to answer with, or zero for a plain offer. An
// error means the offer is secure and no line is usable (answer 488).
func answerCrypto(offer media.Offer) (sideCrypto, error) {
	if !offer.Secure {
		return sideCrypto{}, nil
	}
	ours, keys, err := media.AnswerCrypto(offer)
	if err != nil {
		return sideCrypto{}, err
	}
	return sideCrypto{ours: &ours, keys: &keys}, nil
}

// acceptAnswer takes the keys of side's answer to our offer (secure: the
// SRTP one). A plain answer to a plain offer is fine; a secure one must
// accept a line we offered, and a plain answer to a secure offer is refused
// (the phone must not downgrade a leg we offered encrypted).
func (c *call) acceptAnswer(side media.Side, answer media.Offer, secure bool) error {
	sc := &c.crypto[side]
	if !secure {
		if answer.Secure {
			return fmt.Errorf("%w: an SRTP answer to a plain offer", media.ErrNoCrypto)
		}
		return nil
	}
	if !answer.Secure {
		return fmt.Errorf("%w: a plain answer to an SRTP offer", media.ErrNoCrypto)
	}
	keys, err := media.AnsweredKeys(sc.offered, answer)
	if err != nil {
		return err
	}
	for i := range sc.offered {
		if sc.offered[i].Tag == answer.Crypto[0].Tag {
			sc.ours = &sc.offered[i]
		}
	}
	sc.keys = &keys
	return nil
}

// localAddr is where side sends us media.
func (c *call) localAddr(side media.Side) netip.AddrPort {
	return netip.AddrPortFrom(c.cc.publicIP, c.ports[side].LocalAddr().Port())
}
