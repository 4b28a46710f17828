// Package audio is what the PBX relay (pbx/media), the recorder and the
// tests share about telephone audio: the payload formats we handle (G.711
// PCMU and PCMA, RFC 4733 telephone-event, all at 8 kHz), reading them from
// an SDP m-line's rtpmap and fmtp lines and writing them back, G.711 encoding
// and decoding, and test tones with their detection.
//
// It knows nothing of SIP, calls or sessions: callers hand it one media
// description and get payload formats back.
package audio
