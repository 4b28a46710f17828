package main

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/maskpbx/maskpbx/internal/testenv"
	"github.com/maskpbx/maskpbx/storage"
)

type apiTask struct {
	ID             string `json:"id"`
	ClientID       string `json:"client_id"`
	ClientCode     string `json:"client_code"`
	CallID         string `json:"call_id"`
	ManagerID      string `json:"manager_id"`
	Status         string `json:"status"`
	Overdue        bool   `json:"overdue"`
	ClosedByCallID string `json:"closed_by_call_id"`
}

func (s *system) tasks(token, query string) []apiTask {
	s.t.Helper()
	var out []apiTask
	if st := s.call("GET", "/api/v1/tasks"+query, token, nil, &out); st != 200 {
		s.t.Fatalf("GET /api/v1/tasks%s: %d", query, st)
	}
	return out
}

// TestMissedCallTask: a client calls twice and reaches nobody (no phone
// registered: 480; then he hangs up while his manager's SIPp phone rings):
// two tasks for that manager (not for his partner); they turn overdue and
// show on the supervisor's page, per manager; the manager sees them on his
// page in Chromium, presses Call on one, and the connected call closes both.
func TestMissedCallTask(t *testing.T) {
	s := startSystemConfig(t, func(c *Config) { c.TaskOverdue = 2 * time.Second })
	b := newBrowser(t)
	anna := s.manager("anna")
	bob := s.manager("bob")
	sveta := s.person("sveta", "Sveta", "supervisor")
	acme := s.clientIn("Acme Trading", acmeNumber, "vip", anna.ID, bob.ID) // bob is a partner only
	numbers, codes := []string{acmeNumber}, []string{acme.Code}
	s.setWebPassword(anna.ID, "anna-console-pw")
	s.setWebPassword(sveta.ID, "sveta-console-pw")

	// First the client calls while anna has no phone registered: nobody
	// rings, the trunk gets 480.
	if got := rejected(t, s, trunkIP, "74950000000", "c=IN IP4 "+trunkIP, "m=audio 43300 RTP/AVP 0"); got != "480" {
		t.Fatalf("a call while nobody is registered: %s, want 480", got)
	}
	unrung := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	if unrung.Disposition != "missed" {
		t.Fatalf("CDR %+v, want missed", unrung)
	}

	// Then he hangs up while anna's phone rings.
	s.register("anna", annaIP, 5070)
	annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
	tr := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_cancel.xml", LocalIP: trunkIP, Remote: s.sipAddr,
		Keys: map[string]string{"company": "74950000000", "caller": acmeNumber, "rtp_ip": trunkIP, "rtp_port": "43304"},
		Args: []string{"-d", "800"},
	})
	tr.Wait()
	annaPh.Wait()
	missed := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	if missed.Disposition != "missed" || missed.AnsweredAt != nil || missed.CallID == unrung.CallID {
		t.Fatalf("CDR %+v, want a second missed call", missed)
	}

	// Two tasks for anna, newest first; none for bob.
	var tasks []apiTask
	testenv.Eventually(t, 15*time.Second, func() bool {
		tasks = s.tasks(anna.APIToken, "")
		return len(tasks) == 2
	}, "anna's two tasks for the missed calls")
	for i, callID := range []string{missed.CallID, unrung.CallID} {
		if tk := tasks[i]; tk.CallID != callID || tk.ClientID != acme.ID || tk.ClientCode != acme.Code ||
			tk.ManagerID != anna.ID || tk.Status != "open" {
			t.Fatalf("anna's task %d: %+v, want the open task of call %s", i, tk, callID)
		}
	}
	task := tasks[0]
	if l := s.tasks(bob.APIToken, ""); len(l) != 0 {
		t.Fatalf("bob (a partner, not the primary) sees tasks %+v", l)
	}
	if st := s.call("GET", "/api/v1/tasks?manager_id="+anna.ID, bob.APIToken, nil, nil); st != 403 {
		t.Fatalf("bob asking for anna's tasks: %d, want 403", st)
	}

	t.Run("the supervisor sees the overdue tasks per manager", func(t *testing.T) {
		testenv.Eventually(t, 15*time.Second, func() bool {
			return len(s.tasks(sveta.APIToken, "?overdue=true&manager_id="+anna.ID)) == 2
		}, "the tasks overdue after --task-overdue")
		p := b.person("sveta").in(t)
		p.signIn(s.api, "sveta", "sveta-console-pw")
		p.open(s.api, "/console/tasks")
		if got := p.text(`#overdue-per-manager tr[data-manager="` + anna.ID + `"]`); !strings.Contains(got, "M anna") ||
			!strings.Contains(got, "2") {
			t.Errorf("anna's row of overdue tasks: %q", got)
		}
		if got := p.text(`#tasks tr[data-task="` + task.ID + `"]`); !strings.Contains(got, "Acme Trading") ||
			!strings.Contains(got, acme.Code) || !strings.Contains(got, "Overdue") {
			t.Errorf("the overdue task's row: %q", got)
		}
		p.screenshot("supervisor-overdue-tasks", false)
		// anna's count links to her list; bob has none.
		p.do("open anna's overdue tasks", chromedp.Click(chromedp.CSS(`#overdue-per-manager tr[data-manager="`+anna.ID+`"] a`)),
			chromedp.WaitVisible(chromedp.CSS(`a[href="/console/tasks"].btn`)))
		if got := p.text("#tasks caption"); !strings.Contains(got, "M anna") {
			t.Errorf("anna's list is captioned %q", got)
		}
		p.open(s.api, "/console/tasks?manager="+bob.ID)
		if n := eval[int](p, `document.querySelectorAll('#tasks tbody tr').length`); n != 0 {
			t.Errorf("bob's overdue list shows %d tasks", n)
		}
		if bad := eval[[]string](p, unlabelledJS); len(bad) > 0 {
			t.Errorf("controls without a name: %q", bad)
		}
		p.assertNothingLeaked(numbers, codes)
	})

	t.Run("the manager calls back from his task list; the call closes both tasks", func(t *testing.T) {
		p := b.person("anna").in(t)
		p.signIn(s.api, "anna", "anna-console-pw")
		p.open(s.api, "/console/tasks")
		row := `#tasks tr[data-task="` + task.ID + `"]`
		if got := p.text(row); !strings.Contains(got, "Acme Trading") || !strings.Contains(got, acme.Code) {
			t.Fatalf("anna's task row: %q", got)
		}
		p.screenshot("manager-tasks", true)
		if bad := eval[[]string](p, unlabelledJS); len(bad) > 0 {
			t.Errorf("controls without a name: %q", bad)
		}
		eval[bool](p, `(() => { document.querySelector('`+row+` form button').focus(); return true; })()`)
		if bad := eval[string](p, focusStyleJS); bad != "" {
			t.Errorf("the Call button shows no keyboard focus: %q", bad)
		}
		trunk := trunkUAS(t, "answer", false, 43310)
		ph := testenv.StartSIPp(t, "anna", testenv.SIPpOptions{
			Scenario: "phone_answer.xml", LocalIP: annaIP, Port: 5070, Remote: s.sipAddr,
			Keys: map[string]string{"rtp_ip": annaIP, "rtp_port": "43312"},
			Sets: map[string]string{"hangup": "yes", "rings": "2"}, Args: []string{"-d", "1500"},
		})
		p.do("press Call on the task", chromedp.Click(chromedp.CSS(row+` form[data-call-client="`+acme.ID+`"] button`)))
		ph.Wait()
		trunk.Wait()
		var done []apiTask
		testenv.Eventually(t, 15*time.Second, func() bool {
			done = s.tasks(anna.APIToken, "?status=done")
			return len(done) == 2
		}, "both tasks closed by the call-back")
		back := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if back.CallID == missed.CallID || back.Direction != "outbound" || back.AnsweredAt == nil {
			t.Fatalf("the call-back's CDR %+v", back)
		}
		for _, tk := range done {
			if tk.ClosedByCallID != back.CallID {
				t.Fatalf("task %+v, want closed by the call-back %s", tk, back.CallID)
			}
		}
		if open := s.tasks(sveta.APIToken, "?status=open"); len(open) != 0 {
			t.Fatalf("open tasks after the call-back: %+v", open)
		}
		p.open(s.api, "/console/tasks")
		if n := eval[int](p, `document.querySelectorAll('#tasks tbody tr').length`); n != 0 {
			t.Errorf("anna's task page still lists %d tasks", n)
		}
		p.assertNothingLeaked(numbers, codes)
	})
}
