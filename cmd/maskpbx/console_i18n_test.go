package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/storage"
)

// The console in Russian, Romanian and Polish, in a company on Moscow
// time: each person finds his main pages wholly in his language, with the
// right plural forms, and a call at 22:30 UTC shows at 01:30 Moscow time
// and counts in that Moscow day's chart bar.

// teamPerson creates someone of a role with a team name that is no
// English word, and gives him a console password.
func (s *system) teamPerson(user, name, role string) apiManager {
	s.t.Helper()
	m := s.personInTeam(user, name, role, "zespół-1")
	s.setWebPassword(m.ID, user+"-console-pw")
	return m
}

// speakerAt signs a person in with a browser asking for acceptLanguage,
// opens path and checks it is all in lang; it returns him and the English
// fragments of that check.
func (b *browser) speakerAt(t *testing.T, s *system, user, acceptLanguage, lang, path string) (*person, []string) {
	t.Helper()
	p := b.person(user).in(t)
	p.speaks(acceptLanguage)
	p.signIn(s.api, user, user+"-console-pw")
	english := englishFragments(t, lang)
	p.open(s.api, path)
	p.assertAllIn(lang, english)
	return p, english
}

// speaks makes a person's browser ask for languages (Accept-Language).
func (p *person) speaks(acceptLanguage string) {
	p.t.Helper()
	if _, err := chromedp.Call(p.ctx, network.Enable, network.EnableParams{}); err != nil {
		p.t.Fatal(err)
	}
	if _, err := chromedp.Call(p.ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Accept-Language": acceptLanguage}}); err != nil {
		p.t.Fatal(err)
	}
}

// englishFragments are the English catalog's texts, cut at their fields,
// that the other language's catalog never uses (words such as "Manager"
// or "CSV" that both share are no sign of an untranslated page).
func englishFragments(t *testing.T, lang string) []string {
	t.Helper()
	en, err := i18n.Texts("en")
	if err != nil {
		t.Fatal(err)
	}
	other, err := i18n.Texts(lang)
	if err != nil {
		t.Fatal(err)
	}
	theirs := strings.ToLower(strings.Join(other, "\n"))
	field := regexp.MustCompile(`\{\{[^}]*\}\}`)
	seen := map[string]bool{}
	var out []string
	for _, text := range en {
		for _, frag := range field.Split(text, -1) {
			frag = strings.Trim(frag, " .,:;!?()«»“”\"'—–-·…#%/")
			letters := 0
			for _, r := range frag {
				if r >= 'A' && r <= 'z' {
					letters++
				}
			}
			if letters < 4 || seen[frag] || strings.Contains(theirs, strings.ToLower(frag)) {
				continue
			}
			seen[frag] = true
			out = append(out, frag)
		}
	}
	if len(out) < 100 {
		t.Fatalf("only %d English fragments to look for: the check is broken", len(out))
	}
	return out
}

// textContent is an element's text as written (CSS may show it in capitals).
func (p *person) textContent(sel string) string {
	p.t.Helper()
	return eval[string](p, `document.querySelector(`+strconv.Quote(sel)+`).textContent`)
}

// pageTexts is what a person reads on the page: its text (as written, not
// as CSS shows it, and hidden text too), and the labels, titles and
// placeholders of its elements.
func (p *person) pageTexts() string {
	return eval[string](p, `document.body.textContent + "\n" + Array.from(document.querySelectorAll("[aria-label],[title],[placeholder]"))
		.map(e => [e.getAttribute("aria-label"), e.getAttribute("title"), e.getAttribute("placeholder")].filter(Boolean).join("\n")).join("\n")`)
}

// assertAllIn fails for every English UI string on the page, and unless
// the page says it is in lang.
func (p *person) assertAllIn(lang string, english []string) {
	p.t.Helper()
	if got := eval[string](p, `document.documentElement.lang`); got != lang {
		p.t.Errorf("%s: <html lang=%q>, want %q", p.location(), got, lang)
	}
	text := p.pageTexts()
	for _, frag := range english {
		if regexp.MustCompile(`(?i)\b` + regexp.QuoteMeta(frag) + `\b`).MatchString(text) {
			p.t.Errorf("%s (%s) shows the English %q", p.location(), lang, frag)
		}
	}
}

