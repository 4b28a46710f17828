// Package media owns the RTP side of a call: relay port pairs from the
// --rtp-ports range, symmetric latching, RTP/RTCP forwarding between two legs
// with RTCP identity scrubbed, SRTP on secure legs (SDES keys from
// a=crypto), media timeouts, and the PBX's own SDP. The
// payload formats it negotiates (Codec, read from rtpmap/fmtp) are
// internal/audio's, shared with the recorder.
//
// It knows nothing of SIP dialogs, clients or managers: call control hands it
// SDP bodies and ports and gets back SDP bodies, a running relay and errors.
package media
