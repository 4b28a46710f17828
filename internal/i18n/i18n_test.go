package i18n

import "testing"

func TestPluralForms(t *testing.T) {
	for _, tc := range []struct {
		lang string
		n    int
		want string
	}{
		{"en", 1, "1 client"}, {"en", 2, "2 clients"}, {"en", 1234, "1,234 clients"},
		{"ru", 1, "1 клиент"}, {"ru", 2, "2 клиента"}, {"ru", 5, "5 клиентов"}, {"ru", 11, "11 клиентов"},
		{"ru", 21, "21 клиент"}, {"ru", 24, "24 клиента"}, {"ru", 0, "0 клиентов"},
		{"pl", 1, "1 klient"}, {"pl", 3, "3 klientów"}, {"pl", 22, "22 klientów"},
		{"ro", 1, "1 client"}, {"ro", 2, "2 clienți"}, {"ro", 19, "19 clienți"}, {"ro", 20, "20 de clienți"}, {"ro", 101, "101 clienți"}, {"ro", 120, "120 de clienți"},
	} {
		if got := Get(tc.lang).N("count.clients", tc.n); got != tc.want {
			t.Errorf("%s %d: %q, want %q", tc.lang, tc.n, got, tc.want)
		}
	}
	for _, tc := range []struct {
		lang string
		n    int
		want string
	}{
		{"pl", 1, "1 połączenie"}, {"pl", 2, "2 połączenia"}, {"pl", 5, "5 połączeń"}, {"pl", 12, "12 połączeń"}, {"pl", 23, "23 połączenia"},
		{"ru", 1, "1 звонок"}, {"ru", 3, "3 звонка"}, {"ru", 14, "14 звонков"},
	} {
		if got := Get(tc.lang).N("count.calls", tc.n); got != tc.want {
			t.Errorf("%s %d: %q, want %q", tc.lang, tc.n, got, tc.want)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct{ header, fallback, want string }{
		{"ru-RU,ru;q=0.9,en;q=0.8", "en", "ru"},
		{"ro-MD", "en", "ro"},
		{"pl;q=0.5, de;q=0.9", "en", "pl"},
		{"de-DE", "ru", "ru"},
		{"", "pl", "pl"},
		{"", "", "en"},
		{"", "xx", "en"},
		{"*;q=garbage,,,;;", "ro", "ro"},
	} {
		if got := Match(tc.header, tc.fallback).Code(); got != tc.want {
			t.Errorf("Match(%q, %q) = %s, want %s", tc.header, tc.fallback, got, tc.want)
		}
	}
}

func TestNumbersAndMessages(t *testing.T) {
	if got := Get("ru").Number(12345); got != "12\u00a0345" {
		t.Errorf("ru 12345: %q", got)
	}
	if got := Get("ro").T("date.today", "Time", "01:30"); got != "Azi 01:30" {
		t.Errorf("ro today: %q", got)
	}
	if got := Get("pl").T("no.such.id"); got != "no.such.id" {
		t.Errorf("a missing id: %q", got)
	}
	if js := Get("ru").Messages("js."); js["starting"] != "Соединяем…" || len(js) < 10 {
		t.Errorf("ru js messages: %v", js)
	}
}
