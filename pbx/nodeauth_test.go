package pbx

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// nodeInvite is an INVITE as one node sends another for a phone.
func nodeInvite(callID, body string) *sip.Request {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "anna", Host: "127.0.0.20", Port: 5060})
	from := &sip.FromHeader{DisplayName: "Acme Trading #1001", Address: sip.Uri{Scheme: "sip", User: "1001", Host: "pbx.test"},
		Params: sip.HeaderParams{{K: "tag", V: "abc"}}}
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "anna", Host: "pbx.test"}})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.SetBody([]byte(body))
	return req
}

// A node credential is good once, at another node with the same key, for
// exactly the INVITE it was made for, for nodeAuthSkew.
func TestNodeAuth(t *testing.T) {
	var key, otherKey [32]byte
	key[0], otherKey[0] = 1, 2
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	signer := newNodeAuth(key, "node b;1", clock)
	signed := func(callID string, edit func(*sip.Request)) *sip.Request {
		req := nodeInvite(callID, "v=0 sdp of node b")
		signer.sign(req, "manager-1.0123456789abcdef")
		if edit != nil {
			edit(req)
		}
		return req
	}
	header := func(req *sip.Request, value string) {
		req.RemoveHeader(nodeHeader)
		req.AppendHeader(sip.NewHeader(nodeHeader, value))
	}
	tests := []struct {
		name     string
		verifier *nodeAuth
		req      *sip.Request
		ok       bool
	}{
		{"signed by another node", newNodeAuth(key, "node-a", clock), signed("c1", nil), true},
		{"another cluster's key", newNodeAuth(otherKey, "node-a", clock), signed("c2", nil), false},
		{"from this very node", newNodeAuth(key, "node b;1", clock), signed("c3", nil), false},
		{"SDP changed", newNodeAuth(key, "node-a", clock), signed("c4", func(r *sip.Request) { r.SetBody([]byte("v=0 stranger")) }), false},
		{"display name changed", newNodeAuth(key, "node-a", clock), signed("c5", func(r *sip.Request) { r.From().DisplayName = "+79161234567" }), false},
		{"another binding", newNodeAuth(key, "node-a", clock), signed("c6", func(r *sip.Request) {
			header(r, strings.Replace(r.GetHeader(nodeHeader).Value(), "binding=manager-1.", "binding=manager-2.", 1))
		}), false},
		{"no credential", newNodeAuth(key, "node-a", clock), nodeInvite("c7", "v=0"), false},
		{"garbage", newNodeAuth(key, "node-a", clock), signed("c8", func(r *sip.Request) { header(r, "%zz;ts=x;mac=;;=") }), false},
		{"too old", newNodeAuth(key, "node-a", func() time.Time { return now.Add(nodeAuthSkew + time.Second) }), signed("c9", nil), false},
		{"from the future", newNodeAuth(key, "node-a", func() time.Time { return now.Add(-nodeAuthSkew - time.Second) }), signed("c10", nil), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claim, ok := tc.verifier.verify(tc.req)
			if ok != tc.ok {
				t.Fatalf("verify: %v, want %v", ok, tc.ok)
			}
			if ok && (claim.node != "node b;1" || claim.binding != "manager-1.0123456789abcdef") {
				t.Fatalf("claim %+v", claim)
			}
		})
	}
	t.Run("replayed", func(t *testing.T) {
		v := newNodeAuth(key, "node-a", clock)
		req := signed("c11", nil)
		if _, ok := v.verify(req); !ok {
			t.Fatal("first use refused")
		}
		if _, ok := v.verify(req); ok {
			t.Fatal("a replay accepted")
		}
	})
}
