package console

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/maskpbx/maskpbx/storage"
)

var missedChartRE = regexp.MustCompile(`(?s)<svg id="missed-chart".*?</svg>`)

// A day with calls and none missed: the missed-calls chart says there was
// nothing missed, not that there were no calls.
func TestMissedChartWithoutMissedCalls(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.person("sue", storage.RoleSupervisor, "sue-password")
	anna := e.person("anna", storage.RoleManager, "")
	c, err := e.store.CreateClient(ctx, storage.NewClient{Name: "Acme", ManagerID: anna.ID,
		NewCode: func() (string, error) { return "12345678", nil }}, "test")
	if err != nil {
		t.Fatal(err)
	}
	sb := e.browser()
	sb.signIn("sue", "sue-password")
	missedChart := func() string {
		_, body, _ := sb.get("/console/overview")
		return missedChartRE.FindString(body)
	}
	if chart := missedChart(); !strings.Contains(chart, "No calls in this period") {
		t.Fatalf("with no calls at all the missed chart says: %q", chart)
	}
	now := time.Now()
	for _, ev := range []storage.CallEvent{
		{EventID: "o1", Kind: storage.CallOffered, At: now.Add(-time.Minute), CallID: "6f1c2b9e-0d3a-4c55-9a41-2f7d8e6b1a00",
			Direction: "inbound", ClientID: c.ID, ManagerID: anna.ID},
		{EventID: "a1", Kind: storage.CallAnswered, At: now.Add(-50 * time.Second), CallID: "6f1c2b9e-0d3a-4c55-9a41-2f7d8e6b1a00"},
		{EventID: "e1", Kind: storage.CallEnded, At: now.Add(-10 * time.Second), CallID: "6f1c2b9e-0d3a-4c55-9a41-2f7d8e6b1a00",
			Disposition: "answered", HangupSide: "client"},
	} {
		if _, err := e.store.ApplyCallEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	chart := missedChart()
	if chart == "" || strings.Contains(chart, "No calls in this period") || !strings.Contains(chart, "No missed calls in this period") {
		t.Errorf("a day with an answered call and none missed: the missed chart says %q", chart)
	}
}
