package console

import (
	"go/ast"
	"go/parser"
	"go/token"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template/parse"
	"time"

	"github.com/maskpbx/maskpbx/internal/alerts"
	"github.com/maskpbx/maskpbx/internal/i18n"
	"github.com/maskpbx/maskpbx/storage"
)

var testLocale = &locale{lang: i18n.Get("en"), loc: time.UTC}

// pluralForms are the CLDR plural categories each language's plural
// messages must spell out.
var pluralForms = map[string][]string{
	"en": {"one", "other"},
	"ru": {"few", "many", "one", "other"},
	"pl": {"few", "many", "one", "other"},
	"ro": {"few", "one", "other"},
}

// TestCatalogsMatch: every language has exactly the English ids, and each
// plural message has its language's forms.
func TestCatalogsMatch(t *testing.T) {
	en, err := i18n.IDs("en")
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range i18n.Codes {
		ids, err := i18n.IDs(code)
		if err != nil {
			t.Fatal(err)
		}
		for id, enForms := range en {
			forms, ok := ids[id]
			switch {
			case !ok:
				t.Errorf("%s lacks %q", code, id)
			case (enForms == nil) != (forms == nil):
				t.Errorf("%s: %q is plural in one catalog and plain in the other", code, id)
			case forms != nil && !slices.Equal(forms, pluralForms[code]):
				t.Errorf("%s: %q has the forms %v, want %v", code, id, forms, pluralForms[code])
			}
		}
		for id := range ids {
			if _, ok := en[id]; !ok {
				t.Errorf("%s has %q, which en lacks", code, id)
			}
		}
	}
}

// dynamicIDs are the ids the code builds from a prefix and a value.
func dynamicIDs() []string {
	var out []string
	for _, r := range []string{storage.RoleManager, storage.RoleSupervisor, storage.RoleAdmin} {
		out = append(out, "role."+r)
	}
	for _, s := range []string{"client", "manager", "system"} {
		out = append(out, "side."+s)
	}
	for _, d := range dispositions {
		out = append(out, "disposition."+d)
	}
	for m := 1; m <= 12; m++ {
		out = append(out, "month."+strconv.Itoa(m))
	}
	for d := 0; d <= 6; d++ {
		out = append(out, "weekday."+strconv.Itoa(d))
	}
	for _, st := range []string{"recording", "missing", "deleted"} {
		out = append(out, recordingView{Status: st}.NoteID())
	}
	// The alerts page names rules and figures (alerts.go).
	for _, r := range alerts.Rules {
		out = append(out, "alerts.rule_"+r)
	}
	for _, f := range alertFigures {
		out = append(out, "alerts.fig_"+f)
	}
	return out
}

