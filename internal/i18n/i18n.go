// Package i18n holds maskpbx's languages: the message catalogs under
// locales/ (one TOML file a language, embedded), the choice of a language
// from a setting, an Accept-Language header or the company default, and
// locale-aware numbers. It knows nothing of HTTP handlers, SIP or SQL.
package i18n

import (
	"embed"
	"fmt"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	goi18n "github.com/nicksnyder/go-i18n/v2/i18n"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed locales/*.toml
var localeFS embed.FS

// Default is the language used when nothing else names one.
const Default = "en"

// Codes are the languages maskpbx speaks, English first (the reference
// catalog every other one must match).
var Codes = []string{"en", "ru", "ro", "pl"}

// names are the languages as their speakers write them.
var names = map[string]string{"en": "English", "ru": "Русский", "ro": "Română", "pl": "Polski"}

// Lang is one language: its messages, plural rules and number format. It is
// safe for concurrent use.
type Lang struct {
	code    string
	loc     *goi18n.Localizer
	numbers *message.Printer
}

var (
	bundle  *goi18n.Bundle
	langs   = map[string]*Lang{}
	matcher language.Matcher
	// ids are the message ids of the English catalog.
	ids map[string][]string
)

func init() {
	bundle = goi18n.NewBundle(language.English)
	bundle.RegisterUnmarshalFunc("toml", toml.Unmarshal)
	tags := make([]language.Tag, 0, len(Codes))
	for _, code := range Codes {
		if _, err := bundle.LoadMessageFileFS(localeFS, "locales/"+code+".toml"); err != nil {
			panic(fmt.Sprintf("i18n: catalog %s: %v", code, err)) // a broken embedded catalog is a build error
		}
		tag := language.MustParse(code)
		tags = append(tags, tag)
		langs[code] = &Lang{code: code, loc: goi18n.NewLocalizer(bundle, code), numbers: message.NewPrinter(tag)}
	}
	matcher = language.NewMatcher(tags)
	var err error
	if ids, err = IDs(Default); err != nil {
		panic(fmt.Sprintf("i18n: catalog %s: %v", Default, err))
	}
}

// Supported says whether code is one of Codes.
func Supported(code string) bool { return slices.Contains(Codes, code) }

// Get returns the language of code, or the default language for a code
// maskpbx does not speak.
func Get(code string) *Lang {
	if l, ok := langs[code]; ok {
		return l
	}
	return langs[Default]
}

// Match picks the language for an Accept-Language header: the best of
// Codes it names, else fallback (itself checked, else English).
func Match(acceptLanguage, fallback string) *Lang {
	if acceptLanguage != "" && len(acceptLanguage) <= 512 {
		prefs, _, err := language.ParseAcceptLanguage(acceptLanguage)
		if err == nil && len(prefs) > 0 {
			_, i, conf := matcher.Match(prefs...)
			if conf != language.No {
				return langs[Codes[i]]
			}
		}
	}
	return Get(fallback)
}

// Code is the language's code, e.g. "ru".
func (l *Lang) Code() string { return l.code }

// Name is the language's own name, e.g. "Русский".
func (l *Lang) Name() string { return names[l.code] }

// T is the message id in this language; args are name, value pairs for the
// message's {{.Name}} fields. A missing message shows as its id (the
// catalog test keeps that from happening).
func (l *Lang) T(id string, args ...any) string {
	return l.localize(id, nil, args)
}

// N is the plural message id for the count n, whose {{.Count}} is n in
// this language's number format; args as for T.
func (l *Lang) N(id string, n int, args ...any) string {
	return l.localize(id, n, append([]any{"Count", l.Number(n)}, args...))
}

func (l *Lang) localize(id string, count any, args []any) string {
	var data map[string]any
	if len(args) > 0 {
		data = make(map[string]any, len(args)/2)
		for i := 0; i+1 < len(args); i += 2 {
			data[fmt.Sprint(args[i])] = args[i+1]
		}
	}
	s, err := l.loc.Localize(&goi18n.LocalizeConfig{MessageID: id, TemplateData: data, PluralCount: count})
	if err != nil {
		return id
	}
	return s
}

// Messages is every plain message whose id starts with prefix, keyed by
// the rest of its id: the texts a script on a page shows.
func (l *Lang) Messages(prefix string) map[string]string {
	out := map[string]string{}
	for id, forms := range ids {
		if rest, ok := strings.CutPrefix(id, prefix); ok && forms == nil {
			out[rest] = l.T(id)
		}
	}
	return out
}

// Number writes an integer with this language's digit grouping.
func (l *Lang) Number(n int) string { return l.numbers.Sprintf("%d", n) }

// IDs lists every message id of a language's catalog with the plural forms
// each plural message has ("few", "many", "one", "other", sorted; nil for a
// plain message). Tests use it to check the catalogs against each other.
func IDs(code string) (map[string][]string, error) {
	mf, err := catalog(code)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(mf.Messages))
	for _, m := range mf.Messages {
		var forms []string
		for form, text := range map[string]string{"zero": m.Zero, "one": m.One, "two": m.Two, "few": m.Few, "many": m.Many} {
			if text != "" {
				forms = append(forms, form)
			}
		}
		if len(forms) > 0 {
			forms = append(forms, "other")
			slices.Sort(forms)
		}
		out[m.ID] = forms
	}
	return out, nil
}

// Texts lists every text of a language's catalog (all plural forms), for
// tests that look for one language's words on another's pages.
func Texts(code string) ([]string, error) {
	mf, err := catalog(code)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mf.Messages {
		for _, s := range []string{m.Zero, m.One, m.Two, m.Few, m.Many, m.Other} {
			if strings.TrimSpace(s) != "" {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func catalog(code string) (*goi18n.MessageFile, error) {
	b, err := localeFS.ReadFile("locales/" + code + ".toml")
	if err != nil {
		return nil, err
	}
	return goi18n.ParseMessageFileBytes(b, code+".toml", map[string]goi18n.UnmarshalFunc{"toml": toml.Unmarshal})
}
