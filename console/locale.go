package console

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/maskpbx/maskpbx/internal/i18n"
)

// locale is how one person reads the console: his language and his time
// zone. A signed-in person's own settings win; else the browser's
// Accept-Language and the company's --default-language and --timezone.
type locale struct {
	lang *i18n.Lang
	loc  *time.Location
}

// localeFor is the locale of a request (s may be nil: not signed in).
func (c *Console) localeFor(r *http.Request, s *session) *locale {
	if s != nil && s.lc != nil {
		return s.lc
	}
	lc := &locale{lang: i18n.Match(r.Header.Get("Accept-Language"), c.cfg.DefaultLanguage), loc: c.loc}
	if s != nil {
		if i18n.Supported(s.Settings.Language) {
			lc.lang = i18n.Get(s.Settings.Language)
		}
		if loc, ok := c.zone(s.Settings.TimeZone); ok {
			lc.loc = loc
		}
		s.lc = lc
	}
	return lc
}

// zone loads an IANA time zone name; ok is false for an empty or unknown one.
func (c *Console) zone(name string) (*time.Location, bool) {
	if name == "" || len(name) > 64 {
		return nil, false
	}
	loc, err := time.LoadLocation(name)
	return loc, err == nil
}

// t is a message in the person's language.
func (lc *locale) t(id string, args ...any) string { return lc.lang.T(id, args...) }

// n is a plural message for the count n.
func (lc *locale) n(id string, n int, args ...any) string { return lc.lang.N(id, n, args...) }

// clock is a time of day as the person reads it (24-hour in every
// language the console speaks).
func clock(t time.Time) string { return t.Format("15:04") }

// dayMonth is "2 Jan" in the person's language.
func (lc *locale) dayMonth(t time.Time) string {
	return lc.t("date.day_month", "Day", t.Day(), "Month", lc.t("month."+strconv.Itoa(int(t.Month()))))
}

// weekdayDate is "Mon 2 Jan" in the person's language.
func (lc *locale) weekdayDate(t time.Time) string {
	return lc.t("date.weekday_day_month", "Weekday", lc.t("weekday."+strconv.Itoa(int(t.Weekday()))),
		"Day", t.Day(), "Month", lc.t("month."+strconv.Itoa(int(t.Month()))))
}

// when writes a time the way a person reads it: today's and yesterday's by
// the clock, this year's without the year.
func (lc *locale) when(t any) string {
	tt := asTime(t)
	if tt.IsZero() {
		return "—"
	}
	tt = tt.In(lc.loc)
	now := time.Now().In(lc.loc)
	switch {
	case tt.Format(time.DateOnly) == now.Format(time.DateOnly):
		return lc.t("date.today", "Time", clock(tt))
	case tt.AddDate(0, 0, 1).Format(time.DateOnly) == now.Format(time.DateOnly):
		return lc.t("date.yesterday", "Time", clock(tt))
	case tt.Year() == now.Year():
		return lc.t("date.this_year", "Date", lc.dayMonth(tt), "Time", clock(tt))
	}
	return lc.t("date.other_year", "Date", lc.dayMonth(tt), "Year", tt.Year(), "Time", clock(tt))
}

// pageSets keeps the pages parsed once per language and time zone, their
// helpers bound to that locale.
type pageSets struct {
	mu   sync.Mutex
	sets map[string]map[string]*pageTemplate
}

// pagesFor returns the pages for a locale, parsing them on first use.
func (c *Console) pagesFor(lc *locale) (map[string]*pageTemplate, error) {
	key := lc.lang.Code() + " " + lc.loc.String()
	c.pageSets.mu.Lock()
	defer c.pageSets.mu.Unlock()
	if p, ok := c.pageSets.sets[key]; ok {
		return p, nil
	}
	p, err := loadPages(c.funcs(lc))
	if err != nil {
		return nil, err
	}
	if c.pageSets.sets == nil {
		c.pageSets.sets = map[string]map[string]*pageTemplate{}
	}
	// People choose among four languages and a few hundred zones: a bound
	// keeps someone who tries every zone from growing the cache for good.
	if len(c.pageSets.sets) >= maxPageSets {
		for k := range c.pageSets.sets {
			delete(c.pageSets.sets, k)
			break
		}
	}
	c.pageSets.sets[key] = p
	return p, nil
}

// maxPageSets is how many language and zone pairs keep their parsed pages.
const maxPageSets = 32

// jsText is the messages console.js shows (the catalogs' js.* ids), in the
// person's language; the page carries them as JSON for the script.
func jsText(lc *locale) map[string]string { return lc.lang.Messages("js.") }
