package console

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/maskpbx/maskpbx/storage"
)

// partnerBoxRE finds the partner checkboxes a page shows (the primary's is
// hidden).
var partnerBoxRE = regexp.MustCompile(`<label class="check" data-partner="([^"]+)">`)

// The client page of an admin: partners offered are the other managers
// only; the legal hold toggle and the erase button, which takes a reason
// and a confirmation, act through the API (audited there).
func TestClientPageErasureAndHold(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	olga := e.person("olga", storage.RoleAdmin, "olga-password")
	sue := e.person("sue", storage.RoleSupervisor, "sue-password")
	anna := e.person("anna", storage.RoleManager, "anna-password")
	bob := e.person("bob", storage.RoleManager, "")
	ob := e.browser()
	if st := ob.signIn("olga", "olga-password"); st != http.StatusSeeOther {
		t.Fatalf("olga signs in: %d", st)
	}
	st, raw := ob.api("POST", "/api/v1/clients", map[string]any{"name": "Acme Ivanov", "phones": []string{"+79161234567"},
		"manager_id": anna.ID}, true)
	var acme struct{ ID string }
	if st != 201 || json.Unmarshal(raw, &acme) != nil {
		t.Fatalf("create client: %d %s", st, raw)
	}
	page := "/console/clients/" + acme.ID

	t.Run("partners offered are the other managers", func(t *testing.T) {
		_, body, _ := ob.get(page)
		var offered []string
		for _, m := range partnerBoxRE.FindAllStringSubmatch(body, -1) {
			offered = append(offered, m[1])
		}
		if len(offered) != 1 || offered[0] != bob.ID {
			t.Errorf("partner checkboxes offer %v; want only bob %s (not anna, the primary, nor admin %s or supervisor %s)",
				offered, bob.ID, olga.ID, sue.ID)
		}
	})

	t.Run("export his data", func(t *testing.T) {
		resp, err := ob.c.PostForm(e.url+page+"/export", url.Values{"csrf_token": {ob.csrf}, "reason": {"data subject request 2026-31"}})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") ||
			!strings.Contains(string(raw), "+79161234567") || !strings.Contains(string(raw), `"client.data_export"`) {
			t.Fatalf("export: %d %v %.300s", resp.StatusCode, resp.Header, raw)
		}
		if st, _, h := ob.post(page+"/export", url.Values{"csrf_token": {ob.csrf}, "reason": {""}}); st != http.StatusSeeOther || h.Get("Location") != page {
			t.Errorf("export without a reason: %d %s", st, h.Get("Location"))
		}
		ab := e.browser()
		ab.signIn("anna", "anna-password")
		if st, body, _ := ab.post(page+"/export", url.Values{"csrf_token": {ab.csrf}, "reason": {"data subject request 2026-31"}}); st != http.StatusForbidden ||
			strings.Contains(body, "1234567") {
			t.Errorf("a manager exports: %d", st)
		}
	})

	t.Run("legal hold", func(t *testing.T) {
		_, body, _ := ob.get(page)
		if !strings.Contains(body, `id="hold-form"`) || strings.Contains(body, `id="hold-badge"`) {
			t.Fatal("no legal hold form, or a hold shown that is not set")
		}
		ob.post(page+"/legal-hold", url.Values{"csrf_token": {ob.csrf}, "hold": {"on"}, "reason": {"short"}})
		if c, _ := e.store.Client(ctx, acme.ID); c.LegalHold {
			t.Fatal("a hold without a proper reason was set")
		}
		if st, _, _ := ob.post(page+"/legal-hold", url.Values{"csrf_token": {ob.csrf}, "hold": {"on"}, "reason": {"litigation 2026-14"}}); st != http.StatusSeeOther {
			t.Fatalf("set hold: %d", st)
		}
		if c, _ := e.store.Client(ctx, acme.ID); !c.LegalHold {
			t.Fatal("the hold was not set")
		}
		if _, body, _ := ob.get(page); !strings.Contains(body, `id="hold-badge"`) || !strings.Contains(body, `name="hold" value="off"`) {
			t.Error("the page does not show the hold, or offers to set it again")
		}
		if !auditedAction(t, e.store, "client.legal_hold", "client:"+acme.ID) {
			t.Error("the hold is not audited")
		}
	})

	t.Run("erase needs a reason and a confirmation", func(t *testing.T) {
		ob.post(page+"/erase", url.Values{"csrf_token": {ob.csrf}, "reason": {"GDPR request 2026-31"}})
		if _, body, _ := ob.get(page); !strings.Contains(body, "cannot be undone") {
			t.Error("an unconfirmed erasure says nothing")
		}
		ob.post(page+"/erase", url.Values{"csrf_token": {ob.csrf}, "confirm": {"yes"}, "reason": {""}})
		if c, _ := e.store.Client(ctx, acme.ID); c.ErasedAt != nil {
			t.Fatal("erased without a reason or confirmation")
		}
		ab := e.browser()
		ab.signIn("anna", "anna-password")
		if st, _, _ := ab.post(page+"/erase", url.Values{"csrf_token": {ab.csrf}, "confirm": {"yes"}, "reason": {"GDPR request 2026-31"}}); st != http.StatusForbidden {
			t.Errorf("a manager erases: %d, want 403", st)
		}
		_, body, _ := ob.get(page)
		if !strings.Contains(body, `id="erase-form"`) || !strings.Contains(body, `id="erase-confirm"`) {
			t.Fatal("no erase form with a confirmation")
		}
		if st, _, _ := ob.post(page+"/erase", url.Values{"csrf_token": {ob.csrf}, "confirm": {"yes"}, "reason": {"GDPR request 2026-31"}}); st != http.StatusSeeOther {
			t.Fatalf("erase: %d", st)
		}
		c, _ := e.store.Client(ctx, acme.ID)
		if c.ErasedAt == nil || c.Name != storage.ErasurePseudonym(acme.ID) {
			t.Fatalf("after erasure: %+v", c)
		}
		_, body, _ = ob.get(page)
		if !strings.Contains(body, `id="erased-badge"`) || strings.Contains(body, "Acme Ivanov") || strings.Contains(body, `id="erase-form"`) ||
			strings.Contains(body, `id="reveal-form"`) || strings.Contains(body, `id="assign-form"`) || !strings.Contains(body, `id="hold-form"`) {
			t.Error("the erased client's page: want the badge and the hold toggle, no name, no erase, reveal or assignment")
		}
		if !auditedAction(t, e.store, "client.erase", "client:"+acme.ID) {
			t.Error("the erasure is not audited")
		}
	})
}
