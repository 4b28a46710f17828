package pbx

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// nodeHeader carries a node's credential on the INVITE it sends to the node
// that holds a phone's registration (relay.go):
//
//	X-Maskpbx-Node: <node>;ts=<unix seconds>;binding=<registration key>;mac=<hex>
//
// mac is HMAC-SHA256 under the node key over the node, ts, binding, Call-ID,
// From (display name, user, tag), To user, Request-URI user and the SDP's
// hash: nobody without the key can make one, and one captured can't be
// turned into another call (new Call-ID), another phone or another media
// address (new SDP).
const nodeHeader = "X-Maskpbx-Node"

// nodeAuthSkew is how far a node credential's time may be from ours.
const nodeAuthSkew = 30 * time.Second

// nodeAuth signs and checks node credentials. Its key is derived from the
// digest nonce key, the cluster secret every node reads from the CLUSTER
// bucket (cluster.go): whoever may read that bucket is a node.
type nodeAuth struct {
	key  []byte
	node string // this node's name
	now  func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // Call-IDs of credentials accepted -> when to forget them
}

func newNodeAuth(nonceKey [32]byte, node string, now func() time.Time) *nodeAuth {
	m := hmac.New(sha256.New, nonceKey[:])
	m.Write([]byte("maskpbx node-to-node SIP v1"))
	return &nodeAuth{key: m.Sum(nil), node: node, now: now, seen: map[string]time.Time{}}
}

// nodeClaim is what a checked credential says: which node sent the INVITE
// and which of our registrations it is for.
type nodeClaim struct {
	node    string
	binding string
}

func (a *nodeAuth) mac(req *sip.Request, node, ts, binding string) string {
	from, to := req.From(), req.To()
	body := sha256.Sum256(req.Body())
	m := hmac.New(sha256.New, a.key)
	for _, part := range []string{node, ts, binding, req.CallID().Value(), from.DisplayName, from.Address.User,
		tagOf(from.Params), to.Address.User, req.Recipient.User, hex.EncodeToString(body[:])} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// sign adds this node's credential for binding to req (complete: Call-ID,
// From, To and body set).
func (a *nodeAuth) sign(req *sip.Request, binding string) {
	ts := strconv.FormatInt(a.now().Unix(), 10)
	req.AppendHeader(sip.NewHeader(nodeHeader, url.QueryEscape(a.node)+";ts="+ts+";binding="+binding+";mac="+a.mac(req, a.node, ts, binding)))
}

// verify checks req's node credential: well formed, made with the node key,
// from another node, fresh, and not seen before (a replay); ok is false for
// anything else.
func (a *nodeAuth) verify(req *sip.Request) (nodeClaim, bool) {
	h := req.GetHeader(nodeHeader)
	if h == nil || req.From() == nil || req.To() == nil || req.CallID() == nil {
		return nodeClaim{}, false
	}
	node, rest, _ := strings.Cut(h.Value(), ";")
	var ts, binding, mac string
	for p := range strings.SplitSeq(rest, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "ts":
			ts = v
		case "binding":
			binding = v
		case "mac":
			mac = v
		}
	}
	node, err := url.QueryUnescape(strings.TrimSpace(node))
	if err != nil {
		return nodeClaim{}, false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || node == "" || node == a.node || binding == "" {
		return nodeClaim{}, false
	}
	if !hmac.Equal([]byte(mac), []byte(a.mac(req, node, ts, binding))) {
		return nodeClaim{}, false
	}
	now := a.now()
	if d := now.Sub(time.Unix(sec, 0)); d > nodeAuthSkew || d < -nodeAuthSkew {
		return nodeClaim{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, until := range a.seen {
		if now.After(until) {
			delete(a.seen, id)
		}
	}
	callID := req.CallID().Value()
	if _, replay := a.seen[callID]; replay {
		return nodeClaim{}, false
	}
	a.seen[callID] = now.Add(2 * nodeAuthSkew)
	return nodeClaim{node: node, binding: binding}, true
}