func TestConsoleLanguages(t *testing.T) {
	moscow, err := time.LoadLocation("Europe/Moscow")
	if err != nil {
		t.Fatal(err)
	}
	s := startSystemConfig(t, func(c *Config) { c.TimeZone = "Europe/Moscow" })
	ctx := context.Background()
	ivan := s.teamPerson("ivan", "Иван Петров", storage.RoleManager)
	ion := s.teamPerson("ion", "Ion Popescu", storage.RoleSupervisor)
	piotr := s.teamPerson("piotr", "Piotr Nowak", storage.RoleAdmin)
	// Ivan chose Russian; Piotr chose Polish and UTC; Ion chose nothing:
	// his browser's Accept-Language decides.
	if err := s.run.Store.SetSettings(ctx, ivan.ID, storage.PersonSettings{Language: "ru"}, "test"); err != nil {
		t.Fatal(err)
	}
	if err := s.run.Store.SetSettings(ctx, piotr.ID, storage.PersonSettings{Language: "pl", TimeZone: "UTC"}, "test"); err != nil {
		t.Fatal(err)
	}
	var clients []apiClient
	for i, name := range []string{"Альфа Трейд", "Альфа Строй", "Бета Логистик", "Гамма Урал", "Дельта Нева"} {
		clients = append(clients, s.clientIn(name, fmt.Sprintf("+7916100200%d", i), "vip", ivan.ID))
	}
	// A call at 22:30 UTC: 01:30 of the next day in Moscow.
	now := time.Now().UTC()
	at := time.Date(now.Year(), now.Month(), now.Day(), 22, 30, 0, 0, time.UTC)
	if at.After(now) {
		at = at.AddDate(0, 0, -1)
	}
	callID := "00000000-0000-4000-8000-00000000c001"
	for j, kind := range []string{storage.CallOffered, storage.CallAnswered, storage.CallEnded} {
		ev := storage.CallEvent{EventID: fmt.Sprintf("tz-%d", j), Kind: kind, At: at.Add(time.Duration(j) * 20 * time.Second),
			CallID: callID, Direction: "inbound", ClientID: clients[2].ID, ManagerID: ivan.ID}
		if kind == storage.CallEnded {
			ev.Disposition, ev.HangupSide = "answered", "client"
		}
		if _, err := s.run.Store.ApplyCallEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}

	b := newBrowser(t)

	t.Run("a Russian manager's clients, with plural forms", func(t *testing.T) {
		// His own setting wins over the browser.
		p, english := b.speakerAt(t, s, "ivan", "en-US,en;q=0.9", "ru", "/console/clients")
		p.screenshot("ru-manager-clients", true)
		for q, want := range map[string]string{"": "5 клиентов", "Альфа": "2 клиента", "Бета": "1 клиент"} {
			p.open(s.api, "/console/clients?q="+q)
			if got := p.text("p.count"); !strings.HasPrefix(got, want) {
				t.Errorf("the count for %q reads %q, want %q", q, got, want)
			}
		}
		if got := p.textContent("#clients thead"); !strings.Contains(got, "Последний звонок") {
			t.Errorf("the clients table's head reads %q", got)
		}
		// The call at 22:30 UTC is the last call of Бета Логистик, at 01:30.
		p.open(s.api, "/console/clients")
		if got := p.text(`tr[data-client="` + clients[2].ID + `"] .last-call`); !strings.Contains(got, "01:30") || !strings.Contains(got, "Отвечен") {
			t.Errorf("the last call reads %q, want it at 01:30 Moscow time, answered", got)
		}
		p.open(s.api, "/console/clients/"+clients[2].ID)
		p.assertAllIn("ru", english)
		// His settings page changes his language at once.
		p.open(s.api, "/console/settings")
		p.assertAllIn("ru", english)
		p.do("choose Polish", chromedp.SetValue(chromedp.ID("language"), "pl"),
			chromedp.Click(chromedp.CSS("#settings-form button")), chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
		if got := p.text(".flash.ok"); got != "Ustawienia zapisane." {
			t.Errorf("the note after saving reads %q", got)
		}
		p.open(s.api, "/console/clients")
		p.assertAllIn("pl", englishFragments(t, "pl"))
		if got := p.text("p.count"); !strings.HasPrefix(got, "5 klientów") {
			t.Errorf("the Polish count reads %q", got)
		}
		p.do("back to Russian", chromedp.Navigate(s.api+"/console/settings"), chromedp.WaitVisible(chromedp.ID("language")),
			chromedp.SetValue(chromedp.ID("language"), "ru"),
			chromedp.Click(chromedp.CSS("#settings-form button")), chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
		if !s.audited("manager.settings", "manager:"+ivan.ID) {
			t.Error("changing the settings is not audited")
		}
	})

	t.Run("a Romanian supervisor's overview and calls, on Moscow time", func(t *testing.T) {
		p, english := b.speakerAt(t, s, "ion", "ro-MD,ro;q=0.9,en;q=0.5", "ro", "/console/overview")
		p.screenshot("ro-supervisor-overview", false)
		// The chart's table has a row a day, the last today (Moscow); the
		// call counts in the row of its Moscow day, not of its UTC day.
		rows := eval[[]int](p, `Array.from(document.getElementById("calls-chart").closest("figure").querySelectorAll("tbody tr"))
			.map(r => Array.from(r.querySelectorAll("td")).reduce((s, td) => s + parseInt(td.textContent, 10), 0))`)
		y1, m1, d1 := at.In(moscow).Date()
		y2, m2, d2 := time.Now().In(moscow).Date()
		back := int(time.Date(y2, m2, d2, 0, 0, 0, 0, time.UTC).Sub(time.Date(y1, m1, d1, 0, 0, 0, 0, time.UTC)).Hours() / 24)
		if len(rows) != 14 || back > 1 {
			t.Fatalf("chart rows %v, call %d days back", rows, back)
		}
		want := make([]int, 14)
		want[13-back] = 1
		if fmt.Sprint(rows) != fmt.Sprint(want) {
			t.Errorf("calls per Moscow day %v, want %v (the call at %s UTC counted on %d-%02d-%02d)", rows, want, at.Format("2006-01-02 15:04"), y1, m1, d1)
		}
		if back == 0 {
			if got := p.text("#kpi-calls-today"); got != "1" {
				t.Errorf("calls today (Moscow) reads %q, want 1", got)
			}
		}
		p.open(s.api, "/console/calls")
		p.assertAllIn("ro", english)
		cell := p.text("#call-" + callID + " time")
		dt := eval[string](p, `document.querySelector("#call-`+callID+` time").getAttribute("datetime")`)
		if !strings.Contains(cell, "01:30") || !strings.HasSuffix(dt, "+03:00") {
			t.Errorf("the call at 22:30 UTC shows %q (datetime %s), want 01:30 Moscow time", cell, dt)
		}
		if day := at.In(moscow).Format(time.DateOnly); !strings.HasPrefix(dt, day) {
			t.Errorf("the call's datetime %s is not on the Moscow day %s", dt, day)
		}
		if got := p.textContent("#calls thead"); !strings.Contains(got, "Rezultat") {
			t.Errorf("the calls table's head reads %q", got)
		}
	})

	t.Run("a Polish admin's managers page, on his own UTC", func(t *testing.T) {
		p, english := b.speakerAt(t, s, "piotr", "en-US,en;q=0.9", "pl", "/console/managers")
		p.screenshot("pl-admin-managers", false)
		if got := p.textContent("#managers thead"); !strings.Contains(got, "Telefon") || !strings.Contains(got, "Rola") {
			t.Errorf("the managers table's head reads %q", got)
		}
		if got := p.text("footer"); !strings.Contains(got, "UTC") {
			t.Errorf("the footer reads %q: his own time zone is UTC", got)
		}
		// A client's page as an admin sees it: assignment, reveal, legal
		// hold, export and erasure, all in Polish.
		p.open(s.api, "/console/clients/"+clients[2].ID)
		p.assertAllIn("pl", english)
		p.open(s.api, "/console/calls")
		if got := p.text("#call-" + callID + " time"); !strings.Contains(got, "22:30") {
			t.Errorf("on UTC the call shows %q, want 22:30", got)
		}
		// He sets Ion's language: Ion's next page is in Polish.
		p.open(s.api, "/console/managers")
		p.do("set Ion's language", chromedp.Click(chromedp.CSS(`tr[data-manager="`+ion.ID+`"] summary`)),
			chromedp.SetValue(chromedp.ID("language-"+ion.ID), "pl"),
			chromedp.Click(chromedp.CSS(`tr[data-manager="`+ion.ID+`"] .settings-form button`)), chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
		if ps, err := s.run.Store.Settings(ctx, ion.ID); err != nil || ps.Language != "pl" {
			t.Errorf("Ion's settings %+v, %v", ps, err)
		}
		ionP := b.person("ion2").in(t)
		ionP.speaks("ro")
		ionP.signIn(s.api, "ion", "ion-console-pw")
		ionP.open(s.api, "/console/overview")
		ionP.assertAllIn("pl", english)
	})
}
