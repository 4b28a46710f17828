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

// TestMissedCallTask: a client's call that rings his manager's SIPp phone
// until the client hangs up becomes a task for that manager (not for
// another); it turns overdue and shows on the supervisor's page, per
// manager; the manager sees it on his page in Chromium, presses its Call
// button, and the connected call closes it.
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
	s.register("anna", annaIP, 5070)

	// The client hangs up while anna's phone rings.
	annaPh := rejectingPhone(t, s, "anna", annaIP, 5070, "ring")
	tr := testenv.StartSIPp(t, "trunk", testenv.SIPpOptions{
		Scenario: "trunk_cancel.xml", LocalIP: trunkIP, Remote: s.sipAddr,
		Keys: map[string]string{"company": "74950000000", "caller": acmeNumber, "rtp_ip": trunkIP, "rtp_port": "43300"},
		Args: []string{"-d", "800"},
	})
	tr.Wait()
	annaPh.Wait()
	missed := s.cdr(storage.CDRFilter{ClientID: acme.ID})
	if missed.Disposition != "missed" || missed.AnsweredAt != nil {
		t.Fatalf("CDR %+v, want missed", missed)
	}

	var task apiTask
	testenv.Eventually(t, 15*time.Second, func() bool {
		l := s.tasks(anna.APIToken, "")
		if len(l) == 1 {
			task = l[0]
		}
		return len(l) == 1
	}, "anna's task for the missed call")
	if task.CallID != missed.CallID || task.ClientID != acme.ID || task.ManagerID != anna.ID || task.Status != "open" {
		t.Fatalf("anna's task %+v, missed call %s", task, missed.CallID)
	}
	if l := s.tasks(bob.APIToken, ""); len(l) != 0 {
		t.Fatalf("bob (a partner, not the primary) sees tasks %+v", l)
	}
	if st := s.call("GET", "/api/v1/tasks?manager_id="+anna.ID, bob.APIToken, nil, nil); st != 403 {
		t.Fatalf("bob asking for anna's tasks: %d, want 403", st)
	}

	t.Run("the supervisor sees the overdue task per manager", func(t *testing.T) {
		testenv.Eventually(t, 15*time.Second, func() bool {
			return len(s.tasks(sveta.APIToken, "?overdue=true&manager_id="+anna.ID)) == 1
		}, "the task overdue after --task-overdue")
		p := b.person("sveta").in(t)
		p.signIn(s.api, "sveta", "sveta-console-pw")
		p.open(s.api, "/console/tasks")
		if got := p.text(`#overdue-per-manager tr[data-manager="` + anna.ID + `"]`); !strings.Contains(got, "M anna") ||
			!strings.Contains(got, "1") {
			t.Errorf("anna's row of overdue tasks: %q", got)
		}
		if got := p.text(`#tasks tr[data-task="` + task.ID + `"]`); !strings.Contains(got, "Acme Trading") ||
			!strings.Contains(got, acme.Code) || !strings.Contains(got, "Overdue") {
			t.Errorf("the overdue task's row: %q", got)
		}
		p.screenshot("supervisor-overdue-tasks", false)
		if bad := eval[[]string](p, unlabelledJS); len(bad) > 0 {
			t.Errorf("controls without a name: %q", bad)
		}
		p.assertNothingLeaked(numbers, codes)
	})

	t.Run("the manager calls back from his task list; the call closes the task", func(t *testing.T) {
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
			return len(done) == 1
		}, "the task closed by the call-back")
		back := s.cdr(storage.CDRFilter{ClientID: acme.ID})
		if done[0].ID != task.ID || back.CallID == missed.CallID || done[0].ClosedByCallID != back.CallID ||
			back.Direction != "outbound" || back.AnsweredAt == nil {
			t.Fatalf("task %+v closed by %+v", done[0], back)
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
