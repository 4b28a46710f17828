// Package recorder owns call metadata and audio: the SIPREC recording
// server (RFC 7866 SRS: server.go, session.go) that writes each recording
// session as a stereo WAV per client (timeline.go aligns the channels,
// wav.go and blob.go store them, journal.go and commit.go make them survive
// a crash), the CDR writer fed by call events, and retention. It knows SIP
// only as a recording server; it never sees a phone number from our PBX.
package recorder
