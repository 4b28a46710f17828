// Package ivr is the PBX as the far end of a call leg's media: it plays
// prompts and tones to the leg's peer and collects the DTMF digits it sends
// (RFC 4733 events, or tones in the audio for trunks that pass them so),
// then hands the leg's port back for media.Bridge.
//
// It knows nothing of SIP, clients or managers: call control gives it a
// port, the negotiated codec and what to say, and gets digits back.
package ivr
