package main

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/maskpbx/maskpbx/internal/testenv"
)

// capturedLogger writes JSON lines (without the epoch time, a digit run by
// nature) into buf and entries into the observer, at debug level, with
// stack traces where logging.New has them (panics).
func capturedLogger(buf *testenv.SyncBuffer) (*zap.Logger, *observer.ObservedLogs) {
	cfg := zap.NewProductionEncoderConfig()
	cfg.TimeKey = ""
	jsonCore := zapcore.NewCore(zapcore.NewJSONEncoder(cfg), zapcore.AddSync(buf), zap.DebugLevel)
	obs, logs := observer.New(zap.DebugLevel)
	return zap.New(zapcore.NewTee(jsonCore, obs), zap.AddStacktrace(zap.DPanicLevel)), logs
}

var (
	// phoneRunRE is what a reader takes for a phone number: seven digits
	// or more, with separators between them.
	phoneRunRE = regexp.MustCompile(`\d(?:[-. ()]{0,3}\d){6,}`)
	// ipv4RE finds the addresses our own lines keep readable.
	ipv4RE = regexp.MustCompile(`\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b`)
)

// Finding 6: a stranger sends malformed and odd SIP carrying a client's
// number written with dashes, brackets, dots and spaces, over UDP and TCP.
// No log line of serve, sipgo's included, carries the number or any
// phone-like run, and none has a stack trace.
func TestMalformedSIPLeavesNoNumberInLogs(t *testing.T) {
	var buf testenv.SyncBuffer
	logger, logs := capturedLogger(&buf)
	s := startSystemLogged(t, nil, logger)

	const dashed, spaced = "8-916-314-15-92", "+7 (916) 314.15.92"
	via := func(transport string) string {
		return fmt.Sprintf("Via: SIP/2.0/%s %s:5060;branch=z9hG4bK-%d\r\n", transport, strangerIP, time.Now().UnixNano())
	}
	messages := func(transport string) []string {
		return []string{
			// Not a SIP start line: sipgo quotes it in its parse error.
			dashed + " " + spaced + " SIP/2.0\r\n" + via(transport) + "\r\n",
			// A request line whose URI has the number with spaces.
			"INVITE sip:" + spaced + "@" + domain + " SIP/2.0\r\n" + via(transport) + "\r\n",
			// A header without a colon, quoted by the parser.
			"OPTIONS sip:" + domain + " SIP/2.0\r\n" + via(transport) + "From <sip:" + dashed + "@x>\r\nContent-Length: 0\r\n\r\n",
			// Well-formed, with the number as its method: our own refusal
			// (501) names the method.
			dashed + " sip:" + dashed + "@" + domain + " SIP/2.0\r\n" + via(transport) +
				"From: <sip:" + dashed + "@x>;tag=1\r\nTo: <sip:" + dashed + "@" + domain + ">\r\n" +
				"Call-ID: " + dashed + "\r\nCSeq: 1 " + dashed + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		}
	}

	udp, err := net.ListenPacket("udp", strangerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	pbx, err := net.ResolveUDPAddr("udp", s.sipAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range messages("UDP") {
		if _, err := udp.WriteTo([]byte(m), pbx); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range messages("TCP") {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(strangerIP)}}
		conn, err := d.Dial("tcp", s.sipAddr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write([]byte(m))
		defer conn.Close()
	}

	// Both paths are logged: sipgo's parse errors of the first two
	// messages, and our 501 to the last, over both transports.
	testenv.Eventually(t, 10*time.Second, func() bool {
		parseErrors := logs.FilterLoggerName("sipgo").FilterMessage("failed to parse").Len()
		notImplemented := logs.FilterMessage("sip request failed").FilterFieldKey("status").Len()
		return parseErrors >= 4 && notImplemented >= 2
	}, "sipgo's parse errors (UDP and TCP) and the PBX's refusals in the log:\n%s", &buf)

	out := buf.String()
	for _, leak := range []string{"916", "314-15", "314.15"} {
		if strings.Contains(out, leak) {
			t.Errorf("the log holds %q of the number:\n%s", leak, out)
		}
	}
	if runs := phoneRunRE.FindAllString(ipv4RE.ReplaceAllString(out, "<ip>"), -1); len(runs) > 0 {
		t.Errorf("phone-like runs %q in the log:\n%s", runs, out)
	}
	if strings.Contains(out, `"stacktrace"`) || strings.Contains(out, ".go:") && strings.Contains(out, "goroutine") {
		t.Errorf("the log has stack traces:\n%s", out)
	}
	for _, e := range logs.All() {
		if e.Stack != "" {
			t.Errorf("%q (%s) has a stack trace", e.Message, e.LoggerName)
		}
	}
	// Our own lines keep the source address readable.
	if !strings.Contains(out, `"source":"`+strangerIP+`:`) {
		t.Errorf("the PBX's refusal lost its source address:\n%s", out)
	}
}
