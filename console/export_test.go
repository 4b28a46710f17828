package console

import (
	"context"
	"encoding/csv"
	"strings"
	"testing"

	"github.com/maskpbx/maskpbx/storage"
)

// TestExportCSVInjection: names that become formulas where a spreadsheet
// splits on ';' (Russian-locale Excel) or ',' stay text cells.
func TestExportCSVInjection(t *testing.T) {
	e := newEnv(t)
	anna := e.person("anna", storage.RoleManager, "")
	e.person("olga", storage.RoleAdmin, "olga-console-pw")
	codes := 0
	for _, name := range []string{"x;=1+2", "=HYPERLINK(\"http://evil\")", "y,@SUM(A1)", "z\t-2+3", "plain name"} {
		codes++
		if _, err := e.store.CreateClient(context.Background(), storage.NewClient{Name: name, ManagerID: anna.ID,
			NewCode: func() (string, error) { return strings.Repeat("7", 7) + string(rune('0'+codes)), nil }}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser()
	if st := b.signIn("olga", "olga-console-pw"); st != 303 {
		t.Fatalf("sign-in: %d", st)
	}
	st, body, _ := b.get("/console/clients/export.csv")
	if st != 200 || !strings.Contains(body, `"x;'=1+2"`) {
		t.Fatalf("export %d:\n%s", st, body)
	}
	for _, sep := range []rune{';', ',', '\t'} {
		r := csv.NewReader(strings.NewReader(body))
		r.Comma, r.FieldsPerRecord, r.LazyQuotes = sep, -1, true
		rows, err := r.ReadAll()
		if err != nil {
			t.Fatalf("split on %q: %v", sep, err)
		}
		for _, row := range rows {
			for _, cell := range row {
				if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
					t.Errorf("split on %q, a cell is a formula: %q", sep, cell)
				}
			}
		}
	}
	// Read as the comma-separated file it is, every name comes back whole.
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, row := range rows[1:] {
		names[row[2]] = true
	}
	for _, want := range []string{"x;'=1+2", "'=HYPERLINK(\"http://evil\")", "y,'@SUM(A1)", "z\t'-2+3", "plain name"} {
		if !names[want] {
			t.Errorf("name %q not in the export: %v", want, names)
		}
	}
}
