package main

import (
	"context"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

// TestDismissCutsOff: a dismissed manager loses his API token, his phone's
// registration and his clients at once, and his clients' next call rings
// the successor.
func TestDismissCutsOff(t *testing.T) {
	s := startSystem(t, 2*time.Second)
	anna := s.manager("anna")
	bob := s.manager("bob")
	acme := s.client("Acme Trading", acmeNumber, anna.ID)
	s.register("anna", annaIP, 5070)
	s.register("bob", bobIP, 5071)

	var ms []apiManager
	s.call("GET", "/api/v1/managers", adminTok, nil, &ms)
	for _, m := range ms {
		if !m.Registered {
			t.Fatalf("manager %s not shown as registered before dismissal", m.ID)
		}
	}
	if st := s.call("GET", "/api/v1/clients", anna.APIToken, nil, nil); st != 200 {
		t.Fatalf("anna's token before dismissal: %d", st)
	}

	if st := s.call("POST", "/api/v1/managers/"+anna.ID+"/dismiss", adminTok, map[string]string{"successor_id": bob.ID}, nil); st != 200 {
		t.Fatalf("dismiss: %d", st)
	}
	if st := s.call("GET", "/api/v1/clients", anna.APIToken, nil, nil); st != 401 {
		t.Fatalf("anna's token after dismissal: %d, want 401", st)
	}
	regs, err := s.run.Regs.Contacts(context.Background(), anna.ID)
	if err != nil || len(regs) != 0 {
		t.Fatalf("anna's registrations after dismissal: %v %v", regs, err)
	}
	var mine []apiClient
	s.call("GET", "/api/v1/clients", bob.APIToken, nil, &mine)
	if len(mine) != 1 || mine[0].ID != acme.ID {
		t.Fatalf("bob's clients after the handover: %+v", mine)
	}

	// Her phone can't come back: the right password gets a challenge again.
	testenv.StartSIPp(t, "anna re-register", testenv.SIPpOptions{
		Scenario: "register_wrong_password.xml", Remote: s.sipAddr, LocalIP: annaIP, Port: 5070,
		Keys: map[string]string{"sip_user": "anna", "sip_domain": domain, "reg_expires": "300"},
		Args: []string{"-au", "anna", "-ap", "anna-secret", "-auth_uri", domain},
	}).Wait()

	// The client still reaches the company: bob's phone rings.
	bobPh := phone(t, s, "bob", bobIP, 5071, 41202, false, 1)
	tr := trunkCall(t, s, acmeNumber, 41200, true, 500)
	tr.Wait()
	bobPh.Wait()
}
