package recorder

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// MetadataNamespace is the namespace of RFC 7865 recording metadata.
const MetadataNamespace = "urn:ietf:params:xml:ns:recording:1"

// ExtensionNamespace is maskpbx's extension of the metadata (RFC 7865 lets
// any element carry elements of other namespaces): it names the call by our
// call id and the parties by client and manager id, never by number.
//
//	<session session_id="..."><mpx:call id="<call uuid>" direction="inbound"/></session>
//	<participant participant_id="..."><mpx:client id="<uuid>" code="<client code>"/></participant>
//	<participant participant_id="..."><mpx:manager id="<uuid>"/></participant>
const ExtensionNamespace = "urn:maskpbx:xml:ns:recording:1"

// maxMetadata bounds the metadata document we parse.
const maxMetadata = 64 << 10

// ErrBadMetadata means a recording-session metadata document is malformed
// or names a call, client or manager with an invalid id. Its text never
// quotes the document.
var ErrBadMetadata = errors.New("recorder: bad recording metadata")

var (
	uuidRE       = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	clientCodeRE = regexp.MustCompile(`^[0-9]{6,12}$`)
)

// Metadata is what the recorder takes from a recording session's metadata.
type Metadata struct {
	// Set only when the SRC is a maskpbx PBX (the extension is present).
	CallID     string
	Direction  string
	ClientID   string
	ClientCode string
	ManagerID  string
	// StreamLabels are the SDP a=label values of the streams the client
	// (index 0, left) and the manager (1, right) send, where the metadata
	// associates them; empty where it does not.
	StreamLabels [2]string
}

// Ours reports whether a maskpbx PBX sent the session (it named the call).
func (m Metadata) Ours() bool { return m.CallID != "" }

type xmlRecording struct {
	XMLName      xml.Name            `xml:"recording"`
	Sessions     []xmlSession        `xml:"session"`
	Participants []xmlParticipant    `xml:"participant"`
	Streams      []xmlStream         `xml:"stream"`
	StreamAssocs []xmlParticipStream `xml:"participantstreamassoc"`
}

type xmlSession struct {
	ID   string   `xml:"session_id,attr"`
	Call *xmlCall `xml:"urn:maskpbx:xml:ns:recording:1 call"`
}

type xmlCall struct {
	ID        string `xml:"id,attr"`
	Direction string `xml:"direction,attr"`
}

type xmlParticipant struct {
	ID      string     `xml:"participant_id,attr"`
	Client  *xmlParty  `xml:"urn:maskpbx:xml:ns:recording:1 client"`
	Manager *xmlParty  `xml:"urn:maskpbx:xml:ns:recording:1 manager"`
	NameID  *xmlNameID `xml:"nameID"`
}

type xmlParty struct {
	ID   string `xml:"id,attr"`
	Code string `xml:"code,attr"`
}

type xmlNameID struct {
	AOR string `xml:"aor,attr"`
}

type xmlStream struct {
	ID    string `xml:"stream_id,attr"`
	Label string `xml:"label"`
}

type xmlParticipStream struct {
	Participant string   `xml:"participant_id,attr"`
	Send        []string `xml:"send"`
}

// ParseMetadata reads an application/rs-metadata+xml document (RFC 7865).
// Any SRC's metadata parses; maskpbx's extension, when present, must name
// valid ids. Which stream is whose: the participant marked as client (else
// the first participant) sends the left channel, the manager (else the
// second) the right.
func ParseMetadata(doc []byte) (Metadata, error) {
	if len(doc) > maxMetadata {
		return Metadata{}, fmt.Errorf("%w: too large", ErrBadMetadata)
	}
	var x xmlRecording
	dec := xml.NewDecoder(bytes.NewReader(doc))
	dec.Strict = true
	// No DTDs, no entities beyond the XML ones, no charsets but UTF-8.
	dec.Entity = nil
	dec.CharsetReader = func(string, io.Reader) (io.Reader, error) {
		return nil, errors.New("charset")
	}
	if err := dec.Decode(&x); err != nil {
		return Metadata{}, fmt.Errorf("%w: not a recording document", ErrBadMetadata)
	}
	if x.XMLName.Space != MetadataNamespace {
		return Metadata{}, fmt.Errorf("%w: wrong namespace", ErrBadMetadata)
	}
	var m Metadata
	for _, s := range x.Sessions {
		if s.Call == nil {
			continue
		}
		if m.CallID != "" {
			return Metadata{}, fmt.Errorf("%w: more than one call", ErrBadMetadata)
		}
		if !uuidRE.MatchString(s.Call.ID) {
			return Metadata{}, fmt.Errorf("%w: call id is not a uuid", ErrBadMetadata)
		}
		if s.Call.Direction != "inbound" && s.Call.Direction != "outbound" {
			return Metadata{}, fmt.Errorf("%w: direction must be inbound or outbound", ErrBadMetadata)
		}
		m.CallID, m.Direction = s.Call.ID, s.Call.Direction
	}

	// The participants who send each side, ours by mark, others by order.
	var side [2]*xmlParticipant
	var unmarked []*xmlParticipant
	for i := range x.Participants {
		p := &x.Participants[i]
		switch {
		case p.Client != nil && p.Manager != nil:
			return Metadata{}, fmt.Errorf("%w: participant is both client and manager", ErrBadMetadata)
		case p.Client != nil:
			if side[sideClient] != nil || !uuidRE.MatchString(p.Client.ID) ||
				(p.Client.Code != "" && !clientCodeRE.MatchString(p.Client.Code)) {
				return Metadata{}, fmt.Errorf("%w: bad client participant", ErrBadMetadata)
			}
			side[sideClient] = p
			m.ClientID, m.ClientCode = p.Client.ID, p.Client.Code
		case p.Manager != nil:
			if side[sideManager] != nil || !uuidRE.MatchString(p.Manager.ID) {
				return Metadata{}, fmt.Errorf("%w: bad manager participant", ErrBadMetadata)
			}
			side[sideManager] = p
			m.ManagerID = p.Manager.ID
		default:
			unmarked = append(unmarked, p)
		}
	}
	if (m.ClientID != "" || m.ManagerID != "") && m.CallID == "" {
		return Metadata{}, fmt.Errorf("%w: client or manager without a call", ErrBadMetadata)
	}
	for i := range side {
		if side[i] == nil && len(unmarked) > 0 {
			side[i], unmarked = unmarked[0], unmarked[1:]
		}
	}

	labels := map[string]string{}
	for _, s := range x.Streams {
		labels[strings.TrimSpace(s.ID)] = strings.TrimSpace(s.Label)
	}
	for i, p := range side {
		if p == nil {
			continue
		}
		for _, a := range x.StreamAssocs {
			if a.Participant != p.ID || len(a.Send) == 0 {
				continue
			}
			if l, ok := labels[strings.TrimSpace(a.Send[0])]; ok && m.StreamLabels[i] == "" {
				m.StreamLabels[i] = l
			}
		}
	}
	return m, nil
}
