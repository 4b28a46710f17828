package pbx

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/maskpbx/maskpbx/internal/logging"
)

// sipgo logs through slog. Its lines go into our zap logger, but sipgo knows
// nothing of our no-leak rule: on a parse error it logs the raw message, and
// its errors and request lines quote URIs and headers that can hold a
// client's number. So the bridge drops the attributes that carry messages
// and masks every phone-like run of digits in what is left.

// sipMessageAttrs are sipgo log attributes holding whole messages, request
// lines or user parts.
var sipMessageAttrs = map[string]bool{
	"data": true, "msg": true, "req": true, "res": true, "request": true,
	"response": true, "target": true, "username": true, "wwwauth": true,
}

// scrubDigits masks phone-like runs in any spelling (logging.ScrubAll), IP
// addresses with seven digits or more among them: sipgo quotes strangers.
func scrubDigits(s string) string { return logging.ScrubAll(s) }

// sipLogger is the slog logger handed to sipgo, writing into logger.
func sipLogger(logger *zap.Logger) *slog.Logger {
	// No stack traces: zapslog adds one to every error line by default, and
	// sipgo's error lines are a stranger's malformed messages.
	h := zapslog.NewHandler(logger.Core(), zapslog.WithName(logging.SIPLibraryLogger),
		zapslog.AddStacktraceAt(slog.Level(math.MaxInt32)))
	return slog.New(redactingHandler{next: h})
}

var sipDefaultLoggerOnce sync.Once

// setSIPDefaultLogger routes the few sipgo lines that use its package-wide
// logger (connection bookkeeping at debug level) into the first server's
// logger. sipgo reads that logger without a lock, so it is set only once.
func setSIPDefaultLogger(l *slog.Logger) {
	sipDefaultLoggerOnce.Do(func() { sip.SetDefaultLogger(l) })
}

// redactingHandler is a slog.Handler that removes message attributes and
// masks digit runs before passing records on.
type redactingHandler struct{ next slog.Handler }

func (h redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, scrubDigits(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = redactAttr(a)
	}
	return redactingHandler{next: h.next.WithAttrs(clean)}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{next: h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	if sipMessageAttrs[a.Key] {
		return slog.String(a.Key, "[redacted]")
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		group := v.Group()
		clean := make([]any, len(group))
		for i, g := range group {
			clean[i] = redactAttr(g)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindString:
		return slog.String(a.Key, scrubDigits(v.String()))
	case slog.KindAny:
		return slog.String(a.Key, scrubDigits(fmt.Sprint(v.Any())))
	default: // numbers, bools, times, durations
		return slog.Attr{Key: a.Key, Value: v}
	}
}
