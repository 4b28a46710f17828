package media

import "errors"

// Errors are sentinels so callers can map them with errors.Is in one place
// (ErrBadSDP, ErrNoCodec and ErrNoCrypto become SIP 488). Their text never carries input
// data: an SDP or packet may hold a client's address.
var (
	// ErrBadPortRange reports an --rtp-ports value that is not "min-max" with
	// room for at least one even RTP port and its RTCP neighbour.
	ErrBadPortRange = errors.New("media: bad RTP port range")

	// ErrNoPorts reports that every port pair of the pool is in use or
	// refused by the OS.
	ErrNoPorts = errors.New("media: no free RTP ports")

	// ErrBadSDP reports an SDP body that cannot be parsed or has no usable
	// RTP/AVP or RTP/SAVP audio stream with a valid connection address.
	ErrBadSDP = errors.New("media: bad SDP")

	// ErrNoCodec reports an SDP whose audio stream offers none of PCMU and PCMA.
	ErrNoCodec = errors.New("media: no supported codec")

	// ErrNoCrypto reports an RTP/SAVP stream without an a=crypto line the
	// relay can use (SIP 488), an answer that accepts none of our lines, or
	// SRTPKeys that Bridge cannot use.
	ErrNoCrypto = errors.New("media: no usable SRTP crypto")

	// ErrMediaTimeout ends a relay whose leg sent no RTP for the media timeout.
	ErrMediaTimeout = errors.New("media: RTP timeout")

	// ErrStopped is the reason of a relay ended by Stop.
	ErrStopped = errors.New("media: relay stopped")

	// ErrBadLeg reports a Bridge call with a nil, closed or repeated port.
	ErrBadLeg = errors.New("media: bad leg")

	// ErrMonitored reports a second monitor on a relay that has one.
	ErrMonitored = errors.New("media: the relay is monitored already")

	// ErrNotG711 reports a monitor asked for a codec other than PCMU or PCMA.
	ErrNotG711 = errors.New("media: monitor codec is not G.711")
)