// TestCatalogCoversUses fails when a template, the Go code or console.js
// uses a message id the English catalog (and so, by TestCatalogsMatch,
// every catalog) lacks.
func TestCatalogCoversUses(t *testing.T) {
	en, err := i18n.IDs("en")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]string{} // id -> where
	// Templates: every literal first argument of t and tn.
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, n := range names {
		b, _ := templateFS.ReadFile(n)
		trees, err := parse.Parse(n, string(b), "{{", "}}", template.FuncMap{}, c0funcs())
		if err != nil {
			t.Fatal(err)
		}
		for _, tree := range trees {
			walk(tree.Root, func(cmd *parse.CommandNode) {
				if id, ok := command(cmd.Args, "t", "tn"); ok {
					used[id] = n
				}
			})
		}
	}
	// Go (the console, the API and the PBX): the literal ids given to t,
	// n, T, N, importProblem, fail and badRequest, the third argument of
	// newError, a pageError's ID, or returned as one.
	var files []string
	for _, dir := range []string{".", "../api", "../pbx"} {
		fs, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		files = append(files, fs...)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		// add notes a literal id; a returned literal only if it looks like
		// one (a function may return other strings too).
		add := func(e ast.Expr, returned bool) {
			if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, _ := strconv.Unquote(lit.Value); !returned || strings.Contains(s, ".") {
					used[s] = f
				}
			}
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				name := ""
				switch fn := n.Fun.(type) {
				case *ast.SelectorExpr:
					name = fn.Sel.Name
				case *ast.Ident:
					name = fn.Name
				}
				switch {
				case len(n.Args) > 0 && slices.Contains([]string{"t", "n", "T", "N", "importProblem", "fail", "badRequest"}, name):
					add(n.Args[0], false)
				case len(n.Args) > 2 && name == "newError":
					add(n.Args[2], false)
				}
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "ID" {
					add(n.Value, false)
				}
			case *ast.ReturnStmt:
				if f[0] == '.' { // the API and the PBX return no ids
					break
				}
				for _, r := range n.Results {
					add(r, true)
				}
			}
			return true
		})
	}
	for _, id := range dynamicIDs() {
		used[id] = "(built from a value)"
	}
	// console.js: tr("x") is js.x.
	js, err := os.ReadFile("static/console.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`tr\("([^"]+)"`).FindAllStringSubmatch(string(js), -1) {
		used["js."+m[1]] = "console.js"
	}
	if len(used) < 200 {
		t.Fatalf("found only %d ids in use: the scan is broken", len(used))
	}
	for id, where := range used {
		if _, ok := en[id]; !ok {
			t.Errorf("%s uses %q, which the catalog lacks", where, id)
		}
	}
}

// c0funcs names the template helpers for the parser (it checks that every
// function exists, not what it does).
func c0funcs() map[string]any {
	out := map[string]any{}
	for _, name := range []string{"and", "or", "not", "len", "index", "slice", "print", "printf", "println", "html", "js",
		"urlquery", "call", "eq", "ne", "lt", "le", "gt", "ge"} {
		out[name] = func() {}
	}
	for name := range (&Console{}).funcs(testLocale) {
		out[name] = func() {}
	}
	return out
}

// command returns the literal id of a call of one of fns.
func command(args []parse.Node, fns ...string) (string, bool) {
	if len(args) < 2 {
		return "", false
	}
	id, ok := args[0].(*parse.IdentifierNode)
	if !ok || !slices.Contains(fns, id.Ident) {
		return "", false
	}
	s, ok := args[1].(*parse.StringNode)
	if !ok {
		return "", false
	}
	return s.Text, true
}

// walk calls f for every command in a template tree, nested pipelines too.
func walk(n parse.Node, f func(*parse.CommandNode)) {
	var kids []parse.Node
	switch n := n.(type) {
	case *parse.ListNode:
		if n != nil {
			kids = n.Nodes
		}
	case *parse.PipeNode:
		if n != nil {
			for _, c := range n.Cmds {
				kids = append(kids, c)
			}
		}
	case *parse.CommandNode:
		f(n)
		kids = n.Args
	case *parse.ActionNode:
		kids = []parse.Node{n.Pipe}
	case *parse.TemplateNode:
		kids = []parse.Node{n.Pipe}
	case *parse.IfNode:
		kids = branch(&n.BranchNode)
	case *parse.RangeNode:
		kids = branch(&n.BranchNode)
	case *parse.WithNode:
		kids = branch(&n.BranchNode)
	}
	for _, k := range kids {
		walk(k, f)
	}
}

func branch(b *parse.BranchNode) []parse.Node { return []parse.Node{b.Pipe, b.List, b.ElseList} }

// The settings form takes only a language of the four and a zone name Go
// knows; a manager sets only his own; an admin sets anyone's; the
// bootstrap token, nobody's account, has no settings.
func TestSettingsInput(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	anna := e.person("anna", storage.RoleManager, "anna-password")
	bob := e.person("bob", storage.RoleManager, "bob-password")
	e.person("olga", storage.RoleAdmin, "olga-password")
	ab := e.browser()
	ab.signIn("anna", "anna-password")
	for _, tc := range []struct{ language, zone string }{
		{"de", ""},
		{"ru\u202e", ""},
		{"", "../../../../etc/passwd"},
		{"", "/etc/localtime"},
		{"", "Mars/Olympus"},
		{"", strings.Repeat("Europe/", 20)},
	} {
		st, page, _ := ab.post("/console/settings", url.Values{"csrf_token": {ab.csrf}, "language": {tc.language}, "time_zone": {tc.zone}})
		if st != http.StatusBadRequest || !strings.Contains(page, `role="alert"`) {
			t.Errorf("settings %q %q: %d, want 400 with the reason", tc.language, tc.zone, st)
		}
	}
	if ps, err := e.store.Settings(ctx, anna.ID); err != nil || ps != (storage.PersonSettings{}) {
		t.Fatalf("refused settings were kept: %+v %v", ps, err)
	}
	if st, _, _ := ab.post("/console/settings", url.Values{"language": {"ru"}}); st != http.StatusForbidden {
		t.Errorf("settings without the CSRF token: %d, want 403", st)
	}
	if st, _, _ := ab.post("/console/managers/"+bob.ID+"/settings", url.Values{"csrf_token": {ab.csrf}, "language": {"ru"}}); st != http.StatusForbidden {
		t.Errorf("a manager setting another's language: %d, want 403", st)
	}
	st, _, h := ab.post("/console/settings", url.Values{"csrf_token": {ab.csrf}, "language": {"ro"}, "time_zone": {"Europe/Chisinau"}})
	if st != http.StatusSeeOther {
		t.Fatalf("good settings: %d", st)
	}
	if ps, _ := e.store.Settings(ctx, anna.ID); ps.Language != "ro" || ps.TimeZone != "Europe/Chisinau" {
		t.Errorf("settings kept as %+v", ps)
	}
	_, page, _ := ab.get(h.Get("Location"))
	if !strings.Contains(page, `<html lang="ro">`) || !strings.Contains(page, "Setările au fost salvate.") || !strings.Contains(page, "Europe/Chisinau") {
		t.Errorf("the page after saving is not in Romanian on Chișinău time")
	}

	ob := e.browser()
	ob.signIn("olga", "olga-password")
	if st, _, _ := ob.post("/console/managers/"+bob.ID+"/settings", url.Values{"csrf_token": {ob.csrf}, "language": {"pl"}}); st != http.StatusSeeOther {
		t.Errorf("an admin setting bob's language: %d", st)
	}
	if ps, _ := e.store.Settings(ctx, bob.ID); ps.Language != "pl" {
		t.Errorf("bob's settings %+v", ps)
	}
	if !auditedAction(t, e.store, "manager.settings", "manager:"+bob.ID) {
		t.Error("an admin's change of settings is not audited")
	}

	tb := e.browser()
	tb.get("/console/signin?token=1")
	tb.post("/console/signin", url.Values{"csrf_token": {tb.csrf}, "mode": {"token"}, "token": {bootstrapToken}})
	if st, _, _ := tb.get("/console/settings"); st != http.StatusNotFound {
		t.Errorf("the bootstrap token's settings page: %d, want 404", st)
	}
}

// Before anyone signs in, the page follows the browser's Accept-Language,
// else the company's language (English here); a 404 too.
func TestSigninPageFollowsBrowser(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ path, accept, lang, want string }{
		{"/console/signin", "pl-PL,pl;q=0.9", "pl", "Logowanie"},
		{"/console/signin", "ru", "ru", "Вход"},
		{"/console/signin", "de-DE", "en", "Sign in"},
		{"/console/no-such-page", "ro", "ro", "Această pagină nu există."},
	} {
		req, _ := http.NewRequest("GET", e.url+tc.path, nil)
		req.Header.Set("Accept-Language", tc.accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if page := string(raw); !strings.Contains(page, `<html lang="`+tc.lang+`">`) || !strings.Contains(page, tc.want) {
			t.Errorf("%s with Accept-Language %q: not in %s (%q missing)", tc.path, tc.accept, tc.lang, tc.want)
		}
	}
}
