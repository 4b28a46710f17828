// Package logging builds maskpbx's zap logger and the bridge that carries
// library logs written through slog (sipgo's) into it, with digit runs that
// could be phone numbers redacted on the way.
package logging

import (
	"context"
	"log/slog"
	"regexp"

	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"

	"github.com/maskpbx/maskpbx/masking"
)

// numberLike is a run of 7 or more digits, optionally after '+': as long as
// the shortest subscriber numbers.
var numberLike = regexp.MustCompile(`\+?[0-9]{7,}`)

// RedactNumbers replaces anything that looks like a phone number in s.
func RedactNumbers(s string) string {
	return numberLike.ReplaceAllStringFunc(s, masking.Redact)
}

// redactingHandler rewrites a record's message and string attributes before
// it reaches zap: a library may log a SIP message, and a SIP message may
// carry a client's number.
type redactingHandler struct{ next slog.Handler }

func (h redactingHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, RedactNumbers(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactingHandler{h.next.WithAttrs(red)}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, RedactNumbers(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = redactAttr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		// Errors and Stringers may print a SIP message: flatten and redact.
		return slog.String(a.Key, RedactNumbers(v.String()))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// New builds the process logger ("json" for production, "console" for a
// terminal) and makes it slog's default through the redacting bridge.
// Library logs below warning level are dropped: they carry whole messages.
func New(format string) (*zap.Logger, error) {
	var zc zap.Config
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	} else {
		zc = zap.NewProductionConfig()
	}
	logger, err := zc.Build()
	if err != nil {
		return nil, err
	}
	SetSlogDefault(logger)
	return logger, nil
}

// SetSlogDefault routes slog into logger at warning level and above.
func SetSlogDefault(logger *zap.Logger) {
	core := logger.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)).Core()
	slog.SetDefault(slog.New(Bridge(core)))
}

// Bridge returns a slog handler that writes to core with numbers redacted.
func Bridge(core zapcore.Core) slog.Handler {
	return redactingHandler{zapslog.NewHandler(core, zapslog.WithName("sip"))}
}
