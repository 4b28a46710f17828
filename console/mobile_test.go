package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/maskpbx/maskpbx/storage"
)

func TestMobileForm(t *testing.T) {
	e := newEnv(t)
	e.person("olga", storage.RoleAdmin, "olga-password")
	anna := e.person("anna", storage.RoleManager, "anna-password")
	ctx := context.Background()
	path := "/console/managers/" + anna.ID + "/mobile"

	ab := e.browser()
	if st := ab.signIn("anna", "anna-password"); st != http.StatusSeeOther {
		t.Fatalf("anna signs in: %d", st)
	}
	if st, _, _ := ab.post(path, url.Values{"csrf_token": {ab.csrf}, "number": {"+79035550101"}, "policy": {"only"}}); st != http.StatusForbidden {
		t.Errorf("a manager sets his own mobile: %d, want 403", st)
	}

	ob := e.browser()
	if st := ob.signIn("olga", "olga-password"); st != http.StatusSeeOther {
		t.Fatalf("olga signs in: %d", st)
	}
	if _, body, _ := ob.get("/console/managers"); !strings.Contains(body, `action="`+path+`"`) {
		t.Fatal("the managers page has no mobile form")
	}
	if st, _, _ := ob.post(path, url.Values{"csrf_token": {ob.csrf}, "number": {"8 903 555-01-01"}, "policy": {"after"}, "after_s": {"20"}}); st != http.StatusSeeOther {
		t.Fatalf("set anna's mobile: %d", st)
	}
	_, body, _ := ob.get("/console/managers")
	if !strings.Contains(body, "Mobile of") || !strings.Contains(body, "when his phones are not answered") {
		t.Error("setting the mobile is not confirmed")
	}
	if strings.Contains(body, "5550101") || strings.Contains(body, "555-01-01") {
		t.Error("the page shows the mobile number back")
	}
	if ms, err := e.store.RingableMobiles(ctx, []string{anna.ID}); err != nil || ms[anna.ID].Policy != "after" || ms[anna.ID].AfterS != 20 {
		t.Fatalf("stored mobile %+v %v", ms, err)
	}
	ob.post(path, url.Values{"csrf_token": {ob.csrf}, "number": {"not a number"}, "policy": {"only"}})
	if _, body, _ := ob.get("/console/managers"); !strings.Contains(body, "not a valid number") {
		t.Error("a bad number's error is not shown")
	}
	if st, _, _ := ob.post(path+"/remove", url.Values{"csrf_token": {ob.csrf}}); st != http.StatusSeeOther {
		t.Fatalf("remove anna's mobile: %d", st)
	}
	if ms, _ := e.store.RingableMobiles(ctx, []string{anna.ID}); len(ms) != 0 {
		t.Error("the mobile was not removed")
	}
	ob.post(path+"/remove", url.Values{"csrf_token": {ob.csrf}})
	if _, body, _ := ob.get("/console/managers"); !strings.Contains(body, "has no mobile") {
		t.Error("removing a missing mobile is not explained")
	}
	if !auditedAction(t, e.store, "manager.mobile_set", "manager:"+anna.ID) || !auditedAction(t, e.store, "manager.mobile_remove", "manager:"+anna.ID) {
		t.Error("the mobile changes are not audited")
	}
}
