// Package media owns the RTP side of a call: relay port pairs from the
// --rtp-ports range, symmetric latching restricted to the IPs the signalling
// named, RTP/RTCP forwarding between two legs under the relay's own SSRCs
// with RTCP identity scrubbed, SRTP on secure legs (SDES keys from
// a=crypto), media timeouts, the PBX's own SDP, and the PBX's own end of a
// leg's media (Endpoint, for pbx/ivr's prompts and digits) under the same
// latching rules. The payload formats it
// negotiates (Codec, read from rtpmap/fmtp) are internal/audio's, shared
// with the recorder.
//
// It knows nothing of SIP dialogs, clients or managers: call control hands it
// SDP bodies, ports and the peers' signalling addresses and gets back SDP
// bodies, a running relay and errors.
package media
