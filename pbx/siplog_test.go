package pbx

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Whatever sipgo logs, no phone number reaches our log.
func TestSIPLoggerRedacts(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	l := sipLogger(zap.New(core)).With("target", "sip:+79161234567@trunk")
	const number = "79161234567"
	l.Error("failed to parse",
		"data", "INVITE sip:+79161234567@trunk SIP/2.0",
		"error", errors.New(`field name with no value in header: "From <sip:+79161234567@trunk>"`),
		"raddr", "192.0.2.1:5060",
		"status", 404,
		"nested", fmt.Stringer(stringer("tel:+79161234567")))
	l.WithGroup("g").Info("call +79161234567", "req", "x", "callid", "abc-79161234567")

	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d entries", len(entries))
	}
	for _, e := range entries {
		line := fmt.Sprintf("%s %v", e.Message, e.ContextMap())
		if strings.Contains(line, number) {
			t.Errorf("number leaked: %s", line)
		}
	}
	m := entries[0].ContextMap()
	if m["data"] != "[redacted]" || m["raddr"] != "192.0.2.1:5060" || m["status"] != int64(404) {
		t.Errorf("fields = %v", m)
	}
	if entries[0].LoggerName != "sipgo" {
		t.Errorf("logger name %q", entries[0].LoggerName)
	}
}

type stringer string

func (s stringer) String() string { return string(s) }
