package testenv

// PhoneOptions describe a real softphone under test and the PBX it
// registers with.
type PhoneOptions struct {
	Username  string // SIP user (the manager's sip_username)
	Password  string
	Domain    string // SIP domain, also the digest realm
	Registrar string // ip:port of the PBX's SIP UDP listener
	LocalIP   string // loopback IP the phone binds SIP and RTP to (127.0.0.26)
	PlayWAV   string // 8 kHz mono 16-bit WAV the phone sends as its microphone, looped
	RecordWAV string // where the phone writes what it hears; "" for a file in the test's temp dir
}
