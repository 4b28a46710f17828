package main

import (
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/maskpbx/maskpbx/storage"
)

// unlabelledJS lists the visible controls of the page that have no
// accessible name: no aria-label, aria-labelledby, <label>, title or (for
// a button or link) text.
const unlabelledJS = `Array.from(document.querySelectorAll('input, select, textarea, button, a[href], audio, [tabindex]:not([tabindex="-1"])'))
	.filter(el => el.type !== 'hidden' && el.checkVisibility())
	.filter(el => {
		const named = s => s && s.trim() !== '';
		if (named(el.getAttribute('aria-label')) || named(el.title)) return false;
		const by = el.getAttribute('aria-labelledby');
		if (by && by.split(/\s+/).some(id => named((document.getElementById(id) || {}).textContent))) return false;
		if (el.labels && Array.from(el.labels).some(l => named(l.textContent))) return false;
		if ((el.tagName === 'BUTTON' || el.tagName === 'A') && named(el.textContent)) return false;
		return true;
	})
	.map(el => el.outerHTML.slice(0, 120))`

// focusStyleJS says how the focused element shows its focus: an outline
// or a focus ring (box-shadow); empty when it does not.
const focusStyleJS = `(() => { const el = document.activeElement; if (!el || el === document.body) return 'body';
	const cs = getComputedStyle(el);
	const ring = (cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0) || cs.boxShadow !== 'none';
	return ring ? '' : el.outerHTML.slice(0, 120); })()`

// TestConsoleAccessibility walks the main pages of each role: every visible
// control has an accessible name, every control reached with Tab shows
// its focus, and the live call status is a live region.
func TestConsoleAccessibility(t *testing.T) {
	s := startSystemConfig(t, nil)
	b := newBrowser(t)
	admin := s.person("olga", "Olga Admin", storage.RoleAdmin)
	sveta := s.person("sveta", "Svetlana Orlova", storage.RoleSupervisor)
	anna := s.manager("anna")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID)
	for id, pw := range map[string]string{admin.ID: "olga-console-pw", sveta.ID: "sveta-console-pw", anna.ID: "anna-console-pw"} {
		s.setWebPassword(id, pw)
	}
	for _, who := range []struct {
		user, password string
		pages          []string
	}{
		{"anna", "anna-console-pw", []string{"/console/clients", "/console/clients/" + acme.ID}},
		{"sveta", "sveta-console-pw", []string{"/console/overview", "/console/calls", "/console/managers", "/console/clients/" + acme.ID,
			"/console/alerts"}},
		{"olga", "olga-console-pw", []string{"/console/managers", "/console/clients", "/console/clients/new", "/console/clients/import",
			"/console/clients/" + acme.ID, "/console/audit", "/console/alerts"}},
	} {
		p := b.person(who.user)
		p.signIn(s.api, who.user, who.password)
		for _, page := range who.pages {
			p.open(s.api, page)
			if bad := eval[[]string](p, unlabelledJS); len(bad) > 0 {
				t.Errorf("%s %s: controls without a name: %q", who.user, page, bad)
			}
			// Tab through the page: every stop shows where the focus is.
			seen := map[string]bool{}
			defer func(page string) { t.Logf("%s %s: %d tab stops", who.user, page, len(seen)) }(page)
			for i := 0; i < 60; i++ {
				p.do("Tab", chromedp.KeyEvent("\t"))
				id := eval[string](p, `(() => { const el = document.activeElement; return el ? el.outerHTML.slice(0, 120) : ''; })()`)
				if seen[id] {
					break
				}
				seen[id] = true
				if bad := eval[string](p, focusStyleJS); bad != "" && bad != "body" {
					t.Errorf("%s %s: keyboard focus not visible on %q", who.user, page, bad)
				}
			}
		}
		if who.user == "anna" {
			p.open(s.api, "/console/clients")
			live := eval[string](p, `(() => { const o = document.getElementById('status-`+acme.ID+`');
				return o ? (o.getAttribute('aria-live') || (o.tagName === 'OUTPUT' ? 'polite' : '')) : 'missing'; })()`)
			if live != "polite" && live != "assertive" {
				t.Errorf("the live call status is not announced (aria-live %q)", live)
			}
		}
	}
}
