package logging

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestBridgeRedactsNumbers(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	l := slog.New(Bridge(core))
	l.With("peer", "sip:+79161234567@10.0.0.1").Warn("bad INVITE from 79161234567",
		"msg", "From: <sip:89161234567@trunk>", "err", errors.New("parse +79161234567"), slog.Group("g", "n", "79161234567"), "port", 5060)
	if logs.Len() != 1 {
		t.Fatalf("got %d entries", logs.Len())
	}
	e := logs.All()[0]
	all := e.Message
	for _, f := range e.Context {
		all += " " + f.String
		if f.Interface != nil {
			all += " " + strings.TrimSpace(strings.ReplaceAll(fmtAny(f.Interface), "\n", " "))
		}
	}
	for _, leak := range []string{"9161234567", "1234567"} {
		if strings.Contains(all, leak) {
			t.Fatalf("log entry leaks %q: %s", leak, all)
		}
	}
	if !strings.Contains(all, "+7916***4567") {
		t.Fatalf("expected the redacted form in %s", all)
	}
}

func fmtAny(v any) string {
	if s, ok := v.(interface{ String() string }); ok {
		return s.String()
	}
	return ""
}

func TestRedactNumbers(t *testing.T) {
	for in, want := range map[string]string{
		"call 5060 ok":           "call 5060 ok",
		"+79161234567":           "+7916***4567",
		"x 79161234567 y":        "x *** y",
		"branch z9hG4bK123":      "branch z9hG4bK123",
		"ts 1234567 and 1234567": "ts *** and ***",
	} {
		if got := RedactNumbers(in); got != want {
			t.Errorf("RedactNumbers(%q) = %q, want %q", in, got, want)
		}
	}
}
