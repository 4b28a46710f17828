package logging

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestScrubPhones(t *testing.T) {
	tests := []struct {
		in, ours, library string
	}{
		{"8-916-314-15-92", "[digits]", "[digits]"},
		{"+7 (916) 314.15.92", "[digits]", "[digits]"},
		{"From: <sip:+79163141592@trunk>", "From: <sip:[digits]@trunk>", "From: <sip:[digits]@trunk>"},
		{"tel:8 916 314 15 92;x", "tel:[digits];x", "tel:[digits];x"},
		{"abc-7916314-xyz", "abc-[digits]-xyz", "abc-[digits]-xyz"},
		{"916.314.15.92", "[digits]", "[digits]"},     // 916 is no octet
		{"8.916.314.15.92", "[digits]", "[digits]"},   // five groups
		{"+7.495.123.45.67", "[digits]", "[digits]"},  // five groups
		{"(495) 123-45-67", "([digits]", "([digits]"}, // the bracket stays, the digits go
		{"8 - 916 - 314 - 15 - 92", "[digits]", "[digits]"},
		// Numbers that are not phones stay readable.
		{"port 5060, status 503 after 1500ms", "port 5060, status 503 after 1500ms", "port 5060, status 503 after 1500ms"},
		{"call 12-34-56", "call 12-34-56", "call 12-34-56"},
		// IPv4 addresses: kept in our lines, scrubbed in sipgo's from seven
		// digits (an IP has at most twelve).
		{"source 127.0.0.20:5060", "source 127.0.0.20:5060", "source [digits]:5060"},
		{"192.168.100.200", "192.168.100.200", "[digits]"},
		{"10.0.0.1:5060", "10.0.0.1:5060", "10.0.0.1:5060"},
		{"[2001:db8::1]:5060", "[2001:db8::1]:5060", "[2001:db8::1]:5060"},
		// Ids (UUIDs) stay whole, digit runs and all; a number glued to
		// one is still caught.
		{"client_id a1234567-df34-48b7-b784-123456789012", "client_id a1234567-df34-48b7-b784-123456789012", "client_id a1234567-df34-48b7-b784-123456789012"},
		{`"call_id":"12345678-1234-1234-1234-123456789012"`, `"call_id":"12345678-1234-1234-1234-123456789012"`, `"call_id":"12345678-1234-1234-1234-123456789012"`},
		{"x12345678-1234-1234-1234-123456789012", "x[digits]", "x[digits]"},
		// Separators beyond three in a row end a run.
		{"123    4567", "123    4567", "123    4567"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := ScrubPhones(tt.in); got != tt.ours {
				t.Errorf("ScrubPhones(%q) = %q, want %q", tt.in, got, tt.ours)
			}
			if got := ScrubAll(tt.in); got != tt.library {
				t.Errorf("ScrubAll(%q) = %q, want %q", tt.in, got, tt.library)
			}
		})
	}
}

// phoneRunRE finds what a reader would take for a phone number: seven or
// more digits with separators. Used on logs with dotted IPv4 taken out.
var phoneRunRE = regexp.MustCompile(`\d(?:[-. ()]{0,3}\d){6,}`)

var ipv4RE = regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b`)

// Every way a line can carry a formatted number comes out redacted, through
// the encoders and the observer alike; sipgo's lines lose their stack.
func TestRedactCore(t *testing.T) {
	const number = "8-916-314-15-92"
	var buf bytes.Buffer
	cfg := zap.NewProductionEncoderConfig()
	cfg.TimeKey = "" // the epoch time is a long run of digits by nature
	jsonCore := zapcore.NewCore(zapcore.NewJSONEncoder(cfg), zapcore.AddSync(&buf), zap.DebugLevel)
	obs, logs := observer.New(zap.DebugLevel)
	log := Redacted(zap.New(zapcore.NewTee(jsonCore, obs), zap.AddStacktrace(zap.ErrorLevel)))
	if Redacted(log) != log {
		t.Error("Redacted wraps twice")
	}

	type header struct{ From string }
	log.With(zap.String("with", "+7 (916) 314.15.92")).Info("call from "+number,
		zap.String("source", "127.0.0.20:5060"),
		zap.ByteString("raw", []byte("INVITE sip:"+number+"@x SIP/2.0")),
		zap.Error(errors.New(`bad header "From: <tel:`+number+`>"`)),
		zap.Stringer("uri", stringer("sip:"+number)),
		zap.Strings("list", []string{number, "ok"}),
		zap.Any("header", header{From: number}),
		zap.Int("port", 5060))
	log.Named(SIPLibraryLogger).Error("failed to parse "+number, zap.String("raddr", "127.0.0.24:5060"))
	log.Error("ours keeps its stack")

	out := buf.String()
	if strings.Contains(out, "916") {
		t.Errorf("the number leaked:\n%s", out)
	}
	if runs := phoneRunRE.FindAllString(ipv4RE.ReplaceAllString(out, "IP"), -1); len(runs) > 0 {
		t.Errorf("phone-like runs %q in:\n%s", runs, out)
	}
	for _, want := range []string{`"source":"127.0.0.20:5060"`, `"raddr":"[digits]:5060"`, `"port":5060`, `"list":["[digits]","ok"]`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	entries := logs.All()
	if len(entries) != 3 {
		t.Fatalf("%d entries", len(entries))
	}
	if entries[1].Stack != "" {
		t.Errorf("sipgo's line has a stack trace:\n%s", entries[1].Stack)
	}
	if entries[2].Stack == "" {
		t.Error("our error line lost its stack trace")
	}
	if got := entries[0].ContextMap()["with"]; got != "[digits]" {
		t.Errorf("With field = %v", got)
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

// A sampler inside the redacting core still samples: the core asks it at
// write time.
func TestRedactCoreKeepsSampling(t *testing.T) {
	obs, logs := observer.New(zap.DebugLevel)
	sampled := zapcore.NewSamplerWithOptions(obs, 1e12, 2, 0) // two lines per message, then none
	log := Redacted(zap.New(sampled))
	for range 10 {
		log.Info("same line +79163141592")
	}
	if n := logs.Len(); n != 2 {
		t.Errorf("%d lines written, want the sampler's 2", n)
	}
}
