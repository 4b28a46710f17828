package logging

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestPhoneFieldNeverWritesNumber(t *testing.T) {
	const number = "+79161234567"
	cfg := zap.NewProductionEncoderConfig()
	tests := []struct {
		name string
		enc  zapcore.Encoder
	}{
		{"json", zapcore.NewJSONEncoder(cfg)},
		{"console", zapcore.NewConsoleEncoder(cfg)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := zap.New(zapcore.NewCore(tt.enc, zapcore.AddSync(&buf), zap.DebugLevel))
			log.Info("call offered", Phone("from", number))
			log.With(Phone("to", number)).Warn("no route")
			out := buf.String()
			assertNoNumber(t, out, number)
			if !strings.Contains(out, "+7916***4567") {
				t.Errorf("log lacks the redacted number:\n%s", out)
			}
		})
	}

	t.Run("observer", func(t *testing.T) {
		core, logs := observer.New(zap.DebugLevel)
		zap.New(core).Info("call offered", Phone("from", number))
		got := logs.All()[0].ContextMap()["from"]
		if got != "+7916***4567" {
			t.Errorf("observed field = %v, want redacted", got)
		}
	})

	t.Run("fmt verbs", func(t *testing.T) {
		f := Phone("from", number)
		for _, verb := range []string{"%v", "%s", "%+v", "%#v"} {
			assertNoNumber(t, fmt.Sprintf(verb, f.Interface), number)
		}
	})
}

// assertNoNumber fails if out holds the number or any 5-digit run of its
// national part, which would be enough to narrow it down.
func assertNoNumber(t *testing.T, out, number string) {
	t.Helper()
	digits := strings.TrimPrefix(number, "+7")
	for i := 0; i+5 <= len(digits); i++ {
		if run := digits[i : i+5]; strings.Contains(out, run) {
			t.Errorf("output contains %q from the number:\n%s", run, out)
		}
	}
}
