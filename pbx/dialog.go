package pbx

import (
	"context"
	"fmt"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// dialog is one SIP dialog of a call, seen from our side. The PBX is a
// B2BUA: each call has two (or, while forking, more) independent dialogs,
// and nothing of one is copied into another.
type dialog struct {
	callID    string
	localTag  string
	remoteTag string
	local     sip.Uri // our URI in From (we sent the INVITE) or To (we got it)
	localName string  // our display name towards this peer
	remote    sip.Uri // the peer's URI
	target    sip.Uri // the peer's Contact: Request-URI of in-dialog requests
	dest      string  // host:port in-dialog requests go to (NAT: where he registered from)
	transport string
	// auth answers the digest challenges of the peer to our requests in
	// the dialog: the trunk's credentials, nil for phones.
	auth *TrunkAuth

	// mu guards localSeq, and remoteTag and target of a dialog we sent the
	// INVITE of: the answer sets them while requests in the dialog may
	// already be matched (peerTag).
	mu       sync.Mutex
	localSeq uint32
}

// peerTag is the remote tag; "" until the peer has answered.
func (d *dialog) peerTag() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remoteTag
}

// request builds an in-dialog request with the next local CSeq.
func (d *dialog) request(method sip.RequestMethod, contact sip.Uri) *sip.Request {
	d.mu.Lock()
	d.localSeq++
	seq := d.localSeq
	d.mu.Unlock()
	return d.requestSeq(method, seq, contact)
}

// nextSeq takes the next local CSeq number, for a request resent with
// credentials.
func (d *dialog) nextSeq() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.localSeq++
	return d.localSeq
}

// requestSeq builds an in-dialog request with a given CSeq number (ACK).
func (d *dialog) requestSeq(method sip.RequestMethod, seq uint32, contact sip.Uri) *sip.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	req := sip.NewRequest(method, d.target)
	from := &sip.FromHeader{DisplayName: d.localName, Address: d.local, Params: sip.NewParams()}
	from.Params.Add("tag", d.localTag)
	to := &sip.ToHeader{Address: d.remote, Params: sip.NewParams()}
	if d.remoteTag != "" {
		to.Params.Add("tag", d.remoteTag)
	}
	callID := sip.CallIDHeader(d.callID)
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.AppendHeader(&maxFwd)
	req.AppendHeader(&sip.ContactHeader{Address: contact})
	req.SetTransport(d.transport)
	req.SetDestination(d.dest)
	return req
}

// dialogs maps Call-ID to the leg that owns it. Our own legs get Call-IDs we
// generated; the trunk's legs keep the trunk's, so one map serves both.
type dialogs struct {
	mu   sync.Mutex
	legs map[string]inDialogHandler
}

// inDialogHandler is a leg that takes in-dialog requests (BYE, ACK,
// re-INVITE, UPDATE, INFO) addressed to it.
type inDialogHandler interface {
	handleInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction)
	// matches reports whether the request's tags belong to this dialog.
	matches(req *sip.Request) bool
}

func newDialogs() *dialogs { return &dialogs{legs: map[string]inDialogHandler{}} }

func (ds *dialogs) add(callID string, h inDialogHandler) error {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if _, dup := ds.legs[callID]; dup {
		return fmt.Errorf("pbx: Call-ID already in use")
	}
	ds.legs[callID] = h
	return nil
}

func (ds *dialogs) remove(callID string) {
	ds.mu.Lock()
	delete(ds.legs, callID)
	ds.mu.Unlock()
}

func (ds *dialogs) find(req *sip.Request) inDialogHandler {
	id := req.CallID()
	if id == nil {
		return nil
	}
	ds.mu.Lock()
	h := ds.legs[id.Value()]
	ds.mu.Unlock()
	if h == nil || !h.matches(req) {
		return nil
	}
	return h
}

func tagOf(params sip.HeaderParams) string {
	t, _ := params.Get("tag")
	return t
}
