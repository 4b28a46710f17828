package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maskpbx/maskpbx/api"
	"github.com/maskpbx/maskpbx/masking"
	"github.com/maskpbx/maskpbx/storage"
)

// pbxEdge stands in for the PBX (the console's edge): one live call, and
// the transfers asked of it.
type pbxEdge struct {
	call      api.CallStatus
	callID    string
	mu        sync.Mutex
	transfers []string // "<call> -> <manager> by <actor>"
	refuse    string   // a manager id the PBX refuses
}

func (p *pbxEdge) Originate(context.Context, api.OriginateCall) error { return api.ErrNotRegistered }

func (p *pbxEdge) CallStatus(id string) (api.CallStatus, bool) {
	return p.call, id == p.callID
}

func (p *pbxEdge) TransferCall(_ context.Context, callID, to, actor string) error {
	if to == p.refuse {
		return api.ErrTransferRefused
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.transfers = append(p.transfers, callID+" -> "+to+" by "+actor)
	return nil
}

// A connected call on the client page has a Transfer form listing the
// active colleagues (not the call's own manager); sending it asks the PBX
// through the API, and a refusal comes back as the API's message.
func TestTransferForm(t *testing.T) {
	edge := &pbxEdge{callID: uuid.NewString()}
	e := newEnvDialer(t, edge)
	anna := e.person("anna", storage.RoleManager, "anna-password")
	bob := e.person("bob", storage.RoleManager, "bob-password")
	carl := e.person("carl", storage.RoleManager, "")
	ctx := context.Background()
	cl, err := e.store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: anna.ID,
		NewCode: func() (string, error) { c, err := masking.NewClientCode(); return string(c), err }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, kind := range []string{storage.CallOffered, storage.CallAnswered} {
		if _, err := e.store.ApplyCallEvent(ctx, storage.CallEvent{EventID: uuid.NewString(), Kind: kind,
			At: now.Add(time.Duration(i) * time.Second), CallID: edge.callID, Direction: "inbound", ClientID: cl.ID, ManagerID: anna.ID}); err != nil {
			t.Fatal(err)
		}
	}
	edge.call = api.CallStatus{State: "connected", ClientID: cl.ID, ManagerID: anna.ID, Direction: "inbound"}
	edge.refuse = carl.ID

	b := e.browser()
	if st := b.signIn("anna", "anna-password"); st != http.StatusSeeOther {
		t.Fatalf("sign in: %d", st)
	}
	_, page, _ := b.get("/console/clients/" + cl.ID)
	form := page[strings.Index(page, `id="transfer-`+edge.callID+`"`):]
	form = form[:strings.Index(form, "</form>")]
	if !strings.Contains(form, `value="`+bob.ID+`"`) || strings.Contains(form, `value="`+anna.ID+`"`) {
		t.Fatalf("the transfer form offers the wrong colleagues:\n%s", form)
	}
	st, _, h := b.post("/console/calls/"+edge.callID+"/transfer", url.Values{"csrf_token": {b.csrf},
		"client": {cl.ID}, "to_manager_id": {bob.ID}})
	if st != http.StatusSeeOther || h.Get("Location") != "/console/clients/"+cl.ID {
		t.Fatalf("transfer: %d %s", st, h.Get("Location"))
	}
	if want := edge.callID + " -> " + bob.ID + " by manager:" + anna.ID; len(edge.transfers) != 1 || edge.transfers[0] != want {
		t.Errorf("the PBX was asked %v, want %s", edge.transfers, want)
	}
	_, page, _ = b.get("/console/clients/" + cl.ID)
	if !strings.Contains(page, "the colleague’s phone is ringing") {
		t.Error("no notice that the colleague is being rung")
	}
	b.post("/console/calls/"+edge.callID+"/transfer", url.Values{"csrf_token": {b.csrf},
		"client": {cl.ID}, "to_manager_id": {carl.ID}})
	if _, page, _ = b.get("/console/clients/" + cl.ID); !strings.Contains(page, "this colleague can't take the client") &&
		!strings.Contains(page, "this colleague can&#39;t take the client") {
		t.Error("the refusal is not shown")
	}
	if st, _, _ := b.post("/console/calls/"+edge.callID+"/transfer", url.Values{"client": {cl.ID}, "to_manager_id": {bob.ID}}); st != http.StatusForbidden {
		t.Errorf("a transfer without the CSRF token: %d", st)
	}
	// The API itself: a JSON error for a bad body, an unknown call, a
	// manager who is not on the call.
	for _, tc := range []struct {
		name, call string
		body       any
		status     int
		code       string
	}{
		{"no colleague named", edge.callID, map[string]string{}, http.StatusBadRequest, `"code":"bad_request"`},
		{"no such call", uuid.NewString(), map[string]string{"to_manager_id": bob.ID}, http.StatusNotFound, `"code":"not_found"`},
		{"refused", edge.callID, map[string]string{"to_manager_id": carl.ID}, http.StatusForbidden, `"code":"transfer_refused"`},
	} {
		st, raw := b.api("POST", "/api/v1/calls/"+tc.call+"/transfer", tc.body, true)
		if st != tc.status || !strings.Contains(string(raw), tc.code) {
			t.Errorf("%s: %d %s, want %d %s", tc.name, st, raw, tc.status, tc.code)
		}
	}
	bb := e.browser()
	bb.signIn("bob", "bob-password")
	if st, raw := bb.api("POST", "/api/v1/calls/"+edge.callID+"/transfer", map[string]string{"to_manager_id": carl.ID}, true); st != http.StatusNotFound {
		t.Errorf("a manager not on the call: %d %s", st, raw)
	}
	if _, page, _ := bb.get("/console/clients/" + cl.ID); strings.Contains(page, `id="transfer-`) {
		t.Error("a manager not on the call is offered the transfer form")
	}
	if len(edge.transfers) != 1 {
		t.Errorf("transfers asked: %v", edge.transfers)
	}
}
