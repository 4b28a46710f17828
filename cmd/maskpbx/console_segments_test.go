package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/maskpbx/maskpbx/storage"
)

// TestConsoleSegmentsAndRotation: a supervisor gives a segment its rules,
// is told why the console refuses a rule, creates and deletes a segment,
// previews a rotation (nothing moves) and carries it out (the clients
// move); a manager is refused both pages. Every control has a name, and no
// response holds a client's number.
func TestConsoleSegmentsAndRotation(t *testing.T) {
	s := startSystemConfig(t, nil)
	b := newBrowser(t)
	sveta := s.person("sveta", "Svetlana Orlova", storage.RoleSupervisor)
	anna, bob, carl := s.manager("anna"), s.manager("bob"), s.manager("carl")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID)
	bolt := s.clientIn("Bolt Logistics", boltNumber, "retail", carl.ID)
	orion := s.clientIn("Orion Group", orionNumber, "retail", carl.ID)
	s.setWebPassword(sveta.ID, "sveta-console-pw")
	s.setWebPassword(anna.ID, "anna-console-pw")
	numbers := []string{acmeNumber, boltNumber, orionNumber}
	codes := []string{acme.Code, bolt.Code, orion.Code}
	ctx := context.Background()
	vip, err := s.run.Store.SegmentByName(ctx, "vip")
	if err != nil {
		t.Fatal(err)
	}
	retail, err := s.run.Store.SegmentByName(ctx, "retail")
	if err != nil {
		t.Fatal(err)
	}

	p := b.person("sveta")
	p.signIn(s.api, "sveta", "sveta-console-pw")

	t.Run("segments: rules saved through the form", func(t *testing.T) {
		p := p.in(t)
		p.open(s.api, "/console/segments")
		if bad := eval[[]string](p, unlabelledJS); len(bad) > 0 {
			t.Errorf("controls without a name: %q", bad)
		}
		row := `tr[data-segment="` + vip.ID + `"] `
		p.do("edit vip",
			chromedp.Click(chromedp.CSS(row+"summary")),
			chromedp.Click(chromedp.CSS(row+`input[name=restricted]`)),
			chromedp.Click(chromedp.CSS(row+`input[name=allowed_manager_ids][value="`+anna.ID+`"]`)),
			chromedp.Click(chromedp.CSS(row+`input[name=allowed_manager_ids][value="`+bob.ID+`"]`)),
			chromedp.SetValue(chromedp.CSS(row+`select[name=supervisor_id]`), sveta.ID),
			chromedp.Click(chromedp.CSS(row+`input[name=overflow_to_supervisor]`)),
			chromedp.Click(chromedp.CSS(row+`input[name=days][value="1"]`)),
			chromedp.Click(chromedp.CSS(row+`input[name=days][value="5"]`)),
			chromedp.SetValue(chromedp.CSS(row+`input[name=from]`), "10:00"),
			chromedp.SetValue(chromedp.CSS(row+`input[name=to]`), "17:30"),
			chromedp.Click(chromedp.CSS(row+`form.segment-form button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(".flash.ok")),
		)
		got, err := s.run.Store.Segment(ctx, vip.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Restricted || len(got.AllowedManagers) != 2 || got.SupervisorID != sveta.ID || !got.OverflowToSupervisor ||
			len(got.Hours.Days) != 2 || got.Hours.From.String() != "10h0m0s" || got.Hours.To.String() != "17h30m0s" {
			t.Fatalf("saved %+v", got)
		}
		if txt := p.text(`tr[data-segment="` + vip.ID + `"]`); !strings.Contains(txt, "M anna") || !strings.Contains(txt, "Mon, Fri 10:00–17:30") {
			t.Errorf("the row reads %q", txt)
		}
		p.screenshot("segments", true)
	})

	t.Run("segments: a refused rule says why; a new segment is made and deleted", func(t *testing.T) {
		p := p.in(t)
		row := `tr[data-segment="` + retail.ID + `"] `
		p.do("restrict retail to anna, who holds none of its clients",
			chromedp.Click(chromedp.CSS(row+"summary")),
			chromedp.Click(chromedp.CSS(row+`input[name=restricted]`)),
			chromedp.Click(chromedp.CSS(row+`input[name=allowed_manager_ids][value="`+anna.ID+`"]`)),
			chromedp.Click(chromedp.CSS(row+`form.segment-form button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(".flash.error")),
		)
		if got := p.text(".flash.error"); !strings.Contains(got, "reassign them first") {
			t.Errorf("the refusal reads %q", got)
		}
		if got, _ := s.run.Store.Segment(ctx, retail.ID); got.Restricted {
			t.Fatal("a refused rule was saved")
		}
		p.do("create gold",
			chromedp.SendKeys(chromedp.ID("sg-name"), "gold"),
			chromedp.Click(chromedp.CSS(`#new-segment button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(".flash.ok")),
		)
		gold, err := s.run.Store.SegmentByName(ctx, "gold")
		if err != nil {
			t.Fatalf("gold not created: %v", err)
		}
		row = `tr[data-segment="` + gold.ID + `"] `
		p.do("delete gold",
			chromedp.Click(chromedp.CSS(row+"summary")),
			chromedp.Click(chromedp.CSS(row+`form[action$="/delete"] button`)),
		)
		p.waitFor("the deletion's flash", `(document.querySelector('.flash.ok') || {}).textContent === 'Segment deleted.'`, 10*time.Second)
		if _, err := s.run.Store.SegmentByName(ctx, "gold"); err == nil {
			t.Fatal("gold not deleted")
		}
	})

	t.Run("rotation: the preview moves nobody, carrying it out moves as shown", func(t *testing.T) {
		p := p.in(t)
		p.open(s.api, "/console/rotations")
		if bad := eval[[]string](p, unlabelledJS); len(bad) > 0 {
			t.Errorf("controls without a name: %q", bad)
		}
		p.do("preview",
			chromedp.SetValue(chromedp.ID("rot-segment"), "retail"),
			chromedp.Click(chromedp.CSS(`input[name=manager_ids][value="`+anna.ID+`"]`)),
			chromedp.Click(chromedp.CSS(`input[name=manager_ids][value="`+bob.ID+`"]`)),
			chromedp.Click(chromedp.CSS(`input[name=manager_ids][value="`+carl.ID+`"]`)),
			chromedp.Click(chromedp.ID("rotation-preview")),
			chromedp.WaitVisible(chromedp.ID("rotation-preview-result")),
		)
		preview := p.text("#rotation-preview-result")
		if !strings.Contains(preview, "2 clients would move") || !strings.Contains(preview, "Bolt Logistics") || !strings.Contains(preview, "Orion Group") {
			t.Errorf("the preview reads %q", preview)
		}
		for _, c := range []apiClient{bolt, orion} {
			if now, _ := s.run.Store.Client(ctx, c.ID); now.ManagerID != carl.ID {
				t.Fatalf("the preview moved %s", c.Name)
			}
		}
		p.screenshot("rotation-preview", false)
		p.do("carry out", chromedp.Click(chromedp.ID("rotation-carry-out")), chromedp.WaitVisible(chromedp.CSS(".flash.ok")))
		if got := p.text(".flash.ok"); !strings.Contains(got, "2 clients moved") {
			t.Errorf("the flash reads %q", got)
		}
		to := map[string]int{}
		for _, c := range []apiClient{bolt, orion} {
			now, _ := s.run.Store.Client(ctx, c.ID)
			if now.ManagerID == carl.ID {
				t.Fatalf("%s was not moved", c.Name)
			}
			to[now.ManagerID]++
		}
		if to[bob.ID] == 0 {
			t.Errorf("bob, who held nobody, got no client (least-loaded first): %v", to)
		}
		if n := eval[int](p, `document.querySelectorAll('details.rotation').length`); n != 1 {
			t.Errorf("%d rotations in the history, want 1", n)
		}
		p.assertNothingLeaked(numbers, codes)
	})

	t.Run("rotation: a repeating rotation is saved and stopped", func(t *testing.T) {
		p := p.in(t)
		p.do("schedule",
			chromedp.SetValue(chromedp.ID("rot-segment"), "retail"),
			chromedp.SetValue(chromedp.ID("rot-every"), "14"),
			chromedp.Click(chromedp.ID("rotation-schedule")),
		)
		p.waitFor("the schedule's flash", `(document.querySelector('.flash.ok') || {}).textContent === 'Repeating rotation saved.'`, 10*time.Second)
		all, err := s.run.Store.RotationSchedules(ctx)
		if err != nil || len(all) != 1 || all[0].EveryDays != 14 || all[0].Plan.Segment != "retail" {
			t.Fatalf("schedules %+v %v", all, err)
		}
		if txt := p.text(`[data-schedule="` + all[0].ID + `"]`); !strings.Contains(txt, "Every 14 days") || !strings.Contains(txt, "segment retail") {
			t.Errorf("the schedule reads %q", txt)
		}
		p.screenshot("rotation", false)
		p.do("stop", chromedp.Click(chromedp.CSS(`[data-schedule="`+all[0].ID+`"] button`)))
		p.waitFor("the stop's flash", `(document.querySelector('.flash.ok') || {}).textContent === 'Repeating rotation stopped.'`, 10*time.Second)
		if all, _ := s.run.Store.RotationSchedules(ctx); len(all) != 0 {
			t.Fatalf("still scheduled: %+v", all)
		}
	})

	t.Run("a manager is refused both pages", func(t *testing.T) {
		m := b.person("anna").in(t)
		m.signIn(s.api, "anna", "anna-console-pw")
		for _, page := range []string{"/console/segments", "/console/rotations"} {
			m.open(s.api, page)
			if st := eval[string](m, `document.title`); !strings.Contains(st, "403") && !strings.Contains(strings.ToLower(m.text("main")), "forbidden") && !strings.Contains(strings.ToLower(m.text("main")), "not allowed") {
				t.Errorf("a manager at %s sees %q: %q", page, st, m.text("main"))
			}
		}
		if strings.Contains(m.html(), `href="/console/segments"`) {
			t.Error("a manager's navigation links to the segments page")
		}
	})
}
